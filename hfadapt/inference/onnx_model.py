"""An exported folder (`hfadapt export RUN OUT --format onnx`) run through onnxruntime.

`OnnxModel` stands where the PyTorch model stands for a task's `predict` hook: called with the
batch the hook encodes, it returns the same output fields as torch tensors, so `hfadapt predict OUT`
shares every line of each task's pre- and postprocessing with `hfadapt predict RUN`.
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

        def __init__(self, path: Path, config: Any) -> None:
            import onnxruntime as ort

            super().__init__()
            options = ort.SessionOptions()
            options.intra_op_num_threads = max(1, torch.get_num_threads())
            options.log_severity_level = 3  # errors only: onnxruntime's warnings are library noise
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self.input_names = [i.name for i in self.session.get_inputs()]
            self.output_names = [o.name for o in self.session.get_outputs()]
            self.config = config
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

    return OnnxModel


def load_onnx_session_model(path: Path, config: Any) -> Any:
    """An OnnxModel over `path` (a torch.nn.Module, so tasks' predict hooks take it as a model)."""
    return _torch_module()(path, config)


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
    return load_onnx_session_model(folder / MODEL_FILE, config), processor, task.info_from_config(config), recipe
