"""An exported folder (`hfadapt export RUN OUT --format onnx`) run through onnxruntime.

`OnnxModel` stands where the PyTorch model stands for a task's `predict` hook: called with the
batch the hook encodes, it returns the same output fields as torch tensors, so `hfadapt predict OUT`
shares every line of each task's pre- and postprocessing with `hfadapt predict RUN`.

A causal-lm export is a decoder with past key/values (`past_key_values.N.key` / `.value` in,
`present.N.key` / `.value` out): `OnnxModel.generate` runs the greedy loop that transformers'
`generate` runs, so the causal-lm predict hook takes the stand-in as it takes the PyTorch model.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from hfadapt.core.errors import HfadaptError

if TYPE_CHECKING:
    from hfadapt.core.recipe import Recipe
    from hfadapt.data.labels import LabelInfo
    from hfadapt.tasks.base import Processor

MODEL_FILE = "model.onnx"
ENCODER_FILE = "encoder.onnx"  # seq2seq: the encoder beside the decoder (MODEL_FILE)
PAST_PREFIX, PRESENT_PREFIX = "past_key_values.", "present."
INFO_FILE = "export_info.json"
RECIPE_FILE = "recipe.yaml"


def is_export_folder(ref: str | Path) -> bool:
    path = Path(ref)
    return path.is_dir() and (path / INFO_FILE).is_file() and (path / MODEL_FILE).is_file()


def read_export_info(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / INFO_FILE).read_text())
    except (OSError, ValueError) as e:
        raise HfadaptError(f"{folder / INFO_FILE}: not readable JSON ({e})") from None


def _torch_module() -> type:
    import torch

    class OnnxModel(torch.nn.Module):
        """model(**batch) -> outputs with the exported names (`logits`, `start_logits`, ...) as tensors."""

        def __init__(self, path: Path, config: Any, generation_config: Any = None) -> None:
            import onnxruntime as ort

            super().__init__()
            options = ort.SessionOptions()
            options.intra_op_num_threads = max(1, torch.get_num_threads())
            options.log_severity_level = 3  # errors only: onnxruntime's warnings are library noise
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            encoder = Path(path).parent / ENCODER_FILE
            self.encoder = ort.InferenceSession(str(encoder), options, providers=["CPUExecutionProvider"]) if encoder.is_file() else None
            self.input_names = [i.name for i in self.session.get_inputs()]
            self.output_names = [o.name for o in self.session.get_outputs()]
            self.config = config
            self.generation_config = generation_config
            self.past_names = [n for n in self.input_names if n.startswith(PAST_PREFIX)]
            # (heads, head_dim) of each past input: its axes are (batch, heads, past_sequence, head_dim)
            self.past_shapes = {i.name: (i.shape[1], i.shape[3]) for i in self.session.get_inputs() if i.name in self.past_names}
            # Tasks ask `next(model.parameters()).device` or `model.device` where to put the batch: the CPU.
            self._anchor = torch.nn.Parameter(torch.empty(0), requires_grad=False)

        @property
        def device(self) -> Any:
            return self._anchor.device

        def forward(self, **batch: Any) -> SimpleNamespace:
            missing = [n for n in self.input_names if n not in batch]
            if missing:
                raise HfadaptError(f"predict: the exported model needs the input(s) {', '.join(missing)}, which the processor did not give")
            feed = {n: batch[n].detach().cpu().numpy() for n in self.input_names}
            outputs = self.session.run(self.output_names, feed)
            return SimpleNamespace(**{n: torch.from_numpy(o) for n, o in zip(self.output_names, outputs)})

        # ---- decoders with past key/values ------------------------------------------------------
        def empty_past(self, batch: int) -> list[Any]:
            import numpy as np

            return [np.zeros((batch, h, 0, d), dtype=np.float32) for h, d in (self.past_shapes[n] for n in self.past_names)]

        def step(self, input_ids: Any, attention_mask: Any, past: list[Any]) -> tuple[Any, list[Any]]:
            """One decoder call: `input_ids` are the new tokens, `attention_mask` covers past and new ones,
            `past` the previous call's presents (numpy); returns (logits, presents) as numpy arrays."""
            feed = {"input_ids": input_ids.cpu().numpy(), "attention_mask": attention_mask.cpu().numpy(), **dict(zip(self.past_names, past))}
            if "position_ids" in self.input_names:
                feed["position_ids"] = position_ids(attention_mask, input_ids.shape[1]).cpu().numpy()
            logits, *present = self.session.run(self.output_names, feed)
            return logits, present

        def encode(self, input_ids: Any, attention_mask: Any) -> Any:
            """seq2seq: the encoder's hidden states (numpy) of the sources."""
            return self.encoder.run(None, {"input_ids": input_ids.cpu().numpy(), "attention_mask": attention_mask.cpu().numpy()})[0]

        def decoder_step(self, decoder_input_ids: Any, encoder_hidden_states: Any, attention_mask: Any, past: list[Any]) -> tuple[Any, list[Any]]:
            """seq2seq: one decoder call on the new tokens, the encoder states and mask, and the previous presents."""
            feed = {"decoder_input_ids": decoder_input_ids.cpu().numpy(), "encoder_hidden_states": encoder_hidden_states,
                    "encoder_attention_mask": attention_mask.cpu().numpy(), **dict(zip(self.past_names, past))}
            logits, *present = self.session.run(self.output_names, feed)
            return logits, present

        def generate(self, input_ids: Any, attention_mask: Any, max_new_tokens: int, num_beams: int = 1, do_sample: bool = False,
                     eos_token_id: int | list[int] | None = None, pad_token_id: int | None = None, **_: Any) -> Any:
            """Greedy decoding as transformers' `generate` does it: a finished row gets pad tokens, and
            decoding stops when every row has ended in an EOS or after max_new_tokens."""
            if not self.past_names:
                raise HfadaptError("predict: this exported model is not a decoder with past key/values; it cannot generate")
            if do_sample or num_beams != 1:
                raise HfadaptError("predict: an ONNX export generates greedily; set generation.do_sample=false and generation.num_beams=1")
            gen = self.generation_config
            eos = eos_token_id if eos_token_id is not None else getattr(gen, "eos_token_id", None)
            eos_ids = torch.tensor([] if eos is None else [eos] if isinstance(eos, int) else list(eos), dtype=torch.long)
            pad = pad_token_id if pad_token_id is not None else getattr(gen, "pad_token_id", None)
            pad = pad if pad is not None else (eos_ids[0].item() if len(eos_ids) else 0)
            past = self.empty_past(input_ids.shape[0])
            if self.encoder is not None:  # encoder-decoder: decoding starts from the decoder start token, not the prompt
                states = self.encode(input_ids, attention_mask)
                start = getattr(gen, "decoder_start_token_id", None)
                start = start if start is not None else self.config.decoder_start_token_id
                ids = torch.full((input_ids.shape[0], 1), int(start), dtype=torch.long)
                step = lambda new, _mask, past: self.decoder_step(new, states, attention_mask, past)  # noqa: E731
            else:
                ids, step = input_ids, self.step
            mask, new_ids, running = attention_mask, ids, torch.ones(ids.shape[0], dtype=torch.bool)
            for _step in range(max_new_tokens):
                logits, past = step(new_ids, mask, past)
                token = torch.from_numpy(logits[:, -1]).argmax(-1)
                token = torch.where(running, token, torch.full_like(token, pad))
                ids = torch.cat([ids, token[:, None]], 1)
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
                new_ids = token[:, None]
                running &= ~torch.isin(token, eos_ids)
                if not running.any():
                    break
            return ids

    return OnnxModel


def position_ids(attention_mask: Any, new: int) -> Any:
    """Positions of the last `new` tokens counted over unpadded tokens only (left padding), as
    transformers' generate derives them from the attention mask."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -new:]


def load_onnx_session_model(path: Path, config: Any, generation_config: Any = None) -> Any:
    """An OnnxModel over `path` (a torch.nn.Module, so tasks' predict hooks take it as a model)."""
    return _torch_module()(path, config, generation_config)


def load_export(folder: str | Path) -> tuple[Any, Processor, LabelInfo | None, Recipe]:
    """The ONNX model, processor, label info and recipe of an export folder."""
    from transformers import AutoConfig

    from hfadapt.core.recipe import Recipe, read_recipe_file
    from hfadapt.tasks.base import get_task

    folder = Path(folder)
    read_export_info(folder)
    try:
        recipe = Recipe.from_dict(read_recipe_file(folder / RECIPE_FILE), source=None)
    except HfadaptError as e:
        raise HfadaptError(f"{folder / RECIPE_FILE}: {e}") from None
    recipe.model.trust_remote_code = False
    task = get_task(recipe.task)
    config = AutoConfig.from_pretrained(str(folder))
    processor = task.load_processor(recipe, path=str(folder))
    generation_config = None
    if (folder / "generation_config.json").is_file():
        from transformers import GenerationConfig

        generation_config = GenerationConfig.from_pretrained(str(folder))
    return load_onnx_session_model(folder / MODEL_FILE, config, generation_config), processor, task.info_from_config(config), recipe
