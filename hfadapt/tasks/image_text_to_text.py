"""image-text-to-text: supervised fine-tuning of vision-language models (AutoModelForImageTextToText with
AutoProcessor: Idefics3/SmolVLM, Qwen2-VL/2.5-VL, LLaVA, Gemma 3, ...).

Data (data.format; "auto" looks at the columns):
  * chat: data.messages_column holds HF/OpenAI multimodal messages ({role, content: [{type: image} |
    {type: text, text}]}) and data.image_column the images of the row, in the order of the image parts
    (an Image feature, a path relative to the data file, or a list of them); an image part may also carry
    its own image ({type: image, image|path: ...}). URLs are refused: hfadapt reads no image from the web.
  * columns: data.image_column (one image or a list), data.prompt_column and data.answer_column (text, or
    a list of accepted answers: the first is trained, all are references), as in HuggingFaceM4/ChartQA or
    lmms-lab/DocVQA.

The processor's chat template renders the conversation and the processor expands each image part into
the family's image tokens. Labels cover the assistant turns only (content and end-of-turn, as causal-lm):
they are located on the rendered text (character spans, tokenized without the images), then carried onto
the processor's ids by aligning the two token sequences, so image tokens, padding and the prompt are -100.
An example longer than data.max_length is dropped, never cut inside its image tokens; the count is printed
before training (data.truncation=false makes it an error naming the row).

Preprocessed rows keep the rendered text, the images (bytes or paths, decoded once to check them) and the
labels; the collator runs the processor again on each batch (pixels are never cached) and checks it gives
the same ids. Evaluation reports loss and perplexity and, with eval.metrics (default exact_match), scores
the answers generated for the prompt up to the last assistant turn.
"""

from __future__ import annotations

import base64
import difflib
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.core.recipe import DataSection, ModelSection
from hfadapt.data.sources import ROW_COLUMN, is_streamed, map_split, row_location
from hfadapt.modeling.sharding import generation_sync
from hfadapt.tasks.base import EvalContext, Task, register_task
from hfadapt.tasks.language import short
from hfadapt.tasks.reporting import ReportInput, e

if TYPE_CHECKING:
    from PIL.Image import Image
    from torch.nn import Module
    from torch.utils.data import DataLoader
    from transformers import PretrainedConfig, PreTrainedModel, ProcessorMixin

    from hfadapt.core.recipe import Recipe
    from hfadapt.data.labels import LabelInfo
    from hfadapt.tasks.base import Collate, Split

METRICS = ("exact_match", "anls", "rouge", "bleu", "chrf")
THUMBNAIL = 96  # pixels: the longest side of a report thumbnail


class VisionLanguageData(DataSection):
    """Chat messages with image parts plus an images column, or image / prompt / answer columns."""

    format: Literal["auto", "chat", "columns"] = Field(
        "auto", description="chat messages with image parts, or image/prompt/answer columns; auto looks at the columns"
    )
    messages_column: str = Field("messages", description="chat: a list of {role, content} (content: text or image/text parts)")
    image_column: str = Field("images", description="the row's images (one or a list): Image feature or paths relative to the data file")
    prompt_column: str = Field("prompt", description="columns: the question about the image(s)")
    answer_column: str = Field("answer", description="columns: the answer (text, or a list of accepted answers: the first is trained)")
    chat_template: str | None = Field(None, description="Jinja chat template for processors without one")
    max_length: int = Field(2048, gt=0, description="tokens per example, image tokens included; longer examples are dropped")
    truncation: bool = Field(True, description="false: an example longer than max_length is an error instead of dropped")
    max_image_size: int | None = Field(
        None, gt=0, description="Idefics3/SmolVLM: longest edge images are resized to before tiling (more tiles: more image tokens); "
        "null: the model's processor default",
    )
    do_image_splitting: bool | None = Field(None, description="Idefics3/SmolVLM: cut images into tiles; null: the processor default")
    min_pixels: int | None = Field(None, gt=0, description="Qwen2-VL: fewest pixels an image is resized to; null: the processor default")
    max_pixels: int | None = Field(None, gt=0, description="Qwen2-VL: most pixels an image is resized to (28x28 per image token); null: default")


class VisionLanguageModelSection(ModelSection):
    """The base model, and which of its parts train besides the language model's adapter."""

    adapt_vision: bool = Field(False, description="also put the adapter on the vision encoder's linear layers (frozen otherwise)")
    train_projector: bool = Field(False, description="train the multimodal projector fully (modules_to_save; frozen otherwise)")


class ImageTextToText(Task):
    name = "image-text-to-text"
    modality = "image"
    auto_class = "AutoModelForImageTextToText"
    peft_task_type = "CAUSAL_LM"
    data_model = VisionLanguageData
    model_model = VisionLanguageModelSection
    pipeline_tag = "image-text-to-text"
    card_example = "chart.png"
    extra_result_keys = ("perplexity",)
    restores_eval_order = True
    paired_inputs = True
    pads_token_rows = True  # train.group_by_length defaults on: rows are text plus image tokens, padded per batch

    # ---- recipe --------------------------------------------------------------------------------
    def check(self, recipe: Recipe) -> list[str]:
        problems = []
        for m in recipe.eval.metrics or []:
            if m not in METRICS:
                problems.append(f"eval.metrics: '{m}' does not score generated answers; use {', '.join(METRICS)}")
        if recipe.generation.prompts:
            problems.append("generation.prompts: prompts are for causal-lm; image-text-to-text answers the evaluation examples")
        a = recipe.adapter
        given = getattr(a, "target_modules", None) is not None or getattr(a, "modules_to_save", None) is not None
        if given and (recipe.model.adapt_vision or recipe.model.train_projector):
            problems.append("model.adapt_vision: adapter.target_modules / adapter.modules_to_save are given: they decide what trains; "
                            "leave them out to use model.adapt_vision and model.train_projector")
        return problems

    def columns(self, recipe: Recipe, with_labels: bool = True) -> dict[str, str]:
        d = recipe.data
        if d.format == "chat":
            return {d.messages_column: "data.messages_column"}
        if d.format == "columns":
            return {d.image_column: "data.image_column", d.prompt_column: "data.prompt_column",
                    **({d.answer_column: "data.answer_column"} if with_labels else {})}
        return {}

    def default_metrics(self, recipe: Recipe) -> list[str]:
        return ["exact_match"]

    # ---- model and processor -------------------------------------------------------------------
    def load_processor(self, recipe: Recipe, path: str | None = None) -> ProcessorMixin:
        from transformers import AutoConfig, AutoProcessor

        from hfadapt.modeling.models import check_local_path

        m, d = recipe.model, recipe.data
        source = path or m.name_or_path
        field = "model.name_or_path" if path is None else f"the run's folder {path}"
        check_local_path(source, field)
        revision = None if path else m.revision
        try:
            config = AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=m.trust_remote_code)
        except Exception as e:  # noqa: BLE001
            raise HfadaptError(f"{field}: cannot read the config of '{source}': {first_line(e)}") from e
        require_multimodal(config, source, field)
        try:
            processor = AutoProcessor.from_pretrained(source, revision=revision, trust_remote_code=m.trust_remote_code)
        except Exception as e:  # noqa: BLE001
            raise HfadaptError(f"{field}: cannot load a processor from '{source}': {first_line(e)}") from e
        if getattr(processor, "image_processor", None) is None or getattr(processor, "tokenizer", None) is None:
            raise HfadaptError(f"{field}: '{source}' has no processor with an image processor and a tokenizer ({type(processor).__name__})")
        if path is None:  # a run's processor was saved with these settings
            apply_image_settings(processor.image_processor, d)
            if d.chat_template:
                processor.chat_template = d.chat_template
        if not getattr(processor, "chat_template", None):
            raise HfadaptError(f"data.chat_template: the processor of '{source}' has no chat template to render the conversations; "
                               "give one in data.chat_template (Jinja)")
        tok = processor.tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return processor

    def adapter_targets(self, model: PreTrainedModel, recipe: Recipe) -> tuple[list[str] | str | None, list[str]]:
        from hfadapt.modeling.towers import vlm_targets

        return vlm_targets(model, recipe.model.adapt_vision, recipe.model.train_projector, recipe.model.name_or_path)

    # ---- data ------------------------------------------------------------------------------------
    def preprocess(self, ds: Split, split: str, processor: ProcessorMixin, recipe: Recipe, info: LabelInfo | None,
                   train: bool) -> Split:
        d = recipe.data
        fmt = resolve_format(ds.column_names, d, split)
        ds = _undecoded(ds, d.image_column)
        base_dir = files_dir(d, split)
        has_images = d.image_column in ds.column_names
        has_answers = fmt == "chat" or d.answer_column in ds.column_names

        def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
            rows = batch.get(ROW_COLUMN, indices)
            out: dict[str, list[Any]] = {k: [] for k in ("input_ids", "labels", "text", "images", "too_long", "image_tokens")}
            if not train:
                out.update(prompt=[], answers=[])
            for j, row in enumerate(rows):
                at = row_location(split, row, d)
                images_value = batch[d.image_column][j] if has_images else None
                if fmt == "chat":
                    messages, sources = chat_example(batch[d.messages_column][j], images_value, d, at)
                else:
                    messages, sources = columns_example(batch[d.prompt_column][j], batch[d.answer_column][j] if has_answers else None,
                                                        images_value, d, at)
                stored = [load_image(s, d.image_column, at, base_dir, verify=True) for s in sources]
                images = [load_image(s, d.image_column, at, None) for s in stored]
                ids, labels, text = encode_example(processor, messages, images, at)
                out["input_ids"].append(ids)
                out["labels"].append(labels)
                out["text"].append(text)
                out["images"].append(stored)
                out["too_long"].append(len(ids) > d.max_length)
                out["image_tokens"].append(count_image_tokens(processor, ids))
                if len(ids) > d.max_length and not d.truncation:
                    raise HfadaptError(f"data.max_length {d.max_length}, {at}: the example has {len(ids)} tokens "
                                       f"({out['image_tokens'][-1]} of them image tokens); raise data.max_length, lower the image "
                                       "resolution (data.max_image_size, data.max_pixels) or set data.truncation=true to drop it")
                if not train:
                    out["prompt"].append(render(processor, prompt_part(messages), True, at))
                    out["answers"].append(answers_of(messages))
            return out

        encoded = map_split(ds, encode, batched=True, with_indices=True, remove_columns=ds.column_names,
                            num_proc=d.num_proc, desc=f"Processing {split}")
        if is_streamed(encoded):
            return encoded.filter(lambda r: not r["too_long"]).remove_columns(["too_long", "image_tokens"])
        from accelerate import PartialState

        too_long = int(sum(encoded["too_long"]))
        kept = encoded.filter(lambda r: not r["too_long"]) if too_long else encoded
        if PartialState().is_main_process:
            tokens = sum(len(x) for x in encoded["input_ids"])
            image_tokens = sum(encoded["image_tokens"])
            note = f"; dropped {too_long} of {len(encoded)} examples longer than data.max_length {d.max_length}" if too_long else ""
            print(f"hfadapt: image-text-to-text {split}: {len(kept)} examples, {image_tokens} of {tokens} tokens are image tokens{note}")
        if len(kept) == 0:
            raise HfadaptError(f"data.max_length {d.max_length}: every {split} example is longer; raise data.max_length or lower the image resolution")
        return kept.remove_columns(["too_long", "image_tokens"])

    def collator(self, processor: ProcessorMixin) -> Collate:
        return VisionLanguageCollator(processor)

    def count_units(self, batch: dict[str, Any], processor: ProcessorMixin) -> dict[str, Any]:
        mask = batch.get("attention_mask")
        return {"tokens": mask.sum()} if mask is not None else {}

    def plan_batch(self, recipe: Recipe, config: PretrainedConfig, batch_size: int) -> tuple[dict[str, Any], str] | None:
        """The activations of data.max_length tokens (image tokens among them) through the language model, and
        the image tokens one image takes at most under the recipe's image settings, counted by the processor
        itself on a blank image of the largest size it keeps. The vision encoder is not traced: its forward
        reads pixel masks and grids by value, which meta tensors do not have."""
        from hfadapt.modeling.meta import meta_labels, meta_tokens

        n = recipe.data.max_length
        per_image = max_image_tokens(self.load_processor(recipe))
        fit = f"at most {n // per_image} image(s) per example" if per_image else "no image fits"
        note = (f"{n} tokens (language model; up to {per_image} image tokens per image under the recipe's image settings: "
                f"{fit}; vision encoder not traced)")
        return {"input_ids": meta_tokens(batch_size, n), "labels": meta_labels(batch_size, n), "use_cache": False}, note

    def encode_inputs(self, items: list[str], processor: ProcessorMixin, recipe: Recipe) -> dict[str, Any]:
        """`IMAGE<TAB>QUESTION` inputs -> one left-padded batch ready for generate()."""
        prompts, images = [], []
        for i, item in enumerate(items):
            path, _, question = item.partition("\t")
            at = f"predict input {i + 1}"
            image = load_image(path, "input", at, None)
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
            prompts.append(render(processor, messages, True, at))
            images.append([image])
        return dict(run_processor(processor, prompts, images, "left"))

    # ---- evaluation and prediction ---------------------------------------------------------------
    def evaluate(self, ctx: EvalContext, model: Module, dataloader: DataLoader) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F

        acc, processor = ctx.accelerator, ctx.processor
        tok = processor.tokenizer
        metric_names = list(ctx.metric_names)
        generate = ctx.recipe.generation.predict_with_generate and bool(metric_names)
        settings = {**generate_kwargs(ctx.recipe, tok), **generation_sync(model, acc.num_processes)}
        was_training = model.training
        model.eval()
        sums, counts, generated = [], [], []
        for batch in dataloader:
            gen_inputs = batch.pop("generation", None)
            labels = batch["labels"]
            with torch.no_grad():
                logits = model(**batch).logits
            logits = logits[:, -labels.shape[1]:, :]
            token_loss = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none")
            mask = labels[:, 1:] != -100
            s, c = acc.gather_for_metrics(((token_loss * mask).sum(1), mask.sum(1)))
            sums.append(s.detach().double().cpu())
            counts.append(c.detach().cpu())
            if generate and gen_inputs is not None:
                width = gen_inputs["input_ids"].shape[1]
                with torch.no_grad():
                    out = acc.unwrap_model(model).generate(**gen_inputs, **settings)[:, width:]
                out = acc.pad_across_processes(out.contiguous(), dim=1, pad_index=tok.pad_token_id)
                generated += [t.strip() for t in tok.batch_decode(acc.gather_for_metrics(out).cpu(), skip_special_tokens=True)]
        model.train(was_training)
        loss_sum = float(ctx.in_dataset_order(torch.cat(sums)).sum()) if sums else 0.0
        tokens = int(sum(int(c.sum()) for c in counts))
        loss = loss_sum / tokens if tokens else float("nan")
        results: dict[str, Any] = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": tokens,
                                   "samples": int(sum(x.shape[0] for x in counts))}
        if generate and generated:
            from hfadapt import metrics

            predictions = ctx.in_dataset_order(generated)
            references = ctx.dataset.select_columns(["answers"])[: len(predictions)]["answers"]
            results.update(metrics.compute(metric_names, predictions, references))
            _save_predictions(ctx, predictions, references)
        return results

    def predict(self, model: Module, processor: ProcessorMixin, items: list[str], recipe: Recipe,
                info: LabelInfo | None) -> list[dict[str, Any]]:
        import torch

        tok = processor.tokenizer
        batch = self.encode_inputs(items, processor, recipe)
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            out = model.generate(**batch, **generate_kwargs(recipe, tok))[:, batch["input_ids"].shape[1]:]
        return [{"generated_text": t.strip()} for t in tok.batch_decode(out, skip_special_tokens=True)]

    def report_section(self, report: ReportInput) -> str:
        """Thumbnails of the first evaluation examples beside prompt, reference and generated answer."""
        rows = report.predictions[:10]
        if not rows:
            return "<p class=note>No generated answers (set eval.metrics, e.g. exact_match, and generation.predict_with_generate).</p>"
        body = "".join(
            "<tr><td>" + "".join(f'<img alt="image" src="data:image/jpeg;base64,{t}">' for t in r.get("thumbnails", []))
            + f"</td><td>{e(r.get('input') or '')}</td><td>{e(' | '.join(r['reference']))}</td><td>{e(r['prediction'])}</td></tr>"
            for r in rows
        )
        return ("<h3>Generated answers (validation)</h3><table class=gen><tr><th>image</th><th>prompt</th><th>reference</th>"
                "<th>generated</th></tr>" + body + "</table>")


class VisionLanguageCollator:
    """Runs the processor on a batch of rendered conversations and their images (pixels are made here, never
    cached), right-padded, and lays the stored labels on its ids (-100 on padding). Evaluation rows (with a
    `prompt`) also get `generation`: the prompts up to the last assistant turn, left-padded, for generate()."""

    def __init__(self, processor: ProcessorMixin) -> None:
        self.processor = processor

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        images = [[load_image(v, "images", "batch", None) for v in r["images"]] for r in rows]
        batch = dict(run_processor(self.processor, [r["text"] for r in rows], images, "right"))
        ids = batch["input_ids"]
        labels = torch.full_like(ids, -100)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            if ids[i, :n].tolist() != list(r["input_ids"]):
                raise HfadaptError("image-text-to-text: the processor gives other ids for an example than when it was preprocessed; "
                                   "delete the datasets cache of this data and run again")
            labels[i, :n] = torch.tensor(r["labels"], dtype=torch.long)
        batch["labels"] = labels
        if "prompt" in rows[0]:
            batch["generation"] = dict(run_processor(self.processor, [r["prompt"] for r in rows], images, "left"))
        return batch


# ---- examples ------------------------------------------------------------------------------------
def require_multimodal(config: PretrainedConfig, source: str, field: str) -> None:
    """One line for a base model that does not read images (a text-only LM)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise HfadaptError(
            f"{field}: '{source}' is a '{model_type}' model, which reads no images; image-text-to-text needs a vision-language "
            "model (AutoModelForImageTextToText: SmolVLM/Idefics3, Qwen2-VL, LLaVA, PaliGemma, Gemma 3, ...); "
            "for a text-only model use task: causal-lm"
        )


def apply_image_settings(ip: Any, d: VisionLanguageData) -> None:
    """data.max_image_size / do_image_splitting (Idefics3) and min/max_pixels (Qwen2-VL) onto the image processor."""
    name = type(ip).__name__
    if d.max_image_size is not None or d.do_image_splitting is not None:
        if not hasattr(ip, "do_image_splitting"):
            field = "data.max_image_size" if d.max_image_size is not None else "data.do_image_splitting"
            raise HfadaptError(f"{field}: {name} does not resize by longest edge and tile (Idefics3/SmolVLM do); remove it")
        if d.max_image_size is not None:
            ip.size = {"longest_edge": d.max_image_size}
        if d.do_image_splitting is not None:
            ip.do_image_splitting = d.do_image_splitting
    if d.min_pixels is not None or d.max_pixels is not None:
        if not hasattr(ip, "merge_size"):  # Qwen2-VL's processors: size is {shortest_edge: min pixels, longest_edge: max pixels}
            field = "data.min_pixels" if d.min_pixels is not None else "data.max_pixels"
            raise HfadaptError(f"{field}: {name} does not resize by pixel count (Qwen2-VL does); remove it")
        size = dict(getattr(ip, "size", None) or {})
        lo = d.min_pixels if d.min_pixels is not None else size.get("shortest_edge", getattr(ip, "min_pixels", 0))
        hi = d.max_pixels if d.max_pixels is not None else size.get("longest_edge", getattr(ip, "max_pixels", 0))
        if lo > hi:
            raise HfadaptError(f"data.min_pixels: {lo} is more than data.max_pixels {hi}")
        for attr, value in (("min_pixels", lo), ("max_pixels", hi)):
            if hasattr(ip, attr):
                setattr(ip, attr, value)
        ip.size = {"shortest_edge": lo, "longest_edge": hi}


def resolve_format(columns: list[str], d: VisionLanguageData, split: str) -> str:
    if d.format != "auto":
        return d.format
    if d.messages_column in columns:
        return "chat"
    if d.prompt_column in columns and d.image_column in columns:
        return "columns"
    raise HfadaptError(
        f"data.format: the {split} split has neither data.messages_column '{d.messages_column}' nor data.image_column "
        f"'{d.image_column}' + data.prompt_column '{d.prompt_column}'; columns: {', '.join(c for c in columns if c != ROW_COLUMN)}"
    )


def chat_example(messages: object, images: object, d: VisionLanguageData, at: str) -> tuple[list[dict[str, Any]], list[Any]]:
    """Messages with content as lists of parts ({type: image} / {type: text, text}) and the image of each image part."""
    where = f"data.messages_column '{d.messages_column}', {at}"
    if not isinstance(messages, list) or not messages:
        raise HfadaptError(f"{where}: expected a list of {{role, content}} messages, got {short(messages)}")
    given = as_list(images)
    out, sources, from_column = [], [], 0
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise HfadaptError(f"{where}: expected messages with a text 'role' and a 'content', got {short(m)}")
        content = m.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            raise HfadaptError(f"{where}: a message's content must be text or a list of parts, got {short(content)}")
        parts = []
        for p in content:
            kind = p.get("type") if isinstance(p, dict) else None
            if kind == "text" and isinstance(p.get("text"), str):
                parts.append({"type": "text", "text": p["text"]})
            elif kind == "image":
                own = next((p[k] for k in ("image", "path", "url") if p.get(k) is not None), None)
                if own is not None:
                    sources.append(own)
                else:
                    if from_column >= len(given):
                        what = "no image" if not given else f"only {len(given)} image(s) in data.image_column '{d.image_column}'"
                        raise HfadaptError(f"{where}: the messages have more image parts than images ({what})")
                    sources.append(given[from_column])
                    from_column += 1
                parts.append({"type": "image"})
            else:
                raise HfadaptError(f"{where}: expected parts {{type: text, text}} or {{type: image}}, got {short(p)}")
        out.append({"role": m["role"], "content": parts})
    if from_column < len(given):
        raise HfadaptError(f"data.image_column '{d.image_column}', {at}: {len(given)} images but {from_column} image part(s) "
                           "in the messages; each image needs an image part where it goes")
    roles = [m["role"] for m in out]
    if "assistant" not in roles:
        raise HfadaptError(f"{where}: no assistant turn to learn from (roles: {', '.join(roles)})")
    return out, sources


def columns_example(prompt: object, answer: object, images: object, d: VisionLanguageData,
                    at: str) -> tuple[list[dict[str, Any]], list[Any]]:
    """One user turn (the images, then the prompt) and, where there is an answer, the assistant's answer."""
    if not isinstance(prompt, str):
        raise HfadaptError(f"data.prompt_column '{d.prompt_column}', {at}: expected text, got {short(prompt)}")
    sources = as_list(images)
    if not sources:
        raise HfadaptError(f"data.image_column '{d.image_column}', {at}: no image")
    messages = [{"role": "user", "content": [{"type": "image"} for _ in sources] + [{"type": "text", "text": prompt}]}]
    if answer is not None:
        answers = answer if isinstance(answer, list) else [answer]
        if not answers or not all(isinstance(a, str) for a in answers) or not answers[0].strip():
            raise HfadaptError(f"data.answer_column '{d.answer_column}', {at}: expected an answer (text or a list of texts), got {short(answer)}")
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answers[0]}], "answers": answers})
    return messages, sources


def as_list(images: object) -> list[Any]:
    if images is None:
        return []
    return list(images) if isinstance(images, (list, tuple)) else [images]


def prompt_part(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation before its last assistant turn (what generation starts from)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return [_plain(m) for m in messages[:last]]


def answers_of(messages: list[dict[str, Any]]) -> list[str]:
    """The accepted answers of the last assistant turn: all of a list answer column, else its text."""
    last = [m for m in messages if m["role"] == "assistant"][-1]
    return last.get("answers") or ["".join(p["text"] for p in last["content"] if p["type"] == "text").strip()]


def _plain(message: dict[str, Any]) -> dict[str, Any]:
    return {"role": message["role"], "content": message["content"]}


# ---- tokens and labels ---------------------------------------------------------------------------
def render(processor: ProcessorMixin, messages: list[dict[str, Any]], generation_prompt: bool, at: str) -> str:
    try:
        return processor.apply_chat_template([_plain(m) for m in messages], tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as e:  # noqa: BLE001 - Jinja errors: name the template and the row
        raise HfadaptError(f"data.chat_template: cannot render {at}: {first_line(e)}") from e


def run_processor(processor: ProcessorMixin, texts: list[str], images: list[list[Image]], side: str) -> Any:
    """The processor on rendered texts (special tokens are the template's: none added) and their images."""
    kwargs: dict[str, Any] = {"text": texts, "add_special_tokens": False, "return_tensors": "pt"}
    if len(texts) > 1:
        kwargs.update(padding=True, padding_side=side)
    if any(images):
        kwargs["images"] = images
    return processor(**kwargs)


def encode_example(processor: ProcessorMixin, messages: list[dict[str, Any]], images: list[Image], at: str) -> tuple[list[int], list[int], str]:
    """(input ids with the images' tokens, labels on the assistant turns, rendered text) of one conversation.

    Assistant turns are character spans of the rendered text (the text between the generation prompt
    before a turn and the rendering that includes it), labelled on the text tokenized alone, where each
    image is still its placeholder; the processor's ids hold the expanded image tokens instead, and the
    labels move onto them along the longest common runs of the two sequences (difflib), so everything
    the expansion added stays -100."""
    tok = processor.tokenizer
    full = render(processor, messages, False, at)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render(processor, messages[:i], True, at) if i else ""
        upto = render(processor, messages[: i + 1], False, at)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise HfadaptError(f"data.chat_template: the template does not render {at} turn by turn, so its assistant tokens "
                               "can't be located; give another data.chat_template")
        spans.append((len(before), len(upto)))
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    plain = enc["input_ids"]
    plain_labels = [t if any(a <= start < b for a, b in spans) else -100 for t, (start, _end) in zip(plain, enc["offset_mapping"])]
    try:
        ids = run_processor(processor, [full], [images], "right")["input_ids"][0].tolist()
    except Exception as e:  # noqa: BLE001 - the processor's own checks (image tokens vs images)
        raise HfadaptError(f"{at}: the processor cannot take this example: {first_line(e)}") from e
    labels = [-100] * len(ids)
    matcher = difflib.SequenceMatcher(None, plain, ids, autojunk=False)
    for a, b, n in matcher.get_matching_blocks():
        labels[b:b + n] = plain_labels[a:a + n]
    if sum(x != -100 for x in labels) != sum(x != -100 for x in plain_labels):
        raise HfadaptError(f"{at}: the assistant tokens can't be found among the processor's tokens (the image expansion "
                           "merged with them); give another data.chat_template")
    return ids, labels, full


def image_token_ids(processor: ProcessorMixin) -> set[int]:
    """The ids the processor marks as image features (its `image_token_ids`: Gemma 3's image_token_id is the
    begin-of-image token, its soft tokens are listed there), else its image token."""
    ids = {i for i in (getattr(processor, "image_token_ids", None) or []) if i is not None}
    if not ids:
        token = getattr(processor, "image_token", None)
        if token:
            ids = {processor.tokenizer.convert_tokens_to_ids(token)}
    return ids


def max_image_tokens(processor: ProcessorMixin) -> int:
    """Image tokens the processor gives one image of the largest size it keeps (Idefics3: size's longest edge,
    tiled; Qwen2-VL: max_pixels; fixed-size families: any size)."""
    from PIL import Image

    ip = processor.image_processor
    size = dict(getattr(ip, "size", None) or {})
    if hasattr(ip, "merge_size"):  # Qwen2-VL: size is a pixel range
        edge = int(math.sqrt(size.get("longest_edge") or getattr(ip, "max_pixels", 0) or 448 * 448))
    else:
        edge = max([v for k, v in size.items() if isinstance(v, int) and k != "shortest_edge"] + [size.get("shortest_edge", 0), 224])
    text = render(processor, [{"role": "user", "content": [{"type": "image"}]}], False, "the plan's example")
    ids = run_processor(processor, [text], [[Image.new("RGB", (edge, edge))]], "right")["input_ids"][0].tolist()
    return count_image_tokens(processor, ids)


def count_image_tokens(processor: ProcessorMixin, ids: list[int]) -> int:
    image_ids = image_token_ids(processor)
    return sum(1 for t in ids if t in image_ids)


def generate_kwargs(recipe: Recipe, tok: Any) -> dict[str, Any]:
    g = recipe.generation
    kwargs: dict[str, Any] = {"max_new_tokens": g.max_new_tokens, "num_beams": g.num_beams, "do_sample": g.do_sample,
                              "pad_token_id": tok.pad_token_id}
    if g.do_sample:
        kwargs.update(temperature=g.temperature, top_p=g.top_p)
    if tok.eos_token_id is not None:
        kwargs["eos_token_id"] = tok.eos_token_id
    return kwargs


# ---- images --------------------------------------------------------------------------------------
def files_dir(d: DataSection, split: str) -> Path | None:
    """Relative image paths are relative to the data file's folder."""
    files = d.train_files if split == "train" else (getattr(d, f"{split}_files", None) or d.train_files)
    return Path(files[0]).resolve().parent if files else None


def _undecoded(ds: Split, column: str) -> Split:
    """An Image (or list of Image) column read as bytes/paths: decoded once per check, stored compactly."""
    from datasets import Image as ImageFeature
    from datasets import List, Sequence

    feature = ds.features.get(column) if getattr(ds, "features", None) else None
    if isinstance(feature, ImageFeature):
        return ds.cast_column(column, ImageFeature(decode=False))
    if isinstance(feature, (List, Sequence)) and isinstance(getattr(feature, "feature", None), ImageFeature):
        return ds.cast_column(column, List(ImageFeature(decode=False)))
    if isinstance(feature, list) and feature and isinstance(feature[0], ImageFeature):
        return ds.cast_column(column, List(ImageFeature(decode=False)))
    return ds


def load_image(value: object, column: str, at: str, base_dir: Path | None, verify: bool = False) -> Any:
    """A PIL RGB image from an Image feature value, a path (relative to base_dir) or bytes; with verify, the
    storable form ({bytes, path}) after a full decode. One line naming the column and row otherwise."""
    from PIL import Image

    where = f"data.image_column '{column}', {at}" if column != "input" else at
    if hasattr(value, "convert"):  # a decoded PIL image
        if not verify:
            return value.convert("RGB")
        buf = io.BytesIO()
        value.convert("RGB").save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}
    source: Any = None
    if isinstance(value, dict):
        source = io.BytesIO(value["bytes"]) if value.get("bytes") else value.get("path")
    elif isinstance(value, (bytes, bytearray)):
        source, value = io.BytesIO(value), {"bytes": bytes(value), "path": None}
    elif isinstance(value, str):
        if value.startswith(("http://", "https://")):
            raise HfadaptError(f"{where}: {value} is a URL; hfadapt reads no images from the web: download them and give their paths")
        path = Path(value).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        source, value = str(path), {"bytes": None, "path": str(path)}
    if source is None:
        raise HfadaptError(f"{where}: no image (got {short(value)})")
    if isinstance(source, str) and not Path(source).is_file():
        raise HfadaptError(f"{where}: image file not found: {source}")
    try:
        with Image.open(source) as im:
            im.load()
            rgb = im.convert("RGB")
    except Exception as e:  # noqa: BLE001
        name = value.get("path") if isinstance(value, dict) and value.get("path") else "(bytes)"
        raise HfadaptError(f"{where}: cannot read image {name}: {type(e).__name__}: {first_line(e)}") from None
    return value if verify else rgb


def thumbnail(value: object) -> str:
    """A small JPEG of a stored image, base64, for the report."""
    im = load_image(value, "images", "report", None)
    im.thumbnail((THUMBNAIL, THUMBNAIL))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return base64.b64encode(buf.getvalue()).decode()


def _save_predictions(ctx: EvalContext, predictions: list[str], references: list[list[str]]) -> None:
    if ctx.predictions_file is None or not ctx.accelerator.is_main_process:
        return
    from hfadapt.rundir.predictions import MAX_GENERATIONS, MAX_TEXT, save_predictions

    n = min(len(predictions), MAX_GENERATIONS)
    rows = ctx.dataset.select_columns(["prompt", "images"])[:n]
    save_predictions(ctx, (
        {"index": i, "input": rows["prompt"][i][:MAX_TEXT], "prediction": predictions[i], "reference": references[i],
         "thumbnails": [thumbnail(v) for v in rows["images"][i][:4]] if i < 10 else []}
        for i in range(n)
    ))


register_task(ImageTextToText())
