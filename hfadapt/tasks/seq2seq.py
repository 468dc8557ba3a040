"""seq2seq: summarization and translation with encoder-decoders (T5, BART, Marian) and AutoModelForSeq2SeqLM.

data.text_column is the source (data.source_prefix, e.g. T5's 'summarize: ', put before it), data.target_column
the summary or translation. A dotted name reads a field of a dict column: translation datasets (wmt16,
opus_books) keep each pair in one `translation` column, so text_column 'translation.en' and
target_column 'translation.de' pick the two sides. Evaluation reports the token-weighted loss and, with
generation.predict_with_generate, the recipe's metrics (rouge; bleu, chrf) on generated text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from hfadapt.modeling.sharding import generation_sync
from hfadapt.data.sources import ROW_COLUMN, map_split, row_location
from hfadapt.core.errors import HfadaptError
from hfadapt.core.recipe import DataSection, GenerationSection
from hfadapt.tasks.base import EvalContext, Task, register_task
from hfadapt.tasks.reporting import ReportInput, e

if TYPE_CHECKING:
    from torch.nn import Module
    from torch.utils.data import DataLoader
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    from hfadapt.core.recipe import Recipe
    from hfadapt.data.labels import LabelInfo
    from hfadapt.tasks.base import Collate, Split

METRICS = ("rouge", "bleu", "chrf")


class Seq2SeqData(DataSection):
    """Sources and targets (summaries, translations); a dotted name reads a field of a dict column."""

    text_column: str = Field("text", description="the source; 'translation.en' reads a field of a dict column")
    target_column: str = Field("target", description="the summary / translation; 'translation.de' for a dict column")
    source_prefix: str | None = Field(None, description="text put before every source (T5: 'summarize: ')")
    max_length: int = Field(128, gt=0, description="source tokens")
    max_target_length: int = Field(128, gt=0, description="target tokens")
    truncation: bool = Field(True, description="false: a sequence longer than its limit is an error, not cut")


def generate_kwargs(g: GenerationSection) -> dict[str, Any]:
    kw: dict[str, Any] = {"max_new_tokens": g.max_new_tokens, "num_beams": g.num_beams, "do_sample": g.do_sample}
    if g.do_sample:  # temperature/top_p only mean something when sampling (transformers warns otherwise)
        kw.update(temperature=g.temperature, top_p=g.top_p)
    return kw


class Seq2Seq(Task):
    name = "seq2seq"
    modality = "text"
    auto_class = "AutoModelForSeq2SeqLM"
    peft_task_type = "SEQ_2_SEQ_LM"
    data_model = Seq2SeqData
    pipeline_tag = "text2text-generation"  # the Hub's task for the model card
    card_example = "a long text to summarize"  # the input shown in the model card's usage
    # evaluate() puts length-sorted evaluation back in dataset order: sorting by source length cuts the
    # padding of the forward pass and of generate, whose batches run as long as their longest source.
    restores_eval_order = True

    def check(self, recipe: Recipe) -> list[str]:
        from hfadapt import metrics

        problems = []
        d = recipe.data
        names = recipe.eval.metrics or self.default_metrics(recipe)
        for m in names:
            if m not in METRICS:
                problems.append(f"eval.metrics: '{m}' does not score generated text; use {', '.join(METRICS)}")
        best = recipe.eval.best_metric
        generated_keys = {k for m in names if m in METRICS for k in metrics.result_keys(m)}
        if best in generated_keys and not recipe.generation.predict_with_generate:
            problems.append(
                f"eval.best_metric: '{best}' is computed on generated text; set generation.predict_with_generate=true or use loss"
            )
        if d.text_column == d.target_column:
            problems.append(f"data.target_column: '{d.target_column}' is also data.text_column (the source)")
        if recipe.generation.prompts:
            problems.append("generation.prompts: prompts are for causal-lm; seq2seq generates from the evaluation sources")
        return problems

    def columns(self, recipe: Recipe, with_labels: bool = True) -> dict[str, str]:
        d = recipe.data
        # A dotted name (translation.en) needs its top-level column; preprocess reads the field inside.
        cols = {_top(d.text_column): "data.text_column"}
        if with_labels:
            cols[_top(d.target_column)] = "data.target_column"
        return cols

    def default_metrics(self, recipe: Recipe) -> list[str]:
        return ["rouge"]

    def load_processor(self, recipe: Recipe, path: str | None = None) -> PreTrainedTokenizerBase:
        from hfadapt.modeling.tokenization import load_tokenizer

        return load_tokenizer(recipe, path)

    def preprocess(self, ds: Split, split: str, processor: PreTrainedTokenizerBase, recipe: Recipe, info: LabelInfo | None,
                   train: bool) -> Split:
        d = recipe.data
        src_col, tgt_col = d.text_column, d.target_column
        has_target = _top(tgt_col) in ds.column_names
        prefix = d.source_prefix or ""

        def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, Any]:
            indices = batch.get(ROW_COLUMN, indices)
            sources = [prefix + s for s in _texts(_column(batch, src_col, indices, "data.text_column", split, d), indices, "data.text_column", src_col, split, d)]
            enc = dict(processor(sources, truncation=d.truncation, max_length=d.max_length if d.truncation else None))
            if not d.truncation:
                _check_lengths(enc["input_ids"], indices, d.max_length, "data.text_column", src_col, split, "source", "data.max_length", d)
            if has_target:
                targets = _texts(_column(batch, tgt_col, indices, "data.target_column", split, d), indices, "data.target_column", tgt_col, split, d)
                labels = processor(
                    text_target=targets, truncation=d.truncation, max_length=d.max_target_length if d.truncation else None
                )["input_ids"]
                if not d.truncation:
                    _check_lengths(labels, indices, d.max_target_length, "data.target_column", tgt_col, split, "target", "data.max_target_length", d)
                enc["labels"] = labels
            return enc

        return map_split(
            ds,
            encode,
            batched=True,
            with_indices=True,
            remove_columns=ds.column_names,
            num_proc=d.num_proc,
            desc=f"Tokenizing {split}",
        )

    def plan_batch(self, recipe: Recipe, config: PretrainedConfig, batch_size: int) -> tuple[dict[str, Any], str]:
        """A meta-device micro-batch for `hfadapt plan`: full-length sources and targets."""
        from hfadapt.modeling.meta import meta_labels, meta_tokens

        d = recipe.data
        batch = {"input_ids": meta_tokens(batch_size, d.max_length), "labels": meta_labels(batch_size, d.max_target_length)}
        return batch, f"{d.max_length} + {d.max_target_length} tokens"

    def collator(self, processor: PreTrainedTokenizerBase) -> Collate:
        from transformers import DataCollatorForSeq2Seq

        # model=None: the model builds decoder_input_ids from the labels itself (shifted right).
        return DataCollatorForSeq2Seq(processor, model=None, label_pad_token_id=-100)

    def encode_inputs(self, items: list[str], processor: PreTrainedTokenizerBase, recipe: Recipe) -> dict[str, Any]:
        d = recipe.data
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise HfadaptError(f"predict: input {i} is not text: {item!r}")
        sources = [(d.source_prefix or "") + s for s in items]
        if not d.truncation:
            ids = processor(sources)["input_ids"]
            for i, row in enumerate(ids):
                if len(row) > d.max_length:
                    raise HfadaptError(
                        f"predict: input {i} is {len(row)} tokens, longer than data.max_length {d.max_length} (data.truncation is false)"
                    )
        return dict(processor(sources, truncation=True, max_length=d.max_length, padding=True, return_tensors="pt"))

    def predict(self, model: Module, processor: PreTrainedTokenizerBase, items: list[str], recipe: Recipe,
                info: LabelInfo | None) -> list[dict[str, Any]]:
        import torch

        batch = {k: v.to(model.device) for k, v in self.encode_inputs(items, processor, recipe).items()}
        with torch.no_grad():
            out = model.generate(**batch, **generate_kwargs(recipe.generation))
        return [{"generated_text": text.strip()} for text in processor.batch_decode(out, skip_special_tokens=True)]

    def evaluate(self, ctx: EvalContext, model: Module, dataloader: DataLoader) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F

        from hfadapt import metrics

        accelerator, tokenizer, metric_names = ctx.accelerator, ctx.processor, list(ctx.metric_names)
        generate = ctx.recipe.generation.predict_with_generate and bool(metric_names)
        settings = {**generate_kwargs(ctx.recipe.generation), **generation_sync(model, accelerator.num_processes)}
        was_training = model.training
        model.eval()
        # Per example, in the loader's order: token-loss sum, target tokens, generated and reference text.
        sums: list[Any] = []
        counts: list[Any] = []
        predictions: list[str] = []
        references: list[str] = []
        for batch in dataloader:
            labels = batch["labels"]
            with torch.no_grad():
                logits = model(**batch).logits
            # Per-example sums of token losses and token counts: gather_for_metrics then drops the examples
            # Accelerate repeated to even out the last batch, so each one counts exactly once.
            per_token = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
            s, c = accelerator.gather_for_metrics((per_token.sum(-1), (labels != -100).sum(-1)))
            sums.append(s.detach().double().cpu())
            counts.append(c.detach().cpu())
            if generate:
                with torch.no_grad():
                    generated = accelerator.unwrap_model(model).generate(
                        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **settings
                    )
                # Processes generate different lengths: pad to a common width before gathering.
                generated = accelerator.pad_across_processes(generated.contiguous(), dim=1, pad_index=tokenizer.pad_token_id)
                padded_labels = accelerator.pad_across_processes(labels.contiguous(), dim=1, pad_index=-100)
                generated, padded_labels = accelerator.gather_for_metrics((generated, padded_labels))
                padded_labels = torch.where(padded_labels == -100, tokenizer.pad_token_id, padded_labels)
                predictions += [t.strip() for t in tokenizer.batch_decode(generated.cpu(), skip_special_tokens=True)]
                references += [t.strip() for t in tokenizer.batch_decode(padded_labels.cpu(), skip_special_tokens=True)]
        model.train(was_training)
        # Back to dataset order (the loader may read longest first): the same sum, corpus scores and file rows.
        loss_sums = ctx.in_dataset_order(torch.cat(sums)) if sums else torch.zeros(0, dtype=torch.float64)
        tokens, samples = int(sum(int(c.sum()) for c in counts)), int(loss_sums.shape[0])
        loss_sum = float(loss_sums.sum())
        if generate:
            predictions, references = ctx.in_dataset_order(predictions), ctx.in_dataset_order(references)
        results: dict[str, float] = {"loss": loss_sum / tokens if tokens else float("nan"), "samples": samples}
        if generate and predictions:
            results.update(metrics.compute(metric_names, predictions, references))
            if ctx.predictions_file is not None:  # sample generations for `hfadapt report`
                from hfadapt.rundir.predictions import MAX_GENERATIONS, input_texts, save_predictions

                n = min(len(predictions), MAX_GENERATIONS)
                rows = zip(input_texts(ctx, range(n)), predictions[:n], references[:n])
                save_predictions(ctx, ({"index": i, "input": x, "prediction": p, "reference": r} for i, (x, p, r) in enumerate(rows)))
        return results

    def report_section(self, report: ReportInput) -> str:
        """The first sample generations of the final evaluation beside their sources and references."""
        rows = report.predictions[:10]
        if not rows:
            return "<p class=note>No sample generations (set generation.predict_with_generate and an eval metric such as rouge).</p>"
        body = "".join(f"<tr><td>{e(r.get('input') or '')}</td><td>{e(r['reference'])}</td><td>{e(r['prediction'])}</td></tr>" for r in rows)
        return "<h3>Sample generations (validation)</h3><table class=gen><tr><th>input</th><th>reference</th><th>generated</th></tr>" + body + "</table>"


def _top(column: str) -> str:
    return column.split(".", 1)[0]


def _column(batch: dict[str, list[Any]], column: str, indices: list[int], field: str, split: str, data: DataSection) -> list[Any]:
    """The values of a column, or of a field inside a dict column for a dotted name ('translation.en').

    `data` (the recipe's data section) here and below lets errors name the line of the user's file."""
    top, *path = column.split(".")
    values = batch[top]
    for key in path:
        out = []
        for v, i in zip(values, indices):
            if not isinstance(v, dict) or key not in v:
                keys = f"keys: {', '.join(map(str, v))}" if isinstance(v, dict) else f"got {v!r}"
                raise HfadaptError(f"{field} '{column}', {row_location(split, i, data)}: no field '{key}' ({keys})")
            out.append(v[key])
        values = out
    return values


def _texts(values: list[Any], indices: list[int], field: str, column: str, split: str, data: DataSection) -> list[str]:
    for v, i in zip(values, indices):
        if not isinstance(v, str):
            raise HfadaptError(f"{field} '{column}', {row_location(split, i, data)}: expected text, got {v!r}")
    return values


def _check_lengths(ids: list[list[int]], indices: list[int], limit: int, field: str, column: str, split: str, what: str,
                   limit_field: str, data: DataSection) -> None:
    for row, i in zip(ids, indices):
        if len(row) > limit:
            raise HfadaptError(
                f"{field} '{column}', {row_location(split, i, data)}: {what} is {len(row)} tokens, longer than {limit_field} {limit} "
                "(data.truncation is false)"
            )


register_task(Seq2Seq())
