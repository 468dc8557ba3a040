"""`hfadapt tune`: seeded sampling, pruning, resuming a killed study, best.yaml, parallel workers,
memory-plan skips and the search section's bad inputs (refused by `hfadapt validate`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import sentiment_recipe

from hfadapt.cli import main

SPACE = {"train.learning_rate": {"log_uniform": [1.0e-3, 2.0e-2]}, "adapter.r": {"choice": [2, 4]}}


def study_recipe(tiny_bert: str, csv: str, folder: Path, **search: Any) -> dict[str, Any]:
    """The tiny sentiment recipe (4 steps, an evaluation every 2) with a search section."""
    raw = sentiment_recipe(tiny_bert, csv, folder)
    raw["name"] = "study"
    raw["train"].update(max_steps=4, eval_steps=2)
    raw["eval"] = {"best_metric": "accuracy"}
    raw["search"] = {"space": SPACE, "n_trials": 2, "pruner": "none", **search}
    return raw


def load(raw: dict[str, Any]) -> Any:
    from hfadapt import Recipe

    return Recipe.from_dict(raw)


def trials(folder: Path) -> list[Any]:
    from hfadapt.tuning.study import load_study

    return load_study(folder)[1].get_trials()


@pytest.fixture(scope="module")
def seeded_study(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str, sentiment_csv: str) -> Path:
    from hfadapt import tune

    folder = tmp_path_factory.mktemp("tune") / "study"
    study = tune(load(study_recipe(tiny_bert, sentiment_csv, folder)))
    assert len(study.trials) == 2
    return folder


def test_a_seeded_study_samples_the_same_trials_twice(seeded_study: Path, tmp_path: Path, tiny_bert: str, sentiment_csv: str) -> None:
    from hfadapt import tune

    again = tune(load(study_recipe(tiny_bert, sentiment_csv, tmp_path / "again")))
    first = trials(seeded_study)
    assert [t.params for t in again.trials] == [t.params for t in first]
    assert [t.value for t in again.trials] == [t.value for t in first]
    assert len({t.params["train.learning_rate"] for t in first}) == 2  # sampled, not one fixed value
    # each trial is an ordinary run, listed by `hfadapt runs` under the study
    from hfadapt.insight.runs import list_runs

    listed = list_runs(str(seeded_study))
    assert [r["name"] for r in listed] == ["trial-000", "trial-001"] and {r["state"] for r in listed} == {"finished"}


def test_best_yaml_retrains_to_the_same_metric(seeded_study: Path, tmp_path: Path) -> None:
    from hfadapt import Recipe, train

    best = min(trials(seeded_study), key=lambda t: (-t.value, t.number))
    recipe = Recipe.from_yaml(seeded_study / "best.yaml", overrides=[f"output.dir={tmp_path / 'best'}"])
    assert recipe.search is None and recipe.name == "study-best"
    retrained = train(recipe).metrics
    trial = json.loads((seeded_study / f"trial-{best.number:03d}" / "metrics.json").read_text())
    assert retrained["eval/accuracy"] == best.value == trial["eval/accuracy"]
    assert retrained["eval/loss"] == trial["eval/loss"]  # bit-identical on CPU, not just the same accuracy
    # a best trial run by another machine (no trial folder here) gives the same recipe, built from its values
    from dataclasses import replace

    from hfadapt.tuning.study import load_study, write_best

    setup = load_study(seeded_study)[0]
    rebuilt = write_best(replace(setup, dir=tmp_path), best.number, best.value, best.params)
    assert yaml.safe_load(rebuilt.read_text()) == yaml.safe_load((seeded_study / "best.yaml").read_text())


def test_the_study_report_shows_optunas_plots_and_links_the_trials(seeded_study: Path) -> None:
    from hfadapt.insight.report import write_report

    page = write_report(seeded_study).read_text()
    for title in ("Optimisation history", "Parameter importances", "Parallel coordinates"):
        section = page.split(f"<h2>{title}</h2>")[1].split("<h2>")[0]
        assert "data:image/png;base64," in section, title
    assert 'href="trial-000/report.html"' in page and (seeded_study / "trial-000" / "report.html").is_file()


def test_a_diverging_learning_rate_is_pruned_at_its_first_evaluation(tmp_path: Path, tiny_bert: str, sentiment_csv: str) -> None:
    from hfadapt import tune

    raw = study_recipe(tiny_bert, sentiment_csv, tmp_path / "study", space={"train.learning_rate": {"choice": [1000.0]}}, n_trials=1, pruner="median")
    raw["train"].update(max_steps=6)
    (trial,) = tune(load(raw)).trials
    assert trial.state.name == "PRUNED" and "diverged by step 2" in trial.user_attrs["reason"]
    status = json.loads((tmp_path / "study" / "trial-000" / "status.json").read_text())
    assert status["state"] == "pruned" and status["step"] == 2  # stopped at the first evaluation, cleanly
    from hfadapt.insight.runs import list_runs

    assert list_runs(str(tmp_path / "study"))[0]["state"] == "pruned"


def test_a_configuration_the_plan_rejects_is_skipped_without_loading_the_model(tmp_path: Path, tiny_bert: str, sentiment_csv: str) -> None:
    from hfadapt import tune

    raw = study_recipe(tiny_bert, sentiment_csv, tmp_path / "study", space={"train.batch_size": {"choice": [8, 4096]}},
                       sampler="grid", device_memory="64MiB")
    by_batch = {t.params["train.batch_size"]: t for t in tune(load(raw)).trials}
    assert by_batch[8].state.name == "COMPLETE"
    skipped = by_batch[4096]
    assert skipped.state.name == "PRUNED" and "hfadapt plan" in skipped.user_attrs["reason"]
    run = tmp_path / "study" / f"trial-{skipped.number:03d}"
    assert json.loads((run / "status.json").read_text())["state"] == "pruned"
    assert not (run / "base_model").exists() and not (run / "logs").exists()  # the model was never built
    from hfadapt.insight.report import write_report

    assert "hfadapt plan: ~" in write_report(tmp_path / "study").read_text()  # the study page says why
    assert (run / "report.html").is_file()  # a skipped trial's own page renders too


def test_a_sampled_recipe_that_fails_validation_is_a_failed_trial_with_the_reason(tmp_path: Path, tiny_bert: str, sentiment_csv: str) -> None:
    from hfadapt import tune

    raw = study_recipe(tiny_bert, sentiment_csv, tmp_path / "study", space={"train.warmup_steps": {"int": [0, 2]}}, n_trials=1)
    raw["train"]["warmup_ratio"] = 0.1  # with warmup_steps too: refused by the schema
    (trial,) = tune(load(raw)).trials
    assert trial.state.name == "FAIL" and "can't give both train.warmup_steps and train.warmup_ratio" in trial.user_attrs["reason"]


def _cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "hfadapt", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_a_killed_study_resumes_to_exactly_n_trials(tmp_path: Path, tiny_bert: str, sentiment_csv: str) -> None:
    raw = study_recipe(tiny_bert, sentiment_csv, tmp_path / "study", n_trials=3)
    raw["train"].update(max_steps=8)  # long enough to be killed inside
    file = tmp_path / "recipe.yaml"
    file.write_text(yaml.safe_dump(raw))
    proc = _cli("tune", str(file), cwd=tmp_path)
    status = tmp_path / "study" / "trial-001" / "status.json"
    deadline = time.time() + 240
    while not (status.is_file() and json.loads(status.read_text()).get("state") == "running"):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-trial: trial 1 is training
    proc.wait()

    from hfadapt import Recipe, tune

    found = tune(Recipe.from_yaml(file)).trials  # the same study again (the CLI's path, in this process) resumes
    killed = [t for t in found if t.user_attrs.get("killed")]
    assert [t.number for t in killed] == [1] and killed[0].state.name == "FAIL"
    finished = [t for t in found if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3  # exactly n_trials, the killed one retried with its values
    retry = next(t for t in found if t.user_attrs.get("retry_of") == 1)
    assert retry.params == killed[0].params and retry.state.name == "COMPLETE"
    assert json.loads(status.read_text())["state"] == "failed"


@pytest.mark.slow
def test_a_trial_whose_machine_died_is_retried_by_a_worker_elsewhere_after_the_grace_period(
        tmp_path: Path, tiny_bert: str, sentiment_csv: str) -> None:
    import optuna

    raw = study_recipe(tiny_bert, sentiment_csv, tmp_path / "study", n_trials=2, heartbeat_interval=1, grace_period=2)
    raw["train"].update(max_steps=8)  # long enough to be killed inside
    file = tmp_path / "recipe.yaml"
    file.write_text(yaml.safe_dump(raw))
    proc = _cli("tune", str(file), cwd=tmp_path)
    status = tmp_path / "study" / "trial-000" / "status.json"
    deadline = time.time() + 240
    while not (status.is_file() and json.loads(status.read_text()).get("state") == "running"):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # trial 0 is training
    proc.wait()
    # that worker ran on "another machine": its host and process id say nothing to the worker below,
    # so only the heartbeat, silent since the kill, can tell the trial is dead
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    (dead,) = optuna.load_study(study_name="study", storage=storage).get_trials(states=(optuna.trial.TrialState.RUNNING,))
    storage.set_trial_user_attr(dead._trial_id, "host", "a-machine-that-died")

    from hfadapt import Recipe, tune

    start = time.time()
    found = tune(Recipe.from_yaml(file)).trials  # another worker process of the study, on "this machine"
    assert found[0].state.name == "FAIL" and "killed" not in found[0].user_attrs  # failed by the heartbeat, not by host+pid
    finished = [t for t in found if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 2 and len(found) == 3  # exactly n_trials; the dead one retried once, nothing run twice else
    (retry,) = [t for t in found if t.user_attrs.get("retry_of") == 0]
    assert retry.params == found[0].params and retry.state.name == "COMPLETE" and retry.user_attrs["pid"] == os.getpid()
    assert time.time() - start >= 2  # not before the grace period
    assert "no heartbeat for 2 s" in json.loads(status.read_text())["error"]


def test_bad_heartbeat_fields_are_refused_by_validate_in_one_line(tmp_path: Path, tiny_bert: str, sentiment_csv: str, capsys: Any) -> None:
    raw = study_recipe(tiny_bert, sentiment_csv, tmp_path / "study", heartbeat_interval=60, grace_period=30)
    file = tmp_path / "recipe.yaml"
    file.write_text(yaml.safe_dump(raw))
    assert main(["validate", str(file)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "search.grace_period: 30 s must be longer than search.heartbeat_interval (60 s)" in err, err
    assert main(["validate", str(file), "search.heartbeat_interval=0"]) == 2
    assert "heartbeat_interval" in capsys.readouterr().err
    assert main(["validate", str(file), "search.heartbeat_interval=null"]) == 0  # off: only reruns retry a dead trial


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study_without_running_a_trial_twice(tmp_path: Path, tiny_bert: str, sentiment_csv: str, capfd: Any) -> None:
    from hfadapt import tune

    found = tune(load(study_recipe(tiny_bert, sentiment_csv, tmp_path / "study", n_trials=4)), workers=2).trials  # 2 processes
    out = capfd.readouterr().out
    assert [t.number for t in found] == [0, 1, 2, 3] and all(t.state.name == "COMPLETE" for t in found)
    assert len({t.user_attrs["pid"] for t in found}) == 2  # both workers ran trials
    for t in found:  # each trial number was trained once, by the worker that asked for it
        status = json.loads((tmp_path / "study" / f"trial-{t.number:03d}" / "status.json").read_text())
        assert status["pid"] == t.user_attrs["pid"] and status["state"] == "finished"
    assert sorted(line.split(":")[0] for line in out.splitlines() if line.startswith("trial ")) == [f"trial {i}" for i in range(4)]


BAD = [
    ({"train.lerning_rate": {"uniform": [0.1, 0.2]}}, {}, "search.space.train.lerning_rate: unknown field"),
    ({"train.learning_rate": {"log_uniform": [1.0e-2, 1.0e-4]}}, {}, "search.space.train.learning_rate: log_uniform: low 0.01 > high 0.0001"),
    ({"adapter.r": {"choice": []}}, {}, "search.space.adapter.r: choice: the list is empty"),
    (SPACE, {"objective": {"metric": "bleu"}}, "search.objective.metric: 'bleu' is not reported by text-classification"),
]


@pytest.mark.parametrize("space,extra,message", BAD, ids=["unknown-field", "low-above-high", "empty-choice", "unreported-metric"])
def test_bad_searches_are_refused_by_validate_in_one_line(tmp_path: Path, tiny_bert: str, sentiment_csv: str, capsys: Any,
                                                          space: dict, extra: dict, message: str) -> None:
    raw = study_recipe(tiny_bert, sentiment_csv, tmp_path / "study", space=space, **extra)
    file = tmp_path / "recipe.yaml"
    file.write_text(yaml.safe_dump(raw))
    assert main(["validate", str(file)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hfadapt: error:") and message in err, err


def test_validate_checks_a_search_file_without_torch_or_optuna(tmp_path: Path, tiny_bert: str, sentiment_csv: str) -> None:
    raw = study_recipe(tiny_bert, sentiment_csv, tmp_path / "study")
    search = raw.pop("search")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "search.yaml").write_text(yaml.safe_dump({"search": search}))
    code = (
        "import sys; from hfadapt.cli import main; rc = main(['validate', 'recipe.yaml', '--search', 'search.yaml']); "
        "heavy = [m for m in ('torch', 'optuna', 'transformers') if m in sys.modules]; print(rc, heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines()[-1] == "0 []", out.stdout + out.stderr
    assert "search: 2 fields, 2 trials" in out.stdout


def test_conditional_fields_are_sampled_only_under_their_condition(make_recipe: Any, tmp_path: Path) -> None:
    import optuna

    from hfadapt.core.search import SearchSection
    from hfadapt.tuning.space import suggest
    from hfadapt.tuning.trial import trial_recipe

    search = SearchSection.model_validate({"space": {
        "adapter.method": {"choice": ["lora", "loha"]},
        "adapter.use_dora": {"choice": [False, True], "when": {"adapter.method": "lora"}},
        "adapter.target_modules": {"choice": [["query"], ["query", "value"]]},  # list values travel as JSON
    }})
    loha = suggest(optuna.trial.FixedTrial({"adapter.method": "loha", "adapter.target_modules": '["query"]'}), search)
    assert loha == {"adapter.method": "loha", "adapter.target_modules": ["query"]}
    lora = suggest(optuna.trial.FixedTrial({"adapter.method": "lora", "adapter.use_dora": True, "adapter.target_modules": '["query", "value"]'}), search)
    assert lora["adapter.use_dora"] is True
    # switching the method drops the base method's own fields (the base recipe is LoRA)
    recipe = trial_recipe(make_recipe(), loha, 7, tmp_path)
    assert recipe.adapter.method == "loha" and recipe.adapter.target_modules == ["query"]
    assert recipe.output_dir == tmp_path / "trial-007"


def test_the_cmaes_sampler_is_seeded_and_keeps_to_the_space() -> None:
    import optuna

    from hfadapt.core.search import SearchSection
    from hfadapt.tuning.space import make_sampler, suggest

    search = SearchSection.model_validate({"sampler": "cmaes", "space": {
        "train.learning_rate": {"log_uniform": [1.0e-5, 1.0e-3]}, "train.warmup_ratio": {"uniform": [0.0, 0.2]}}})

    def walk() -> list[dict[str, Any]]:
        study = optuna.create_study(sampler=make_sampler(search, seed=3))
        seen = []
        for _ in range(8):  # past CMA-ES's independent start-up trials
            trial = study.ask()
            values = suggest(trial, search)
            study.tell(trial, (values["train.learning_rate"] - 1e-4) ** 2 + values["train.warmup_ratio"])
            seen.append(values)
        return seen

    first = walk()
    assert first == walk()
    assert all(1e-5 <= v["train.learning_rate"] <= 1e-3 and 0.0 <= v["train.warmup_ratio"] <= 0.2 for v in first)
