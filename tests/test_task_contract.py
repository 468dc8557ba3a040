"""The contract every registered task keeps, checked for each entry of the task registry.

Each task class says only what the `Task` base class declares: a public method or attribute the
contract lacks (a misspelt hook such as `plan_bacth`, which the core would never call) fails
`test_tasks_define_only_what_the_contract_declares`, and an overridden hook keeps the contract's
parameter names. A tiny model trains two steps, evaluates, predicts, saves, and its adapter reloads with plain
`transformers` + `peft` to the same outputs as hfadapt's own reload; re-evaluating the saved run
gives the evaluation it ended training with. A task that registers without a case here fails
`test_every_registered_task_has_a_contract_case`, so new tasks are covered the moment they exist.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from hfadapt.tasks import TASKS
from hfadapt.tasks.base import Task, get_task
from tests.conftest import sentiment_rows, vocabulary, write_jsonl


@dataclass(frozen=True)
class Case:
    model: str  # fixture name of the tiny base model
    data: Callable[[Path, Any], dict[str, Any]]  # (tmp dir, request) -> the recipe's data section
    inputs: Callable[[Any], list[str]]  # request -> `hfadapt predict` inputs
    sections: dict[str, Any] = field(default_factory=dict)  # the task's own recipe sections (online-rl: rl)


def _sentences(n: int = 24) -> list[dict[str, Any]]:
    return sentiment_rows(n, seed=1)


def _text_classification(tmp: Path, request: Any) -> dict[str, Any]:
    return {"train_files": [request.getfixturevalue("sentiment_csv")], "max_length": 16}


def _token_classification(tmp: Path, request: Any) -> dict[str, Any]:
    from tests.conftest import POSITIVE

    rows = []
    for r in _sentences():
        words = r["text"].split()
        rows.append({"tokens": words, "ner_tags": ["B-POS" if w in POSITIVE else "O" for w in words]})
    return {"train_files": [str(write_jsonl(tmp / "ner.jsonl", rows))], "max_length": 16}


def _question_answering(tmp: Path, request: Any) -> dict[str, Any]:
    rows = []
    for r in _sentences():
        answer = r["text"].split()[-1]
        rows.append({"question": "the film", "context": r["text"], "answers": {"text": [answer], "answer_start": [r["text"].rindex(answer)]}})
    return {"train_files": [str(write_jsonl(tmp / "qa.jsonl", rows))], "max_length": 24, "doc_stride": 4}


def _causal_lm(tmp: Path, request: Any) -> dict[str, Any]:
    rows = [{"text": r["text"]} for r in _sentences()]
    return {"train_files": [str(write_jsonl(tmp / "lm.jsonl", rows))], "max_length": 16}


def _preference(tmp: Path, request: Any) -> dict[str, Any]:
    rows = [{"prompt": r["text"], "chosen": " good", "rejected": " dull"} for r in _sentences()]
    return {"train_files": [str(write_jsonl(tmp / "prefs.jsonl", rows))], "max_length": 24, "max_prompt_length": 16}


def _online_rl(tmp: Path, request: Any) -> dict[str, Any]:
    rows = [{"prompt": r["text"]} for r in _sentences()]
    return {"train_files": [str(write_jsonl(tmp / "prompts.jsonl", rows))], "max_prompt_length": 16}


def _seq2seq(tmp: Path, request: Any) -> dict[str, Any]:
    rows = [{"text": r["text"], "target": " ".join(reversed(r["text"].split()))} for r in _sentences()]
    return {"train_files": [str(write_jsonl(tmp / "pairs.jsonl", rows))], "max_length": 16, "max_target_length": 16}


def _reward_model(tmp: Path, request: Any) -> dict[str, Any]:
    rows = [{"prompt": "the film", "chosen": r["text"] + " good", "rejected": r["text"] + " bad"} for r in _sentences()]
    return {"train_files": [str(write_jsonl(tmp / "prefs.jsonl", rows))], "max_length": 16, "max_prompt_length": 4}


def _image_classification(tmp: Path, request: Any) -> dict[str, Any]:
    return {"dataset": request.getfixturevalue("image_folder")}


def _first_image(request: Any) -> list[str]:
    folder = Path(request.getfixturevalue("image_folder"))
    return [str(sorted((folder / "validation" / "red").glob("*.png"))[0]), str(sorted((folder / "validation" / "blue").glob("*.png"))[0])]


def _audio_classification(tmp: Path, request: Any) -> dict[str, Any]:
    return {"dataset": request.getfixturevalue("sound_folder")}


def _first_sounds(request: Any) -> list[str]:
    folder = Path(request.getfixturevalue("sound_folder"))
    return [str(folder / "validation" / "tone" / "0.wav"), str(folder / "validation" / "noise" / "1.wav")]


def _speech_recognition(tmp: Path, request: Any) -> dict[str, Any]:
    return {"train_files": [request.getfixturevalue("tone_speech")]}


def _first_utterances(request: Any) -> list[str]:
    clips = Path(request.getfixturevalue("tone_speech")).parent / "clips"
    return [str(clips / "0.wav"), str(clips / "5.wav")]


def _image_text_to_text(tmp: Path, request: Any) -> dict[str, Any]:
    from tests.vlm_fixtures import write_colour_set

    return {"train_files": [str(write_colour_set(tmp / "vlm", n=8))], "max_length": 32}


def _image_questions(request: Any) -> list[str]:

    folder = Path(request.getfixturevalue("colour_chat")).parent / "images"
    return [f"{folder / 'red.png'}\twhat colour", f"{folder / 'blue.png'}\twhat colour"]


CASES: dict[str, Case] = {
    "text-classification": Case("tiny_bert", _text_classification, lambda r: ["the film was good", "the plot was dull"]),
    "token-classification": Case("tiny_bert", _token_classification, lambda r: ["the film was good", "the plot was dull"]),
    "question-answering": Case("tiny_bert", _question_answering, lambda r: ["the film\tthe film was good", "the plot\tthe plot was dull"]),
    "causal-lm": Case("tiny_gpt2", _causal_lm, lambda r: ["the film", "the plot was"]),
    "preference": Case("tiny_gpt2", _preference, lambda r: ["the film", "the plot was"]),
    "seq2seq": Case("tiny_seq2seq", _seq2seq, lambda r: ["the film was good", "the plot was dull"]),
    "reward-model": Case("tiny_gpt2", _reward_model, lambda r: ["the film was good", "the plot was dull"]),
    "online-rl": Case("tiny_gpt2", _online_rl, lambda r: ["the film", "the plot was"], sections={"rl": {
        "num_generations": 2, "max_completion_length": 3, "rewards": [{"type": "format", "pattern": ".*good.*", "match": "full"}]}}),
    "image-classification": Case("tiny_vit", _image_classification, _first_image),
    "audio-classification": Case("tiny_wav2vec2", _audio_classification, _first_sounds),
    "speech-recognition": Case("tiny_whisper", _speech_recognition, _first_utterances),
    "image-text-to-text": Case("tiny_idefics3", _image_text_to_text, _image_questions),
}


@pytest.fixture(scope="module")
def tiny_seq2seq(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 1+1-layer T5 with a word-level tokenizer that appends </s>, saved like a Hub checkpoint."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    root = tmp_path_factory.mktemp("tiny-seq2seq")
    words = ["<pad>", "</s>", "<unk>"] + vocabulary()[5:]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    config = T5Config(
        vocab_size=len(words), d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=1, num_decoder_layers=1,
        relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)


def test_every_registered_task_has_a_contract_case() -> None:
    missing = [name for name in TASKS.names() if name not in CASES]
    assert not missing, f"add a contract case for {missing} to {__file__}"


def contract_breaks(cls: type, instance: object | None = None) -> list[str]:
    """Public names a task class (or its bases below Task, or the registered instance) adds to the
    contract, and overridden hooks whose parameters differ from the contract's."""
    declared = set(vars(Task)) | set(Task.__annotations__)
    breaks = []
    for klass in cls.__mro__:
        if klass in (Task, object):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            if name not in declared:
                breaks.append(f"{klass.__name__}.{name}: not a hook or attribute of the Task contract")
            elif inspect.isfunction(value) and inspect.isfunction(vars(Task).get(name)):
                want = list(inspect.signature(vars(Task)[name]).parameters)
                got = list(inspect.signature(value).parameters)
                if got != want:
                    breaks.append(f"{klass.__name__}.{name}{tuple(got)}: the contract's parameters are {tuple(want)}")
    breaks += [f"{cls.__name__} instance .{n}" for n in (vars(instance) if instance is not None else {}) if not n.startswith("_") and n not in declared]
    return breaks


def test_tasks_define_only_what_the_contract_declares() -> None:
    breaks = [b for name in TASKS.names() for b in contract_breaks(type(TASKS.get(name)), TASKS.get(name))]
    assert not breaks, "declare the hook in hfadapt/tasks/base.py (Task) or make it private (_name):\n" + "\n".join(breaks)
    for name in TASKS.names():  # every class attribute the core reads is set
        task = TASKS.get(name)
        for attr in ("name", "modality", "auto_class", "peft_task_type", "data_model", "pipeline_tag", "card_example"):
            assert hasattr(task, attr), f"{name}: set {attr}"
        assert task.name == name


def test_the_contract_check_catches_a_misspelt_hook() -> None:
    from hfadapt.tasks.classification import ClassificationTask

    class Typo(ClassificationTask):
        restores_eval_order = True  # declared: fine

        def plan_bacth(self, recipe: Any, config: Any, batch_size: int) -> None:  # meant plan_batch
            return None

        def count_units(self, batch: dict, proc: Any) -> dict:  # a renamed parameter
            return {}

        def _helper(self) -> None:  # private: fine
            pass

    breaks = contract_breaks(Typo)
    assert len(breaks) == 2, breaks
    assert breaks[0].startswith("Typo.plan_bacth: not a hook") and breaks[1].startswith("Typo.count_units(")
    assert contract_breaks(ClassificationTask) == []


def _outputs(model: Any, batch: dict[str, Any]) -> list[Any]:
    import torch

    batch = dict(batch)
    if model.config.is_encoder_decoder:
        start = model.config.decoder_start_token_id
        rows = next(iter(batch.values())).shape[0]  # input_ids, or a speech model's input_features
        batch["decoder_input_ids"] = torch.full((rows, 1), start, dtype=torch.long)
    with torch.no_grad():
        out = model(**batch)
    return [out[k] for k in ("logits", "start_logits", "end_logits") if k in out]


@pytest.mark.parametrize("task_name", TASKS.names())
def test_task_trains_evaluates_predicts_saves_and_reloads_with_plain_peft(task_name: str, tmp_path: Path, request: Any) -> None:
    import torch
    import transformers
    from peft import PeftConfig, PeftModel

    from hfadapt import Recipe, evaluate_run, predict, train
    from hfadapt.inference.run_model import load_model_and_processor
    from hfadapt.modeling.models import auto_model_class
    from hfadapt.rundir.layout import RunDir

    case = CASES[task_name]
    recipe = Recipe.from_dict({
        "name": f"contract-{task_name}",
        "task": task_name,
        "model": {"name_or_path": request.getfixturevalue(case.model)},
        "data": {"validation_size": 0.25, "max_eval_samples": 4, **case.data(tmp_path, request)},
        "adapter": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-2, "logging_steps": 1, "log_with": []},
        "generation": {"max_new_tokens": 3},
        "output": {"dir": str(tmp_path / "run")},
        **case.sections,
    })
    result = train(recipe)

    # trains two steps and evaluates
    assert result.state.global_step == 2 and len(result.losses) == 2 and all(math.isfinite(x) for x in result.losses)
    assert math.isfinite(result.metrics["eval/loss"]) and result.metrics["eval/samples"] > 0
    # saves: the run reloads and re-evaluates to the evaluation training ended with
    again = evaluate_run(result.output_dir)
    assert again["validation/loss"] == pytest.approx(result.metrics["eval/loss"], rel=1e-4, abs=1e-6)
    # predicts, one answer per input
    inputs = case.inputs(request)
    predictions = predict(result.output_dir, inputs)
    assert [p["input"] for p in predictions] == inputs and all(len(p) > 1 for p in predictions)

    # reloads with plain transformers + peft to the same outputs as hfadapt's reload
    run = RunDir.open(result.output_dir)
    ours, processor, _ = load_model_and_processor(run)
    adapter = str(run.model_dir)
    base_path = PeftConfig.from_pretrained(adapter).base_model_name_or_path
    config = transformers.AutoConfig.from_pretrained(adapter)
    auto = auto_model_class(TASKS.get(task_name), config)  # the task's Auto* class (speech: seq2seq or CTC by config)
    base = auto.from_pretrained(base_path, config=config)
    plain = PeftModel.from_pretrained(base, adapter).eval()
    batch = get_task(run.recipe.task).encode_inputs(inputs, processor, run.recipe)
    expected, got = _outputs(ours, batch), _outputs(plain, batch)
    assert expected and len(expected) == len(got)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e)

    # its model card names a pipeline tag the Hub accepts, and shows how to load it
    import yaml

    from hfadapt.publishing.cards import render_adapter_card
    from tests.hub_server import KNOWN_PIPELINE_TAGS

    card = render_adapter_card(run, "user/contract")
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["pipeline_tag"] in KNOWN_PIPELINE_TAGS and meta["library_name"] == "peft"
    assert "PeftModel.from_pretrained" in card

    # its one-page report renders offline, with the run's own numbers (tests/test_report.py)
    from tests.test_report import check_report

    check_report(result.output_dir, tmp_path / "report.html")
