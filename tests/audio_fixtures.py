"""Tiny audio models saved like Hub repos, and WAV files generated on the spot (imported by conftest).

- tiny_wav2vec2: a 2-layer wav2vec2 (base model, no head, no tokenizer) + its feature extractor;
  audio-classification adds a head, speech-recognition a CTC head over a vocabulary built from transcripts.
- tiny_whisper: a 1+1-layer Whisper with a byte-level tokenizer carrying Whisper's special tokens, a
  16-mel feature extractor with a 1 s window (100 frames), and the generation config's language/task ids.
- sound_folder: train/ and validation/ folders of tones, chirps and noise bursts (one sub-folder per class),
  written at 16 kHz, 8 kHz and 44.1 kHz, some in stereo.
- tone_speech: utterances whose "words" are tones (do, re, mi), with transcripts, in a JSONL file
  whose `audio` column holds paths relative to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

RATE = 16000
WORD_TONES = {"do": 330.0, "re": 660.0, "mi": 1320.0}


def tone(freq: float, seconds: float, rate: int = RATE, amp: float = 0.5) -> Any:
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype("float32")


def chirp(f0: float, f1: float, seconds: float, rate: int = RATE) -> Any:
    import numpy as np
    from scipy.signal import chirp as sweep

    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * sweep(t, f0, seconds, f1)).astype("float32")


def noise(seconds: float, rate: int = RATE, seed: int = 0) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    wave = rng.normal(0, 0.3, int(seconds * rate)).astype("float32")
    wave[: len(wave) // 4] = 0  # a burst: silence, then noise
    return wave


def write_wav(path: Path, wave: Any, rate: int = RATE, stereo: bool = False) -> Path:
    import numpy as np
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.stack([wave, wave * 0.5], axis=1) if stereo else wave
    sf.write(str(path), data, rate)
    return path


def utterance(words: list[str], rate: int = RATE) -> Any:
    import numpy as np

    gap = np.zeros(int(0.05 * rate), dtype="float32")
    parts = [gap]
    for w in words:
        parts += [tone(WORD_TONES[w], 0.2, rate), gap]
    return np.concatenate(parts)


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory: pytest.TempPathFactory) -> str:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    root = tmp_path_factory.mktemp("tiny-wav2vec2")
    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        conv_dim=(32, 32, 32), conv_kernel=(10, 4, 4), conv_stride=(5, 4, 4),  # 80x: 200 frames a second
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, feat_extract_norm="layer", do_stable_layer_norm=True,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0,
        layerdrop=0.0, mask_time_prob=0.0, classifier_proj_size=32, initializer_range=0.2,
    )
    torch.manual_seed(0)
    Wav2Vec2Model(config).save_pretrained(root)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=RATE, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(root)
    return str(root)


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> str:
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    root = tmp_path_factory.mktemp("tiny-whisper")
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    specials = [
        "<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
        "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>",
    ]
    for s in specials:
        vocab[s] = len(vocab)
    eot = vocab["<|endoftext|>"]
    tok = WhisperTokenizer(
        vocab=vocab, merges=[], unk_token="<|endoftext|>", bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        pad_token="<|endoftext|>", additional_special_tokens=specials[1:],
    )
    fe = WhisperFeatureExtractor(feature_size=16, sampling_rate=RATE, hop_length=160, chunk_length=1, n_fft=400)
    config = WhisperConfig(
        vocab_size=len(vocab), num_mel_bins=16, encoder_layers=1, decoder_layers=1, d_model=48,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=96, decoder_ffn_dim=96,
        max_source_positions=50, max_target_positions=32, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=vocab["<|startoftranscript|>"],
        begin_suppress_tokens=None, suppress_tokens=None, init_std=0.1, classifier_proj_size=32,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    gc = model.generation_config
    gc.lang_to_id = {"<|en|>": vocab["<|en|>"], "<|de|>": vocab["<|de|>"]}
    gc.task_to_id = {"transcribe": vocab["<|transcribe|>"], "translate": vocab["<|translate|>"]}
    gc.no_timestamps_token_id = vocab["<|notimestamps|>"]
    gc.is_multilingual = True
    gc.decoder_start_token_id = vocab["<|startoftranscript|>"]
    gc.begin_suppress_tokens = None
    gc.suppress_tokens = None
    gc._from_model_config = False  # else from_pretrained rebuilds it from config.json, dropping the ids above
    model.save_pretrained(root)
    WhisperProcessor(fe, tok).save_pretrained(root)
    return str(root)


SOUND_CLASSES = ("tone", "chirp", "noise")


def sound(kind: str, i: int, rate: int = RATE) -> Any:
    seconds = 0.4 + 0.05 * (i % 4)
    if kind == "tone":
        return tone(300.0 + 40 * (i % 5), seconds, rate)
    if kind == "chirp":
        return chirp(200.0, 3000.0 + 100 * (i % 3), seconds, rate)
    return noise(seconds, rate, seed=i)


@pytest.fixture(scope="session")
def sound_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """train/{tone,chirp,noise}/*.wav and validation/...: the kind of sound is the class; files come at
    16 kHz, 8 kHz and 44.1 kHz, every third one in stereo."""
    root = tmp_path_factory.mktemp("sounds")
    for split, n in (("train", 10), ("validation", 4)):
        for kind in SOUND_CLASSES:
            for i in range(n):
                rate = (RATE, 8000, 44100)[i % 3]
                write_wav(root / split / kind / f"{i}.wav", sound(kind, i + (100 if split == "validation" else 0), rate), rate, stereo=i % 3 == 1)
    return str(root)


TONE_SENTENCES = [[a, b] for a in WORD_TONES for b in WORD_TONES]  # 9 two-word utterances


@pytest.fixture(scope="session")
def tone_speech(tmp_path_factory: pytest.TempPathFactory) -> str:
    """speech.jsonl: {"audio": "clips/N.wav" (relative to the file), "text": "do re"}, the 9 word pairs."""
    root = tmp_path_factory.mktemp("tone-speech")
    rows = []
    for i, words in enumerate(TONE_SENTENCES):
        write_wav(root / "clips" / f"{i}.wav", utterance(words))
        rows.append({"audio": f"clips/{i}.wav", "text": " ".join(words)})
    path = root / "speech.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)
