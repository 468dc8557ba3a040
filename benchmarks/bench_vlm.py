"""image-text-to-text: hfadapt's defaults vs a hand-written transformers + peft loop with TRL's documented
VLM collator, on a tiny Idefics3 on the CPU. Examples per second and the share of real (non-pad) tokens.

Run by hand (not a test):

    python benchmarks/bench_vlm.py [--examples 384] [--batch-size 8] [--threads 1] [--reps 3]

Both variants use the same tiny random Idefics3 (tests/vlm_fixtures.py, image splitting on so an image
takes 1 or 5 image tokens by its size), the same LoRA (r=8 on every linear layer of the language model),
AdamW at the same learning rate, one epoch at the same batch size, over the same chat rows whose answers
have 1 to 24 words and whose images are small or large: lengths vary widely.
  * hfadapt: `train(recipe)` with the task's defaults (train.group_by_length on: batches of similar text
    plus image tokens, in shuffled order), no evaluation; examples/s is metrics.json's perf/samples_per_s.
  * hand-written: the rows as a datasets split with an Image column (decoded on access, as TRL's sft_vlm
    example loads them), TRL's documented VLM collator (apply_chat_template per example, processor(text,
    images, padding=True), labels = input_ids with pad and image tokens set to -100), a shuffled DataLoader,
    and a plain forward/backward/step loop; examples/s over the same epoch (first batch included, as hfadapt's).
The real-token share is real tokens / (rows x padded length) over the epoch's batches, read off the
attention masks the model receives.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import in_temp_root, machine_load, quiet  # noqa: E402

LR = 2e-2


def write_data(folder: Path, n: int, seed: int = 0) -> Path:
    from tests.vlm_fixtures import COLOURS, WORDS, image

    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        colour = rng.choice(list(COLOURS))
        size = rng.choice([(32, 32), (56, 56)])  # 1 tile, or 2x2 tiles plus the global view
        path = f"images/{i}.png"
        image(colour, size).save(folder / path)
        answer = " ".join([colour] + [rng.choice(WORDS) for _ in range(int(rng.uniform(0, 23)))])
        rows.append({"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what colour"}]},
                                  {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
                     "images": [path]})
    file = folder / "chat.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return file


def run_hfadapt(root: Path, model: str, data: Path, batch_size: int, n: int, rep: int) -> dict[str, float]:
    from hfadapt import Recipe, train
    from hfadapt.tasks import image_text_to_text as itt

    seen = {"real": 0, "slots": 0}
    original = itt.VisionLanguageCollator.__call__

    def counting(self, rows):  # the batches the model receives, as they are
        batch = original(self, rows)
        seen["real"] += int(batch["attention_mask"].sum())
        seen["slots"] += batch["attention_mask"].numel()
        return batch

    itt.VisionLanguageCollator.__call__ = counting
    try:
        recipe = Recipe.from_dict({
            "name": "bench-vlm", "task": "image-text-to-text", "model": {"name_or_path": model},
            "data": {"train_files": [str(data)], "validation_split": None, "max_length": 256, "max_image_size": 56,
                     "do_image_splitting": True},
            "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
            "train": {"epochs": 1, "batch_size": batch_size, "learning_rate": LR, "log_with": [], "logging_steps": 1000},
            "output": {"dir": str(root / f"run-{rep}")},
        })
        with quiet(root / "hfadapt.log", True):
            result = train(recipe)
    finally:
        itt.VisionLanguageCollator.__call__ = original
    perf = json.loads((Path(result.output_dir) / "metrics.json").read_text())
    return {"examples_per_s": perf["perf/samples_per_s"], "real_share": seen["real"] / seen["slots"]}


def run_trl_pattern(model_path: str, data: Path, batch_size: int, rep: int) -> dict[str, float]:
    import datasets
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import DataLoader
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from hfadapt.modeling.towers import vlm_targets

    processor = AutoProcessor.from_pretrained(model_path)
    processor.image_processor.size = {"longest_edge": 56}
    processor.image_processor.do_image_splitting = True
    # as TRL's example reads its data: a datasets split whose Image column decodes on access
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    for r in rows:
        r["images"] = [str(data.parent / p) for p in r["images"]]
    rows = datasets.Dataset.from_list(rows).cast_column("images", datasets.List(datasets.Image()))
    image_token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)

    def collate_fn(examples):  # TRL's documented VLM collator (sft_vlm example)
        texts = [processor.apply_chat_template(e["messages"], tokenize=False) for e in examples]
        images = [[im.convert("RGB") for im in e["images"]] for e in examples]
        batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
        labels = batch["input_ids"].clone()
        labels[labels == processor.tokenizer.pad_token_id] = -100
        labels[labels == image_token_id] = -100
        batch["labels"] = labels
        return batch

    torch.manual_seed(rep)
    model = AutoModelForImageTextToText.from_pretrained(model_path)
    targets, _ = vlm_targets(model, False, False, model_path)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    loader = DataLoader(rows, batch_size=batch_size, shuffle=True, collate_fn=collate_fn)
    model.train()
    real = slots = 0
    start = time.perf_counter()
    for batch in loader:
        real += int(batch["attention_mask"].sum())
        slots += batch["attention_mask"].numel()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return {"examples_per_s": len(rows) / (time.perf_counter() - start), "real_share": real / slots}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=384)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    def bench(root: Path) -> int:
        import torch

        from tests.vlm_fixtures import build

        torch.set_num_threads(args.threads)
        model = build("idefics3", root / "model")
        data = write_data(root / "data", args.examples)
        results: dict[str, list[dict[str, float]]] = {"hfadapt": [], "hand-written (TRL collator)": []}
        for rep in range(args.reps):  # alternate the variants: machine load hits both alike
            results["hand-written (TRL collator)"].append(run_trl_pattern(model, data, args.batch_size, rep))
            results["hfadapt"].append(run_hfadapt(root, model, data, args.batch_size, args.examples, rep))
        print(f"tiny Idefics3, {args.examples} examples, batch {args.batch_size}, {args.threads} threads, "
              f"{args.reps} rep(s), load {machine_load()}")
        for name, runs in results.items():
            eps = statistics.median(r["examples_per_s"] for r in runs)
            share = statistics.median(r["real_share"] for r in runs)
            print(f"  {name:28s} {eps:7.1f} examples/s   real-token share {100 * share:5.1f}%")
        return 0

    return in_temp_root("bench-vlm-", bench)


if __name__ == "__main__":
    raise SystemExit(main())
