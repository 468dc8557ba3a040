"""What the audio tasks share: their data fields, reading audio files, resampling, the checking pass,
padding to a batch, and cutting long files for prediction.

Audio is decoded with `soundfile` (WAV, FLAC, OGG/Vorbis, ...): no FFmpeg or torchcodec is needed.
An `Audio` feature of a Hub dataset is cast with decode=False and decoded here, the same way as a
path column of a CSV/JSON file (relative to that file) or an audio folder (one sub-folder per class).
Multi-channel audio is mixed down to mono; any other sampling rate is resampled to the feature
extractor's with scipy's polyphase filter (`scipy.signal.resample_poly`, an anti-aliased FIR resampler).

What is cached and what is computed on the fly
----------------------------------------------
The tasks run one cached `datasets.map` pass (`check_audio`) that decodes every file in full, so an
unreadable, empty or non-audio file fails before training starts with one line naming the file and
its row; it stores the file reference (path or the encoded bytes), its duration and the encoded
label/transcript. Decoding, resampling and feature extraction (Whisper/AST log-mel, wav2vec2
waveform normalisation) then happen on the fly in `with_transform`: a float32 waveform at 16 kHz
takes 64 kB per second, 5-10x the FLAC/OGG it came from, and Whisper's log-mel is 30 s of frames
(960 kB) for every clip however short -- caching either multiplies a speech corpus's size on disk
(LibriSpeech 960 h: ~60 GB of FLAC -> ~220 GB of waveforms), while decoding a clip costs far less
than the model's forward pass on it (and worker processes, `train.num_workers`, on by default on CUDA, move it off the training process).
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import Field, model_validator

from hfadapt.data.sources import ROW_COLUMN, is_streamed, map_split, row_location, split_files
from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.core.recipe import ModelSection, Section

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor
    from transformers import FeatureExtractionMixin, PretrainedConfig, PreTrainedModel, ProcessorMixin

    from hfadapt.core.recipe import DataSection, Recipe
    from hfadapt.data.sources import Split

MIN_SAMPLING_RATE = 1000  # below this a file is not speech or sound a model can take (a broken header)
DURATION_COLUMN = "__hfadapt_duration__"
AUDIO_COLUMN = "__hfadapt_audio__"


class AudioFields(Section):
    """The audio column of an audio task's data section and how clips are read."""

    audio_column: str = Field("audio", description="an Audio feature, or file paths (relative to the CSV/JSON file)")
    max_duration_s: float | None = Field(None, gt=0, description="longer clips are dropped or truncated (data.long_audio)")
    min_duration_s: float | None = Field(None, ge=0, description="shorter clips are dropped")
    long_audio: Literal["drop", "truncate"] = Field(
        "drop", description="what happens to clips over data.max_duration_s: dropped (counted), or cut to it"
    )
    resample: bool = Field(
        True, description="resample clips to the feature extractor's sampling rate; false: another rate is an error"
    )

    @model_validator(mode="after")
    def _durations(self) -> "AudioFields":
        if self.max_duration_s is not None and self.min_duration_s is not None and self.min_duration_s >= self.max_duration_s:
            raise ValueError("data.min_duration_s: must be smaller than data.max_duration_s")
        return self


class AudioModelSection(ModelSection):
    """The `model` section of the audio tasks: the shared fields and the feature-encoder freeze."""

    freeze_feature_encoder: bool = Field(
        True, description="wav2vec2-style models: keep the convolutional feature encoder frozen (also with full)"
    )


# ---- reading one clip ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clip:
    waveform: np.ndarray  # float32, mono
    sampling_rate: int
    name: str  # file name (or "<bytes>") for messages


def file_name(value: dict[str, Any] | str) -> str:
    if isinstance(value, dict):
        return str(value.get("path") or "<audio bytes>")
    return str(value)


def storable(value: Any, base_dir: Path | None) -> dict[str, Any]:
    """An audio cell as {"bytes", "path"}: an Audio feature's dict (decode=False) or a file path."""
    if isinstance(value, dict):
        if value.get("bytes") is None and value.get("path") is None and "array" in value:
            raise HfadaptError("decoded audio arrays are not supported; cast the column to Audio(decode=False)")
        return {"bytes": value.get("bytes"), "path": value.get("path")}
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        return {"bytes": None, "path": str(path)}
    raise HfadaptError(f"expected an audio file path or an Audio feature, got {type(value).__name__} {value!r}")


def read_audio(value: dict[str, Any]) -> Clip:
    """Decode a stored audio cell ({"bytes", "path"}) to a mono float32 waveform; raises on any failure."""
    import numpy as np
    import soundfile as sf

    source: Any = io.BytesIO(value["bytes"]) if value.get("bytes") else value.get("path")
    name = file_name(value)
    if source is None:
        raise ValueError("no audio")
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise FileNotFoundError(source)  # soundfile says only "System error"
    data, rate = sf.read(source, dtype="float32", always_2d=True)
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return Clip(np.ascontiguousarray(wave, dtype=np.float32), int(rate), name)


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (anti-aliasing FIR) from `rate` to `target` Hz."""
    import numpy as np
    from scipy.signal import resample_poly

    if rate == target:
        return wave
    g = gcd(rate, target)
    return resample_poly(wave, target // g, rate // g).astype(np.float32)


def check_rate(rate: int, target: int, allow_resample: bool) -> str | None:
    """Why a clip's sampling rate can't be used, or None."""
    if rate < MIN_SAMPLING_RATE:
        return f"sampling rate {rate} Hz is below {MIN_SAMPLING_RATE} Hz (a broken file?)"
    if rate != target and not allow_resample:
        return f"sampling rate {rate} Hz, but the model takes {target} Hz (set data.resample=true to resample)"
    return None


def load_clip(value: dict[str, Any], target: int, allow_resample: bool, where: str, max_samples: int | None = None) -> np.ndarray:
    """Stored cell -> waveform at `target` Hz (cut to max_samples), or one HfadaptError naming `where`."""
    try:
        clip = read_audio(value)
    except Exception as e:  # noqa: BLE001 - soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise HfadaptError(_unreadable(where, value, e)) from None
    problem = check_rate(clip.sampling_rate, target, allow_resample)
    if problem:
        raise HfadaptError(f"{where}: {clip.name}: {problem}")
    if clip.waveform.size == 0:
        raise HfadaptError(f"{where}: {clip.name} is empty (no audio samples)")
    wave = resample(clip.waveform, clip.sampling_rate, target)
    return wave[:max_samples] if max_samples is not None else wave


def _unreadable(where: str, value: dict[str, Any], e: BaseException) -> str:
    if isinstance(e, FileNotFoundError):
        return f"{where}: audio file not found: {file_name(value)}"
    return f"{where}: cannot read audio {file_name(value)}: {_reason(e)}"


def _reason(e: BaseException) -> str:
    text = first_line(e) or type(e).__name__
    if "Format not recognised" in text or "unknown format" in text.lower():
        return "not an audio file soundfile can decode (WAV, FLAC, OGG/Vorbis, ...)"
    return f"{type(e).__name__}: {text}"


# ---- the model ---------------------------------------------------------------------------------------
def freeze_feature_encoder(model: PreTrainedModel, recipe: Recipe) -> None:
    """wav2vec2-style models: keep the convolutional feature encoder frozen (model.freeze_feature_encoder),
    as practitioners do; it matters for adapter.method=full (an adapter leaves it frozen anyway)."""
    if recipe.model.freeze_feature_encoder and hasattr(model, "freeze_feature_encoder"):
        model.freeze_feature_encoder()


# ---- the checking pass (cached) ---------------------------------------------------------------------
def files_dir(d: DataSection, split: str) -> Path | None:
    """Relative paths in a CSV/JSON column are relative to that file's folder."""
    files = split_files(d, split)
    return Path(files[0]).resolve().parent if files else None


def audio_location(d: AudioFields, split: str, row: int) -> str:
    return f"data.audio_column '{d.audio_column}', {row_location(split, row, d)}"


def check_audio(ds: Split, split: str, recipe: Recipe, target_rate: int,
                encode_row: Callable[[dict[str, list[Any]], list[int]], dict[str, list[Any]]], desc: str,
                max_s: float | None = None, *, is_main: bool) -> Split:
    """The cached pass: every clip decoded once and checked; `encode_row(batch, indices)` adds the
    task's columns (labels, transcripts), each checked with its row. Returns the dataset of
    {AUDIO_COLUMN, DURATION_COLUMN, ...task columns}, with clips outside the duration limits
    dropped (and counted) -- or truncated later, with data.long_audio=truncate. `max_s`: the model's own
    limit (Whisper's 30 s window), over which clips are always dropped. `is_main`: whether this is the main
    process, which prints the count."""
    from datasets import Audio

    d = recipe.data
    col = d.audio_column
    if isinstance((ds.features or {}).get(col), Audio):
        ds = ds.cast_column(col, Audio(decode=False))
    base_dir = files_dir(d, split)

    def check(batch: dict, indices: list[int]) -> dict:
        rows = batch.get(ROW_COLUMN, indices)
        audio, durations = [], []
        for value, row in zip(batch[col], rows):
            where = audio_location(d, split, row)
            try:
                cell = storable(value, base_dir)
            except HfadaptError as e:
                raise HfadaptError(f"{where}: {e}") from None
            try:
                clip = read_audio(cell)
            except Exception as e:  # noqa: BLE001
                raise HfadaptError(_unreadable(where, cell, e)) from None
            problem = check_rate(clip.sampling_rate, target_rate, d.resample)
            if problem:
                raise HfadaptError(f"{where}: {clip.name}: {problem}")
            if clip.waveform.size == 0:
                raise HfadaptError(f"{where}: {clip.name} is empty (no audio samples)")
            audio.append(cell)
            durations.append(clip.waveform.size / clip.sampling_rate)
        out = {AUDIO_COLUMN: audio, DURATION_COLUMN: durations}
        out.update(encode_row(batch, rows))
        return out

    checked = map_split(ds, check, desc, d.num_proc, batched=True, with_indices=True, remove_columns=ds.column_names)
    return filter_durations(checked, split, d, max_s, is_main=is_main)


def filter_durations(ds: Split, split: str, d: AudioFields, max_s: float | None = None, *, is_main: bool) -> Split:
    """Drop clips outside [min_duration_s, max_duration_s] (the max only with long_audio=drop) and over the
    model's own limit `max_s`; print how many were dropped (the main process, `is_main`)."""
    low = d.min_duration_s
    limits = ([d.max_duration_s] if d.max_duration_s is not None and d.long_audio == "drop" else []) + ([max_s] if max_s else [])
    high = min(limits) if limits else None
    drop_long = high is not None
    if low is None and not drop_long:
        return ds
    if is_streamed(ds):  # read lazily: clips are dropped as they stream by, uncounted
        return ds.filter(lambda row: (low is None or row[DURATION_COLUMN] >= low) and (not drop_long or row[DURATION_COLUMN] <= high))
    durations = ds[DURATION_COLUMN]
    keep = [i for i, s in enumerate(durations) if (low is None or s >= low) and (not drop_long or s <= high)]
    dropped = len(durations) - len(keep)
    if dropped:
        short = sum(1 for s in durations if low is not None and s < low)
        parts = ([f"{short} shorter than {low} s"] if short else []) + (
            [f"{dropped - short} longer than {high} s"] if dropped - short else []
        )
        if is_main:
            print(f"hfadapt: {split}: dropped {dropped} of {len(durations)} clips ({', '.join(parts)})")
        if not keep:
            raise HfadaptError(
                f"data.max_duration_s/min_duration_s: no {split} clip is left ({', '.join(parts)}); loosen the limits"
            )
        ds = ds.select(keep)
    return ds


# ---- on the fly ------------------------------------------------------------------------------------
def featurise_on_the_fly(checked: Split, feature_extractor: FeatureExtractionMixin, d: AudioFields, split: str,
                         max_samples: int | None = None) -> Split:
    """The checked split with model inputs computed as examples are read: decode, mix down, resample,
    cut to `max_samples`, features (cached float arrays would dwarf the compressed audio). Labels pass
    through. `with_transform` on a materialised split, a lazy `map` on a streamed one (no transforms)."""
    rate = sampling_rate_of(feature_extractor)

    def to_features(batch: dict) -> dict:
        waves = [load_clip(v, rate, d.resample, f"{split} clip {v.get('path')}", max_samples) for v in batch[AUDIO_COLUMN]]
        rows = [extract(feature_extractor, w) for w in waves]
        out = {k: [r[k] for r in rows] for k in rows[0]}
        if "labels" in batch:
            out["labels"] = batch["labels"]
        return out

    if is_streamed(checked):
        return checked.map(to_features, batched=True, remove_columns=checked.column_names)
    return checked.with_transform(to_features)


def count_audio_units(batch: dict, processor: FeatureExtractionMixin | ProcessorMixin) -> dict[str, Any]:
    """Throughput units of an audio batch: seconds of real audio for models fed raw waveforms (the
    wav2vec2 family: samples under the attention mask / the sampling rate). Spectrogram models (Whisper's
    30 s log-mel windows, AST) get no unit: their inputs are padded to a fixed window, so the batch no
    longer says how much audio it holds; samples/s stands for them."""
    values = batch.get("input_values")
    if values is None or getattr(values, "dim", lambda: 0)() != 2:
        return {}
    mask = batch.get("attention_mask")
    samples = mask.sum() if mask is not None else values.numel()
    return {"audio_seconds": samples / sampling_rate_of(getattr(processor, "feature_extractor", processor))}


def sampling_rate_of(feature_extractor: FeatureExtractionMixin) -> int:
    return int(feature_extractor.sampling_rate)


def max_samples(d: AudioFields, rate: int, cap_s: float | None = None) -> int | None:
    """Samples a clip is cut to: data.max_duration_s with long_audio=truncate, and the model's own cap."""
    limits = [cap_s] if cap_s is not None else []
    if d.max_duration_s is not None and d.long_audio == "truncate":
        limits.append(d.max_duration_s)
    return int(min(limits) * rate) if limits else None


def extract(feature_extractor: FeatureExtractionMixin, wave: np.ndarray) -> dict[str, Any]:
    """One clip's model input (log-mel or normalised waveform), unbatched."""
    rate = sampling_rate_of(feature_extractor)
    kwargs: dict[str, Any] = {"sampling_rate": rate}
    feats = feature_extractor(wave, **kwargs)
    name = feature_extractor.model_input_names[0]
    return {name: feats[name][0]}


def pad_features(feature_extractor: FeatureExtractionMixin, rows: list[dict]) -> dict[str, Tensor]:
    """A batch of model inputs: variable-length waveforms padded (attention mask where the model wants one)."""
    name = feature_extractor.model_input_names[0]
    return dict(feature_extractor.pad([{name: r[name]} for r in rows], padding=True, return_tensors="pt"))


def encode_files(paths: list[str], feature_extractor: FeatureExtractionMixin, d: AudioFields, cap_s: float | None = None) -> dict[str, Tensor]:
    """`hfadapt predict` inputs (audio file paths) -> a padded batch."""
    rate = sampling_rate_of(feature_extractor)
    rows = [extract(feature_extractor, load_clip(storable(p, None), rate, d.resample, f"predict: input {i}", max_samples(d, rate, cap_s)))
            for i, p in enumerate(_checked_paths(paths))]
    return pad_features(feature_extractor, rows)


def _checked_paths(paths: list[str]) -> list[str]:
    for i, p in enumerate(paths):
        if not isinstance(p, str) or not Path(p).is_file():
            raise HfadaptError(f"predict: input {i}: audio file not found: {p}")
    return paths


# ---- long files (prediction) -------------------------------------------------------------------------
def split_long(wave: np.ndarray, rate: int, max_s: float) -> list[np.ndarray]:
    """Cut a long waveform into pieces of at most `max_s` seconds, each cut at the quietest 20 ms frame
    of the last quarter of its window, so cuts fall in pauses rather than inside words."""
    import numpy as np

    size = int(max_s * rate)
    if wave.size <= size:
        return [wave]
    frame = max(1, int(0.02 * rate))
    pieces, start = [], 0
    while wave.size - start > size:
        window = wave[start : start + size]
        search_from = int(size * 0.75)
        tail = window[search_from:]
        n = tail.size // frame
        if n == 0:
            cut = size
        else:
            energy = (tail[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
            cut = search_from + int(np.argmin(energy)) * frame + frame // 2
        pieces.append(wave[start : start + cut])
        start += cut
    pieces.append(wave[start:])
    return [p for p in pieces if p.size]


def seconds(n: int, rate: int) -> float:
    return math.floor(100 * n / rate) / 100


def plan_inputs(config: PretrainedConfig, batch_size: int, seconds: float | None) -> tuple[dict[str, Tensor], str]:
    """A meta-device batch of model inputs for `hfadapt plan`, shaped as the feature extractor would
    give them: Whisper's 30 s log-mel window, AST's fixed spectrogram, else raw 16 kHz waveforms of
    `seconds` (data.max_duration_s; 10 s when unset)."""
    import torch

    kind = getattr(config, "model_type", "")
    if kind == "whisper":
        frames = 2 * config.max_source_positions
        return {"input_features": torch.zeros(batch_size, config.num_mel_bins, frames, device="meta")}, "30 s log-mel windows"
    if kind == "audio-spectrogram-transformer":
        shape = (batch_size, config.max_length, config.num_mel_bins)
        return {"input_values": torch.zeros(*shape, device="meta")}, f"{config.max_length} x {config.num_mel_bins} spectrograms"
    seconds = seconds or 10.0
    samples = int(seconds * 16_000)
    return {"input_values": torch.zeros(batch_size, samples, device="meta")}, f"{seconds:g} s at 16 kHz"

