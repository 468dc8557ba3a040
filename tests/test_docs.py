"""The documentation's examples run: fenced blocks marked `offline` in README.md and docs/*.md.

Convention (also in docs/README.md): a fenced block whose info string is `bash offline`,
`python offline` or `yaml offline` is an example that works without network, GPU or Hub account,
from the repository root. Plain `bash` / `python` / `yaml` blocks are not run.

- The first `offline` block of README.md is the main job (`hfadapt train text/tiny-sentiment-offline`).
  It runs once, in a temporary directory that holds links to the repository's recipes/, examples/,
  benchmarks/ and model_cards/ and nothing else, so commands read as from the repository root while
  their outputs stay out of the checkout.
- Every other block runs on its own in a fresh copy of the directory the main job left
  (`runs/tiny-sentiment-offline` is there): `bash -euo pipefail -c BLOCK` for bash, the block executed
  as `__main__` in this process for python, `hfadapt validate` on the block saved as a file for yaml
  (a recipe). Blocks see neither each other's files nor each other's order.
- Blocks that only run torch-free subcommands (LIGHT below) and yaml blocks skip the main job and are
  fast; the others are marked `slow` (they still run in `python -m pytest -q`).

Nothing passes on nothing: the number of marked blocks has a floor (MIN_BLOCKS), and markers on
other languages or misspelt ones fail. Relative links between the pages (and their #anchors) are
checked too, and the README keeps the setup and test commands that .ci/run runs verbatim.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
REPO_FOLDERS = ("recipes", "examples", "benchmarks", "model_cards")  # linked into every working directory
LANGS = ("bash", "python", "yaml")
LIGHT = {"validate", "recipes", "schema", "--help", "-h", "--version"}  # subcommands that import no torch
MIN_BLOCKS = 10  # the pages hold 11 today; lower this only when examples are removed on purpose
MAIN_RUN = "runs/tiny-sentiment-offline"

ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # this venv's hfadapt/python
    "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),  # this checkout's code
}


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository root
    line: int  # of the opening fence
    lang: str
    words: tuple[str, ...]  # the rest of the info string
    code: str

    @property
    def offline(self) -> bool:
        return "offline" in self.words

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    blocks, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(`{3,})\s*(.*)$", lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group(1), m.group(2).split()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence), None)
        assert end is not None, f"{path}:{i + 1}: unclosed code fence"
        blocks.append(Block(str(path.relative_to(REPO)), i + 1, info[0] if info else "", tuple(info[1:]),
                            "\n".join(lines[i + 1:end]) + "\n"))
        i = end + 1
    return blocks


ALL_BLOCKS = [b for f in DOC_FILES for b in fenced_blocks(f)]
OFFLINE = [b for b in ALL_BLOCKS if b.offline]
MAIN_JOB = next((b for b in OFFLINE if b.path == "README.md"), None)


def commands(code: str) -> list[list[str]]:
    """The block's commands, one per non-empty line, comments dropped (the docs use no continuations)."""
    return [words for line in code.splitlines() if (words := shlex.split(line, comments=True))]


def is_light(block: Block) -> bool:
    if block.lang == "yaml":
        return True
    if block.lang != "bash":
        return False
    cmds = commands(block.code)
    return bool(cmds) and all(c[0] == "hfadapt" and len(c) > 1 and c[1] in LIGHT for c in cmds)


def bare_workdir(where: Path) -> Path:
    where.mkdir(parents=True)
    for name in REPO_FOLDERS:
        (where / name).symlink_to(REPO / name, target_is_directory=True)
    return where


def run_bash(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)


def check(block: Block, proc: subprocess.CompletedProcess) -> None:
    if proc.returncode != 0:
        pytest.fail(f"{block.id}: exit {proc.returncode}\n--- block\n{block.code}--- stdout (tail)\n"
                    f"{proc.stdout[-3000:]}\n--- stderr (tail)\n{proc.stderr[-3000:]}", pytrace=False)


@pytest.fixture(scope="module")
def main_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The README's main job, run once; the other slow blocks start from copies of its directory."""
    assert MAIN_JOB is not None and MAIN_JOB.lang == "bash"
    where = bare_workdir(tmp_path_factory.mktemp("docs") / "main-job")
    return where, run_bash(MAIN_JOB.code, where)


# --- the examples -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "block", [pytest.param(b, id=b.id, marks=() if is_light(b) else pytest.mark.slow) for b in OFFLINE]
)
def test_offline_example_runs(block: Block, tmp_path: Path, request: pytest.FixtureRequest,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    if block == MAIN_JOB:
        where, proc = request.getfixturevalue("main_job")
        check(block, proc)
        assert (where / MAIN_RUN / "adapter" / "adapter_model.safetensors").is_file(), \
            f"the other examples use {MAIN_RUN}/ from the README's main job"
        return
    if is_light(block):
        work = bare_workdir(tmp_path / "repo")
    else:
        where, proc = request.getfixturevalue("main_job")
        check(MAIN_JOB, proc)
        work = tmp_path / "repo"
        shutil.copytree(where, work, symlinks=True)
    if block.lang == "bash":
        check(block, run_bash(block.code, work))
    elif block.lang == "yaml":
        (work / "doc-recipe.yaml").write_text(block.code)
        check(block, run_bash("hfadapt validate doc-recipe.yaml", work))
    else:  # python: in this process (torch is imported already), as a script run from `work`
        monkeypatch.chdir(work)
        exec(compile(block.code, block.id, "exec"), {"__name__": "__main__"})


# --- the tests above cannot pass on nothing -----------------------------------------------------


def test_enough_offline_examples() -> None:
    ids = [b.id for b in OFFLINE]
    assert len(OFFLINE) >= MIN_BLOCKS, f"only {len(OFFLINE)} `offline` blocks: {ids}"
    assert MAIN_JOB is not None and commands(MAIN_JOB.code) == [["hfadapt", "train", "text/tiny-sentiment-offline"]], \
        "the README's first offline block is the main job the others build on"
    assert sum(b.path == "README.md" for b in OFFLINE) >= 3, ids  # main job, predict/eval, the Python API
    assert {b.lang for b in OFFLINE} == set(LANGS), ids
    assert any(not is_light(b) for b in OFFLINE) and any(is_light(b) for b in OFFLINE), ids
    assert any(c[:2] == ["hfadapt", "predict"] for b in OFFLINE for c in commands(b.code) if b.lang == "bash"), ids


def test_offline_markers_are_well_formed() -> None:
    """`offline` only on languages the runner knows, and no near-misses that would silently not run."""
    for b in ALL_BLOCKS:
        if b.offline:
            assert b.lang in LANGS, f"{b.id}: `offline` on a {b.lang or 'bare'} block"
            assert b.code.strip(), f"{b.id}: empty offline block"
        else:
            assert not any("offline" in w.lower() or "offine" in w.lower() for w in b.words), f"{b.id}: {b.words}"
    for b in OFFLINE:
        if b.lang == "bash":  # a block that is offline by its mark must not name what cannot be
            for c in commands(b.code):
                assert c[0] not in ("pip", "accelerate", "torchrun", "sbatch"), f"{b.id}: {' '.join(c)}"
                assert c[:2] != ["hfadapt", "push"], f"{b.id}: {' '.join(c)}"


# --- the pages hold together --------------------------------------------------------------------


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    heads = re.findall(r"^#{1,6}\s+(.*?)\s*$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def test_relative_links_resolve() -> None:
    broken = []
    for f in DOC_FILES:
        text = re.sub(r"```.*?```", "", f.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (f.parent / file).resolve() if file else f
            if not dest.exists():
                broken.append(f"{f.relative_to(REPO)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{f.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [p.name for p in DOC_FILES[1:] if f"(docs/{p.name})" not in readme]
    assert not missing, missing


def test_readme_keeps_the_ci_commands_verbatim() -> None:
    """.ci/run runs 'the README's setup and test commands, verbatim'."""
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    readme_bash = [b.code.strip() for b in ALL_BLOCKS if b.path == "README.md" and b.lang == "bash"]
    for line in ('python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]"', "python -m pytest -q"):
        assert line in ci and line in readme_bash, line
