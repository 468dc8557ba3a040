"""`hfadapt export RUN OUT --format onnx`: the run's adapter folded into its base, exported to ONNX.

optimum's exporter (`optimum-onnx`) pins transformers<4.58, so the graph comes from PyTorch's own
exporter: `torch.onnx.export(dynamo=True)` (torch.export + onnxscript), which handles the tiny and
real BERT, ViT, wav2vec2 and timm models alike; the TorchScript exporter is the fallback where
torch.export cannot trace a model. Sample inputs are encoded by the task's own `predict` hook (a
recording stand-in catches the batch it builds), so the graph takes exactly the inputs
`hfadapt predict` gives it, and the check afterwards runs that hook on other, differently shaped
inputs through PyTorch and through onnxruntime.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.inference.merge import check_output_apart_from_run, check_mergeable, fold_loaded, write_folder
from hfadapt.inference.onnx_model import ENCODER_FILE, INFO_FILE, MODEL_FILE, RECIPE_FILE, load_onnx_session_model
from hfadapt.rundir.layout import check_writable_folder

if TYPE_CHECKING:
    from torch import Tensor
    from torch.nn import Module

    from hfadapt.core.recipe import Recipe
    from hfadapt.tasks.base import Processor, Task

FORMATS = ("onnx",)
# The tasks whose forward pass is the whole model: a classifier's or tagger's logits, QA's start/end logits.
TASKS = ("text-classification", "token-classification", "question-answering", "image-classification", "audio-classification")
# A decoder with past key/values, which `hfadapt predict OUT` generates with: causal-lm (export_lm), and
# seq2seq with an encoder graph beside it (export_s2s).
DECODERS = ("causal-lm", "seq2seq")
DEFAULT_TOLERANCE = 1e-3  # largest |ONNX - PyTorch| an export may have; float32 graphs land near 1e-6
GGUF_NOTE = ("GGUF: no maintained converter is installable (PyPI's `gguf` is the file-format library only; "
             "llama.cpp's convert_hf_to_gguf.py is not packaged)")


def export(run: str | Path, out: str | Path, format: str = "onnx", opset: int | None = None, overwrite: bool = False,
           base_model: str | None = None, allow_quantized: bool = False, tolerance: float = DEFAULT_TOLERANCE) -> Path:
    """Fold the adapter of `run` (a run directory or Hub adapter id) into its base, export it to ONNX
    in `out` (model.onnx, config.json, the processor files, recipe.yaml, export_info.json) and check
    the ONNX outputs against PyTorch's; `out` appears only once the export passed its check.
    `export_info.json` holds the task, source, opset, exporter and the largest difference found."""
    from hfadapt.inference.run_model import load_model_and_processor
    from hfadapt.publishing.hub import resolve_run
    from hfadapt.tasks.base import get_task

    out = Path(out)
    if format == "gguf":
        raise HfadaptError(f"export --format gguf: {GGUF_NOTE}; export --format onnx instead")
    if format not in FORMATS:
        raise HfadaptError(f"export --format: unknown format '{format}'; one of {', '.join(FORMATS)}")
    if opset is not None and not 7 <= opset <= 30:
        raise HfadaptError(f"export --opset: {opset} is not an ONNX opset (7 to 30)")
    check_writable_folder(out, "export", "output folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise HfadaptError(f"export: {out} exists and is not empty; choose another folder or pass --overwrite")
    source = resolve_run(run)
    check_output_apart_from_run(out, source.path, "export")
    recipe, task = source.recipe, get_task(source.recipe.task)
    if recipe.task == "speech-recognition":  # Whisper's generate forces language/task tokens and suppresses others
        raise HfadaptError("export: speech-recognition runs are not exported yet (Whisper's generate adds forced and suppressed "
                           f"tokens that the ONNX greedy loop does not); ONNX export covers {', '.join(TASKS + DECODERS)}")
    if recipe.task not in TASKS + DECODERS:
        raise HfadaptError(f"export: {recipe.task} runs are not exported yet; ONNX export covers {', '.join(TASKS + DECODERS)}")
    check_mergeable(source, "export")
    model, processor, info = load_model_and_processor(source, base_model=base_model, ref=run)
    model = model.float().eval()  # ONNX on the CPU: float32, whatever dtype the run trained in
    # The reference is the run as `hfadapt predict RUN` runs it, adapter unmerged: inputs are what reaches
    # the transformers model (peft's QA wrapper drops token_type_ids, for one), outputs what it returns.
    if recipe.task in DECODERS:
        return _export_decoder(model, processor, source, recipe, run, out, opset, tolerance, allow_quantized)
    scratch = Path(tempfile.mkdtemp(prefix="hfadapt-export-"))
    try:
        trace_items, check_items = sample_inputs(task, recipe, processor, scratch)
        traced = _recorded(task, model, processor, trace_items, recipe, info)
        reference = _recorded(task, model, processor, check_items, recipe, info)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    model = fold_loaded(model, source, allow_quantized, "export")

    def save(tmp: Path) -> None:
        exporter, names = _export_graph(model, traced[0][0], task.modality, tmp / MODEL_FILE, opset)
        diff = _check(reference, model.config, tmp / MODEL_FILE)
        if not diff <= tolerance:  # also NaN
            raise HfadaptError(f"export: the ONNX outputs differ from PyTorch's by {diff:.3g} (more than {tolerance:g}); nothing was written to {out}")
        model.config.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / RECIPE_FILE).write_text(recipe.to_yaml())
        (tmp / INFO_FILE).write_text(json.dumps({
            "format": "onnx", "task": recipe.task, "source": str(run), "base_model": recipe.model.name_or_path,
            "adapter": recipe.adapter.method, "opset": _opset_of(tmp / MODEL_FILE), "exporter": exporter,
            "inputs": names[0], "outputs": names[1], "dynamic_axes": {"batch": 0, "sequence": None if task.modality == "image" else 1},
            "max_abs_diff": diff,
        }, indent=2) + "\n")

    return write_folder(out, save)


def _export_decoder(model: Module, processor: Processor, source: Any, recipe: Recipe, run: str | Path, out: Path,
                    opset: int | None, tolerance: float, allow_quantized: bool) -> Path:
    from hfadapt.inference import export_lm, export_s2s
    from hfadapt.tasks.base import get_task

    task = get_task(recipe.task)
    graphs: Any = export_s2s if recipe.task == "seq2seq" else export_lm
    samples = export_s2s.SOURCES if recipe.task == "seq2seq" else export_lm.PROMPTS
    trace = task.encode_inputs(samples[0], processor, recipe)
    checks = [task.encode_inputs(samples[1][:1], processor, recipe), task.encode_inputs(samples[1], processor, recipe)]
    reference = graphs.reference(model, checks)
    model = fold_loaded(model, source, allow_quantized, "export")

    def save(tmp: Path) -> None:
        names = graphs.export_graph(model, trace, tmp / MODEL_FILE, opset)
        diff = graphs.check(reference, model.config, tmp / MODEL_FILE)
        if not diff <= tolerance:  # also NaN
            raise HfadaptError(f"export: the ONNX outputs differ from PyTorch's by {diff:.3g} (more than {tolerance:g}); nothing was written to {out}")
        model.config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)  # eos and pad ids, as `generate` reads them
        processor.save_pretrained(tmp)
        (tmp / RECIPE_FILE).write_text(recipe.to_yaml())
        (tmp / INFO_FILE).write_text(json.dumps({
            "format": "onnx", "task": recipe.task, "source": str(run), "base_model": recipe.model.name_or_path,
            "adapter": recipe.adapter.method, "opset": _opset_of(tmp / MODEL_FILE), "exporter": "dynamo",
            "inputs": names[0], "outputs": names[1], "past_key_values": True,
            "dynamic_axes": {"batch": 0, "sequence": 1, "past_sequence": 2}, "max_abs_diff": diff,
            **({"encoder": ENCODER_FILE, "cross_attention": "recomputed per step"} if graphs is export_s2s else {}),
        }, indent=2) + "\n")

    return write_folder(out, save)


def sample_inputs(task: Task, recipe: Recipe, processor: Processor, scratch: Path) -> tuple[list[str], list[str]]:
    """Two inputs to trace with and three others (other lengths, sizes, batch) to check with, as
    `hfadapt predict` takes them: text, QUESTION<TAB>CONTEXT, or image and audio files written here."""
    import numpy as np

    rng = np.random.default_rng(0)
    if task.modality == "image":
        from PIL import Image

        files = []
        for i, size in enumerate((40, 48, 36, 64, 40)):
            path = scratch / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (size, size + i, 3), dtype=np.uint8)).save(path)
            files.append(str(path))
        return files[:2], files[2:]
    if task.modality == "audio":
        import soundfile

        from hfadapt.data.audio import sampling_rate_of

        rate = sampling_rate_of(processor)
        files = []
        for i, seconds in enumerate((0.5, 0.8, 0.3, 1.0, 0.6)):
            path = scratch / f"{i}.wav"
            soundfile.write(path, (0.1 * rng.standard_normal(int(rate * seconds))).astype(np.float32), rate)
            files.append(str(path))
        return files[:2], files[2:]
    texts = ["the film was good", "the music and the acting felt really quite dull", "a plot",
             "the ending was lovely and the music was superb and so was the plot", "John Smith lives in Paris ."]
    if recipe.task == "question-answering":
        return [f"what is it\t{t}" for t in texts[:2]], [f"what is it\t{t}" for t in texts[2:]]
    if getattr(recipe.data, "text_pair_column", None):
        return [f"{t}\t{texts[-1]}" for t in texts[:2]], [f"{t}\t{texts[0]}" for t in texts[2:]]
    return texts[:2], texts[2:]


def _recorded(task: Task, model: Module, processor: Processor, items: list[str], recipe: Recipe,
              info: Any) -> list[tuple[dict[str, Tensor], dict[str, Tensor]]]:
    """(inputs, outputs) of the transformers model (under peft's wrappers) in each forward pass
    `task.predict` makes on `items`."""
    import torch

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    calls: list[tuple[dict[str, Tensor], dict[str, Tensor]]] = []

    def before(module: Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if args:
            raise HfadaptError(f"export: {type(module).__name__} was called with positional inputs; cannot name them in the graph")
        calls.append(({k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}, {}))

    def after(module: Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        calls[-1][1].update(_tensors(output))

    hooks = [inner.register_forward_pre_hook(before, with_kwargs=True), inner.register_forward_hook(after, with_kwargs=True)]
    try:
        with torch.no_grad():
            task.predict(model, processor, items, recipe, info)
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def _tensors(output: Any) -> dict[str, Tensor]:
    import torch

    return {k: v for k, v in output.items() if isinstance(v, torch.Tensor) and k != "loss"}


def _export_graph(model: Module, inputs: dict[str, Tensor], modality: str, path: Path,
                  opset: int | None) -> tuple[str, tuple[list[str], list[str]]]:
    """Write the graph to `path`; ("dynamo" or "torchscript", (input names, output names))."""
    import torch

    names = list(inputs)
    with torch.no_grad():
        outputs = list(_tensors(model(**inputs)))

    class Positional(torch.nn.Module):
        """The model with positional inputs and a tuple of outputs, as the exporters want it."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: Tensor) -> tuple[Tensor, ...]:
            out = self.inner(**dict(zip(names, args)))
            return tuple(out[k] for k in outputs)

    wrapped, args = Positional().eval(), tuple(inputs[n] for n in names)

    def axes(t: Tensor) -> list[int]:  # batch always; the sequence (tokens, samples) for text and audio
        return [0] if modality == "image" or t.dim() < 2 else [0, 1]

    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dims = {0: batch, 1: sequence}
    dynamic = (tuple({a: dims[a] for a in axes(inputs[n])} for n in names),)
    common = {"input_names": names, "output_names": outputs, "opset_version": opset}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(wrapped, args, str(path), dynamic_shapes=dynamic, dynamo=True, external_data=False,
                              verbose=False, report=False, **common)
            return "dynamo", (names, outputs)
        except Exception as dynamo_error:  # noqa: BLE001 - torch.export could not trace it: TorchScript's tracer next
            path.unlink(missing_ok=True)
            dynamic_axes = {n: {a: ("batch", "sequence")[a] for a in axes(inputs[n])} for n in names}
            dynamic_axes.update({o: {0: "batch"} for o in outputs})
            try:
                torch.onnx.export(wrapped, args, str(path), dynamo=False, dynamic_axes=dynamic_axes,
                                  **{**common, "opset_version": opset or 17})
            except Exception as e:  # noqa: BLE001
                raise HfadaptError(f"export: neither of PyTorch's ONNX exporters could export the model: "
                                   f"dynamo: {first_line(dynamo_error)}; torchscript: {first_line(e)}") from None
            return "torchscript", (names, outputs)


def _check(reference: list[tuple[dict[str, Tensor], dict[str, Tensor]]], config: Any, path: Path) -> float:
    """The largest |ONNX - PyTorch| over every output of the recorded forward passes."""
    onnx_model = load_onnx_session_model(path, config)
    worst = 0.0
    for inputs, expected in reference:
        got = vars(onnx_model(**inputs))
        for name, want in expected.items():
            if name not in got or got[name].shape != want.shape:
                return float("inf")
            worst = max(worst, float((got[name].float() - want.float()).abs().max()))
    return worst


def _opset_of(path: Path) -> int:
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
