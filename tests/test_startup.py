"""Start-up stays cheap: `--help` imports no task module and no heavy library, and `validate`
builds the recipe model of the one task it reads (timings are measured by hand, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
from hfadapt.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
from hfadapt.core import recipe
print(json.dumps({
    "tasks": sorted(m for m in sys.modules if m.startswith("hfadapt.tasks.")),
    "recipe_models": sorted(recipe._TASK_RECIPES),
    "heavy": sorted(m for m in ("torch", "transformers", "peft", "datasets", "accelerate", "huggingface_hub") if m in sys.modules),
}))
"""


def _imports_after(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_help_imports_no_task_module_and_no_heavy_library() -> None:
    seen = _imports_after("--help")
    assert seen == {"tasks": [], "recipe_models": [], "heavy": []}


def test_validate_builds_only_the_recipe_model_of_its_task() -> None:
    seen = _imports_after("validate", "recipes/text/sst2-bert-lora.yaml")
    assert seen["recipe_models"] == ["text-classification"]
    from hfadapt.tasks import SHARED_MODULES

    shared = {f"hfadapt.tasks.{m}" for m in SHARED_MODULES}
    assert [m for m in seen["tasks"] if m not in shared] == ["hfadapt.tasks.text_classification"]
    assert seen["heavy"] == []


def test_the_probe_sees_a_task_module_when_one_is_imported() -> None:
    """The probe itself can fail: a command that loads every task shows them all."""
    seen = _imports_after("schema")
    assert "hfadapt.tasks.causal_lm" in seen["tasks"] and len(seen["recipe_models"]) >= 8
