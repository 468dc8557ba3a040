"""text-classification: encoders (and decoders) with AutoModelForSequenceClassification.

Single-label, multi-label and regression; single texts or text pairs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from hfadapt.tasks import classification
from hfadapt.data.sources import ROW_COLUMN, map_split, row_location
from hfadapt.core.errors import HfadaptError
from hfadapt.core.recipe import DataSection
from hfadapt.tasks.base import register_task
from hfadapt.tasks.classification import ClassificationTask

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    from hfadapt.core.recipe import Recipe
    from hfadapt.data.labels import LabelInfo
    from hfadapt.tasks.base import Collate, Split


class TextClassificationData(classification.LabelFields, DataSection):
    """Texts (or text pairs) and their labels."""

    text_column: str = "text"
    text_pair_column: str | None = Field(None, description="second text of a pair (NLI, paraphrase)")
    max_length: int = Field(128, gt=0, description="tokenizer truncation length")


class TextClassification(ClassificationTask):
    name = "text-classification"
    modality = "text"
    peft_task_type = "SEQ_CLS"
    auto_class = "AutoModelForSequenceClassification"
    data_model = TextClassificationData
    pipeline_tag = "text-classification"  # the Hub's task for the model card
    card_example = "an example sentence"  # the input shown in the model card's usage

    def columns(self, recipe: Recipe, with_labels: bool = True) -> dict[str, str]:
        d = recipe.data
        cols = {d.text_column: "data.text_column"}
        if d.text_pair_column:
            cols[d.text_pair_column] = "data.text_pair_column"
        if with_labels:
            cols[d.label_column] = "data.label_column"
        return cols

    def load_processor(self, recipe: Recipe, path: str | None = None) -> PreTrainedTokenizerBase:
        from hfadapt.modeling.tokenization import load_tokenizer

        return load_tokenizer(recipe, path)

    def preprocess(self, ds: Split, split: str, processor: PreTrainedTokenizerBase, recipe: Recipe, info: LabelInfo | None,
                   train: bool) -> Split:
        d = recipe.data
        text_col, pair_col, label_col = d.text_column, d.text_pair_column, d.label_column
        has_labels = label_col in ds.column_names

        def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, Any]:
            indices = batch.get(ROW_COLUMN, indices)
            texts = _texts(batch[text_col], indices, "data.text_column", text_col, split, d)
            pairs = _texts(batch[pair_col], indices, "data.text_pair_column", pair_col, split, d) if pair_col else None
            enc = processor(texts, pairs, truncation=True, max_length=d.max_length)
            if has_labels:
                enc["labels"] = classification.encode_labels(batch[label_col], indices, info, split, d)
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

    def plan_batch(self, recipe: Recipe, config: PretrainedConfig, batch_size: int) -> tuple[dict[str, Any], str]:
        """A meta-device micro-batch for `hfadapt plan` (padded to data.max_length: the worst case)."""
        from hfadapt.modeling.meta import meta_labels, meta_tokens

        n = recipe.data.max_length
        return {"input_ids": meta_tokens(batch_size, n), "labels": meta_labels(batch_size)}, f"{n} tokens"

    def collator(self, processor: PreTrainedTokenizerBase) -> Collate:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(processor)

    def encode_inputs(self, items: list[str], processor: PreTrainedTokenizerBase, recipe: Recipe) -> dict[str, Any]:
        if recipe.data.text_pair_column:
            split = [item.split("\t", 1) for item in items]
            if any(len(s) != 2 for s in split):
                raise HfadaptError("this recipe classifies text pairs: give each input as 'TEXT<TAB>PAIR'")
            texts, pairs = [s[0] for s in split], [s[1] for s in split]
        else:
            texts, pairs = items, None
        return dict(processor(texts, pairs, truncation=True, max_length=recipe.data.max_length, padding=True, return_tensors="pt"))


def _texts(values: list[Any], indices: list[int], field: str, column: str, split: str, data: DataSection) -> list[str]:
    """`data` is the recipe's data section: rows are named as lines of the user's file."""
    for v, i in zip(values, indices):
        if not isinstance(v, str):
            raise HfadaptError(f"{field} '{column}', {row_location(split, i, data)}: expected text, got {v!r}")
    return values


register_task(TextClassification())
