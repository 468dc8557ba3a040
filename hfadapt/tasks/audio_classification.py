"""audio-classification: keyword spotting, intent, speaker, emotion, sound events.

AutoModelForAudioClassification bases: wav2vec2/HuBERT/WavLM-style (raw waveform, normalised by the
feature extractor), Audio Spectrogram Transformer (log-mel filter banks) and Whisper's encoder
(WhisperForAudioClassification, 30 s log-mel). Single- and multi-label, with the classification
metrics and outputs of text-classification (hfadapt.classification).

The clips are checked, their labels encoded and their durations measured in one cached
`datasets.map` pass; decoding, resampling and feature extraction happen on the fly (see
hfadapt/audio.py for why). Clips longer than data.max_duration_s are cut to it by default
(data.long_audio=truncate): a keyword or sound event is classified from its first seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from hfadapt.data import audio
from hfadapt.tasks import classification
from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.core.recipe import DataSection
from hfadapt.tasks.base import register_task
from hfadapt.tasks.classification import ClassificationTask

if TYPE_CHECKING:
    from torch.nn import Module
    from transformers import FeatureExtractionMixin, PretrainedConfig, PreTrainedModel

    from hfadapt.core.recipe import Recipe
    from hfadapt.data.labels import LabelInfo
    from hfadapt.tasks.base import Collate, Split


class AudioClassificationData(audio.AudioFields, classification.LabelFields, DataSection):
    """Audio clips (an Audio feature, file paths relative to the data file, or an audio folder with one
    sub-folder per class) and their labels."""

    long_audio: Literal["drop", "truncate"] = Field(
        "truncate", description="clips over data.max_duration_s: cut to it (default), or dropped (counted)"
    )


class AudioClassification(ClassificationTask):
    name = "audio-classification"
    modality = "audio"
    peft_task_type = None  # peft has no audio task type; the head goes to modules_to_save
    auto_class = "AutoModelForAudioClassification"
    data_model = AudioClassificationData
    model_model = audio.AudioModelSection  # model.freeze_feature_encoder
    pipeline_tag = "audio-classification"
    card_example = "clip.wav"

    def check(self, recipe: Recipe) -> list[str]:
        problems = super().check(recipe)
        if recipe.data.problem_type == "regression":
            problems.append("data.problem_type: audio-classification takes single_label or multi_label")
        return problems

    def columns(self, recipe: Recipe, with_labels: bool = True) -> dict[str, str]:
        d = recipe.data
        return {d.audio_column: "data.audio_column", **({d.label_column: "data.label_column"} if with_labels else {})}

    def load_processor(self, recipe: Recipe, path: str | None = None) -> FeatureExtractionMixin:
        return load_feature_extractor(recipe, path)

    def prepare_model(self, model: PreTrainedModel, recipe: Recipe) -> None:
        """After the adapter is applied: freeze the feature encoder; multi-label loss where the head lacks one."""
        audio.freeze_feature_encoder(model, recipe)
        if recipe.data.problem_type == "multi_label":
            _binary_cross_entropy_loss(model)

    def predict(self, model: Module, processor: FeatureExtractionMixin, items: list[str], recipe: Recipe,
                info: LabelInfo | None) -> list[dict[str, Any]]:
        assert info is not None, "a classifier predicts label names"
        batch = {k: v.to(model.device) for k, v in self.encode_inputs(items, processor, recipe).items()}
        return classification.predict_batch(model, batch, info)

    def count_units(self, batch: dict[str, Any], processor: FeatureExtractionMixin) -> dict[str, Any]:
        return audio.count_audio_units(batch, processor)  # seconds of audio, not waveform samples as tokens

    def preprocess(self, ds: Split, split: str, processor: FeatureExtractionMixin, recipe: Recipe, info: LabelInfo | None,
                   train: bool) -> Split:
        d = recipe.data
        has_labels = d.label_column in ds.column_names
        rate = audio.sampling_rate_of(processor)

        def encode(batch: dict[str, list[Any]], rows: list[int]) -> dict[str, list[Any]]:
            if not has_labels:
                return {}
            return {"labels": classification.encode_labels(batch[d.label_column], rows, info, split, d)}

        from accelerate import PartialState

        checked = audio.check_audio(ds, split, recipe, rate, encode, f"Checking audio of {split}", is_main=PartialState().is_main_process)
        return audio.featurise_on_the_fly(checked, processor, d, split, audio.max_samples(d, rate))

    def plan_batch(self, recipe: Recipe, config: PretrainedConfig, batch_size: int) -> tuple[dict[str, Any], str]:
        """A meta-device micro-batch for `hfadapt plan`: clips of data.max_duration_s."""
        from hfadapt.modeling.meta import meta_labels

        inputs, what = audio.plan_inputs(config, batch_size, recipe.data.max_duration_s)
        return {**inputs, "labels": meta_labels(batch_size)}, what

    def collator(self, processor: FeatureExtractionMixin) -> Collate:
        return AudioCollator(processor)

    def encode_inputs(self, items: list[str], processor: FeatureExtractionMixin, recipe: Recipe) -> dict[str, Any]:
        return audio.encode_files(items, processor, recipe.data)


class AudioCollator:
    """Pads a batch of clip features with the feature extractor; stacks the labels."""

    def __init__(self, feature_extractor: FeatureExtractionMixin) -> None:
        self.feature_extractor = feature_extractor

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = audio.pad_features(self.feature_extractor, rows)
        if "labels" in rows[0]:
            labels = [r["labels"] for r in rows]
            batch["labels"] = torch.tensor(labels, dtype=torch.float if isinstance(labels[0], list) else torch.long)
        return batch


def _binary_cross_entropy_loss(model: PreTrainedModel) -> None:
    """wav2vec2-style and Whisper audio classifiers always compute a cross-entropy loss, whatever
    config.problem_type says; for multi-label the loss is taken over here (one sigmoid per label).
    The instance's forward is wrapped because peft calls `model.forward` directly (no module hooks)."""
    import torch.nn.functional as F

    original = model.forward

    def forward(*args: Any, labels: Any = None, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        if labels is not None:
            out.loss = F.binary_cross_entropy_with_logits(out.logits, labels.to(out.logits.dtype))
        return out

    model.forward = forward


def load_feature_extractor(recipe: Recipe, path: str | None = None) -> FeatureExtractionMixin:
    """The base model's (or a run's) feature extractor: sampling rate, log-mel or normalisation settings."""
    from transformers import AutoFeatureExtractor

    from hfadapt.modeling.models import check_local_path

    m = recipe.model
    source = path or m.name_or_path
    field = "model.name_or_path" if path is None else f"the run's folder {path}"
    check_local_path(source, field)
    try:
        return AutoFeatureExtractor.from_pretrained(source, revision=None if path else m.revision, trust_remote_code=m.trust_remote_code)
    except Exception as e:  # noqa: BLE001
        raise HfadaptError(f"{field}: cannot load a feature extractor from '{source}': {first_line(e)}") from e


register_task(AudioClassification())
