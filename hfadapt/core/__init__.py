"""The ground floor: the recipe schema, the registry, errors and what ships with hfadapt.

Pure Python over pydantic and YAML: no torch, no Hub client, no task (tasks are found through
`task_source`). `hfadapt validate` and `hfadapt schema` need nothing else."""
