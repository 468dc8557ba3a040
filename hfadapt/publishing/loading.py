"""`load_recipe(ref, overrides)`: the one way the CLI and Python code turn a reference into a Recipe.

A reference is a recipe file, the name of a shipped recipe ('text/sst2-bert-lora'), or
'hub:user/adapter' for the recipe pushed with an adapter. Hub references are resolved here, above
the pure schema in recipe.py, so the schema never imports the Hub client.
"""

from __future__ import annotations

from pathlib import Path

from hfadapt import tasks  # noqa: F401  (every task's recipe model is registered before a recipe is validated)
from hfadapt.core.errors import HfadaptError
from hfadapt.core.recipe import Recipe, read_recipe_file, shed_foreign_fields


def load_recipe(ref: str | Path, overrides: list[str] | None = None) -> Recipe:
    ref = str(ref)
    if not ref.startswith("hub:"):
        file = Path(ref)
        if _is_saved_run_recipe(file):
            # `hfadapt train RUN/recipe.yaml --resume` on a run an older hfadapt wrote: its recipe.yaml
            # holds every model/adapter field of that release, the other tasks' and methods' included.
            return Recipe.from_dict(shed_foreign_fields(read_recipe_file(file)), overrides=overrides, source=file)
        return Recipe.from_yaml(ref, overrides)
    from hfadapt.publishing.cards import PATH_FIELDS, unpublished_fields
    from hfadapt.publishing.hub import download_recipe

    file = download_recipe(ref[4:])
    raw = shed_foreign_fields(read_recipe_file(file))  # pushed by an older hfadapt: every model/adapter field
    # Someone else's recipe: it may not run code, push to its author's repo, or pick our output dir.
    # The user's own overrides can still opt in.
    raw.setdefault("model", {})["trust_remote_code"] = False
    raw.setdefault("hub", {})["push"] = False
    raw.setdefault("output", {})["dir"] = None
    if raw.get("task") == "online-rl":  # reward functions are Python files: the user opts in by override
        raw.setdefault("rl", {})["trust_reward_code"] = False
    # The user's './' overrides are relative to where they type, not to the download cache.
    recipe = Recipe.from_dict(raw, overrides=overrides, source=file, base=Path.cwd())
    # A push replaces local paths with placeholders (cards.publish_recipe): the user must give their own.
    unpublished = unpublished_fields(recipe.to_dict())
    if unpublished:
        named = ", ".join(f"{f} ({v if isinstance(v, str) else ', '.join(v)})" for f, v in unpublished.items())
        give = " ".join(f"{f}={PATH_FIELDS[f]}" for f in unpublished)
        raise HfadaptError(
            f"{ref}: the pushed recipe names local paths of its author that were not published: {named}; "
            f"override them: hfadapt train {ref} {give}"
        )
    return recipe


def _is_saved_run_recipe(file: Path) -> bool:
    """The recipe.yaml a training run saved in its run directory (not a recipe a person wrote)."""
    from hfadapt.rundir.layout import RECIPE_FILE, RunDir

    run = RunDir(file.parent)
    written = (run.info_file, run.state_file, run.status_file, run.checkpoints_dir)
    return file.name == RECIPE_FILE and file.is_file() and any(p.exists() for p in written)
