"""seqeval: entity-level precision, recall and F1 of tagged sequences (CoNLL style), plus token accuracy.

An entity is a maximal chunk of tags of one type (B-PER I-PER ... ), found the way conlleval.pl does
(or strictly by a scheme with mode="strict"); it counts as correct only when the predicted chunk has
the same type, start and end as a reference chunk.
"""

import datasets
import evaluate
from seqeval.metrics.sequence_labeling import accuracy_score, get_entities, precision_recall_fscore_support

_DESCRIPTION = "Entity-level micro precision/recall/F1 (seqeval, conlleval-compatible) and token accuracy."
_KWARGS = """
Args:
    predictions: list of tag sequences (list of list of str), e.g. [["B-PER", "I-PER", "O"]].
    references: list of tag sequences, each as long as its prediction.
    per_entity (bool): also return {"precision", "recall", "f1", "number"} for every entity type
        under the type's name (default False, so the result holds only the four overall floats).
    suffix (bool): tags are written TYPE-B instead of B-TYPE.
    mode (str): None (conlleval-compatible, default) or "strict" (needs scheme).
    scheme (str): "IOB1", "IOB2", "IOE1", "IOE2", "IOBES" or "BILOU", for mode="strict".
    zero_division (0 or 1): value of a ratio whose denominator is 0 (default 0).
Returns:
    precision, recall, f1: micro averages over entities; accuracy: share of tags predicted right.
Examples:
    >>> evaluate.load("seqeval").compute(predictions=[["B-PER", "I-PER", "O", "O"]],
    ...                                  references=[["B-PER", "I-PER", "O", "B-LOC"]])
    {'precision': 1.0, 'recall': 0.5, 'f1': 0.6666666666666666, 'accuracy': 0.75}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Seqeval(evaluate.Metric):
    def _info(self):
        tags = datasets.Sequence(datasets.Value("string"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": tags, "references": tags}),
            reference_urls=["https://github.com/chakki-works/seqeval"],
        )

    def _compute(self, predictions, references, per_entity=False, suffix=False, mode=None, scheme=None, zero_division=0):
        predictions = [list(p) for p in predictions]
        references = [list(r) for r in references]
        for i, (p, r) in enumerate(zip(predictions, references)):
            if len(p) != len(r):
                raise ValueError(f"sequence {i}: {len(p)} predicted tags for {len(r)} reference tags")
        kwargs = {"suffix": suffix, "zero_division": zero_division}
        if mode is not None:
            kwargs["mode"] = mode
        if scheme is not None:
            from seqeval import scheme as schemes

            kwargs["scheme"] = getattr(schemes, scheme)
        p, r, f, _ = precision_recall_fscore_support(references, predictions, average="micro", **kwargs)
        results = {}
        if per_entity:
            p_all, r_all, f_all, n_all = precision_recall_fscore_support(references, predictions, average=None, **kwargs)
            names = sorted({t for t, _, _ in get_entities(references, suffix)} | {t for t, _, _ in get_entities(predictions, suffix)})
            for name, pe, re, fe, ne in zip(names, p_all, r_all, f_all, n_all):
                results[name] = {"precision": float(pe), "recall": float(re), "f1": float(fe), "number": int(ne)}
        results.update(
            precision=float(p), recall=float(r), f1=float(f), accuracy=float(accuracy_score(references, predictions))
        )
        return results
