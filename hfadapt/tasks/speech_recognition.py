"""speech-recognition: Whisper-style encoder-decoders (AutoModelForSpeechSeq2Seq) and CTC models
(AutoModelForCTC: wav2vec2, HuBERT, WavLM, ...). Which of the two is read from the base model's config.

Whisper: the transcript is tokenized with the language and task tokens of generation.language /
generation.task (<|startoftranscript|><|en|><|transcribe|><|notimestamps|> text <|endoftext|>). The
collator drops the leading <|startoftranscript|> (the model puts the decoder start back when it shifts
the labels right) and pads the labels by length with -100: Whisper's pad token *is* its end-of-text
token, so masking by token value would take the end-of-text out of the loss and the model would never
learn to stop. Evaluation generates with `generate(language=..., task=...)` (not the deprecated
forced_decoder_ids). Clips longer than the feature extractor's window (30 s) are dropped from training
and evaluation (counted): Whisper can't see past it and a cut clip no longer matches its transcript.

CTC: the processor's vocabulary, or (data.vocabulary=transcripts) a character vocabulary built from the
training transcripts ('|' between words, [UNK], [PAD] as the CTC blank); the CTC head (lm_head) is
sized to it and trained fully with the adapter.

Evaluation reports the loss and WER / CER on the raw text and, with data.text_normalizer (Whisper's
basic or English normaliser), on normalised text too (wer_normalized, cer_normalized).

`hfadapt predict RUN a.wav` transcribes files of any length: a file longer than data.chunk_length_s
(default: Whisper's 30 s window, 20 s for CTC) is cut into pieces at the quietest 20 ms of the last
quarter of each window (a pause, not a word), the pieces are transcribed as one batch and joined.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from hfadapt.data import audio
from hfadapt.modeling.sharding import generation_sync
from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.core.recipe import DataSection, GenerationSection
from hfadapt.tasks.base import EvalContext, Task, register_task

if TYPE_CHECKING:
    from torch import Tensor
    from torch.nn import Module
    from torch.utils.data import DataLoader
    from transformers import (
        FeatureExtractionMixin,
        PretrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        ProcessorMixin,
    )

    from hfadapt.core.recipe import Recipe
    from hfadapt.data.labels import LabelInfo
    from hfadapt.tasks.base import Collate, Split

METRICS = ("wer", "cer")
CTC_DEFAULT_CHUNK_S = 20.0


class SpeechRecognitionData(audio.AudioFields, DataSection):
    """Audio clips and their transcripts."""

    text_column: str = Field("text", description="the transcript")
    text_normalizer: Literal["none", "basic", "english"] = Field(
        "basic", description="also score normalised text (Whisper's normalisers): wer_normalized, cer_normalized"
    )
    vocabulary: Literal["processor", "transcripts"] = Field(
        "processor", description="CTC: the processor's vocabulary, or characters of the training transcripts"
    )
    lowercase: bool = Field(False, description="lowercase transcripts before encoding (CTC character vocabularies)")
    max_target_length: int | None = Field(
        None, gt=0, description="transcript tokens; Whisper: its max_target_positions when absent. Longer is an error"
    )
    chunk_length_s: float | None = Field(
        None, gt=0, description="predict: long files are cut into pieces of at most this; Whisper's window / 20 s"
    )


def model_kind(config: PretrainedConfig | dict[str, Any]) -> str:
    """'seq2seq' or 'ctc' from a model config (object or dict)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CTC_MAPPING_NAMES, MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES

    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    if model_type in MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES:
        return "seq2seq"
    if model_type in MODEL_FOR_CTC_MAPPING_NAMES:
        return "ctc"
    raise HfadaptError(
        f"model.name_or_path: a '{model_type}' model is neither a speech encoder-decoder (Whisper, ...) "
        "nor a CTC model (wav2vec2, HuBERT, WavLM, ...)"
    )


def processor_kind(processor: ProcessorMixin) -> str:
    return "ctc" if "CTC" in type(processor.tokenizer).__name__ else "seq2seq"


def generate_kwargs(g: GenerationSection) -> dict[str, Any]:
    kw: dict[str, Any] = {"max_new_tokens": g.max_new_tokens, "num_beams": g.num_beams, "do_sample": g.do_sample}
    if g.do_sample:
        kw.update(temperature=g.temperature, top_p=g.top_p)
    if g.language is not None:
        kw["language"] = g.language
    if g.task is not None:
        kw["task"] = g.task
    return kw


def window_s(feature_extractor: FeatureExtractionMixin) -> float | None:
    """The longest clip the model's feature extractor takes (Whisper: 30 s), or None (no limit)."""
    n = getattr(feature_extractor, "n_samples", None)
    return n / feature_extractor.sampling_rate if n else None


class SpeechRecognition(Task):
    name = "speech-recognition"
    modality = "audio"
    auto_class = "AutoModelForSpeechSeq2Seq"  # or AutoModelForCTC: auto_class_for(config)
    auto_class_from_config = True
    peft_task_type = None  # PeftModelForSeq2SeqLM expects input_ids; Whisper takes input_features
    fresh_heads = ("lm_head",)  # CTC: the head sized to the vocabulary, trained fully (modules_to_save)
    data_model = SpeechRecognitionData
    model_model = audio.AudioModelSection  # model.freeze_feature_encoder
    pipeline_tag = "automatic-speech-recognition"
    card_example = "speech.wav"

    def auto_class_for(self, config: PretrainedConfig | dict[str, Any] | None) -> str:
        if config is None:
            return self.auto_class
        return "AutoModelForCTC" if model_kind(config) == "ctc" else "AutoModelForSpeechSeq2Seq"

    def check(self, recipe: Recipe) -> list[str]:
        problems = []
        d = recipe.data
        for m in recipe.eval.metrics or []:
            if m not in METRICS:
                problems.append(f"eval.metrics: '{m}' does not score transcripts; use {', '.join(METRICS)}")
        if d.long_audio == "truncate":
            problems.append("data.long_audio: a cut clip no longer matches its transcript; use drop for speech-recognition")
        best = recipe.eval.best_metric or ""
        if best.endswith("_normalized") and d.text_normalizer == "none":
            problems.append(f"eval.best_metric: '{best}' needs data.text_normalizer basic or english")
        if d.text_column == d.audio_column:
            problems.append(f"data.text_column: '{d.text_column}' is also data.audio_column")
        if recipe.generation.prompts:
            problems.append("generation.prompts: prompts are for causal-lm; speech-recognition transcribes the evaluation clips")
        return problems

    def columns(self, recipe: Recipe, with_labels: bool = True) -> dict[str, str]:
        d = recipe.data
        return {d.audio_column: "data.audio_column", **({d.text_column: "data.text_column"} if with_labels else {})}

    def default_metrics(self, recipe: Recipe) -> list[str]:
        return list(METRICS)

    # ---- processor -------------------------------------------------------------------------------
    def load_processor(self, recipe: Recipe, path: str | None = None) -> ProcessorMixin:
        from transformers import AutoConfig, AutoFeatureExtractor, AutoProcessor

        from hfadapt.modeling.models import check_local_path

        m, d = recipe.model, recipe.data
        source = path or m.name_or_path
        field = "model.name_or_path" if path is None else f"the run's folder {path}"
        check_local_path(source, field)
        revision = None if path else m.revision
        kind = None
        ctc_hint = "; set data.vocabulary=transcripts to build a character vocabulary from the training transcripts"
        try:
            kind = model_kind(AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=m.trust_remote_code))
            if kind == "ctc" and d.vocabulary == "transcripts" and path is None:
                from transformers import Wav2Vec2Processor

                fe = AutoFeatureExtractor.from_pretrained(source, revision=revision, trust_remote_code=m.trust_remote_code)
                return Wav2Vec2Processor(feature_extractor=fe, tokenizer=self._vocabulary_from_transcripts(recipe))
            processor = AutoProcessor.from_pretrained(source, revision=revision, trust_remote_code=m.trust_remote_code)
        except HfadaptError:
            raise
        except Exception as e:  # noqa: BLE001
            if kind == "ctc" and path is None and _no_tokenizer_files(source):  # the CTC tokenizer fails on a vocab_file of None
                raise HfadaptError(f"{field}: '{source}' has no tokenizer with its feature extractor (no vocab.json){ctc_hint}") from None
            raise HfadaptError(f"{field}: cannot load a speech processor from '{source}': {first_line(e)}") from e
        if getattr(processor, "tokenizer", None) is None or getattr(processor, "feature_extractor", None) is None:
            hint = ctc_hint if kind == "ctc" else ""
            raise HfadaptError(f"{field}: '{source}' has no tokenizer with its feature extractor (no processor){hint}")
        g = recipe.generation
        if kind == "seq2seq" and (g.language or g.task) and hasattr(processor.tokenizer, "set_prefix_tokens"):
            try:
                processor.tokenizer.set_prefix_tokens(language=g.language, task=g.task)
            except (ValueError, KeyError) as e:
                raise HfadaptError(f"generation.language: {first_line(e)}") from None
        return processor

    def _vocabulary_from_transcripts(self, recipe: Recipe) -> PreTrainedTokenizerBase:
        """A character-level CTC tokenizer of the training transcripts ('|' between words)."""
        from transformers import Wav2Vec2CTCTokenizer

        from hfadapt.data.sources import load_raw

        d = recipe.data
        raw = load_raw(recipe, self)
        chars: set[str] = set()
        for text in raw.train[d.text_column]:
            if isinstance(text, str):
                chars.update(_prepare_text(text, d))
        chars.discard(" ")
        vocab = {c: i for i, c in enumerate(sorted(chars))}
        vocab["|"] = len(vocab)
        vocab["[UNK]"] = len(vocab)
        vocab["[PAD]"] = len(vocab)
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / "vocab.json"
            file.write_text(json.dumps(vocab))
            return Wav2Vec2CTCTokenizer(str(file), unk_token="[UNK]", pad_token="[PAD]", word_delimiter_token="|")

    def processor_model_kwargs(self, processor: ProcessorMixin) -> dict[str, Any]:
        if processor_kind(processor) != "ctc":
            return {}
        tok = processor.tokenizer
        # mean: CTC loss per target length, averaged over the batch; zero_infinity: a clip too short for its
        # transcript gives no gradient instead of inf.
        return {"vocab_size": len(tok), "pad_token_id": tok.pad_token_id, "ctc_loss_reduction": "mean", "ctc_zero_infinity": True}

    def prepare_model(self, model: PreTrainedModel, recipe: Recipe) -> None:
        audio.freeze_feature_encoder(model, recipe)  # CTC models; Whisper has no convolutional feature encoder

    # ---- data --------------------------------------------------------------------------------------
    def count_units(self, batch: dict[str, Any], processor: ProcessorMixin) -> dict[str, Any]:
        return audio.count_audio_units(batch, processor)  # seconds of audio, not waveform samples as tokens

    def preprocess(self, ds: Split, split: str, processor: ProcessorMixin, recipe: Recipe, info: LabelInfo | None,
                   train: bool) -> Split:
        d = recipe.data
        fe, tok = processor.feature_extractor, processor.tokenizer
        kind = processor_kind(processor)
        rate = audio.sampling_rate_of(fe)
        cap = window_s(fe)
        has_text = d.text_column in ds.column_names
        max_tokens = d.max_target_length or (_max_target_positions(recipe) if kind == "seq2seq" else None)
        unk = getattr(tok, "unk_token_id", None)

        def encode(batch: dict[str, list[Any]], rows: list[int]) -> dict[str, list[Any]]:
            if not has_text:
                return {}
            from hfadapt.data.sources import row_location

            texts = []
            for value, row in zip(batch[d.text_column], rows):
                where = f"data.text_column '{d.text_column}', {row_location(split, row, d)}"
                if not isinstance(value, str):
                    raise HfadaptError(f"{where}: expected a transcript, got {value!r}")
                if not value.strip():
                    raise HfadaptError(f"{where}: the transcript is empty")
                texts.append(_prepare_text(value, d))
            ids = tok(texts)["input_ids"]
            for row_ids, row in zip(ids, rows):
                if max_tokens is not None and len(row_ids) > max_tokens:
                    raise HfadaptError(
                        f"data.text_column '{d.text_column}', {row_location(split, row, d)}: the transcript is {len(row_ids)} tokens, "
                        f"longer than {max_tokens} (data.max_target_length)"
                    )
            if kind == "ctc" and unk is not None:
                unknown = sum(1 for row_ids in ids for t in row_ids if t == unk)
                total = sum(len(r) for r in ids)
                if total and unknown / total > 0.2:
                    raise HfadaptError(
                        f"data.text_column '{d.text_column}': {unknown} of {total} characters ({split}) are not in the "
                        "CTC vocabulary; set data.vocabulary=transcripts, or data.lowercase for a lower-case vocabulary"
                    )
            return {"labels": ids}

        from accelerate import PartialState

        checked = audio.check_audio(ds, split, recipe, rate, encode, f"Checking audio of {split}", max_s=cap,
                                    is_main=PartialState().is_main_process)

        return audio.featurise_on_the_fly(checked, fe, d, split)

    def plan_batch(self, recipe: Recipe, config: PretrainedConfig, batch_size: int) -> tuple[dict[str, Any], str]:
        """A meta-device micro-batch for `hfadapt plan`: clips of data.max_duration_s and full-length transcripts."""
        from hfadapt.modeling.meta import meta_labels

        inputs, what = audio.plan_inputs(config, batch_size, recipe.data.max_duration_s)
        if model_kind(config) == "ctc":  # the CTC loss reads label lengths (values); its share is small
            return inputs, f"{what} (CTC loss left out)"
        tokens = recipe.data.max_target_length or 128
        return {**inputs, "labels": meta_labels(batch_size, tokens)}, f"{what} + {tokens}-token transcripts"

    def collator(self, processor: ProcessorMixin) -> Collate:
        return SpeechCollator(processor)

    def encode_inputs(self, items: list[str], processor: ProcessorMixin, recipe: Recipe) -> dict[str, Any]:
        return audio.encode_files(items, processor.feature_extractor, recipe.data, cap_s=window_s(processor.feature_extractor))

    # ---- evaluation ----------------------------------------------------------------------------------
    def evaluate(self, ctx: EvalContext, model: Module, dataloader: DataLoader) -> dict[str, Any]:
        import torch

        accelerator, processor = ctx.accelerator, ctx.processor
        tok = processor.tokenizer
        kind = processor_kind(processor)
        metric_names = list(ctx.metric_names)
        generate = kind == "ctc" or (ctx.recipe.generation.predict_with_generate and bool(metric_names))
        settings = {**generate_kwargs(ctx.recipe.generation), **generation_sync(model, accelerator.num_processes)}
        pad_id = tok.pad_token_id
        was_training = model.training
        model.eval()
        loss_sum, weight, samples = 0.0, 0, 0
        predictions: list[str] = []
        references: list[str] = []
        for batch in dataloader:
            labels = batch["labels"]
            with torch.no_grad():
                logits = model(**batch).logits
            if kind == "ctc":
                per_example = _ctc_losses(accelerator.unwrap_model(model), logits, labels, batch.get("attention_mask"), pad_id)
                losses, = accelerator.gather_for_metrics((per_example,))
                loss_sum += float(losses.sum())
                weight += int(losses.shape[0])
                samples += int(losses.shape[0])
                ids = logits.argmax(-1)
            else:
                # Per-example sums of token losses and token counts, so each example counts once across processes.
                per_token = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
                sums, counts = accelerator.gather_for_metrics((per_token.sum(-1), (labels != -100).sum(-1)))
                loss_sum += float(sums.sum())
                weight += int(counts.sum())
                samples += int(counts.shape[0])
                ids = None
                if generate:
                    inputs = {k: v for k, v in batch.items() if k != "labels"}
                    with torch.no_grad():
                        ids = accelerator.unwrap_model(model).generate(**inputs, **settings)
            if not generate:
                continue
            ids = accelerator.pad_across_processes(ids.contiguous(), dim=1, pad_index=pad_id)
            padded_labels = accelerator.pad_across_processes(labels.contiguous(), dim=1, pad_index=-100)
            ids, padded_labels = accelerator.gather_for_metrics((ids, padded_labels))
            predictions += decode_predictions(tok, ids.cpu(), kind)
            references += decode_references(tok, padded_labels.cpu(), kind)
        model.train(was_training)
        results: dict[str, float] = {"loss": loss_sum / weight if weight else float("nan"), "samples": samples}
        if generate and predictions:
            results.update(score(metric_names, predictions, references, ctx.recipe.data.text_normalizer, tok))
        return results

    # ---- prediction --------------------------------------------------------------------------------
    def predict(self, model: Module, processor: ProcessorMixin, items: list[str], recipe: Recipe,
                info: LabelInfo | None) -> list[dict[str, Any]]:
        import torch

        d = recipe.data
        fe, tok = processor.feature_extractor, processor.tokenizer
        kind = processor_kind(processor)
        rate = audio.sampling_rate_of(fe)
        chunk_s = d.chunk_length_s or window_s(fe) or CTC_DEFAULT_CHUNK_S
        if window_s(fe) is not None:
            chunk_s = min(chunk_s, window_s(fe))
        pieces, owner = [], []
        for i, path in enumerate(audio._checked_paths(items)):
            wave = audio.load_clip(audio.storable(path, None), rate, d.resample, f"predict: input {i}")
            for piece in audio.split_long(wave, rate, chunk_s):
                pieces.append(audio.extract(fe, piece))
                owner.append(i)
        texts: list[str] = []
        for start in range(0, len(pieces), 16):
            batch = {k: v.to(model.device) for k, v in audio.pad_features(fe, pieces[start : start + 16]).items()}
            with torch.no_grad():
                if kind == "ctc":
                    ids = model(**batch).logits.argmax(-1)
                else:
                    ids = model.generate(**batch, **generate_kwargs(recipe.generation))
            texts += decode_predictions(tok, ids.cpu(), kind)
        out = []
        for i in range(len(items)):
            parts = [t for t, o in zip(texts, owner) if o == i]
            out.append({"text": " ".join(p for p in parts if p), "chunks": len(parts)})
        return out


class SpeechCollator:
    """Pads clip features with the feature extractor and transcripts with -100 by length.

    Whisper: the leading decoder-start token is dropped from the labels (the model shifts them right and
    puts it back); the end-of-text token, equal to the pad token, stays in the loss because padding is
    by length, never by token value.
    """

    def __init__(self, processor: ProcessorMixin) -> None:
        self.feature_extractor = processor.feature_extractor
        prefix = getattr(processor.tokenizer, "prefix_tokens", None) if processor_kind(processor) == "seq2seq" else None
        self.decoder_start = prefix[0] if prefix else None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = audio.pad_features(self.feature_extractor, rows)
        if "labels" in rows[0]:
            labels = [list(r["labels"]) for r in rows]
            if self.decoder_start is not None and all(row and row[0] == self.decoder_start for row in labels):
                labels = [row[1:] for row in labels]
            width = max(len(row) for row in labels)
            batch["labels"] = torch.tensor([row + [-100] * (width - len(row)) for row in labels], dtype=torch.long)
        return batch


def _prepare_text(text: str, d: DataSection) -> str:
    text = " ".join(text.split())
    return text.lower() if d.lowercase else text


def _max_target_positions(recipe: Recipe) -> int | None:
    from transformers import AutoConfig

    m = recipe.model
    try:
        config = AutoConfig.from_pretrained(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code)
    except Exception:  # noqa: BLE001 - the model loader reports a bad model reference
        return None
    return getattr(config, "max_target_positions", None)


def _ctc_losses(model: Module, logits: Tensor, labels: Tensor, attention_mask: Tensor | None, blank: int) -> Tensor:
    """Per-example CTC loss divided by its target length (Wav2Vec2ForCTC's 'mean' reduction, per example)."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if attention_mask is not None:
        input_lengths = base._get_feat_extract_output_lengths(attention_mask.sum(-1)).long()
    else:
        input_lengths = torch.full((logits.shape[0],), logits.shape[1], dtype=torch.long, device=logits.device)
    mask = labels >= 0
    target_lengths = mask.sum(-1)
    log_probs = torch.nn.functional.log_softmax(logits.float(), dim=-1).transpose(0, 1)
    with torch.backends.cudnn.flags(enabled=False):
        losses = torch.nn.functional.ctc_loss(
            log_probs, labels.masked_select(mask), input_lengths, target_lengths,
            blank=blank, reduction="none", zero_infinity=True,
        )
    return losses / target_lengths.clamp(min=1)


def decode_predictions(tok: PreTrainedTokenizerBase, ids: Tensor, kind: str) -> list[str]:
    if kind == "ctc":  # greedy CTC: repeats merged, blanks ([PAD]) dropped
        return [t.strip() for t in tok.batch_decode(ids)]
    return [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]


def decode_references(tok: PreTrainedTokenizerBase, labels: Tensor, kind: str) -> list[str]:
    import torch

    ids = torch.where(labels == -100, tok.pad_token_id, labels)
    if kind == "ctc":  # the transcript as written: no merging of repeated letters
        return [t.strip() for t in tok.batch_decode(ids, group_tokens=False)]
    return [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]


def score(names: list[str], predictions: list[str], references: list[str], normalizer: str,
          tok: PreTrainedTokenizerBase) -> dict[str, float]:
    """WER / CER, raw and (with a normaliser) normalised."""
    from hfadapt import metrics

    spelling = getattr(tok, "english_spelling_normalizer", None)
    results: dict[str, float] = {}
    for name in names:
        results.update(
            metrics.load(name).compute(
                predictions=predictions, references=references, normalizer=normalizer, english_spelling_mapping=spelling
            )
        )
    return results


register_task(SpeechRecognition())


def _no_tokenizer_files(source: str) -> bool:
    """A local folder without the files a CTC tokenizer is read from (a Hub id: unknown, so False)."""
    from pathlib import Path

    folder = Path(source).expanduser()
    if not folder.is_dir():
        return False
    return not any((folder / f).is_file() for f in ("vocab.json", "tokenizer.json", "tokenizer_config.json"))
