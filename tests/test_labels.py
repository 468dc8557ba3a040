"""hfadapt.data.labels: deciding the label vocabulary and encoding raw labels, with errors naming column and row."""

from __future__ import annotations

import pytest
from datasets import ClassLabel, Dataset, Features, Sequence, Value

from hfadapt.core.errors import HfadaptError
from hfadapt.data.labels import LabelInfo, encode_label, infer_labels

SOURCE = "data.label_column 'label'"


def _ds(values: list, feature=None) -> Dataset:
    features = Features({"label": feature}) if feature is not None else None
    return Dataset.from_dict({"label": values}, features=features)


# ---- infer_labels ------------------------------------------------------------------------------
def test_infer_from_strings_is_sorted() -> None:
    info = infer_labels(_ds(["pos", "neg", "neutral", "neg"]), "label", None, "single_label", SOURCE)
    assert info.names == ("neg", "neutral", "pos")
    assert info.problem_type == "single_label"
    assert info.num_labels == 3
    assert info.label2id == {"neg": 0, "neutral": 1, "pos": 2}
    assert info.id2label == {0: "neg", 1: "neutral", 2: "pos"}
    assert info.hf_problem_type == "single_label_classification"


def test_infer_from_ints_covers_zero_to_max() -> None:
    # 1 never occurs but lies below the max: the vocabulary is 0..max, named by the id.
    info = infer_labels(_ds([0, 2, 2, 0, 3]), "label", None, "single_label", SOURCE)
    assert info.names == ("0", "1", "2", "3")
    assert info.num_labels == 4


def test_infer_ignores_missing_values() -> None:
    info = infer_labels(_ds(["b", None, "a"]), "label", None, "single_label", SOURCE)
    assert info.names == ("a", "b")


def test_infer_from_classlabel_feature_keeps_its_order() -> None:
    feature = ClassLabel(names=["zebra", "ant", "moose"])  # deliberately not sorted
    info = infer_labels(_ds([0, 1, 0], feature), "label", None, "single_label", SOURCE)
    assert info.names == ("zebra", "ant", "moose")


def test_infer_multilabel_from_sequence_of_classlabel() -> None:
    feature = Sequence(ClassLabel(names=["x", "y", "z"]))
    info = infer_labels(_ds([[0, 2], [1]], feature), "label", None, "multi_label", SOURCE)
    assert info.names == ("x", "y", "z")
    assert info.problem_type == "multi_label"
    assert info.hf_problem_type == "multi_label_classification"


def test_infer_multilabel_from_string_lists_and_int_lists() -> None:
    info = infer_labels(_ds([["sport", "food"], ["music"], []]), "label", None, "multi_label", SOURCE)
    assert info.names == ("food", "music", "sport")
    info = infer_labels(_ds([[0, 2], [1], []]), "label", None, "multi_label", SOURCE)
    assert info.names == ("0", "1", "2")


def test_given_names_win_over_data_and_features() -> None:
    feature = ClassLabel(names=["a", "b"])
    info = infer_labels(_ds([0, 1], feature), "label", ["neg", "pos"], "single_label", SOURCE)
    assert info.names == ("neg", "pos")
    info = infer_labels(_ds(["whatever"]), "label", ["b", "a"], "single_label", SOURCE)
    assert info.names == ("b", "a")  # given order is the id order, not sorted


def test_given_names_must_be_unique() -> None:
    with pytest.raises(HfadaptError, match=r"data\.labels: .*unique"):
        infer_labels(_ds(["a"]), "label", ["a", "b", "a"], "single_label", SOURCE)


def test_regression_has_no_names_and_one_output() -> None:
    info = infer_labels(_ds([0.5, 1.5]), "label", None, "regression", SOURCE)
    assert info.names == ()
    assert info.num_labels == 1
    assert info.hf_problem_type == "regression"


def _infer_error(ds) -> str:
    with pytest.raises(HfadaptError) as err:
        infer_labels(ds, "label", None, "single_label", SOURCE)
    msg = str(err.value)
    assert msg.startswith(SOURCE), msg
    return msg


def test_infer_errors_name_the_column() -> None:
    assert "column 'label' holds no labels" in _infer_error(_ds([None, None], Value("string")))
    msg = _infer_error(_ds([1, -1, 0]))
    assert "column 'label' has negative label -1" in msg and "row 1" in msg and "give data.labels" in msg

    class Mixed:  # Arrow can't hold a mixed column (a JSON list of dicts can); fake the two accessors used
        features = {"label": Value("string")}

        def __getitem__(self, column: str) -> list:
            return ["a", 1]

    assert "column 'label' mixes label types" in _infer_error(Mixed())


def test_label_info_from_model_config() -> None:
    from types import SimpleNamespace

    cfg = SimpleNamespace(problem_type="multi_label_classification", id2label={0: "a", 1: "b"}, num_labels=2)
    assert LabelInfo.from_model_config(cfg) == LabelInfo(("a", "b"), "multi_label")
    cfg = SimpleNamespace(problem_type=None, id2label={0: "n", 1: "p"}, num_labels=2)
    assert LabelInfo.from_model_config(cfg) == LabelInfo(("n", "p"), "single_label")
    cfg = SimpleNamespace(problem_type="regression", id2label={0: "LABEL_0"}, num_labels=1)
    assert LabelInfo.from_model_config(cfg) == LabelInfo((), "regression")


# ---- encode_label ------------------------------------------------------------------------------
SINGLE = LabelInfo(("neg", "pos"), "single_label")
MULTI = LabelInfo(("food", "music", "sport"), "multi_label")
REGRESSION = LabelInfo((), "regression")


def test_encode_valid_labels() -> None:
    assert encode_label("pos", SINGLE, "label", 0, "train") == 1
    assert encode_label(0, SINGLE, "label", 0, "train") == 0
    assert encode_label(["sport", "food"], MULTI, "tags", 0, "train") == [1.0, 0.0, 1.0]
    assert encode_label("music", MULTI, "tags", 0, "train") == [0.0, 1.0, 0.0]
    assert encode_label([2], MULTI, "tags", 0, "train") == [0.0, 0.0, 1.0]
    assert encode_label([], MULTI, "tags", 0, "train") == [0.0, 0.0, 0.0]
    assert encode_label("2.5", REGRESSION, "score", 0, "train") == 2.5
    assert encode_label(3, REGRESSION, "score", 0, "train") == 3.0


def _encode_error(value, info: LabelInfo, column: str = "sentiment", row: int = 17, split: str = "validation") -> str:
    with pytest.raises(HfadaptError) as err:
        encode_label(value, info, column, row, split)
    msg = str(err.value)
    # Every message names the recipe field, the column and the split's row.
    assert f"data.label_column '{column}'" in msg, msg
    assert f"{split} row {row}" in msg, msg
    assert "\n" not in msg
    return msg


def test_encode_out_of_range_int() -> None:
    msg = _encode_error(2, SINGLE)
    assert "label 2 out of range [0, 1]" in msg
    msg = _encode_error(-1, SINGLE)
    assert "label -1 out of range" in msg


def test_encode_unknown_string() -> None:
    msg = _encode_error("neutral", SINGLE)
    assert "unknown label 'neutral'" in msg
    assert "known: neg, pos" in msg


def test_encode_missing_label() -> None:
    msg = _encode_error(None, SINGLE)
    assert "label is missing" in msg
    for info in (MULTI, REGRESSION):
        assert "label is missing" in _encode_error(None, info, "tags", 3, "train")


def test_encode_multilabel_unknown_item_and_out_of_range() -> None:
    assert "unknown label 'cinema'" in _encode_error(["food", "cinema"], MULTI, "tags", 4, "train")
    assert "label 3 out of range [0, 2]" in _encode_error([0, 3], MULTI, "tags", 4, "train")


def test_encode_wrong_types() -> None:
    assert "neither a class name nor an int" in _encode_error(1.5, SINGLE)
    assert "neither a class name nor an int" in _encode_error(True, SINGLE)  # a bool is not a class id
    assert "regression label 'high' is not a number" in _encode_error("high", REGRESSION, "score", 0, "test")


# ---- CSV int columns with an empty cell arrive as floats ------------------------------------------
def test_whole_floats_are_int_labels_and_the_empty_cell_names_its_line(tmp_path) -> None:
    from types import SimpleNamespace

    csv = tmp_path / "train.csv"
    csv.write_text("text,label\na,1\nb,\nc,0\n")
    ds = _ds([1.0, None, 0.0])
    info = infer_labels(ds, "label", None, "single_label", SOURCE)
    assert info.names == ("0", "1")
    assert encode_label(1.0, info, "label", 0, "train") == 1
    assert encode_label(1.0, LabelInfo(("neg", "pos"), "single_label"), "label", 0, "train") == 1  # data.labels set
    data = SimpleNamespace(train_files=[str(csv)], validation_files=None, test_files=None, dataset=None)
    with pytest.raises(HfadaptError) as err:
        encode_label(float("nan"), info, "label", 1, "train", data)
    assert f"line 3 of {csv}" in str(err.value) and "label is missing" in str(err.value)
    with pytest.raises(HfadaptError, match=r"label 0.5 is neither a class name nor an int"):
        encode_label(0.5, info, "label", 0, "train")
