"""text-classification: encoders (and decoders) with AutoModelForSequenceClassification.

Single-label, multi-label and regression; single texts or text pairs.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from hfadapt.tasks import classification
from hfadapt.data.sources import ROW_COLUMN, map_split, row_location
from hfadapt.core.errors import HfadaptError
from hfadapt.core.recipe import DataSection
from hfadapt.tasks.base import EvalContext, register_task


class TextClassificationData(classification.LabelFields, DataSection):
    """Texts (or text pairs) and their labels."""

    text_column: str = "text"
    text_pair_column: str | None = Field(None, description="second text of a pair (NLI, paraphrase)")
    max_length: int = Field(128, gt=0, description="tokenizer truncation length")


class TextClassification:
    name = "text-classification"
    modality = "text"
    peft_task_type = "SEQ_CLS"
    auto_class = "AutoModelForSequenceClassification"
    data_model = TextClassificationData
    pipeline_tag = "text-classification"  # the Hub's task for the model card
    card_example = "an example sentence"  # the input shown in the model card's usage
    extra_result_keys: tuple[str, ...] = ()
    restores_eval_order = True  # classification.evaluate puts length-sorted evaluation back in dataset order

    def check(self, recipe: Any) -> list[str]:
        return classification.check(recipe)

    def columns(self, recipe: Any, with_labels: bool = True) -> dict[str, str]:
        d = recipe.data
        cols = {d.text_column: "data.text_column"}
        if d.text_pair_column:
            cols[d.text_pair_column] = "data.text_pair_column"
        if with_labels:
            cols[d.label_column] = "data.label_column"
        return cols

    def default_metrics(self, recipe: Any) -> list[str]:
        return classification.default_metrics(recipe)

    def load_processor(self, recipe: Any, path: str | None = None) -> Any:
        from hfadapt.modeling.tokenization import load_tokenizer

        return load_tokenizer(recipe, path)

    def label_info(self, train: Any, recipe: Any) -> Any:
        return classification.label_info(train, recipe)

    def info_from_config(self, config: Any) -> Any:
        from hfadapt.data.labels import LabelInfo

        return LabelInfo.from_model_config(config)

    def model_kwargs(self, info: Any) -> dict:
        return classification.model_kwargs(info)

    def evaluate(self, ctx: EvalContext, model: Any, dataloader: Any) -> dict:
        return classification.evaluate(ctx, model, dataloader)

    def predict(self, model: Any, processor: Any, items: list[str], recipe: Any, info: Any) -> list[dict]:
        return classification.predict_batch(model, self.encode_inputs(items, processor, recipe), info)

    def preprocess(self, ds: Any, split: str, processor: Any, recipe: Any, labels: Any, train: bool) -> Any:
        d = recipe.data
        text_col, pair_col, label_col = d.text_column, d.text_pair_column, d.label_column
        has_labels = label_col in ds.column_names

        def encode(batch: dict, indices: list[int]) -> dict:
            indices = batch.get(ROW_COLUMN, indices)
            texts = _texts(batch[text_col], indices, "data.text_column", text_col, split, d)
            pairs = _texts(batch[pair_col], indices, "data.text_pair_column", pair_col, split, d) if pair_col else None
            enc = processor(texts, pairs, truncation=True, max_length=d.max_length)
            if has_labels:
                enc["labels"] = classification.encode_labels(batch[label_col], indices, labels, split, d)
            return dict(enc)

        return map_split(
            ds,
            encode,
            batched=True,
            with_indices=True,
            remove_columns=ds.column_names,
            num_proc=d.num_proc,
            desc=f"Tokenizing {split}",
        )

    def plan_batch(self, recipe: Any, config: Any, batch_size: int) -> tuple[dict, str]:
        """A meta-device micro-batch for `hfadapt plan` (padded to data.max_length: the worst case)."""
        from hfadapt.modeling.meta import meta_labels, meta_tokens

        n = recipe.data.max_length
        return {"input_ids": meta_tokens(batch_size, n), "labels": meta_labels(batch_size)}, f"{n} tokens"

    def collator(self, processor: Any) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(processor)

    def encode_inputs(self, items: list[str], processor: Any, recipe: Any) -> dict:
        if recipe.data.text_pair_column:
            split = [item.split("\t", 1) for item in items]
            if any(len(s) != 2 for s in split):
                raise HfadaptError("this recipe classifies text pairs: give each input as 'TEXT<TAB>PAIR'")
            texts, pairs = [s[0] for s in split], [s[1] for s in split]
        else:
            texts, pairs = items, None
        return dict(processor(texts, pairs, truncation=True, max_length=recipe.data.max_length, padding=True, return_tensors="pt"))


def _texts(values: list[Any], indices: list[int], field: str, column: str, split: str, data: Any) -> list[str]:
    """`data` is the recipe's data section: rows are named as lines of the user's file."""
    for v, i in zip(values, indices):
        if not isinstance(v, str):
            raise HfadaptError(f"{field} '{column}', {row_location(split, i, data)}: expected text, got {v!r}")
    return values


register_task(TextClassification())
