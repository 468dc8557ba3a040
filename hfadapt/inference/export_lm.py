"""causal-lm export: the decoder with past key/values as flat graph inputs and outputs.

transformers 5 keeps past key/values in a `DynamicCache`, which the ONNX graph cannot take; `FlatCache`
wraps the model so that it takes `past_key_values.N.key` / `.value` tensors (batch, heads,
past_sequence, head_dim), builds the cache from them, and returns the logits and each layer's
`present.N.key` / `.value`. One graph serves both the prompt (past_sequence 0: onnxruntime takes empty
tensors) and each new token. The check decodes a few greedy steps of sample prompts through the
run's model (adapter unmerged) and through onnxruntime, on the same tokens, and compares the logits
of every real (unpadded) position.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.inference.onnx_model import PAST_PREFIX, PRESENT_PREFIX, load_onnx_session_model, position_ids

if TYPE_CHECKING:
    from torch import Tensor
    from torch.nn import Module

PROMPTS = (["the film was good", "a plot and the music"],  # traced with
           ["say one two three", "the", "red green blue yellow black white and the a is was"])  # checked with
CHECK_STEPS = 3  # greedy tokens decoded after the prompt in the check


def _flat_cache_module(model: Module) -> Module:
    import torch
    from transformers import DynamicCache

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(inner.forward).parameters
    cache_arg = "cache" if "cache" in params else "past_key_values"  # transformers 5.2x renamed it
    layers = model.config.get_text_config().num_hidden_layers

    class FlatCache(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model
            self.takes_positions = "position_ids" in params

        def forward(self, input_ids: Tensor, attention_mask: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
            kwargs: dict[str, Any] = {}
            if self.takes_positions:
                kwargs["position_ids"], rest = rest[0], rest[1:]
            cache = DynamicCache(ddp_cache_data=[(rest[2 * i], rest[2 * i + 1]) for i in range(layers)], config=model.config)
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, **{cache_arg: cache}, **kwargs)
            present = getattr(out, "cache", None) or out.past_key_values
            return (out.logits, *(t for layer in present.layers for t in (layer.keys, layer.values)))

    return FlatCache().eval()


def names(model: Module) -> tuple[list[str], list[str]]:
    layers = model.config.get_text_config().num_hidden_layers
    kv = [f"{i}.{w}" for i in range(layers) for w in ("key", "value")]
    positions = ["position_ids"] if _flat_cache_module(model).takes_positions else []
    return ["input_ids", "attention_mask", *positions, *(PAST_PREFIX + n for n in kv)], ["logits", *(PRESENT_PREFIX + n for n in kv)]


def _step_inputs(flat: Module, ids: Tensor, mask: Tensor, past: list[Tensor]) -> tuple[Tensor, ...]:
    return (ids, mask, *([position_ids(mask, ids.shape[1])] if flat.takes_positions else []), *past)


def _none_past(model: Module, batch: int) -> list[Tensor]:
    import torch

    config = model.config.get_text_config()
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return [torch.zeros(batch, heads, 0, head_dim) for _ in range(2 * config.num_hidden_layers)]


def decode(step: Any, batch: dict[str, Tensor], past: list[Any], tokens: list[Tensor] | None = None) -> tuple[list[Tensor], list[Tensor]]:
    """Logits of the prompt and of CHECK_STEPS further tokens through `step(ids, mask, past) -> (logits,
    present)`, the tokens fed being `tokens` (the reference's) or the greedy ones; ([logits], [tokens])."""
    import torch

    ids, mask = batch["input_ids"], batch["attention_mask"]
    out, fed = [], []
    for i in range(CHECK_STEPS + 1):
        logits, past = step(ids, mask, past)
        logits = torch.as_tensor(logits)
        out.append(logits)
        token = tokens[i] if tokens is not None else logits[:, -1].argmax(-1)
        fed.append(token)
        ids, mask = token[:, None], torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return out, fed


def reference(model: Module, batches: list[dict[str, Tensor]]) -> list[tuple[dict[str, Tensor], list[Tensor], list[Tensor]]]:
    """(batch, logits per step, tokens) of the run's model, as loaded (adapter unmerged), on each batch."""
    import torch

    flat = _flat_cache_module(model)

    def step(ids: Tensor, mask: Tensor, past: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logits, *present = flat(*_step_inputs(flat, ids, mask, past))
        return logits, present

    return [(b, *decode(step, b, _none_past(model, b["input_ids"].shape[0]))) for b in batches]


def export_graph(model: Module, batch: dict[str, Tensor], path: Path, opset: int | None) -> tuple[list[str], list[str]]:
    """Write the decoder (folded model) to `path`, traced on a step of new tokens after `batch`'s prompts:
    batch, sequence and past_sequence dynamic."""
    import torch

    flat = _flat_cache_module(model)
    inputs, outputs = names(model)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        past = list(flat(*_step_inputs(flat, ids, mask, _none_past(model, ids.shape[0]))))[1:]
    # The traced step's length differs from the past's and from 1, so neither is taken for a constant.
    new = 2 if ids.shape[1] != 2 else 3
    step_ids = ids[:, :new]
    step_mask = torch.cat([mask, torch.ones_like(step_ids)], 1)
    args = _step_inputs(flat, step_ids, step_mask, past)
    b, s, p = torch.export.Dim("batch"), torch.export.Dim("sequence"), torch.export.Dim("past_sequence")
    dynamic = ({0: b, 1: s}, {0: b, 1: torch.export.Dim.AUTO},  # then *rest: position ids, the past
               (*([{0: b, 1: s}] if flat.takes_positions else []), *({0: b, 2: p} for _ in past)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(flat, args, str(path), dynamic_shapes=dynamic, dynamo=True, external_data=False, verbose=False,
                              report=False, input_names=inputs, output_names=outputs, opset_version=opset)
        except Exception as e:  # noqa: BLE001 - the TorchScript tracer cannot take the cache either
            raise HfadaptError(f"export: PyTorch's ONNX exporter could not export the decoder with past key/values: {first_line(e)}") from None
    _name_total_axis(path)
    return inputs, outputs


def _name_total_axis(path: Path) -> None:
    """The attention mask's second axis is past_sequence + sequence; torch.export names it s<N>."""
    import onnx

    graph = onnx.load(str(path))
    for i in graph.graph.input:
        if i.name == "attention_mask":
            i.type.tensor_type.shape.dim[1].dim_param = "past_sequence + sequence"
    onnx.save(graph, str(path))


def check(recorded: list[tuple[dict[str, Tensor], list[Tensor], list[Tensor]]], config: Any, path: Path) -> float:
    """The largest |ONNX - PyTorch| over the logits of every unpadded position, prompt and decoded steps."""
    onnx_model = load_onnx_session_model(path, config)
    worst = 0.0
    for batch, want, tokens in recorded:
        got, _ = decode(onnx_model.step, batch, onnx_model.empty_past(batch["input_ids"].shape[0]), tokens)
        real = batch["attention_mask"].bool()  # the prompt's padded positions attend to nothing: their logits are noise
        for i, (g, w) in enumerate(zip(got, want)):
            if g.shape != w.shape:
                return float("inf")
            diff = (g - w).abs() if i else (g - w).abs()[real]
            worst = max(worst, float(diff.max()))
    return worst
