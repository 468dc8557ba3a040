"""`hfadapt tune`: hyperparameter search over recipe fields with Optuna.

study   tune(recipe, search): the study folder, workers, resuming, best.yaml
space   the search section turned into Optuna's samplers, pruners and suggestions
trial   one trial: a sampled recipe validated, checked against the memory plan, trained and pruned
report  the study's HTML page (Optuna's matplotlib visualisations and the trial table)

Above training (each trial is an ordinary `train` run); `insight` imports the report.
"""
