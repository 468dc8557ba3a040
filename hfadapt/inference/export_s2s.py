"""seq2seq export: an encoder graph and a decoder graph with self-attention past key/values.

`encoder.onnx` takes `input_ids`, `attention_mask` and gives `encoder_hidden_states`; `model.onnx`
(the decoder) takes the new `decoder_input_ids`, the encoder's states and mask, and the
self-attention past (`past_key_values.N.key` / `.value`), and gives `logits` and `present.N.key` /
`.value`. Cross-attention keys and values are recomputed from the encoder states at every step
rather than carried as past: one decoder graph then serves the first step and the others.

Attention runs as transformers' eager implementation in the export: with SDPA, torch.onnx's
decomposition of T5's attention output (`reshape` of a transposed tensor with dynamic axes) fails
("Cannot view a tensor with shape [b, s, 4, 8] ... as (b, s, 32)"); eager attention exports and
computes the same values.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.inference.onnx_model import ENCODER_FILE, PAST_PREFIX, PRESENT_PREFIX, load_onnx_session_model

if TYPE_CHECKING:
    from torch import Tensor
    from torch.nn import Module

SOURCES = (["the big red cat", "a small dog"],  # traced with
           ["the big blue bird", "the", "a small green fish and the big red cat and a dog"])  # checked with
CHECK_STEPS = 3  # greedy tokens decoded after the start token in the check
ENCODER_OUTPUT = "encoder_hidden_states"


def _inner(model: Module) -> Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _modules(model: Module) -> tuple[Module, Module]:
    """(encoder, flat decoder) around the transformers model: the decoder takes and returns flat past tensors."""
    import torch
    from transformers import DynamicCache, EncoderDecoderCache

    inner = _inner(model)
    cache_arg = "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
            return self.inner.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    class FlatDecoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, decoder_input_ids: Tensor, encoder_hidden_states: Tensor, encoder_attention_mask: Tensor,
                    *past: Tensor) -> tuple[Tensor, ...]:
            pairs = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
            # An empty cross-attention cache: the decoder recomputes cross keys/values from the encoder states.
            cache = EncoderDecoderCache(DynamicCache(ddp_cache_data=pairs, config=self.inner.config), DynamicCache(config=self.inner.config))
            out = self.inner(encoder_outputs=(encoder_hidden_states,), attention_mask=encoder_attention_mask,
                             decoder_input_ids=decoder_input_ids, use_cache=True, **{cache_arg: cache})
            present = (getattr(out, "cache", None) or out.past_key_values).self_attention_cache
            return (out.logits, *(t for layer in present.layers for t in (layer.keys, layer.values)))

    return Encoder().eval(), FlatDecoder().eval()


def _empty_past(model: Module, batch: int) -> list[Tensor]:
    """Zero-length self-attention past, shaped as the decoder's own cache (probed on one token)."""
    import torch

    inner = _inner(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = torch.full((1, 1), _start_id(inner.config))
        out = inner(input_ids=start, decoder_input_ids=start, use_cache=True)
    present = (getattr(out, "cache", None) or out.past_key_values).self_attention_cache
    return [torch.zeros(batch, t.shape[1], 0, t.shape[3]) for layer in present.layers for t in (layer.keys, layer.values)]


def _start_id(config: Any) -> int:
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        raise HfadaptError("export: the model's config has no decoder_start_token_id; a seq2seq export needs it to start decoding")
    return int(start)


def names(n_past: int) -> tuple[list[str], list[str]]:
    kv = [f"{i}.{w}" for i in range(n_past // 2) for w in ("key", "value")]
    return (["decoder_input_ids", ENCODER_OUTPUT, "encoder_attention_mask", *(PAST_PREFIX + n for n in kv)],
            ["logits", *(PRESENT_PREFIX + n for n in kv)])


def decode(encode: Any, step: Any, batch: dict[str, Tensor], past: list[Any], start: int,
           tokens: list[Tensor] | None = None) -> tuple[list[Tensor], list[Tensor]]:
    """Logits of CHECK_STEPS + 1 decoder steps from the start token, fed `tokens` (the reference's) or the greedy ones."""
    import torch

    states = encode(batch["input_ids"], batch["attention_mask"])
    ids = torch.full((batch["input_ids"].shape[0], 1), start)
    out, fed = [], []
    for i in range(CHECK_STEPS + 1):
        logits, past = step(ids, states, batch["attention_mask"], past)
        logits = torch.as_tensor(logits)
        out.append(logits)
        token = tokens[i] if tokens is not None else logits[:, -1].argmax(-1)
        fed.append(token)
        ids = token[:, None]
    return out, fed


def reference(model: Module, batches: list[dict[str, Tensor]]) -> list[tuple[dict[str, Tensor], list[Tensor], list[Tensor]]]:
    """(batch, logits per step, tokens) of the run's model as loaded (adapter unmerged) on each batch."""
    import torch

    encoder, decoder = _modules(model)

    def encode(ids: Tensor, mask: Tensor) -> Tensor:
        with torch.no_grad():
            return encoder(ids, mask)

    def step(ids: Tensor, states: Tensor, mask: Tensor, past: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logits, *present = decoder(ids, states, mask, *past)
        return logits, present

    start = _start_id(_inner(model).config)
    return [(b, *decode(encode, step, b, _empty_past(model, b["input_ids"].shape[0]), start)) for b in batches]


def export_graph(model: Module, batch: dict[str, Tensor], path: Path, opset: int | None) -> tuple[list[str], list[str]]:
    """Write the decoder to `path` and the encoder beside it (ENCODER_FILE); batch, sequence,
    decoder_sequence and past_sequence dynamic. Returns the decoder's (inputs, outputs)."""
    import torch

    _inner(model).set_attn_implementation("eager")  # SDPA's T5 attention output does not decompose (module doc)
    encoder, decoder = _modules(model)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    start = torch.full((ids.shape[0], 1), _start_id(_inner(model).config))
    with torch.no_grad():
        states = encoder(ids, mask)
        past = list(decoder(start, states, mask, *_empty_past(model, ids.shape[0])))[1:]
    # The traced step's length differs from the past's and from 1, so neither is taken for a constant.
    step_ids = torch.cat([start, start], 1)
    b, s = torch.export.Dim("batch"), torch.export.Dim("sequence")
    t, p = torch.export.Dim("decoder_sequence"), torch.export.Dim("past_sequence")
    inputs, outputs = names(len(past))
    common = {"dynamo": True, "external_data": False, "verbose": False, "report": False, "opset_version": opset}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(encoder, (ids, mask), str(path.parent / ENCODER_FILE), dynamic_shapes=({0: b, 1: s}, {0: b, 1: s}),
                              input_names=["input_ids", "attention_mask"], output_names=[ENCODER_OUTPUT], **common)
            torch.onnx.export(decoder, (step_ids, states, mask, *past), str(path), input_names=inputs, output_names=outputs,
                              dynamic_shapes=({0: b, 1: t}, {0: b, 1: s}, {0: b, 1: s}, tuple({0: b, 2: p} for _ in past)), **common)
        except Exception as e:  # noqa: BLE001
            raise HfadaptError(f"export: PyTorch's ONNX exporter could not export the encoder-decoder model: {first_line(e)}") from None
    return inputs, outputs


def check(recorded: list[tuple[dict[str, Tensor], list[Tensor], list[Tensor]]], config: Any, path: Path) -> float:
    """The largest |ONNX - PyTorch| over the logits of every decoder step, fed the reference's tokens."""
    onnx_model = load_onnx_session_model(path, config)
    worst = 0.0
    for batch, want, tokens in recorded:
        got, _ = decode(onnx_model.encode, onnx_model.decoder_step, batch, onnx_model.empty_past(batch["input_ids"].shape[0]),
                        _start_id(config), tokens)
        for g, w in zip(got, want):
            if g.shape != w.shape:
                return float("inf")
            worst = max(worst, float((g - w).abs().max()))
    return worst
