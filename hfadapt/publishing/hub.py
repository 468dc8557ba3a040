"""Push runs to the Hugging Face Hub and use pushed adapters (predict, eval, train hub:…).

The token comes from where huggingface_hub looks (HF_TOKEN, `hf auth login`); it is never
written to logs, cards, recipes or error messages.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.rundir.layout import RECIPE_FILE, RUN_FILES, RunDir

# A pushed repo holds the adapter folder's files and the run files (layout.RUN_FILES). Weights go as
# safetensors only. The .jsonl files (per-example results, sample generations) let
# `hfadapt report user/adapter` show what it shows for the local run.
NEVER_PUSHED = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
DOWNLOAD_PATTERNS = ["*.json", "*.jsonl", "*.safetensors", "*.yaml", "*.txt", "*.model", "*.md", "*.tiktoken", "*.jinja",
                     "rewards/*"]  # online-rl's reward files: pulled, but run only with rl.trust_reward_code=true


def _token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text




def stage(run: RunDir, repo_id: str, target: Path, license: str | None = None) -> list[str]:
    """Copy what gets pushed into `target`: adapter (or model) files at the root, run files, README.md."""
    from hfadapt.publishing.cards import render_adapter_card

    names = []
    for f in sorted(run.model_dir.iterdir()):
        if f.is_file() and f.name != "README.md" and f.name not in RUN_FILES:
            if f.suffix in NEVER_PUSHED:
                raise HfadaptError(f"push: {f} is a pickle-based weights file; hfadapt pushes safetensors only")
            shutil.copy2(f, target / f.name)
            names.append(f.name)
    for path in run.run_files():
        shutil.copy2(path, target / path.name)
        names.append(path.name)
    names += _stage_reward_files(run, target)
    _publish_local_paths(run, target)
    (target / "README.md").write_text(render_adapter_card(run, repo_id, license))
    return names + ["README.md"]


def _stage_reward_files(run: RunDir, target: Path) -> list[str]:
    """online-rl's `function` rewards: the run's copies (RUN/rewards/), so a pulled run can be evaluated
    (running them still needs the user's rl.trust_reward_code=true)."""
    from hfadapt.tasks.rewards import KEPT_DIR

    folder = run.path / KEPT_DIR
    if not folder.is_dir():
        return []
    (target / KEPT_DIR).mkdir()
    names = []
    for f in sorted(folder.iterdir()):
        if f.is_file():
            shutil.copy2(f, target / KEPT_DIR / f.name)
            names.append(f"{KEPT_DIR}/{f.name}")
    return names


def _file_name_only(function: str) -> str:
    """'/my/folder/r.py:score' -> 'r.py:score': a run finds its copy of a reward file by the file's name
    (rewards.function_file), so the author's folder is not published."""
    file, _, name = function.rpartition(":")
    return f"{Path(file).name}:{name}" if file else function


def _publish_local_paths(run: RunDir, target: Path) -> None:
    """Edit the staged copies (never the run's files) so no absolute local path is pushed: the base
    model in adapter_config.json, the command in run_info.json and the path fields of recipe.yaml
    (see cards.publish_path)."""
    import json
    from dataclasses import replace

    import yaml

    from hfadapt.publishing.cards import public_command, publish_path, publish_recipe

    config = target / "adapter_config.json"  # peft's file, not a run file
    if config.is_file():
        data = json.loads(config.read_text())
        if data.get("base_model_name_or_path"):
            data["base_model_name_or_path"] = publish_path(data["base_model_name_or_path"], run.path)
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    staged = RunDir(target)
    if staged.has_info():
        info = staged.read_info()
        # reward files by name, as the pushed recipe names them (no local folder)
        hashes = {_file_name_only(k): v for k, v in info.reward_functions.items()}
        if info.command or hashes != info.reward_functions:
            info = replace(info, command=public_command(info.command, run.path) if info.command else info.command, reward_functions=hashes)
            staged.info_file.write_text(json.dumps(info.to_json(), indent=2) + "\n")
    if staged.is_run():
        recipe = publish_recipe(staged.recipe_dict(lenient=False), run.path)
        for reward in (recipe.get("rl") or {}).get("rewards") or []:
            if reward.get("type") == "function":
                reward["function"] = _file_name_only(reward["function"])
        staged.recipe_file.write_text(yaml.safe_dump(recipe, sort_keys=False))


def validate_card(path: Path) -> None:
    """Ask the Hub to validate the card's metadata before anything is pushed."""
    from huggingface_hub import ModelCard

    ModelCard.load(path).validate(repo_type="model")


def push(
    run_dir: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    license: str | None = None,
) -> str:
    """Push a finished run as one commit (stale files removed); returns the commit URL."""
    from huggingface_hub import HfApi

    run = RunDir.open(run_dir)
    if repo_id.count("/") != 1:
        raise HfadaptError(f"push: repo id must be 'namespace/name', got '{repo_id}'")
    token = _token()
    retry = f"`hfadapt push {run.path} {repo_id}" + (f" --revision {revision}" if revision else "") + "`"
    with tempfile.TemporaryDirectory() as tmp:
        stage(run, repo_id, Path(tmp), license)
        api = HfApi(token=token)
        try:
            validate_card(Path(tmp) / "README.md")
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=tmp,
                revision=revision,
                commit_message=commit_message or f"hfadapt: {run.recipe.adapter.method} adapter for {run.recipe.task}",
                delete_patterns="*",  # a re-push replaces the repo's files in the same single commit
            )
        except Exception as e:  # noqa: BLE001 - network, auth and validation errors all end here
            msg = f"push: could not push {run.path} to {repo_id}: {type(e).__name__}: {first_line(e)}. The run directory is unchanged; retry with {retry}"
            raise HfadaptError(_scrub(msg, token)) from None
    return str(info.commit_url)


def looks_like_repo_id(ref: str) -> bool:
    from hfadapt.publishing.cards import HUB_ID

    return ref.count("/") == 1 and bool(HUB_ID.match(ref)) and not Path(ref).exists()


def resolve_run(ref: str | Path, revision: str | None = None) -> RunDir:
    """A run directory, or a Hub adapter id ('user/adapter' or 'hub:user/adapter') downloaded to the cache."""
    ref = str(ref)
    if Path(ref).exists():
        return RunDir.open(ref)
    repo = ref[4:] if ref.startswith("hub:") else ref
    if not looks_like_repo_id(repo):
        raise HfadaptError(f"{ref}: run directory not found")
    from huggingface_hub import snapshot_download

    token = _token()
    try:
        path = snapshot_download(repo, revision=revision, allow_patterns=DOWNLOAD_PATTERNS, token=token)
    except Exception as e:  # noqa: BLE001
        raise HfadaptError(_scrub(f"{ref}: not a run directory, and the Hub repo could not be fetched: {type(e).__name__}: {first_line(e)}", token)) from None
    return RunDir.open(path, from_hub=True)


def download_recipe(repo: str) -> Path:
    """The recipe.yaml pushed with an adapter, for `hfadapt train hub:user/adapter`."""
    from huggingface_hub import hf_hub_download

    token = _token()
    try:
        return Path(hf_hub_download(repo, RECIPE_FILE, token=token))
    except Exception as e:  # noqa: BLE001
        raise HfadaptError(_scrub(f"hub:{repo}: could not fetch {RECIPE_FILE}: {type(e).__name__}: {first_line(e)}", token)) from None
