"""Quiet by default: a `hfadapt train` process prints the summary line, one training bar, the metrics and
the run directory; the libraries' bars, load reports and warnings only with `--verbose`.

Two real processes (~10 s each), on fresh data and a fresh datasets cache each, so that the datasets
bars ("Generating train split", the "Tokenizing" maps) and transformers' "Loading weights" bar would
really be drawn.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import sentiment_rows, write_csv

# the libraries' own switches: unset, so the run shows what a user with a clean environment sees
LIBRARY_VARIABLES = (
    "TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS", "DATASETS_VERBOSITY",
    "HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS",
    "ACCELERATE_LOG_LEVEL", "PYTHONWARNINGS",
)


def train_process(folder: Path, tiny_bert: str, *flags: str) -> str:
    folder.mkdir()
    data = write_csv(folder / "reviews.csv", sentiment_rows(32, seed=len(flags) + 1))
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "task": "text-classification",
        "model": {"name_or_path": tiny_bert},
        "data": {"train_files": str(data), "validation_size": 0.25, "max_length": 16},
        "adapter": {"method": "lora", "r": 2},
        "train": {"max_steps": 2, "batch_size": 8, "log_with": []},
        "output": {"dir": str(folder / "run")},
    }))
    env = {k: v for k, v in os.environ.items() if k not in LIBRARY_VARIABLES}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HF_DATASETS_CACHE=str(folder / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "hfadapt", "train", str(recipe), *flags],
        capture_output=True, text=True, env=env, cwd=folder, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + "\n" + proc.stderr


def lines(output: str) -> list[str]:
    """Every line as shown on a terminal: tqdm redraws its bar after a carriage return."""
    return [part.strip() for line in output.splitlines() for part in line.split("\r") if part.strip()]


def test_a_run_prints_only_its_own_lines(tmp_path: Path, tiny_bert: str) -> None:
    quiet_output = train_process(tmp_path / "run", tiny_bert)
    shown = lines(quiet_output)
    assert any(line.startswith("hfadapt: text-classification | ") for line in shown), quiet_output
    assert any(re.match(r"train: +100%.*2/2", line) for line in shown), quiet_output  # the training bar
    assert any(line.startswith("eval/accuracy: ") for line in shown), quiet_output
    assert any(line.startswith("run directory: ") for line in shown), quiet_output
    for noise in ("warn", "Loading weights", "LOAD REPORT", "[transformers]", "Map", "Tokenizing", "Generating"):
        assert not [line for line in shown if noise.lower() in line.lower()], (noise, quiet_output)
    # nothing but the summary, the training bar, `key: value` metrics and the run directory
    ours = re.compile(r"hfadapt: text-classification \| |hfadapt: trained in |train: |[\w/]+: [-\w.]+$|run directory: ")
    assert [line for line in shown if not ours.match(line)] == [], quiet_output


def test_verbose_shows_the_libraries(tmp_path: Path, tiny_bert: str) -> None:
    shown = lines(train_process(tmp_path / "run", tiny_bert, "--verbose"))
    for library_output in ("Tokenizing train", "Generating train split", "Loading weights"):
        assert any(library_output in line for line in shown), (library_output, shown)
    assert any(line.startswith("run directory: ") for line in shown)


def test_the_users_own_settings_win(tmp_path: Path) -> None:
    """A library whose variables the user set is left alone, PYTHONWARNINGS keeps the warnings, and
    nothing heavy is imported to quiet the rest (a light process, no model)."""
    snippet = (
        "import json, os, sys, warnings\n"
        "from hfadapt.core.verbosity import configure\n"
        "configure(verbose=False)\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'huggingface_hub') if m in sys.modules]\n"
        "print(json.dumps({'env': {k: os.environ.get(k) for k in sys.argv[1:]}, 'heavy': heavy,\n"
        "                  'filters': [str(f[2]) for f in warnings.filters if f[0] == 'ignore' and f[3]]}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in LIBRARY_VARIABLES}
    env.update(TRANSFORMERS_VERBOSITY="info", HF_HUB_DISABLE_PROGRESS_BARS="0", PYTHONWARNINGS="default")
    names = ["TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS", "HF_HUB_DISABLE_PROGRESS_BARS",
             "HF_HUB_VERBOSITY", "DATASETS_VERBOSITY", "HF_DATASETS_DISABLE_PROGRESS_BARS"]
    r = subprocess.run([sys.executable, "-c", snippet, *names], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["env"] == {
        "TRANSFORMERS_VERBOSITY": "info", "TRANSFORMERS_NO_ADVISORY_WARNINGS": None,  # the user's transformers
        "HF_HUB_DISABLE_PROGRESS_BARS": "0", "HF_HUB_VERBOSITY": None,  # the user's Hub
        "DATASETS_VERBOSITY": "error", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # quieted
    }
    assert got["heavy"] == []
    assert got["filters"] == []  # PYTHONWARNINGS given: no warning is hidden
