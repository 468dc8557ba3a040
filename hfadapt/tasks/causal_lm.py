"""causal-lm: supervised fine-tuning of decoder models (GPT-2, Llama, SmolLM...) with AutoModelForCausalLM.

Data (data.lm_format; "auto" looks at the columns): plain text (data.text_column), prompt/completion
pairs (data.prompt_column, data.completion_column) or chat conversations (data.messages_column: a list
of {role, content}) rendered with the tokenizer's chat template (data.chat_template supplies one).
With data.completion_only_loss the loss covers completions / assistant turns only (labels -100
elsewhere). data.packing packs examples into max_length blocks whose examples can't see each other
(see hfadapt.packing). Evaluation reports the mean token loss and perplexity, and generates
recipe.generation.prompts into RUN_DIR/generations.jsonl.
"""

from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from hfadapt.data import packing
from hfadapt.modeling.sharding import generation_sync
from hfadapt.data.sources import ROW_COLUMN, is_streamed, map_split, row_location
from hfadapt.core.errors import HfadaptError
from hfadapt.core.recipe import DataSection
from hfadapt.tasks.base import EvalContext, Task, register_task
from hfadapt.tasks.language import (  # FORMAT_KEY, generate: shared with preference
    FORMAT_KEY, check_messages, encode_prompts, generate, load_lm_tokenizer, render_chat, require_chat_template, short,
)
from hfadapt.tasks.reporting import ReportInput, e

if TYPE_CHECKING:
    from torch.nn import Module
    from torch.utils.data import DataLoader
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    from hfadapt.core.recipe import Recipe
    from hfadapt.data.labels import LabelInfo
    from hfadapt.tasks.base import Collate, Split

GENERATIONS_FILE = "generations.jsonl"


class CausalLMData(DataSection):
    """Plain text, prompt/completion pairs or chat conversations."""

    lm_format: Literal["auto", "text", "prompt_completion", "chat"] = Field(
        "auto", description="plain text_column, prompt/completion columns, or chat messages; auto looks at the columns"
    )
    text_column: str = "text"
    prompt_column: str = "prompt"
    completion_column: str = "completion"
    messages_column: str = Field("messages", description="a list of {role, content} per example")
    chat_template: str | None = Field(None, description="Jinja chat template for tokenizers without one")
    completion_only_loss: bool = Field(True, description="loss on completions / assistant turns only")
    packing: bool = Field(False, description="pack examples into max_length blocks without cross-attention")
    max_length: int = Field(128, gt=0, description="tokens per example (per block with packing)")
    truncation: bool = Field(True, description="false: a sequence longer than max_length is an error, not cut")


class CausalLM(Task):
    name = "causal-lm"
    modality = "text"
    peft_task_type = "CAUSAL_LM"
    auto_class = "AutoModelForCausalLM"
    data_model = CausalLMData
    pipeline_tag = "text-generation"  # the Hub's task for the model card
    card_example = "Write a haiku about rain."  # the input shown in the model card's usage
    extra_result_keys = ("perplexity",)
    liger_kernel = True  # train.liger_kernel: liger patches *ForCausalLM models (hfadapt.liger)
    step_logs = (GENERATIONS_FILE,)  # generations at evaluations past the checkpoint: written again on --resume
    restores_eval_order = True  # padded (unpacked) evaluation reads rows longest first; evaluate() sums in dataset order

    # ---- recipe -----------------------------------------------------------------------------
    def check(self, recipe: Recipe) -> list[str]:
        d, problems = recipe.data, []
        if recipe.eval.metrics:
            problems.append("eval.metrics: causal-lm computes loss and perplexity itself; remove eval.metrics")
        if d.packing and recipe.adapter.method in ("prompt", "prefix"):
            problems.append(
                f"data.packing: {recipe.adapter.method} tuning prepends virtual tokens and drops position_ids, "
                "so packed examples would attend to each other; use another adapter or data.packing=false"
            )
        return problems

    def columns(self, recipe: Recipe, with_labels: bool = True) -> dict[str, str]:
        d = recipe.data
        if d.lm_format == "text":
            return {d.text_column: "data.text_column"}
        if d.lm_format == "prompt_completion":
            return {d.prompt_column: "data.prompt_column", d.completion_column: "data.completion_column"}
        if d.lm_format == "chat":
            return {d.messages_column: "data.messages_column"}
        return {}  # auto: decided per split in preprocess, which names what is missing

    # ---- model and processor ------------------------------------------------------------------
    def load_processor(self, recipe: Recipe, path: str | None = None) -> PreTrainedTokenizerBase:
        return load_lm_tokenizer(recipe, path)  # data.chat_template is saved with the adapter, so predict renders the same way

    # ---- data ---------------------------------------------------------------------------------
    def preprocess(self, ds: Split, split: str, processor: PreTrainedTokenizerBase, recipe: Recipe, info: LabelInfo | None,
                   train: bool) -> Split:
        d = recipe.data
        fmt = resolve_format(ds.column_names, recipe, split)
        if fmt == "chat":
            require_chat_template(processor, recipe, f"data.messages_column '{d.messages_column}'")
        if train:
            processor.init_kwargs[FORMAT_KEY] = fmt  # written to tokenizer_config.json with the adapter
        eos = processor.eos_token_id

        def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
            rows = batch.get(ROW_COLUMN, indices)
            out: dict[str, list] = {"input_ids": [], "labels": []}
            for j, row in enumerate(rows):
                if fmt == "text":
                    text = _text(batch[d.text_column][j], "data.text_column", d.text_column, split, row, d)
                    ids = processor(text, add_special_tokens=True)["input_ids"] + _eos(eos)
                    labels = list(ids)
                elif fmt == "prompt_completion":
                    prompt = _text(batch[d.prompt_column][j], "data.prompt_column", d.prompt_column, split, row, d)
                    completion = _text(batch[d.completion_column][j], "data.completion_column", d.completion_column, split, row, d)
                    p = processor(prompt, add_special_tokens=True)["input_ids"]
                    c = processor(completion, add_special_tokens=False)["input_ids"] + _eos(eos)
                    ids = p + c
                    labels = ([-100] * len(p) if d.completion_only_loss else list(p)) + c
                else:
                    ids, labels = encode_chat(processor, batch[d.messages_column][j], d.completion_only_loss, d.messages_column, split, row, d)
                if len(ids) > d.max_length:
                    if not d.truncation:
                        raise HfadaptError(
                            f"data.max_length {d.max_length}, {row_location(split, row, d)}: the example has {len(ids)} tokens; "
                            "raise data.max_length or set data.truncation=true"
                        )
                    ids, labels = ids[: d.max_length], labels[: d.max_length]
                if all(x == -100 for x in labels[1:]):
                    continue  # nothing left to learn from (truncated away); counted below
                out["input_ids"].append(ids)
                out["labels"].append(labels)
            return out

        encoded = map_split(
            ds, encode, batched=True, with_indices=True, remove_columns=ds.column_names,
            num_proc=d.num_proc, desc=f"Tokenizing {split}",
        )

        def pack(source: Split) -> Split:
            # Blocks are built from 1000 examples at a time, in a materialised split as in a stream,
            # so packing on the fly gives the blocks packing the whole set would.
            return map_split(
                source, lambda b: packing.pack_examples(b["input_ids"], b["labels"], d.max_length),
                batched=True, batch_size=1000, remove_columns=["input_ids", "labels"], num_proc=d.num_proc, desc=f"Packing {split}",
            )

        if is_streamed(encoded):  # read as training goes: no counts up front
            return pack(encoded) if d.packing else encoded
        from accelerate import PartialState

        main = PartialState().is_main_process
        dropped = len(ds) - len(encoded)
        if dropped and main:
            print(f"hfadapt: causal-lm {split}: dropped {dropped} of {len(ds)} examples with no trained tokens within data.max_length {d.max_length}")
        if len(encoded) == 0:
            raise HfadaptError(f"data.max_length {d.max_length}: no {split} example keeps a trained token; raise data.max_length")
        lengths = [len(x) for x in encoded["input_ids"]]
        bs = recipe.train.batch_size if train else (recipe.train.eval_batch_size or recipe.train.batch_size)
        unpacked_share = packing.padded_share(lengths, bs)
        result = encoded
        if d.packing:
            result = pack(encoded)
            block_lengths = [len(x) for x in result["input_ids"]]
            share = packing.padded_share(block_lengths, bs)
            if main:
                print(
                    f"hfadapt: causal-lm {split}: packed {len(encoded)} examples into {len(result)} blocks of <= {d.max_length} tokens; "
                    f"non-pad tokens {100 * share:.1f}% per batch of {bs} (padded: {100 * unpacked_share:.1f}%)"
                )
        elif train and main:
            print(f"hfadapt: causal-lm {split}: non-pad tokens {100 * unpacked_share:.1f}% per batch of {bs} (data.packing=true packs them)")
        return result

    def plan_batch(self, recipe: Recipe, config: PretrainedConfig, batch_size: int) -> tuple[dict[str, Any], str]:
        """A meta-device micro-batch for `hfadapt plan` (max_length tokens: a packed block, or the longest example)."""
        from hfadapt.modeling.meta import meta_labels, meta_tokens

        n = recipe.data.max_length
        return {"input_ids": meta_tokens(batch_size, n), "labels": meta_labels(batch_size, n), "use_cache": False}, f"{n} tokens"

    def collator(self, processor: PreTrainedTokenizerBase) -> Collate:
        return Collator(processor.pad_token_id)

    def encode_inputs(self, items: list[str], processor: PreTrainedTokenizerBase, recipe: Recipe) -> dict[str, Any]:
        """Prompts -> a left-padded batch ready for generate()."""
        return encode_prompts(items, processor, recipe)

    # ---- evaluation and prediction ----------------------------------------------------------
    def evaluate(self, ctx: EvalContext, model: Module, dataloader: DataLoader) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F

        was_training = model.training
        model.eval()
        sums, counts = [], []
        for batch in dataloader:
            labels = batch["labels"]
            with torch.no_grad():
                logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            logits = logits[:, -labels.shape[1]:, :]  # prompt tuning prepends virtual tokens
            shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
            token_loss = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=-100, reduction="none")
            mask = shift_labels != -100
            # Per-example sums: gather_for_metrics drops the examples Accelerate repeated in the last batch.
            s, c = ctx.accelerator.gather_for_metrics(((token_loss * mask).sum(1), mask.sum(1)))
            sums.append(s.detach().double().cpu())
            counts.append(c.detach().cpu())
        # Dataset order (the loader may read longest first): the same double-precision sum as unsorted.
        total_loss, tokens = ctx.in_dataset_order(torch.cat(sums)).sum().item(), int(torch.cat(counts).sum().item())
        loss = total_loss / tokens if tokens else float("nan")
        results = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": tokens, "samples": int(sum(x.shape[0] for x in counts))}
        if ctx.recipe.generation.prompts and ctx.run_dir is not None:
            _generate_and_save(ctx, model)
        model.train(was_training)
        return results

    def predict(self, model: Module, processor: PreTrainedTokenizerBase, items: list[str], recipe: Recipe,
                info: LabelInfo | None) -> list[dict[str, Any]]:
        return [{"generated_text": t} for t in generate(model, processor, items, recipe)]

    def report_section(self, report: ReportInput) -> str:
        """The completions of recipe.generation.prompts at the first and the last evaluation (generations.jsonl)."""
        gens = report.generations
        if not gens:
            return "<p class=note>No sample generations: list prompts under generation.prompts in the recipe to see the model's completions at every evaluation.</p>"
        steps = sorted({g.get("step") for g in gens if g.get("step") is not None})
        show = [steps[0], steps[-1]] if len(steps) > 1 else steps
        out = ["<h3>Sample generations</h3>"]
        for step in show:
            rows = "".join(f"<tr><td>{e(g['prompt'])}</td><td>{e(g['generated_text'])}</td></tr>" for g in gens if g.get("step") == step)
            out.append(f"<h4>at step {step}</h4><table class=gen><tr><th>prompt</th><th>generated</th></tr>{rows}</table>")
        return "".join(out)


class Collator:
    """Pads a list of examples into tensors: input_ids (pad id), labels (-100), and attention_mask, or,
    for packed blocks, position_ids (the padding is a separate sequence restarting at 0).

    use_cache=False: with a cache, transformers does not derive the packed mask from position_ids.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        packed = "position_ids" in features[0]
        ids, labels, extra = [], [], []
        for f in features:
            n, gap = len(f["input_ids"]), width - len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad] * gap)
            labels.append(list(f["labels"]) + [-100] * gap)
            extra.append(list(f["position_ids"]) + list(range(gap)) if packed else [1] * n + [0] * gap)
        batch = {"input_ids": torch.tensor(ids, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long)}
        batch["position_ids" if packed else "attention_mask"] = torch.tensor(extra, dtype=torch.long)
        batch["use_cache"] = False
        return batch


# ---- helpers ------------------------------------------------------------------------------------
def resolve_format(columns: list[str], recipe: Recipe, split: str) -> str:
    d = recipe.data
    if d.lm_format != "auto":
        return d.lm_format
    if d.messages_column in columns:
        return "chat"
    if d.prompt_column in columns and d.completion_column in columns:
        return "prompt_completion"
    if d.text_column in columns:
        return "text"
    raise HfadaptError(
        f"data.lm_format: the {split} split has none of data.messages_column '{d.messages_column}', "
        f"data.prompt_column '{d.prompt_column}' + data.completion_column '{d.completion_column}', "
        f"data.text_column '{d.text_column}'; columns: {', '.join(c for c in columns if c != ROW_COLUMN)}"
    )


def encode_chat(tok: PreTrainedTokenizerBase, messages: object, completion_only: bool, column: str, split: str, row: int,
                data: DataSection | None = None) -> tuple[list[int], list[int]]:
    """Token ids of a rendered conversation and its labels (assistant turns only when completion_only).

    Assistant turns are located by rendering the conversation up to each one: the text between the
    generation prompt before it and the rendering that includes it is the turn (content and end-of-turn
    tokens); tokens starting in those character spans are labelled. `data` (the recipe's data section) lets
    errors name the line of the user's file.
    """
    at = row_location(split, row, data)
    where = f"data.messages_column '{column}', {at}"
    messages = check_messages(messages, where)
    roles = [m["role"] for m in messages]
    if "assistant" not in roles:
        raise HfadaptError(f"{where}: no assistant turn to learn from (roles: {', '.join(roles)})")

    def render(msgs: list[dict[str, str]], gen: bool) -> str:
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    full = render_chat(tok, messages, False, at)
    if not completion_only:
        ids = tok(full, add_special_tokens=False)["input_ids"]
        return ids, list(ids)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        try:
            before = render(messages[:i], True) if i else ""
        except Exception:  # noqa: BLE001 - some templates refuse an empty conversation
            before = ""
        upto = render(messages[: i + 1], False)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise HfadaptError(
                f"data.chat_template: the template does not render {at} turn by turn, so its assistant tokens "
                "can't be located; set data.completion_only_loss=false or give another data.chat_template"
            )
        spans.append((len(before), len(upto)))
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    labels = [t if any(a <= start < b for a, b in spans) else -100 for t, (start, _end) in zip(ids, enc["offset_mapping"])]
    return ids, labels


def _generate_and_save(ctx: EvalContext, model: Module) -> None:
    """recipe.generation.prompts at this evaluation -> one JSON line each in RUN_DIR/generations.jsonl (main process)."""
    acc = ctx.accelerator
    sync = generation_sync(model, acc.num_processes)
    # Sharded weights (FSDP2, ZeRO-3): every forward is a collective, so all processes generate; else the main one alone.
    if (acc.is_main_process or sync) and ctx.run_dir is not None and ctx.run_dir.is_dir():
        prompts = ctx.recipe.generation.prompts
        texts = generate(acc.unwrap_model(model), ctx.processor, prompts, ctx.recipe, sync)
    if acc.is_main_process and ctx.run_dir is not None and ctx.run_dir.is_dir():
        with open(ctx.run_dir / GENERATIONS_FILE, "a") as f:
            for prompt, text in zip(prompts, texts):
                row = {"evaluation": ctx.evaluation, "step": ctx.step, "prompt": prompt, "generated_text": text}
                f.write(json.dumps(row) + "\n")
    ctx.accelerator.wait_for_everyone()


def _eos(eos: int | None) -> list[int]:
    return [eos] if eos is not None else []


def _text(value: object, field: str, column: str, split: str, row: int, data: DataSection) -> str:
    if not isinstance(value, str):
        raise HfadaptError(f"{field} '{column}', {row_location(split, row, data)}: expected text, got {short(value)}")
    return value


register_task(CausalLM())
