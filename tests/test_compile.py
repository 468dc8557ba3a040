"""train.compile: the compiled training forward trains like the eager one."""

from __future__ import annotations

import shutil

import pytest

from hfadapt import train


@pytest.mark.slow  # a cold inductor cache compiles for about a minute on 2 cores
@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="CPU inductor needs a C compiler")
def test_compiled_run_matches_eager(make_recipe, tmp_path, capsys):
    common = {"max_steps": 4, "learning_rate": 1e-2, "log_with": []}
    eager = train(make_recipe(train=common, adapter={"dropout": 0.0}, output={"dir": str(tmp_path / "eager")}))
    compiled = train(make_recipe(train={**common, "compile": True}, adapter={"dropout": 0.0}, output={"dir": str(tmp_path / "compiled")}))
    out = capsys.readouterr().out
    assert "train.compile:" in out and "fell back" not in out, out
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-4, abs=1e-5)
    assert compiled.metrics["perf/compiled_graphs"] >= 1
    assert compiled.metrics["perf/compile_s"] > 0 and compiled.metrics["perf/steady_step_s"] > 0
    assert compiled.metrics["eval/accuracy"] == pytest.approx(eager.metrics["eval/accuracy"])


def test_compile_falls_back_with_a_reason(make_recipe, tmp_path, capsys, monkeypatch):
    import hfadapt.training.compiling as compiling

    monkeypatch.setattr(compiling.shutil, "which", lambda name: None)
    result = train(make_recipe(train={"max_steps": 2, "compile": True, "log_with": []}))
    assert "train.compile: training eagerly: the CPU inductor backend needs a C compiler" in capsys.readouterr().out
    assert len(result.losses) == 2 and "perf/compile_s" not in result.metrics
