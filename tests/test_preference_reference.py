"""task: preference, the reference model: starting from an SFT run (model.adapter) and precomputed
reference log-probs (data.reference=precomputed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from hfadapt import Recipe, train
from tests.conftest import write_jsonl
from tests.test_preference import llama, pairs, recipe  # noqa: F401 - the module-scoped tiny Llama fixture


def _sft(tmp: Path, model: str, init: str = "config") -> Path:
    """A tiny causal-lm SFT run on the chosen answers, its Llama built from the config (model.init=config)
    or loaded from `model` (init=pretrained)."""
    rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in pairs(32, seed=7)]
    r = Recipe.from_dict({
        "name": "sft", "task": "causal-lm", "model": {"name_or_path": model, "init": init},
        "data": {"train_files": [str(write_jsonl(tmp / "sft.jsonl", rows))], "validation_split": None, "max_length": 32},
        "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"max_steps": 4, "batch_size": 8, "learning_rate": 2e-2, "log_with": []},
        "output": {"dir": str(tmp / "sft")},
    })
    return train(r).output_dir


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory: pytest.TempPathFactory, llama: str) -> Path:  # noqa: F811
    return _sft(tmp_path_factory.mktemp("sft"), llama)


def _from_sft(tmp: Path, model: str, sft: Path, **data: Any) -> Recipe:
    r = recipe(tmp, model, pairs(32), **data).to_dict()
    r["model"].update(init="config", adapter=str(sft))
    return Recipe.from_dict(r)


def _batch(tok: Any) -> dict[str, Any]:
    """Six held-out pairs as one [chosen; rejected] batch."""
    from datasets import Dataset

    from hfadapt.tasks.language import PairCollator, PairColumns, tokenize_pairs

    r = Recipe.from_dict({"task": "preference", "model": {"name_or_path": "x"},
                          "data": {"train_files": ["x.jsonl"], "max_length": 32, "max_prompt_length": 16}})
    ds = tokenize_pairs(Dataset.from_list(pairs(6, seed=11)), "train", tok, r, PairColumns(), 16, 32).dataset
    return PairCollator(tok.pad_token_id)([ds[i] for i in range(len(ds))])


def _logps(model: Any, tok: Any) -> torch.Tensor:
    from hfadapt.tasks.language import sequence_logps

    batch = _batch(tok)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_logps(logits, batch["input_ids"], batch["completion_mask"])[0]


def _plain_peft(adapter: Path) -> Any:
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(PeftConfig.from_pretrained(str(adapter)).base_model_name_or_path)
    return PeftModel.from_pretrained(base, str(adapter)).eval()


def test_dpo_from_an_sft_run(tmp_path: Path, llama: str, sft_run: Path) -> None:  # noqa: F811
    from transformers import AutoTokenizer

    from hfadapt.modeling.adapters import REFERENCE_ADAPTER, continue_adapter
    from hfadapt.modeling.models import StartingAdapter
    from hfadapt.tasks.preference import reference_logps

    result = train(_from_sft(tmp_path, llama, sft_run, train={"max_steps": 4}))
    # policy == reference (both the SFT adapter) at the first step
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-6)
    assert abs(result.losses[-1] - math.log(2)) > 1e-3  # training moved it
    adapter = result.output_dir / "adapter"
    assert not (adapter / REFERENCE_ADAPTER).exists()  # only the trained adapter is saved
    tok = AutoTokenizer.from_pretrained(adapter)
    # plain peft reloads the run onto its base to the same log-probs as hfadapt's reload, which differ from the SFT's
    from hfadapt.modeling.models import load_run_model
    from hfadapt.rundir.layout import RunDir
    from hfadapt.tasks.base import get_task

    ours = _logps(load_run_model(RunDir.open(result.output_dir), get_task("preference")).eval(), tok)
    plain = _logps(_plain_peft(adapter), tok)
    sft = _logps(_plain_peft(sft_run / "adapter"), tok)
    torch.testing.assert_close(plain, ours, atol=1e-6, rtol=0)
    assert (plain - sft).abs().max() > 1e-3
    # `hfadapt eval` of the run takes the SFT adapter as its reference too: the evaluation training ended with
    from hfadapt.inference.run_model import evaluate_run

    again = evaluate_run(result.output_dir)
    for k in ("loss", "rewards/margins", "rewards/chosen", "logps/chosen"):
        assert again[f"validation/{k}"] == pytest.approx(result.metrics[f"eval/{k}"], abs=1e-5), k
    # the reference of a run from the SFT adapter is that adapter: policy trainable, reference frozen and restored
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(sft_run / "base_model")
    model = continue_adapter(base, StartingAdapter(str(sft_run), str(sft_run / "adapter")), reference=True).eval()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".default." in n for n in trainable)
    batch = _batch(tok)
    ref, _ = reference_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    torch.testing.assert_close(ref, sft, atol=1e-6, rtol=0)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    assert model.active_adapter == "default"


def test_sft_adapter_of_another_base_is_refused(tmp_path: Path, sft_run: Path) -> None:
    from transformers import LlamaConfig

    from hfadapt.core.errors import HfadaptError

    other = tmp_path / "other"
    LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(other)
    r = recipe(tmp_path, str(other), pairs(8)).to_dict()
    r["model"].update(adapter=str(sft_run))
    with pytest.raises(HfadaptError, match="model.adapter: .* adapter of another base model .*hidden_size 32 vs 16"):
        train(Recipe.from_dict(r))
    assert not (tmp_path / "run").exists()


# ---- model.adapter: an SFT adapter pulled from the Hub ------------------------------------------------
HUB_LLAMA = "tiny-org/tiny-llama"


def test_an_adapter_shape_the_continued_adapter_does_not_have_is_refused(tmp_path: Path, llama: str, sft_run: Path) -> None:  # noqa: F811
    """The SFT adapter keeps its rank and targets: a recipe asking for others would be silently ignored."""
    from hfadapt.core.errors import HfadaptError

    r = _from_sft(tmp_path, llama, sft_run).to_dict()
    r["adapter"]["r"] = 4  # the SFT run's is 8
    with pytest.raises(HfadaptError, match=r"adapter.r: 4, but the adapter model.adapter continues .* has 8 and keeps it"):
        train(Recipe.from_dict(r))
    assert not (tmp_path / "run").exists()


@pytest.fixture
def token(hub_server: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    return hub_server.token


def _pushed_sft(tmp: Path, base: str, repo: str) -> Path:
    """An SFT run (init=pretrained) on `base`, pushed to `repo` on the test Hub; its run directory."""
    from hfadapt.cli import main

    from safetensors.torch import load_file

    sft = _sft(tmp, base, init="pretrained")
    weights = load_file(str(sft / "adapter" / "adapter_model.safetensors"))
    assert any(w.abs().max() > 0 for k, w in weights.items() if "lora_B" in k)  # policy = reference is not B = 0
    assert main(["push", str(sft), repo]) == 0
    return sft


def _dpo_from(tmp: Path, base: str, adapter: str) -> Recipe:
    r = recipe(tmp, base, pairs(32), train={"max_steps": 4}).to_dict()
    r["model"]["adapter"] = adapter
    return Recipe.from_dict(r)


def test_dpo_from_an_sft_adapter_pulled_from_the_hub(tmp_path: Path, llama: str, hub_server: Any, token: str,  # noqa: F811
                                                     capsys: pytest.CaptureFixture) -> None:
    """An SFT run over a Hub base, pushed, then named as model.adapter (hub:user/name or user/name) by a DPO
    run over the same Hub base: downloaded, it is both the policy's start and the frozen reference, so the
    first DPO step is ln 2, and training moves it."""
    if not hub_server.repo_exists(HUB_LLAMA):
        hub_server.seed(HUB_LLAMA, {p.name: p.read_bytes() for p in Path(llama).iterdir() if p.is_file()})
    _pushed_sft(tmp_path, HUB_LLAMA, "test-user/sft")
    for adapter in ("hub:test-user/sft", "test-user/sft"):
        (tmp_path / adapter.replace(":", "-").replace("/", "-")).mkdir()
        capsys.readouterr()
        result = train(_dpo_from(tmp_path / adapter.replace(":", "-").replace("/", "-"), HUB_LLAMA, adapter))
        assert result.losses[0] == pytest.approx(math.log(2), abs=1e-6), adapter
        assert abs(result.losses[-1] - math.log(2)) > 1e-3, adapter  # it trained
        assert "model.adapter:" not in capsys.readouterr().out  # the same base: nothing to say
        assert result.metrics["eval/rewards/margins"] != 0


def test_pulled_sft_adapter_of_a_local_base(tmp_path: Path, llama: str, hub_server: Any, token: str,  # noqa: F811
                                            capsys: pytest.CaptureFixture) -> None:
    """The SFT adapter's base was a local folder: the pushed adapter names `<local>/NAME`. The DPO run's
    model.name_or_path is the base: accepted where its architecture is the adapter's (one line says so),
    refused in one line naming what to set where it is not, nothing written."""
    from transformers import LlamaConfig

    from hfadapt.core.errors import HfadaptError

    repo = "test-user/sft-local-base"
    _pushed_sft(tmp_path, llama, repo)
    placeholder = f"<local>/{Path(llama).name}"
    assert placeholder in hub_server.files(repo)["adapter_config.json"].decode()
    (tmp_path / "dpo").mkdir()
    capsys.readouterr()
    result = train(_dpo_from(tmp_path / "dpo", llama, f"hub:{repo}"))
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("hfadapt: model.adapter:")]
    assert notes == [f"hfadapt: model.adapter: hub:{repo} was trained on a base model that was not published ({placeholder}); "
                     f"continuing it on model.name_or_path {llama}, which has its architecture: it must hold the weights "
                     "the adapter was trained on"]
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-6)
    assert abs(result.losses[-1] - math.log(2)) > 1e-3

    other = tmp_path / "other"
    LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(other)
    (tmp_path / "refused").mkdir()
    with pytest.raises(HfadaptError) as e:
        train(_dpo_from(tmp_path / "refused", str(other), f"hub:{repo}"))
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and "hidden_size 32 vs 16" in msg, msg
    assert msg.startswith(f"model.adapter: hub:{repo} is an adapter of another base model ({placeholder}) than model.name_or_path {other} ("), msg
    assert msg.endswith(f"; set model.name_or_path to the base it was trained on ({placeholder}, not published: a copy of those weights)"), msg
    assert not (tmp_path / "refused" / "run").exists()


# ---- data.reference: precomputed ------------------------------------------------------------------
def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the reference passes (preference.reference_logps calls)."""
    import hfadapt.tasks.preference as pref

    calls = [0]
    real = pref.reference_logps

    def counted(*a: Any, **k: Any) -> Any:
        calls[0] += 1
        return real(*a, **k)

    monkeypatch.setattr(pref, "reference_logps", counted)
    return calls


@pytest.mark.parametrize("start", ["fresh", "sft"])
def test_precomputed_reference_equals_the_reference_pass(start: str, tmp_path: Path, llama: str, sft_run: Path,  # noqa: F811
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)
    runs, passes = {}, {}
    for reference in ("adapter", "precomputed"):
        (tmp_path / reference).mkdir()
        kw = {"reference": reference, "train": {"max_steps": 4, "eval_steps": 2}}
        r = _from_sft(tmp_path / reference, llama, sft_run, **kw) if start == "sft" else recipe(tmp_path / reference, llama, pairs(32), **kw)
        at_step: list[int] = []
        calls[0] = 0
        runs[reference] = train(r, callbacks=[lambda s: at_step.append(calls[0])])
        passes[reference] = at_step
    on_the_fly, pre = runs["adapter"], runs["precomputed"]
    assert pre.losses == pytest.approx(on_the_fly.losses, abs=1e-5)  # the same first-step loss and curve
    if start == "fresh":
        assert on_the_fly.losses[0] == pytest.approx(math.log(2), abs=1e-6)
    for k, v in on_the_fly.metrics.items():
        if k.startswith(("eval/", "train/")) and isinstance(v, float):
            assert pre.metrics[k] == pytest.approx(v, abs=1e-5), k
    # on the fly: one reference pass per training micro-batch (and per evaluation batch at step 2);
    # precomputed: every reference pass happened before the first step (24 train + 8 validation pairs, batches of 8)
    assert passes["precomputed"] == [4, 4, 4, 4]
    assert passes["adapter"][0] == 1 and passes["adapter"][-1] > 4


def test_precomputed_reference_where_it_does_not_apply(tmp_path: Path, llama: str) -> None:  # noqa: F811
    from hfadapt.core.errors import HfadaptError

    assert recipe(tmp_path, llama, pairs(16), reference="precomputed").data.reference == "precomputed"
    with pytest.raises(HfadaptError, match="data.reference: orpo has no reference model"):
        recipe(tmp_path, llama, pairs(16), reference="precomputed", loss="orpo")
    with pytest.raises(HfadaptError, match="data.reference: precomputed is for paired losses"):
        recipe(tmp_path, llama, pairs(16), reference="precomputed", loss="kto")
