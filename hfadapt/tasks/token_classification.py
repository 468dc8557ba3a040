"""token-classification: one tag per word (NER, POS, chunking) with AutoModelForTokenClassification.

Data: a column of words (data.tokens_column, a list of strings per example) and a column of tags
(data.tags_column, one per word: ClassLabel ids, ints, or tag strings).

Alignment of word tags to sub-tokens: the first sub-token of each word carries the word's tag; the
others, and the special tokens, get -100 (no loss). With data.label_all_subtokens the other
sub-tokens are trained too, with the word's tag, except that a B-X tag becomes I-X on the
continuation pieces where the label set has I-X. Evaluation always scores one prediction per word,
the one at its first sub-token (words cut off by data.max_length are not scored).

`hfadapt predict` takes raw text and returns entity spans with character offsets, found from
the fast tokenizer's word ids and offset mappings: each word gets the tag predicted at its first
sub-token; B-/I- (also E-/S-, L-/U-) tags of one type are joined into entities; a tag without such a
prefix (POS tags, say) makes a one-word entity; "O" words are left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from hfadapt.data.sources import ROW_COLUMN, is_streamed, map_split, row_location
from hfadapt.core.errors import HfadaptError
from hfadapt.data.labels import LabelInfo, require_two_labels
from hfadapt.core.recipe import DataSection
from hfadapt.tasks.base import EvalContext, Task, register_task
from hfadapt.tasks.reporting import ReportInput, e, generic_section, img, plt, value_cell

if TYPE_CHECKING:
    from torch.nn import Module
    from torch.utils.data import DataLoader
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    from hfadapt.core.recipe import Recipe
    from hfadapt.tasks.base import Collate, Split

IGNORE = -100  # label of positions that take no loss and no score
INSIDE, END = ("I", "E", "L"), ("E", "L", "S", "U")  # chunk prefixes: continue one, close one


class TokenClassificationData(DataSection):
    """Pre-split words and one tag per word."""

    tokens_column: str = Field("tokens", description="a list of words per example")
    tags_column: str = Field("ner_tags", description="one tag per word: ClassLabel ids, ints or tag strings")
    labels: list[str] | None = Field(None, description="tag names in id order; read from the data when absent")
    label_all_subtokens: bool = Field(False, description="label every sub-token, not only the first of each word")
    max_length: int = Field(128, gt=0, description="tokenizer truncation length")

    @field_validator("labels")
    @classmethod
    def _unique(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None and len(set(labels)) != len(labels):
            repeated = sorted({n for n in labels if labels.count(n) > 1})
            raise ValueError(f"data.labels: tag names must be unique; repeated: {', '.join(repeated)}")
        return labels


class TokenClassification(Task):
    name = "token-classification"
    modality = "text"
    peft_task_type = "TOKEN_CLS"
    auto_class = "AutoModelForTokenClassification"
    data_model = TokenClassificationData
    pipeline_tag = "token-classification"  # the Hub's task for the model card
    card_example = "John Smith lives in Paris."  # the input shown in the model card's usage
    restores_eval_order = True  # evaluate() puts length-sorted evaluation back in dataset order

    def check(self, recipe: Recipe) -> list[str]:
        d = recipe.data
        problems = []
        for m in recipe.eval.metrics or []:
            if m != "seqeval":
                problems.append(f"eval.metrics: '{m}' does not fit token-classification; use seqeval")
        if d.tokens_column == d.tags_column:
            problems.append(f"data.tags_column: '{d.tags_column}' is also data.tokens_column")
        return problems

    def columns(self, recipe: Recipe, with_labels: bool = True) -> dict[str, str]:
        d = recipe.data
        cols = {d.tokens_column: "data.tokens_column"}
        if with_labels:
            cols[d.tags_column] = "data.tags_column"
        return cols

    def default_metrics(self, recipe: Recipe) -> list[str]:
        return ["seqeval"]

    def load_processor(self, recipe: Recipe, path: str | None = None) -> PreTrainedTokenizerBase:
        from hfadapt.modeling.tokenization import load_tokenizer

        tok = load_tokenizer(recipe, path, need_fast="token-classification")
        if getattr(tok, "add_prefix_space", None) is False:
            # Byte-level BPE (GPT-2, RoBERTa) encodes a word differently at the start of a text;
            # pre-split words must be encoded as if a space preceded each.
            tok = load_tokenizer(recipe, path, need_fast="token-classification", add_prefix_space=True)
        return tok

    # ---- labels ---------------------------------------------------------------------------------
    def label_info(self, train: Split, recipe: Recipe) -> LabelInfo:
        """Tag names: data.labels, else a ClassLabel feature of the tags, else the tags seen in train."""
        d = recipe.data
        col = d.tags_column
        where = f"data.tags_column '{col}'"
        if d.labels:
            if len(set(d.labels)) != len(d.labels):
                raise HfadaptError("data.labels: label names must be unique")
            require_two_labels(d.labels, "data.labels", "given")
            return LabelInfo(tuple(d.labels), "single_label")
        inner = getattr(train.features[col], "feature", None)
        if inner is not None and hasattr(inner, "names"):  # Sequence(ClassLabel)
            require_two_labels(inner.names, where, f"found in column '{col}'")
            return LabelInfo(tuple(inner.names), "single_label")
        if is_streamed(train):
            raise HfadaptError(
                f"data.labels: the tags of a streamed dataset can't be read up front and {where} has no ClassLabel feature; "
                "list the tag names in data.labels (in id order)"
            )
        rows = train[ROW_COLUMN] if ROW_COLUMN in train.column_names else range(len(train))
        values: set[Any] = set()
        for tags, row in zip(train[col], rows):
            for tag in _tag_list(tags, f"{where}, {row_location('train', row, d)}"):
                values.add(tag)
        if not values:
            raise HfadaptError(f"{where}: column '{col}' holds no tags")
        require_two_labels([str(v) for v in values], where, f"found in column '{col}'")
        if all(isinstance(v, str) for v in values):
            return LabelInfo(tuple(sorted(values)), "single_label")
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            if min(values) < 0:
                raise HfadaptError(f"{where}: column '{col}' has negative tag {min(values)}; give data.labels")
            return LabelInfo(tuple(str(i) for i in range(max(values) + 1)), "single_label")
        raise HfadaptError(f"{where}: column '{col}' mixes tag types; use all strings or all ints")

    def info_from_config(self, config: PretrainedConfig) -> LabelInfo:
        return LabelInfo(tuple(config.id2label[i] for i in range(config.num_labels)), "single_label")

    def model_kwargs(self, info: LabelInfo | None) -> dict[str, Any]:
        assert info is not None, "a token classifier always has tag names"
        return {"num_labels": info.num_labels, "id2label": info.id2label, "label2id": info.label2id}

    # ---- data -----------------------------------------------------------------------------------
    def preprocess(self, ds: Split, split: str, processor: PreTrainedTokenizerBase, recipe: Recipe, info: LabelInfo | None,
                   train: bool) -> Split:
        d = recipe.data
        words_col, tags_col, max_length = d.tokens_column, d.tags_column, d.max_length
        has_tags = tags_col in ds.column_names
        # Continuation pieces are trained only with label_all_subtokens, and never scored.
        all_subtokens = d.label_all_subtokens and train
        continuation = _continuation_ids(info) if all_subtokens else None

        def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, Any]:
            indices = batch.get(ROW_COLUMN, indices)
            words = [_words(w, f"data.tokens_column '{words_col}', {row_location(split, i, d)}") for w, i in zip(batch[words_col], indices)]
            enc = processor(words, is_split_into_words=True, truncation=True, max_length=max_length)
            if has_tags:
                labels = []
                for b, (tags, row) in enumerate(zip(batch[tags_col], indices)):
                    where = f"data.tags_column '{tags_col}', {row_location(split, row, d)}"
                    ids = _encode_tags(tags, words[b], info, where)
                    labels.append(_align(enc.word_ids(b), ids, continuation))
                enc["labels"] = labels
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
        return {"input_ids": meta_tokens(batch_size, n), "labels": meta_labels(batch_size, n)}, f"{n} tokens"

    def collator(self, processor: PreTrainedTokenizerBase) -> Collate:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(processor, label_pad_token_id=IGNORE)

    def encode_inputs(self, items: list[str], processor: PreTrainedTokenizerBase, recipe: Recipe) -> dict[str, Any]:
        for item in items:
            if not isinstance(item, str):
                raise HfadaptError(f"predict: token-classification takes text strings, got {item!r}")
        return dict(processor(items, truncation=True, max_length=recipe.data.max_length, padding=True, return_tensors="pt"))

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluate(self, ctx: EvalContext, model: Module, dataloader: DataLoader) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F

        from hfadapt import metrics

        accelerator, info = ctx.accelerator, ctx.info

        was_training = model.training
        model.eval()
        # Per example, in the loader's order: loss sum, scored tokens, predicted and true tags.
        losses: list[Any] = []
        counts: list[Any] = []
        predictions: list[list[str]] = []
        references: list[list[str]] = []
        for batch in dataloader:
            labels = batch["labels"]
            with torch.no_grad():
                logits = model(**batch).logits
            logits = logits[:, -labels.shape[1]:].float()  # prompt tuning puts virtual tokens first
            per_token = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
            example_loss, example_tokens = per_token.sum(dim=1), (labels != IGNORE).sum(dim=1)
            preds = logits.argmax(dim=-1)
            # Batches differ in length between processes: pad to one length before gathering.
            preds = accelerator.pad_across_processes(preds.contiguous(), dim=1, pad_index=IGNORE)
            labels = accelerator.pad_across_processes(labels.contiguous(), dim=1, pad_index=IGNORE)
            # gather_for_metrics drops the samples Accelerate repeated to even out the last batch.
            preds, labels, example_loss, example_tokens = accelerator.gather_for_metrics(
                (preds, labels, example_loss, example_tokens)
            )
            losses.append(example_loss.detach().double().cpu())
            counts.append(example_tokens.detach().cpu())
            for p_row, l_row in zip(preds.cpu().tolist(), labels.cpu().tolist()):
                keep = [(p, t) for p, t in zip(p_row, l_row) if t != IGNORE]
                predictions.append([info.names[p] for p, _ in keep])
                references.append([info.names[t] for _, t in keep])
        model.train(was_training)
        # Back to dataset order (the loader may read longest first): the same sums, the same tag lists.
        predictions, references = ctx.in_dataset_order(predictions), ctx.in_dataset_order(references)
        example_losses = ctx.in_dataset_order(torch.cat(losses)) if losses else torch.zeros(0, dtype=torch.float64)
        loss_sum, tokens, samples = float(example_losses.sum()), int(sum(int(c.sum()) for c in counts)), len(predictions)
        results: dict[str, Any] = {"loss": loss_sum / tokens if tokens else float("nan"), "samples": samples}
        for name in ctx.metric_names:
            if name == "seqeval":
                scores = metrics.load("seqeval").compute(predictions=predictions, references=references, per_entity=True)
                for key, value in scores.items():
                    if isinstance(value, dict):  # per entity type: eval/PER/f1, ...
                        results.update({f"{key}/{k}": v for k, v in value.items() if k != "number"})
                    else:
                        results[key] = value
            else:
                results.update(metrics.compute([name], predictions, references))
        return results

    # ---- predict --------------------------------------------------------------------------------
    def predict(self, model: Module, processor: PreTrainedTokenizerBase, items: list[str], recipe: Recipe,
                info: LabelInfo | None) -> list[dict[str, Any]]:
        import torch

        self.encode_inputs(items, processor, recipe)  # type checks only
        enc = processor(
            items, truncation=True, max_length=recipe.data.max_length, padding=True,
            return_tensors="pt", return_offsets_mapping=True,
        )
        offsets = enc.pop("offset_mapping").tolist()
        device = next(model.parameters()).device
        with torch.no_grad():
            logits = model(**{k: v.to(device) for k, v in enc.items()}).logits
        logits = logits[:, -enc["input_ids"].shape[1]:].float()
        probs = torch.softmax(logits, dim=-1).cpu()
        scores, tag_ids = probs.max(dim=-1)
        out = []
        for i, text in enumerate(items):
            words: list[list[Any]] = []  # [start, end, tag, score] per word
            previous = None
            for t, w in enumerate(enc.word_ids(i)):
                if w is None:
                    continue
                start, end = offsets[i][t]
                if w != previous:
                    words.append([start, end, info.names[int(tag_ids[i, t])], float(scores[i, t])])
                else:
                    words[-1][1] = max(words[-1][1], end)
                previous = w
            out.append({"entities": group_entities(text, words)})
        return out

    def report_section(self, report: ReportInput) -> str:
        """Precision, recall and F1 per entity type (seqeval's breakdown in the final evaluation) and overall."""
        evals = report.split("eval")
        types = sorted({k.split("/")[0] for k in evals if "/" in k})
        if not types:
            return generic_section(report.split("eval"))
        cols = ("precision", "recall", "f1")
        body = "".join(
            f"<tr><td>{e(t)}</td>" + "".join(value_cell(f"eval/{t}/{c}", evals.get(f"{t}/{c}")) for c in cols) + "</tr>" for t in types
        )
        over = {c: (f"overall_{c}" if f"overall_{c}" in evals else c) for c in cols}  # seqeval's overall_* keys, or plain
        overall = "<tr class=total><td>overall</td>" + "".join(value_cell(f"eval/{over[c]}", evals.get(over[c])) for c in cols) + "</tr>"
        fig, ax = plt().subplots(figsize=(max(4, 1.2 * len(types) + 2), 3))
        width = 0.27
        for k, c in enumerate(cols):
            ax.bar([i + (k - 1) * width for i in range(len(types))], [evals.get(f"{t}/{c}", 0) for t in types], width, label=c)
        ax.set_xticks(range(len(types)), types)
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
        ax.set_title("per entity type (validation)")
        return ("<h3>Per entity type</h3><div class=row>" + img(fig) + "<table><tr><th>entity</th><th>precision</th><th>recall</th><th>F1</th></tr>" + body + overall + "</table></div>")


def group_entities(text: str, words: list[list[Any]]) -> list[dict[str, Any]]:
    """Words with tags -> entity spans {"entity", "text", "start", "end", "score"} (mean word score)."""
    entities: list[dict] = []
    current: dict | None = None

    def close() -> None:
        nonlocal current
        if current is not None:
            start, end, scores = current["start"], current["end"], current["scores"]
            entities.append({"entity": current["entity"], "text": text[start:end], "start": start, "end": end,
                             "score": sum(scores) / len(scores)})
        current = None

    for start, end, tag, score in words:
        prefix, kind = split_tag(tag)
        if prefix is None and kind == "O":
            close()
            continue
        if prefix is None:  # a tag without a chunk prefix: one entity per word
            close()
            current = {"entity": kind, "start": start, "end": end, "scores": [score]}
            close()
            continue
        if prefix in INSIDE and current is not None and current["entity"] == kind:
            current["end"] = end
            current["scores"].append(score)
        else:  # B-X, or an I-X that does not continue an X (conlleval starts a new chunk)
            close()
            current = {"entity": kind, "start": start, "end": end, "scores": [score]}
        if prefix in END:
            close()
    close()
    return entities


def split_tag(tag: str) -> tuple[str | None, str]:
    """'B-PER' -> ('B', 'PER'); 'NN' -> (None, 'NN'); 'O' -> (None, 'O')."""
    if len(tag) > 2 and tag[1] in "-_" and tag[0] in "BIESLU":
        return tag[0], tag[2:]
    return None, tag


def _continuation_ids(info: LabelInfo) -> list[int]:
    """Label id of a word's later sub-tokens, by the id of its tag: B-X -> I-X where I-X exists."""
    ids = info.label2id
    out = []
    for i, name in enumerate(info.names):
        prefix, kind = split_tag(name)
        out.append(ids.get(f"I{name[1]}{kind}", i) if prefix == "B" else i)
    return out


def _align(word_ids: list[int | None], tag_ids: list[int], continuation: list[int] | None) -> list[int]:
    labels, previous = [], None
    for w in word_ids:
        if w is None:
            labels.append(IGNORE)
        elif w != previous:
            labels.append(tag_ids[w])
        else:
            labels.append(continuation[tag_ids[w]] if continuation is not None else IGNORE)
        previous = w
    return labels


def _words(value: object, where: str) -> list[str]:
    if not isinstance(value, (list, tuple)):
        raise HfadaptError(f"{where}: expected a list of words, got {value!r}")
    if not value:
        raise HfadaptError(f"{where}: no words")
    for j, w in enumerate(value):
        if not isinstance(w, str):
            raise HfadaptError(f"{where}, word {j}: expected text, got {w!r}")
    return list(value)


def _tag_list(value: object, where: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise HfadaptError(f"{where}: expected a list of tags (one per word), got {value!r}")
    for j, tag in enumerate(value):
        if tag is None:
            raise HfadaptError(f"{where}, word {j}: tag is missing")
    return list(value)


def _encode_tags(tags: object, words: list[str], info: LabelInfo, where: str) -> list[int]:
    tags = _tag_list(tags, where)
    if len(tags) != len(words):
        raise HfadaptError(f"{where}: {len(tags)} tags for {len(words)} words in data.tokens_column; give one tag per word")
    ids = []
    for j, tag in enumerate(tags):
        at = f"{where}, word {j} ({words[j]!r})"
        if isinstance(tag, str):
            if tag not in info.label2id:
                raise HfadaptError(f"{at}: unknown tag {tag!r}; known: {', '.join(info.names)} (data.labels lists them all)")
            ids.append(info.label2id[tag])
        elif isinstance(tag, bool) or not isinstance(tag, int):
            raise HfadaptError(f"{at}: tag {tag!r} is neither a tag name nor an int")
        elif not 0 <= tag < len(info.names):
            raise HfadaptError(f"{at}: tag {tag} out of range [0, {len(info.names) - 1}]")
        else:
            ids.append(tag)
    return ids


register_task(TokenClassification())
