"""Audio: hfadapt's preprocessing and training loop vs the same work written by hand.

Run by hand (not a test):

    python benchmarks/bench_audio.py [--clips 192] [--steps 30] [--threads 1] [--verbose]

Setup (both variants alike): a randomly initialised small Whisper (d_model 128, 2+2 layers, 80 mel
bins, a 4 s window) saved with its processor, and --clips FLAC files of 1..3 s at 44.1 kHz in stereo
(so every clip is decoded, mixed down and resampled to 16 kHz) listed in a JSONL file with transcripts.

1. Preprocessing, examples/s for decode + mix-down + resample + log-mel over every clip, datasets'
   cache disabled for both:
   * hfadapt: `task.preprocess` (the checking pass: full decode, duration, transcript tokenized) and then
     reading every example (on the fly: decode, resample, log-mel);
   * by hand: `datasets.map` with soundfile + scipy resample_poly + the feature extractor + the tokenizer,
     the way the transformers speech examples do it (features stored in the map's output).
   hfadapt decodes each clip twice (check pass, then features): the ratio shows what that costs.
2. Training loop, LoRA r=8 on q_proj/v_proj, AdamW, linear schedule, clipping 1.0, batch 8, --steps
   steps: wall time from the end of step 1 to the end of the last step of `hfadapt.train` (callback)
   vs a hand-written Accelerate + PEFT loop over the hand-preprocessed data, same example order.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine_load, quiet, window

SEED = 42
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet".split()


def build(root: Path, clips: int) -> tuple[str, Path]:
    import numpy as np
    import soundfile as sf
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    model_dir = root / "whisper"
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>", "<|notimestamps|>"]
    for s in specials:
        vocab[s] = len(vocab)
    eot = vocab["<|endoftext|>"]
    tok = WhisperTokenizer(vocab=vocab, merges=[], unk_token="<|endoftext|>", bos_token="<|endoftext|>",
                           eos_token="<|endoftext|>", pad_token="<|endoftext|>", additional_special_tokens=specials[1:])
    fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, chunk_length=4)
    config = WhisperConfig(
        vocab_size=len(vocab), num_mel_bins=80, encoder_layers=2, decoder_layers=2, d_model=128,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=256, decoder_ffn_dim=256,
        max_source_positions=200, max_target_positions=64, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
        decoder_start_token_id=vocab["<|startoftranscript|>"], begin_suppress_tokens=None, suppress_tokens=None,
    )
    torch.manual_seed(SEED)
    WhisperForConditionalGeneration(config).save_pretrained(model_dir)
    WhisperProcessor(fe, tok).save_pretrained(model_dir)
    rng = np.random.default_rng(SEED)
    rows = []
    for i in range(clips):
        seconds = rng.uniform(1.0, 3.0)
        t = np.arange(int(seconds * 44100)) / 44100
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + 0.05 * rng.normal(size=t.size)
        path = root / "clips" / f"{i}.flac"
        path.parent.mkdir(exist_ok=True)
        sf.write(str(path), np.stack([wave, wave], axis=1).astype("float32"), 44100)
        rows.append({"audio": f"clips/{i}.flac", "text": " ".join(rng.choice(WORDS, 3))})
    data = root / "speech.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(model_dir), data


def recipe_for(model_dir: str, data: Path, run_dir: Path, steps: int) -> Any:
    from hfadapt import Recipe

    return Recipe.from_dict({
        "name": "bench-audio", "task": "speech-recognition", "model": {"name_or_path": model_dir},
        "data": {"train_files": [str(data)], "validation_split": None},
        "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "train": {"max_steps": steps, "batch_size": 8, "learning_rate": 1e-3, "logging_steps": 10, "log_with": [], "seed": SEED},
        "output": {"dir": str(run_dir), "overwrite": True},
    })


def hand_preprocess(model_dir: str, data: Path) -> Any:
    import datasets
    import soundfile as sf
    from scipy.signal import resample_poly
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    ds = datasets.load_dataset("json", data_files=str(data), split="train")

    def prepare(row: dict) -> dict:
        wave, rate = sf.read(str(data.parent / row["audio"]), dtype="float32", always_2d=True)
        wave = resample_poly(wave.mean(axis=1), 160, 441)
        feats = processor.feature_extractor(wave, sampling_rate=16000).input_features[0]
        return {"input_features": feats, "labels": processor.tokenizer(row["text"]).input_ids}

    return ds.map(prepare, remove_columns=ds.column_names), processor


def bench_preprocess(model_dir: str, data: Path) -> dict[str, float]:
    import datasets

    from hfadapt.data.sources import load_raw
    from hfadapt.tasks import TASKS

    datasets.disable_caching()
    recipe = recipe_for(model_dir, data, data.parent / "unused", 1)
    task = TASKS.get("speech-recognition")
    t0 = time.perf_counter()
    processor = task.load_processor(recipe)
    raw = load_raw(recipe, task)
    ds = task.preprocess(raw.train, "train", processor, recipe, None, train=True)
    for i in range(len(ds)):
        ds[i]
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    hand, _ = hand_preprocess(model_dir, data)
    for i in range(len(hand)):
        hand[i]
    theirs = time.perf_counter() - t0
    datasets.enable_caching()
    n = len(ds)
    return {"hfadapt_examples_per_s": n / ours, "hand_examples_per_s": n / theirs}


def hand_loop(model_dir: str, data: Path, steps: int, marks: dict[int, tuple[float, float]]) -> None:
    import torch
    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSpeechSeq2Seq, get_scheduler

    torch.manual_seed(SEED)
    ds, processor = hand_preprocess(model_dir, data)
    ds = ds.with_format("torch")
    start = processor.tokenizer.convert_tokens_to_ids("<|startoftranscript|>")

    def collate(rows: list[dict]) -> dict:
        labels = [r["labels"].tolist() for r in rows]
        if all(row[0] == start for row in labels):
            labels = [row[1:] for row in labels]
        width = max(map(len, labels))
        return {
            "input_features": torch.stack([r["input_features"] for r in rows]),
            "labels": torch.tensor([row + [-100] * (width - len(row)) for row in labels]),
        }

    accelerator = Accelerator()
    model = get_peft_model(AutoModelForSpeechSeq2Seq.from_pretrained(model_dir), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=steps)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(SEED)).tolist()
    loader = torch.utils.data.DataLoader(ds, batch_size=8, sampler=order, collate_fn=collate)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    model.train()
    step = 0
    while step < steps:
        for batch in loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            marks[step] = (time.perf_counter(), time.process_time())
            if step == steps:
                break


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clips", type=int, default=192)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from hfadapt import train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        log = root / "log.txt"
        model_dir, data = build(root, args.clips)
        with quiet(log, not args.verbose):
            pre = bench_preprocess(model_dir, data)
            ours: dict[int, tuple[float, float]] = {}
            train(recipe_for(model_dir, data, root / "run", args.steps),
                  callbacks=[lambda s: ours.__setitem__(s.global_step, (time.perf_counter(), time.process_time()))])
            theirs: dict[int, tuple[float, float]] = {}
            hand_loop(model_dir, data, args.steps, theirs)
        a, b = window(ours, args.steps), window(theirs, args.steps)
        print(f"machine load: {machine_load()}; torch threads {args.threads}; {args.clips} clips of 1-3 s, 44.1 kHz stereo FLAC")
        print(f"preprocessing (decode + mix-down + resample + log-mel): hfadapt {pre['hfadapt_examples_per_s']:.1f} ex/s, "
              f"by hand {pre['hand_examples_per_s']:.1f} ex/s, ratio {pre['hfadapt_examples_per_s'] / pre['hand_examples_per_s']:.2f}")
        print(f"train loop, {args.steps - 1} steps: hfadapt {a['loop']:.2f} s (cpu {a['loop_cpu']:.2f}), "
              f"by hand {b['loop']:.2f} s (cpu {b['loop_cpu']:.2f}), ratio {a['loop'] / b['loop']:.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
