"""question-answering: extractive (SQuAD-style) QA with AutoModelForQuestionAnswering.

Data: a question column, a context column and an answers column holding
{"text": [...], "answer_start": [...]} (character offsets into the context; empty lists for an
unanswerable question when data.version_2_with_negative is true). A JSON string of that shape is
accepted too (CSV files).

Long contexts are cut into windows of data.max_length tokens that overlap by data.doc_stride
tokens (truncation="only_second", return_overflowing_tokens). Training labels are the start/end
token of the first answer in each window, or the CLS token where the answer is not inside the
window (or there is none).

Evaluation needs more than the model sees: which example each window belongs to, the character
offsets of its context tokens, the context and the gold answers. The evaluation dataset keeps
them as columns named `qa_*` (one row per window); the collator drops them from the model batch
except `qa_window`, the window's row number, which evaluate() pops before calling the model,
gathers with the logits (gather_for_metrics, so each window counts exactly once across
processes) and uses to read the other `qa_*` columns from the evaluated dataset, which it
receives in its context (`EvalContext.dataset`, the whole split preprocess() returned).

An example's answer is the best span over all its windows (highest start + end logit, start <=
end, inside the context, at most data.max_answer_length tokens); with
data.version_2_with_negative it is "" when the lowest CLS score of its windows is at least that.

predict: "QUESTION<TAB>CONTEXT" -> {"answer", "start", "end", "score"}: start/end are character
offsets into the context (context[start:end] == answer) and score is softmax(start) *
softmax(end) of the span within its window; a no-answer (v2 runs) gives answer "" and start/end
None.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import Field

from hfadapt.data.sources import ROW_COLUMN, map_split, row_location
from hfadapt.core.errors import HfadaptError
from hfadapt.core.recipe import DataSection
from hfadapt.tasks.base import EvalContext, Task, register_task
from hfadapt.tasks.reporting import ReportInput, e, generic_section

if TYPE_CHECKING:
    from torch import Tensor
    from torch.nn import Module
    from torch.utils.data import DataLoader
    from transformers import BatchEncoding, PretrainedConfig, PreTrainedTokenizerBase

    from hfadapt.core.recipe import Recipe
    from hfadapt.data.labels import LabelInfo
    from hfadapt.tasks.base import Collate, Split

QA_METRICS = ("squad", "squad_v2")
WINDOW = "qa_window"  # the only qa_* key that reaches the batch; popped before model(**batch)
# Per-window columns evaluate() reads back from the dataset.
META_COLUMNS = ("qa_example", "qa_offsets", "qa_context", "qa_answers", "qa_answer_starts", "qa_cls")
NEG = -1e9  # logit padding across processes: never a best span, adds nothing to a softmax


class QuestionAnsweringData(DataSection):
    """Questions, contexts and SQuAD-style answers."""

    question_column: str = "question"
    context_column: str = "context"
    answers_column: str = Field("answers", description="SQuAD-style {text: [...], answer_start: [...]}")
    max_length: int = Field(384, gt=0, description="tokens per window (question + a slice of the context)")
    doc_stride: int = Field(128, gt=0, description="overlap between the windows of a long context")
    version_2_with_negative: bool = Field(False, description="SQuAD v2: questions may have no answer")
    max_answer_length: int = Field(30, gt=0, description="tokens of the longest answer predicted")


class QuestionAnswering(Task):
    name = "question-answering"
    modality = "text"
    auto_class = "AutoModelForQuestionAnswering"
    peft_task_type = "QUESTION_ANS"
    data_model = QuestionAnsweringData
    pipeline_tag = "question-answering"  # the Hub's task for the model card
    card_example = ""  # the input shown in the model card's usage
    restores_eval_order = True  # evaluate() scores windows in dataset order whatever order the loader read

    # ---- recipe -----------------------------------------------------------------------------
    def check(self, recipe: Recipe) -> list[str]:
        d = recipe.data
        want = "squad_v2" if d.version_2_with_negative else "squad"
        flag = f"data.version_2_with_negative={str(d.version_2_with_negative).lower()}"
        problems = []
        for m in recipe.eval.metrics or []:
            if m in QA_METRICS and m != want:
                problems.append(f"eval.metrics: '{m}' does not fit {flag}; use {want}")
            elif m not in QA_METRICS:
                problems.append(f"eval.metrics: '{m}' does not fit question-answering; use {want}")
        if d.doc_stride >= d.max_length:
            problems.append(
                f"data.doc_stride: {d.doc_stride} must be smaller than data.max_length {d.max_length} "
                "(windows overlap by doc_stride tokens; SQuAD uses max_length 384, doc_stride 128)"
            )
        return problems

    def columns(self, recipe: Recipe, with_labels: bool = True) -> dict[str, str]:
        d = recipe.data
        cols = {d.question_column: "data.question_column", d.context_column: "data.context_column"}
        if with_labels:
            cols[d.answers_column] = "data.answers_column"
        return cols

    def default_metrics(self, recipe: Recipe) -> list[str]:
        return ["squad_v2"] if recipe.data.version_2_with_negative else ["squad"]

    # ---- model --------------------------------------------------------------------------------
    def load_processor(self, recipe: Recipe, path: str | None = None) -> PreTrainedTokenizerBase:
        from hfadapt.modeling.tokenization import load_tokenizer

        tok = load_tokenizer(recipe, path, need_fast="question-answering")
        tok.padding_side = "right"  # offsets are per window from position 0; padding goes after them
        return tok

    # ---- data -----------------------------------------------------------------------------------
    def preprocess(self, ds: Split, split: str, processor: PreTrainedTokenizerBase, recipe: Recipe, info: LabelInfo | None,
                   train: bool) -> Split:
        d = recipe.data
        q_col, c_col, a_col = d.question_column, d.context_column, d.answers_column
        has_answers = a_col in ds.column_names
        v2 = d.version_2_with_negative

        def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
            rows = batch.get(ROW_COLUMN, indices)
            questions = [q.lstrip() for q in _texts(batch[q_col], rows, "data.question_column", q_col, split, d)]
            contexts = _texts(batch[c_col], rows, "data.context_column", c_col, split, d)
            answers = None
            if has_answers:
                answers = [
                    parse_answers(v, ctx, row, split, a_col, c_col, v2, d) for v, ctx, row in zip(batch[a_col], contexts, rows)
                ]
            enc = encode_windows(processor, questions, contexts, d.max_length, d.doc_stride, rows, split, q_col, d)
            sample_map = enc.pop("overflow_to_sample_mapping")
            offsets = enc.pop("offset_mapping")
            out: dict[str, list] = {k: list(v) for k, v in enc.items()}
            if has_answers:
                out["start_positions"], out["end_positions"] = [], []
            if not train:
                for key in META_COLUMNS:
                    out[key] = []
            for w, ex in enumerate(sample_map):
                ctx_offsets = context_offsets(enc, w, offsets[w])
                cls = cls_index(enc["input_ids"][w], processor)
                if has_answers:
                    texts, starts = answers[ex]
                    s, e = (cls, cls) if not texts else answer_tokens(ctx_offsets, starts[0], starts[0] + len(texts[0]), cls)
                    out["start_positions"].append(s)
                    out["end_positions"].append(e)
                if not train:
                    texts, starts = answers[ex] if has_answers else ([], [])
                    out["qa_example"].append(indices[ex])
                    out["qa_offsets"].append(ctx_offsets)
                    out["qa_context"].append(contexts[ex])
                    out["qa_answers"].append(texts)
                    out["qa_answer_starts"].append(starts)
                    out["qa_cls"].append(cls)
            return out

        processed = map_split(
            ds,
            encode,
            batched=True,
            with_indices=True,
            remove_columns=ds.column_names,
            num_proc=d.num_proc,
            desc=f"Tokenizing {split}",
        )
        if not train:
            processed = processed.add_column(WINDOW, list(range(len(processed))))
        return processed

    def plan_batch(self, recipe: Recipe, config: PretrainedConfig, batch_size: int) -> tuple[dict[str, Any], str]:
        """A meta-device micro-batch of full windows for `hfadapt plan`."""
        from hfadapt.modeling.meta import meta_labels, meta_tokens

        n = recipe.data.max_length
        batch = {"input_ids": meta_tokens(batch_size, n), "start_positions": meta_labels(batch_size), "end_positions": meta_labels(batch_size)}
        return batch, f"{n}-token windows"

    def collator(self, processor: PreTrainedTokenizerBase) -> Collate:
        return QACollator(processor)

    def encode_inputs(self, items: list[str], processor: PreTrainedTokenizerBase, recipe: Recipe) -> dict[str, Any]:
        """'QUESTION<TAB>CONTEXT' strings -> one padded batch of windows (several per long context)."""
        questions, contexts = _split_inputs(items)
        d = recipe.data
        enc = encode_windows(processor, questions, contexts, d.max_length, d.doc_stride, list(range(len(items))), "predict", None)
        enc.pop("overflow_to_sample_mapping")
        enc.pop("offset_mapping")
        return dict(processor.pad(dict(enc), return_tensors="pt"))

    # ---- evaluation and prediction -------------------------------------------------------------------
    def evaluate(self, ctx: EvalContext, model: Module, dataloader: DataLoader) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F

        from hfadapt import metrics

        accelerator, ds = ctx.accelerator, ctx.dataset
        v2, max_answer_length = ctx.recipe.data.version_2_with_negative, ctx.recipe.data.max_answer_length
        missing = [c for c in (WINDOW, *META_COLUMNS) if c not in ds.column_names]
        if missing:
            raise HfadaptError(f"question-answering: the evaluation dataset lacks {', '.join(missing)}; build it with preprocess(train=False)")
        meta = ds.select_columns(list(META_COLUMNS))
        was_training = model.training
        model.eval()
        # Per window, in the loader's order: (start logits, end logits over its own tokens, loss or None, its qa_* columns).
        windows: list[tuple] = []
        for batch in dataloader:
            batch = dict(batch)
            window = batch.pop(WINDOW)
            starts, ends = batch.pop("start_positions", None), batch.pop("end_positions", None)
            with torch.no_grad():
                out = model(**batch)
            s = accelerator.pad_across_processes(out.start_logits.float().contiguous(), dim=1, pad_index=NEG)
            e = accelerator.pad_across_processes(out.end_logits.float().contiguous(), dim=1, pad_index=NEG)
            parts = [s, e, window] + ([starts, ends] if starts is not None else [])
            gathered = [t.detach().cpu() for t in accelerator.gather_for_metrics(tuple(parts))]
            s, e, window = gathered[:3]
            rows = meta[window.tolist()]
            for k in range(len(window)):
                n = len(rows["qa_offsets"][k])
                sk, ek = s[k, :n], e[k, :n]
                loss = None
                if starts is not None:  # the model's QA loss, over the window's own tokens only
                    sp, ep = gathered[3][k], gathered[4][k]
                    loss = float((F.cross_entropy(sk[None], sp[None]) + F.cross_entropy(ek[None], ep[None])) / 2)
                windows.append((sk, ek, loss, {c: rows[c][k] for c in META_COLUMNS}))
        model.train(was_training)

        # Windows back in dataset order (the loader may read longest first), so that ties between an
        # example's windows and the loss sum go as in an unsorted evaluation.
        loss_sum = 0.0
        best: dict[int, tuple] = {}  # example -> (span score, char start, char end, start token, end token)
        null: dict[int, float] = {}  # example -> lowest CLS score over its windows
        examples: dict[int, dict] = {}
        for sk, ek, loss, row in ctx.in_dataset_order(windows):
            loss_sum += loss or 0.0
            ex, cls = row["qa_example"], row["qa_cls"]
            null_score = float(sk[cls] + ek[cls])
            null[ex] = min(null.get(ex, null_score), null_score)
            span = best_span(sk, ek, row["qa_offsets"], max_answer_length)
            if span is not None and (ex not in best or span[0] > best[ex][0]):
                best[ex] = span
            if ex not in examples:
                examples[ex] = {"context": row["qa_context"], "answers": {"text": row["qa_answers"], "answer_start": row["qa_answer_starts"]}}
        windows_seen = len(windows)

        predictions, references = [], []
        for ex in sorted(examples):
            span = best.get(ex)
            text = ""
            if span is not None and not (v2 and null[ex] >= span[0]):
                text = examples[ex]["context"][span[1] : span[2]]
            predictions.append({"id": str(ex), "prediction_text": text})
            references.append({"id": str(ex), "answers": examples[ex]["answers"]})
        results: dict[str, float] = {"loss": loss_sum / windows_seen if windows_seen else float("nan"), "samples": len(examples)}
        for name in ctx.metric_names:
            preds = [dict(p, no_answer_probability=0.0) for p in predictions] if name == "squad_v2" else predictions
            results.update(metrics.compute([name], preds, references))
        if ctx.predictions_file is not None:  # per-example answers for `hfadapt report`
            from hfadapt.rundir.predictions import save_predictions

            save_predictions(ctx, (
                {"index": int(p["id"]), "context": examples[ex]["context"][:300], "prediction": p["prediction_text"],
                 "answers": list(r["answers"]["text"]), "answerable": bool(r["answers"]["text"])}
                for ex, p, r in zip(sorted(examples), predictions, references)
            ))
        return results

    def predict(self, model: Module, processor: PreTrainedTokenizerBase, items: list[str], recipe: Recipe,
                info: LabelInfo | None) -> list[dict[str, Any]]:
        import torch

        questions, contexts = _split_inputs(items)
        d = recipe.data
        enc = encode_windows(processor, questions, contexts, d.max_length, d.doc_stride, list(range(len(items))), "predict", None)
        sample_map = enc.pop("overflow_to_sample_mapping")
        offsets = enc.pop("offset_mapping")
        ctx_offsets = [context_offsets(enc, w, offsets[w]) for w in range(len(sample_map))]
        cls = [cls_index(ids, processor) for ids in enc["input_ids"]]
        batch = processor.pad(dict(enc), return_tensors="pt")
        device = next(model.parameters()).device
        with torch.no_grad():
            out = model(**{k: v.to(device) for k, v in batch.items()})
        s_all, e_all = out.start_logits.float().cpu(), out.end_logits.float().cpu()
        mask = batch["attention_mask"].bool()
        # (score, answer, char start, char end, probability) per input; probabilities are
        # softmax(start) * softmax(end) over the real tokens of the winning window.
        best: dict[int, tuple] = {}
        null: dict[int, tuple] = {}
        for w, i in enumerate(sample_map):
            n = len(ctx_offsets[w])
            s, e = s_all[w, :n], e_all[w, :n]
            log_ps = torch.log_softmax(s.masked_fill(~mask[w, :n], float("-inf")), dim=-1)
            log_pe = torch.log_softmax(e.masked_fill(~mask[w, :n], float("-inf")), dim=-1)
            c = cls[w]
            null_score = float(s[c] + e[c])
            if i not in null or null_score < null[i][0]:
                null[i] = (null_score, float(torch.exp(log_ps[c] + log_pe[c])))
            span = best_span(s, e, ctx_offsets[w], d.max_answer_length)
            if span is not None and (i not in best or span[0] > best[i][0]):
                score, cs, ce, ts, te = span
                best[i] = (score, cs, ce, float(torch.exp(log_ps[ts] + log_pe[te])))
        results = []
        for i, context in enumerate(contexts):
            span = best.get(i)
            if span is None or (d.version_2_with_negative and null[i][0] >= span[0]):
                results.append({"answer": "", "start": None, "end": None, "score": null[i][1]})
            else:
                _, cs, ce, prob = span
                results.append({"answer": context[cs:ce], "start": cs, "end": ce, "score": prob})
        return results

    def report_section(self, report: ReportInput) -> str:
        """Exact match and F1 over all, answerable and unanswerable questions (scored per example by the
        squad_v2 metric's own functions), and the answers that missed."""
        from hfadapt import metrics

        rows = report.predictions
        if not rows:
            return generic_section(report.split("eval"))
        squad = metrics.module("squad_v2")
        groups: dict[str, list[tuple[float, float]]] = {"all": [], "answerable": [], "unanswerable": []}
        scored = []
        for r in rows:
            golds = [a for a in r["answers"] if squad.normalize_answer(a)] or [""]  # squad_v2: no gold -> the empty answer
            em, f1 = max(squad.exact_match(r["prediction"], g) for g in golds), max(squad.f1(r["prediction"], g) for g in golds)
            scored.append((r, em, f1))
            groups["all"].append((em, f1))
            groups["answerable" if r["answerable"] else "unanswerable"].append((em, f1))
        body = "".join(
            f"<tr><td>{name}</td><td>{len(v)}</td>"
            + (f"<td>{100 * sum(x for x, _ in v) / len(v):.1f}</td><td>{100 * sum(f for _, f in v) / len(v):.1f}</td>" if v else "<td>-</td><td>-</td>")
            + "</tr>"
            for name, v in groups.items()
        )
        wrong = [(r, f1) for r, em, f1 in scored if em < 1][:10]
        examples = "".join(
            f"<tr><td>{r['index']}</td><td>{e(r['context'])}</td><td>{e(' | '.join(r['answers']) or '(no answer)')}</td><td>{e(r['prediction'] or '(no answer)')}</td><td>{f1:.2f}</td></tr>"
            for r, f1 in wrong
        )
        return (
            "<h3>Exact match and F1 by question kind (validation, %)</h3><table><tr><th>questions</th><th>count</th><th>exact match</th><th>F1</th></tr>"
            + body + "</table><h3>Answers that missed</h3>"
            + ("<table class=mistakes><tr><th>#</th><th>context</th><th>gold</th><th>predicted</th><th>F1</th></tr>" + examples + "</table>" if wrong else "<p class=note>Every answer matched.</p>")
        )


class QACollator:
    """Pads the model inputs (and start/end positions); drops the qa_* bookkeeping columns but
    keeps the window row number as `qa_window` for evaluate(). A class, so worker processes can
    pickle it."""

    def __init__(self, processor: PreTrainedTokenizerBase) -> None:
        self.processor = processor

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        model_features = [{k: v for k, v in f.items() if not k.startswith("qa_")} for f in features]
        batch = dict(self.processor.pad(model_features, return_tensors="pt"))
        if WINDOW in features[0]:
            batch[WINDOW] = torch.tensor([f[WINDOW] for f in features], dtype=torch.long)
        return batch


# ---- helpers (plain functions, tested directly) --------------------------------------------------
def encode_windows(processor: PreTrainedTokenizerBase, questions: list[str], contexts: list[str], max_length: int, stride: int,
                   rows: list[int], split: str, q_col: str | None, data: DataSection | None = None) -> BatchEncoding:
    """Question + context windows with offsets; a question too long to leave room for the
    context windows is an error naming its row (the Rust tokenizer would panic on it); `data`, the
    recipe's data section, turns the row into a line of the user's file."""
    if not getattr(processor, "is_fast", False):
        raise HfadaptError(f"model.name_or_path: question-answering needs a fast (Rust) tokenizer; got {type(processor).__name__}")
    specials = processor.num_special_tokens_to_add(pair=True)
    q_lengths = [len(ids) for ids in processor(questions, add_special_tokens=False)["input_ids"]]
    for q_len, row in zip(q_lengths, rows):
        room = max_length - specials - q_len
        if room <= stride:
            where = f"data.question_column '{q_col}', {row_location(split, row, data)}" if q_col else f"predict input {row + 1}"
            raise HfadaptError(
                f"{where}: the question takes {q_len} tokens, leaving {max(room, 0)} of data.max_length={max_length} "
                f"for the context; that must be more than data.doc_stride={stride} (raise data.max_length or lower data.doc_stride)"
            )
    return processor(
        questions, contexts, truncation="only_second", max_length=max_length, stride=stride,
        return_overflowing_tokens=True, return_offsets_mapping=True, padding=False,
    )


def context_offsets(enc: BatchEncoding, window: int, offsets: list[Any]) -> list[list[int]]:
    """Character [start, end) of each token of a window inside the context; [-1, -1] for
    question, special and padding tokens."""
    seq = enc.sequence_ids(window)
    return [[int(o[0]), int(o[1])] if sid == 1 else [-1, -1] for o, sid in zip(offsets, seq)]


def cls_index(input_ids: list[int], processor: PreTrainedTokenizerBase) -> int:
    cls = getattr(processor, "cls_token_id", None)
    return input_ids.index(cls) if cls is not None and cls in input_ids else 0


def answer_tokens(ctx_offsets: list[list[int]], start_char: int, end_char: int, cls: int) -> tuple[int, int]:
    """Token positions of the answer's first and last token in one window, or (cls, cls) when
    the answer is not wholly inside the window."""
    tokens = [t for t, o in enumerate(ctx_offsets) if o[0] >= 0]
    if not tokens or ctx_offsets[tokens[0]][0] > start_char or ctx_offsets[tokens[-1]][1] < end_char:
        return cls, cls
    start = max(t for t in tokens if ctx_offsets[t][0] <= start_char)
    end = min(t for t in tokens if ctx_offsets[t][1] >= end_char)
    return start, end


def best_span(start_logits: Tensor, end_logits: Tensor, ctx_offsets: list[list[int]], max_answer_length: int) -> tuple[float, int, int, int, int] | None:
    """Highest start+end logit over spans of context tokens with start <= end and at most
    max_answer_length tokens: (score, char start, char end, start token, end token), or None if
    the window has no context."""
    import torch

    n = len(ctx_offsets)
    in_context = torch.tensor([o[0] >= 0 for o in ctx_offsets], dtype=torch.bool)
    if n == 0 or not bool(in_context.any()):
        return None
    idx = torch.arange(n)
    length = idx[None, :] - idx[:, None]  # end - start
    valid = (length >= 0) & (length < max_answer_length) & in_context[:, None] & in_context[None, :]
    scores = (start_logits[:n, None] + end_logits[None, :n]).masked_fill(~valid, float("-inf"))
    flat = int(torch.argmax(scores))
    i, j = divmod(flat, n)
    return float(scores[i, j]), ctx_offsets[i][0], ctx_offsets[j][1], i, j


def parse_answers(value: object, context: str, row: int, split: str, column: str, context_column: str, v2: bool,
                  data: DataSection | None = None) -> tuple[list[str], list[int]]:
    """Validated (texts, answer_starts) of one example; every answer must appear at its start."""
    where = f"data.answers_column '{column}', {row_location(split, row, data)}"
    shape = "{'text': [...], 'answer_start': [...]}"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise HfadaptError(f"{where}: expected {shape}, got {_short(value)}") from None
    if not isinstance(value, dict) or "text" not in value or "answer_start" not in value:
        raise HfadaptError(f"{where}: expected {shape}, got {_short(value)}")
    texts, starts = value["text"], value["answer_start"]
    texts = [texts] if isinstance(texts, str) else texts
    starts = [starts] if isinstance(starts, int) and not isinstance(starts, bool) else starts
    if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
        raise HfadaptError(f"{where}: 'text' and 'answer_start' must be lists of equal length, got {_short(value)}")
    for text, start in zip(texts, starts):
        if not isinstance(text, str) or not text:
            raise HfadaptError(f"{where}: answer text must be a non-empty string, got {_short(text)}")
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise HfadaptError(f"{where}: answer_start must be a character offset (int >= 0), got {_short(start)}")
        found = context[start : start + len(text)]
        if found != text:
            raise HfadaptError(
                f"{where}: answer {_short(text)} not found at answer_start {start} in data.context_column "
                f"'{context_column}' (the context has {_short(found)} there)"
            )
    if not texts and not v2:
        raise HfadaptError(
            f"{where}: no answer, but data.version_2_with_negative is false (set it true for SQuAD v2-style unanswerable questions)"
        )
    return list(texts), list(starts)


def _split_inputs(items: list[str]) -> tuple[list[str], list[str]]:
    parts = [item.split("\t", 1) for item in items]
    for n, p in enumerate(parts, 1):
        if len(p) != 2 or not p[0].strip() or not p[1].strip():
            raise HfadaptError(f"predict input {n}: give each input as 'QUESTION<TAB>CONTEXT', got {_short(items[n - 1])}")
    return [p[0].lstrip() for p in parts], [p[1] for p in parts]


def _texts(values: list[Any], rows: list[int], field: str, column: str, split: str, data: DataSection) -> list[str]:
    for v, r in zip(values, rows):
        if not isinstance(v, str):
            raise HfadaptError(f"{field} '{column}', {row_location(split, r, data)}: expected text, got {_short(v)}")
    return values


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


register_task(QuestionAnswering())
