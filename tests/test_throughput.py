"""Throughput and memory figures: present in metrics.json and trainer_state.json, consistent with each
other, counted per optimizer step across gradient accumulation. (Two processes and a resumed run:
tests/test_distributed.py checks that each example counts once and that a resumed run's figures
cover the whole run.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hfadapt.training.throughput import Meter, default_units, figures, summary_line

BATCH = 8  # sentiment_recipe's train.batch_size
STEPS = 4  # finished_run's train.max_steps


def test_finished_run_has_throughput_figures(finished_run) -> None:
    m = json.loads((finished_run.output_dir / "metrics.json").read_text())
    for key in ("train_time_s", "samples", "samples_per_s", "steps_per_s", "tokens", "tokens_per_s",
                "data_share", "model_share", "eval_share", "checkpoint_share", "peak_rss_mb", "sessions"):
        assert f"perf/{key}" in m, key
    assert m["perf/samples"] == STEPS * BATCH
    assert m["perf/samples_per_s"] * m["perf/train_time_s"] == pytest.approx(STEPS * BATCH, rel=1e-3)
    assert m["perf/steps_per_s"] * m["perf/train_time_s"] == pytest.approx(STEPS, rel=1e-3)
    assert m["perf/tokens_per_s"] * m["perf/train_time_s"] == pytest.approx(m["perf/tokens"], rel=1e-3)
    # real tokens only: at least [CLS] + 3 words + [SEP] per example, at most max_length (16)
    assert 5 * m["perf/samples"] <= m["perf/tokens"] <= 16 * m["perf/samples"]
    shares = [m[f"perf/{k}_share"] for k in ("data", "model", "eval", "checkpoint")]
    assert all(0 <= s <= 1 for s in shares) and sum(shares) == pytest.approx(1.0, abs=1e-6)
    assert m["perf/peak_rss_mb"] > 50 and m["perf/sessions"] == 1
    state = json.loads((finished_run.output_dir / "trainer_state.json").read_text())
    assert state["perf"]["samples"] == STEPS * BATCH and state["perf"]["steps"] == STEPS


def test_gradient_accumulation_counts_every_micro_batch(make_recipe) -> None:
    from hfadapt import train

    result = train(make_recipe(train={"max_steps": 2, "batch_size": 4, "gradient_accumulation_steps": 3}, data={"validation_split": None}))
    perf = {k[5:]: v for k, v in result.metrics.items() if k.startswith("perf/")}
    assert perf["samples"] == 2 * 3 * 4
    assert perf["steps_per_s"] * perf["train_time_s"] == pytest.approx(2, rel=1e-3)
    assert summary_line(perf).startswith("hfadapt: trained in ")


def test_meter_counts_units_the_task_names_and_adds_earlier_sessions() -> None:
    import torch

    class Accel:
        num_processes = 1
        device = torch.device("cpu")

    # an audio-like task: 16 kHz samples, the mask marks real audio
    meter = Meter(lambda b: {"audio_seconds": b["attention_mask"].sum() / 16000},
                  base={"sessions": 1, "wall_s": 2.0, "samples": 10, "steps": 5, "units": {"audio_seconds": 1.0}, "peak_rss_bytes": 1})
    meter.start(5)
    for batch in meter.batches([{"input_values": torch.zeros(2, 32000), "attention_mask": torch.ones(2, 32000)}] * 3):
        meter.count(batch)
    totals = meter.totals(Accel(), 8)
    assert totals["samples"] == 16 and totals["steps"] == 8 and totals["sessions"] == 2
    assert totals["units"]["audio_seconds"] == pytest.approx(1.0 + 3 * 4.0)
    f = figures(totals)
    assert f["audio_seconds_per_s"] == pytest.approx(13.0 / totals["wall_s"])
    assert default_units({"pixel_values": torch.zeros(2, 3, 4, 4)}) == {}
