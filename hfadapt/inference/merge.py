"""`hfadapt merge RUN OUT`: fold the adapter into the base weights -> a standalone transformers model."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hfadapt.core.errors import HfadaptError
from hfadapt.rundir.layout import check_writable_folder


def check_output_folder(out: Path) -> None:
    """OUT must be a folder or not exist, under a folder that can be written; checked before any work."""
    check_writable_folder(out, "merge", "output folder")


def check_output_apart_from_run(out: Path, run_path: Path) -> None:
    """OUT must not be the run, a folder holding it, or a folder inside it: --overwrite would delete the run."""
    o, r = out.resolve(), Path(run_path).resolve()
    if o == r:
        raise HfadaptError(f"merge: the output folder {out} is the run itself; choose a folder outside the run")
    if o in r.parents:
        raise HfadaptError(f"merge: the output folder {out} contains the run {run_path}; choose a folder outside the run")
    if r in o.parents:
        raise HfadaptError(f"merge: the output folder {out} is inside the run {run_path}; choose a folder outside the run")


def merge(run_ref: str | Path, out: str | Path, overwrite: bool = False, allow_quantized: bool = False,
          base_model: str | None = None) -> Path:
    """Save the run's adapter merged into its base as a standalone model in `out`; `base_model` (local
    folder or Hub id) is the base to merge into instead of the one the adapter config names (`--base-model`:
    needed for a pulled adapter whose base was a local folder)."""
    from hfadapt.modeling.adapters import is_peft
    from hfadapt.publishing.cards import render_merged_card
    from hfadapt.publishing.hub import resolve_run
    from hfadapt.inference.run_model import load_model_and_processor

    out = Path(out)
    check_output_folder(out)
    run = resolve_run(run_ref)
    check_output_apart_from_run(out, run.path)
    recipe = run.recipe
    if not is_peft(recipe.adapter.method):
        raise HfadaptError(f"merge: {run.path} was trained with adapter.method={recipe.adapter.method}; its model/ is already standalone")
    if recipe.adapter.method in ("prefix", "prompt"):
        raise HfadaptError(f"merge: {recipe.adapter.method} tuning adds virtual tokens, not weight deltas; there is nothing to merge")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise HfadaptError(f"merge: {out} exists and is not empty; choose another folder or pass --overwrite")
    model, processor, _ = load_model_and_processor(run, base_model=base_model, ref=run_ref)
    base = model.get_base_model()
    quantized = getattr(base.config, "quantization_config", None) is not None or getattr(base, "is_quantized", False)
    if quantized and not allow_quantized:
        raise HfadaptError(
            "merge: the base model is quantized; merging into quantized weights rounds the adapter away. "
            "Load the base unquantized (model.dtype) or pass --allow-quantized to merge anyway"
        )
    merged = model.merge_and_unload()
    # write beside OUT under a fresh name, then swap: the old OUT goes only once the new one is complete
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        merged.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "README.md").write_text(render_merged_card(run, out.name))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # only the folder made above
        raise
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old)  # an empty fresh folder: rename over it
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)
    return out
