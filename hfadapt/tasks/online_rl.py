"""online-rl: GRPO, Dr. GRPO and RLOO on a causal LM adapter, with rewards you can verify.

Data: prompts (data.prompt_column: text, or chat messages rendered with the generation prompt) and any
columns the rewards read. For each batch of prompts, `rollout` samples rl.num_generations completions
per prompt from the policy itself (`generate`, left padding, stop at EOS), scores them with the recipe's
rewards (tasks/rewards.py, summed with weights) and turns the rewards into group-relative advantages;
`training_loss` is TRL's clipped surrogate (GRPOTrainer._compute_loss) for rl.loss_type grpo, dr_grpo,
dapo or bnpo, plus beta * KL to the reference (the base with the adapter off) when beta > 0.

Sampling is seeded per completion from (train.seed, optimizer step, data row, completion index): Gumbel-max
noise from its own generator on top of the temperature / top-p scaled logits, so a completion does not
depend on which batch or process drew it (2 processes == 1) and a resumed run samples exactly what the
killed one would have. Each process generates for its own prompts; group statistics are within a prompt's
group (which one process holds whole); scale_rewards=batch and dapo's token count are gathered across
processes. Completions, rewards and advantages go to completions.jsonl every train.logging_steps.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from hfadapt.core.errors import HfadaptError
from hfadapt.core.recipe import DataSection, Section
from hfadapt.tasks.base import EvalContext, Task, register_task
from hfadapt.tasks.language import check_messages, disable_dropout, encode_prompts, generate, load_lm_tokenizer, render_chat, short
from hfadapt.tasks.reporting import ReportInput, e, fmt, img, plt
from hfadapt.tasks.rewards import RewardSpec, Scorer, build_scorers, load_reward_model, reward_columns, reward_name, score

if TYPE_CHECKING:
    from torch import Tensor
    from torch.nn import Module
    from torch.utils.data import DataLoader
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from hfadapt.core.recipe import Recipe
    from hfadapt.data.labels import LabelInfo
    from hfadapt.tasks.base import Collate, Split

COMPLETIONS_FILE = "completions.jsonl"
DEFAULTS = {"grpo": ("dapo", "group"), "dr_grpo": ("dr_grpo", "none"), "rloo": ("grpo", "none")}  # loss_type, scale_rewards


class OnlineRLData(DataSection):
    """Prompts, and the columns the rewards read."""

    prompt_column: str = Field("prompt", description="the prompt: text, or chat messages (rendered with the generation prompt)")
    chat_template: str | None = Field(None, description="Jinja chat template for tokenizers without one")
    max_prompt_length: int = Field(256, gt=0, description="longer prompts keep their last this many tokens")
    disable_dropout: bool = Field(True, description="dropout off, as TRL's default: sampling and training see the same network")


class RLSection(Section):
    """Online RL: sampling, rewards and the policy loss."""

    algorithm: Literal["grpo", "dr_grpo", "rloo"] = Field(
        "grpo", description="grpo (group mean/std baseline), dr_grpo (no std scaling, constant normaliser), rloo (leave-one-out baseline)"
    )
    num_generations: int = Field(8, ge=2, description="completions sampled per prompt (a group); at least 2")
    max_completion_length: int = Field(256, gt=0, description="tokens generated at most per completion")
    temperature: float = Field(1.0, gt=0, description="sampling temperature (also divides the logits of the loss, as TRL)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling")
    beta: float = Field(0.0, ge=0, description="KL penalty to the reference (the base, adapter off); 0: no reference pass")
    epsilon: float = Field(0.2, gt=0, description="clipping of the importance ratio: [1 - epsilon, 1 + epsilon_high]")
    epsilon_high: float | None = Field(None, gt=0, description="upper clipping (DAPO's clip-higher); epsilon when absent")
    num_iterations: int = Field(1, ge=1, description="updates per generation batch (PPO epochs); >1 computes old log-probs")
    scale_rewards: Literal["group", "batch", "none"] | None = Field(
        None, description="divide advantages by the group's or the batch's reward std, or not; the algorithm's default when absent"
    )
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] | None = Field(
        None, description="TRL's loss normalisations; the algorithm's default when absent (grpo: dapo, dr_grpo: dr_grpo, rloo: grpo)"
    )
    generation_engine: Literal["transformers", "vllm"] = Field("transformers", description="transformers: the policy's generate")
    rewards: list[RewardSpec] = Field(default_factory=list, description="rewards, summed with their weights")
    trust_reward_code: bool = Field(True, description="run `function` rewards; a recipe loaded from the Hub gets false unless overridden")

    @property
    def resolved_loss_type(self) -> str:
        return self.loss_type or DEFAULTS[self.algorithm][0]

    @property
    def resolved_scale_rewards(self) -> str:
        return self.scale_rewards or DEFAULTS[self.algorithm][1]


class OnlineRL(Task):
    name = "online-rl"
    modality = "text"
    peft_task_type = "CAUSAL_LM"
    auto_class = "AutoModelForCausalLM"
    data_model = OnlineRLData
    recipe_sections = {"rl": RLSection}
    pipeline_tag = "text-generation"
    card_example = "What is 12 * 7? Put the answer in \\boxed{}."
    extra_result_keys = ("reward", "completion_length")
    default_best_metric = "reward"
    step_logs = (COMPLETIONS_FILE,)

    def __init__(self) -> None:
        self._scorers: dict[str, list[Scorer]] = {}

    # ---- recipe -----------------------------------------------------------------------------
    def check(self, recipe: Recipe) -> list[str]:
        rl, problems = recipe.rl, []
        if not rl.rewards:
            problems.append("rl.rewards: give at least one reward (exact_match, math_equal, format, length, reward_model, function)")
        if recipe.eval.metrics:
            problems.append("eval.metrics: online-rl scores completions with rl.rewards; remove eval.metrics")
        if rl.num_iterations > 1 and recipe.train.gradient_accumulation_steps > 1:
            # TRL normalises over the whole generation batch (all accumulated micro-batches); here a rollout is one
            # micro-batch, so batch-scaled rewards and dapo's token count would differ from TRL's: refused, not approximated
            problems.append(f"rl.num_iterations: {rl.num_iterations} updates per generation need train.gradient_accumulation_steps: 1 "
                            f"(got {recipe.train.gradient_accumulation_steps}); raise train.batch_size instead")
        if rl.num_iterations > 1 and recipe.train.save_steps and recipe.train.save_steps % rl.num_iterations:
            problems.append(f"train.save_steps: a multiple of rl.num_iterations ({rl.num_iterations}), so checkpoints fall between generations")
        if rl.generation_engine == "vllm":
            import importlib.util

            if importlib.util.find_spec("vllm") is None:
                problems.append("rl.generation_engine: vllm is not installed (and needs a CUDA GPU); use transformers")
            else:
                problems.append("rl.generation_engine: vllm generation is not supported yet by hfadapt; use transformers")
        if recipe.data.streaming:
            problems.append("data.streaming: online-rl reads its prompts in memory")
        return problems

    def columns(self, recipe: Recipe, with_labels: bool = True) -> dict[str, str]:
        out = {recipe.data.prompt_column: "data.prompt_column"}
        if with_labels:
            params = {i: s.params or [] for i, s in enumerate(self._scorers_for(recipe)) if s.spec.type == "function"}
            out.update(reward_columns(recipe.rl.rewards, params))
        return out

    def _scorers_for(self, recipe: Recipe) -> list[Scorer]:
        key = json.dumps(recipe.rl.model_dump(mode="json"), sort_keys=True) + str(recipe.source)
        if key not in self._scorers:
            self._scorers[key] = build_scorers(recipe)
        return self._scorers[key]

    # ---- model and data ---------------------------------------------------------------------
    def load_processor(self, recipe: Recipe, path: str | None = None) -> PreTrainedTokenizerBase:
        return load_lm_tokenizer(recipe, path)

    def preprocess(self, ds: Split, split: str, processor: PreTrainedTokenizerBase, recipe: Recipe, info: LabelInfo | None,
                   train: bool) -> Split:
        from hfadapt.data.sources import ROW_COLUMN, check_columns, map_split, row_location
        from hfadapt.tasks.language import FORMAT_KEY, require_template_of

        d = recipe.data
        check_columns(ds, self.columns(recipe), split, d)
        keep = [c for c in self.columns(recipe) if c != d.prompt_column]
        fn_all = any(s.spec.type == "function" and s.params is None for s in self._scorers_for(recipe))
        tok, model, limit = processor, recipe.model.name_or_path, d.max_prompt_length
        chat = False

        def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
            rows = batch.get(ROW_COLUMN, indices)
            out: dict[str, list[Any]] = {"prompt_input_ids": [], "row": [], "prompt_json": [], "columns_json": []}
            names = [c for c in batch if c != ROW_COLUMN]
            for j, row in enumerate(rows):
                at = row_location(split, row, d)
                prompt = batch[d.prompt_column][j]
                where = f"data.prompt_column '{d.prompt_column}', {at}"
                if isinstance(prompt, list):
                    prompt = check_messages(prompt, where)
                    require_template_of(tok, model, f"the chat messages of {at}")
                    ids = tok(render_chat(tok, prompt, True, where), add_special_tokens=False)["input_ids"]
                elif isinstance(prompt, str) and prompt.strip():
                    ids = tok(prompt)["input_ids"]
                else:
                    raise HfadaptError(f"{where}: expected text or a list of {{role, content}} messages, got {short(prompt)}")
                values = {c: batch[c][j] for c in (names if fn_all else keep)}
                out["prompt_input_ids"].append(ids[-limit:])
                out["row"].append(row)
                out["prompt_json"].append(json.dumps(prompt))
                out["columns_json"].append(json.dumps(values, default=str))
            return out

        out = map_split(ds, encode, batched=True, with_indices=True, remove_columns=ds.column_names, desc=f"Tokenizing {split} prompts")
        if len(out) == 0:
            raise HfadaptError(f"data: the {split} split has no prompts")
        if train:
            first = ds[0][d.prompt_column]
            chat = isinstance(first, list)
            processor.init_kwargs[FORMAT_KEY] = "chat" if chat else "prompt_completion"
        return out

    def collator(self, processor: PreTrainedTokenizerBase) -> Collate:
        return _PromptCollator(processor.pad_token_id)

    def count_units(self, batch: dict[str, Any], processor: PreTrainedTokenizerBase) -> dict[str, Any]:
        """Prompts and generated (completion) tokens."""
        return {"prompts": batch["prompt_count"], "completion_tokens": batch["completion_mask"].sum()}

    def encode_inputs(self, items: list[str], processor: PreTrainedTokenizerBase, recipe: Recipe) -> dict[str, Any]:
        return encode_prompts(items, processor, recipe)

    def prepare_model(self, model: PreTrainedModel, recipe: Recipe) -> None:
        if recipe.data.disable_dropout:
            disable_dropout(model)

    # ---- rollout and loss ---------------------------------------------------------------------
    def updates_per_batch(self, recipe: Recipe) -> int:
        return recipe.rl.num_iterations

    def rollout(self, model: Module, batch: dict[str, Any], recipe: Recipe, step: int) -> list[dict[str, Any]]:
        import torch

        rl = recipe.rl
        scorers = self._ready_scorers(recipe, batch["prompt_input_ids"].device)
        g = sample(model, batch, recipe, step, rl.num_generations)
        rewards_per_fn, where = _score_all(scorers, g, batch, rl.num_generations, "train")
        rewards = _weighted(rewards_per_fn, scorers)
        advantages, std = compute_advantages(rewards, rl.num_generations, rl.algorithm, rl.resolved_scale_rewards, _gather)
        micro: dict[str, Any] = {
            "input_ids": torch.cat([g["prompt_ids"], g["completion_ids"]], 1),
            "attention_mask": torch.cat([g["prompt_mask"], g["completion_mask"]], 1),
            "completion_ids": g["completion_ids"], "completion_mask": g["completion_mask"], "advantages": advantages,
            "num_items": _sum_processes(g["completion_mask"].sum().float()),
            "prompt_count": torch.tensor(batch["prompt_input_ids"].shape[0], device=advantages.device),
        }
        if rl.num_iterations > 1 or rl.beta > 0:
            with torch.no_grad():
                if rl.num_iterations > 1:
                    micro["old_logps"] = token_logps(model, micro["input_ids"], micro["attention_mask"], micro["completion_ids"], rl.temperature)
                if rl.beta > 0:
                    with _peft_model(model).disable_adapter():
                        micro["ref_logps"] = token_logps(model, micro["input_ids"], micro["attention_mask"], micro["completion_ids"], rl.temperature)
        lengths = g["completion_mask"].sum(1).float()
        everything = _gather(rewards)  # the std of the whole batch, not a mean of each process's
        stats = {"reward": rewards.mean(), "reward_std": everything.std() if everything.numel() > 1 else torch.zeros(()),
                 "frac_reward_zero_std": (std.view(-1, rl.num_generations)[:, 0].abs() < 1e-8).float().mean(),
                 "completion_length": lengths.mean(), "truncated_ratio": g["truncated"].float().mean()}
        for k, s in enumerate(scorers):
            stats[f"rewards/{s.name}"] = rewards_per_fn[:, k].mean()
        micro["stats"] = {k: v.detach().float().to(advantages.device) for k, v in stats.items()}
        if step % recipe.train.logging_steps == 0:
            _log_completions(recipe, step + 1, g, batch, rewards, rewards_per_fn, advantages, scorers, rl.num_generations)
        return [micro] * rl.num_iterations

    def training_loss(self, model: Module, batch: dict[str, Any], recipe: Recipe) -> tuple[Tensor, dict[str, Tensor]]:
        import torch

        rl = recipe.rl
        logps = token_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_ids"], rl.temperature)
        world = torch.distributed.get_world_size() if torch.distributed.is_available() and torch.distributed.is_initialized() else 1
        loss, figures = policy_loss(
            logps, batch.get("old_logps"), batch.get("ref_logps"), batch["advantages"], batch["completion_mask"], rl.resolved_loss_type,
            rl.epsilon, rl.epsilon_high or rl.epsilon, rl.beta, rl.max_completion_length, batch["num_items"], world,
        )
        return loss, {**batch["stats"], **figures}

    def _ready_scorers(self, recipe: Recipe, device: Any) -> list[Scorer]:
        scorers = self._scorers_for(recipe)
        for s in scorers:
            if s.spec.type == "reward_model" and s.model is None:
                load_reward_model(s, device)
        return scorers

    # ---- evaluation and prediction -------------------------------------------------------------
    def evaluate(self, ctx: EvalContext, model: Module, dataloader: DataLoader) -> dict[str, Any]:
        """One greedy completion per prompt, scored by rl.rewards: "reward" (the weighted sum), "rewards/<name>",
        "completion_length"; "loss" is minus the reward (lower is better, as everywhere)."""
        import torch

        scorers = self._ready_scorers(ctx.recipe, ctx.accelerator.device)
        was_training = model.training
        model.eval()
        parts: list[Tensor] = []
        for batch in dataloader:
            g = sample(model, batch, ctx.recipe, 0, 1, greedy=True, tokenizer=ctx.processor)
            per_fn, _ = _score_all(scorers, g, batch, 1, ctx.split)
            total = _weighted(per_fn, scorers)
            row = torch.cat([total[:, None], per_fn, g["completion_mask"].sum(1, keepdim=True).double()], 1)
            parts.append(ctx.accelerator.gather_for_metrics(row.to(ctx.accelerator.device)).cpu())
        model.train(was_training)
        t = torch.cat(parts)
        out: dict[str, Any] = {"loss": -float(t[:, 0].mean()), "samples": int(t.shape[0]), "reward": float(t[:, 0].mean())}
        for k, s in enumerate(scorers):
            out[f"rewards/{s.name}"] = float(t[:, 1 + k].mean())
        out["completion_length"] = float(t[:, -1].mean())
        return out

    def predict(self, model: Module, processor: PreTrainedTokenizerBase, items: list[str], recipe: Recipe,
                info: LabelInfo | None) -> list[dict[str, Any]]:
        return [{"generated_text": t} for t in generate(model, processor, items, recipe)]

    def report_section(self, report: ReportInput) -> str:
        return _report(report)


# ---- sampling ------------------------------------------------------------------------------------
class _PromptCollator:
    """Prompts, left-padded (prompt_input_ids, prompt_attention_mask), their rows, and for the rewards the
    prompt as given and the row's columns (lists, not tensors)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        seqs = [list(f["prompt_input_ids"]) for f in features]
        width = max(len(s) for s in seqs)
        return {
            "prompt_input_ids": torch.tensor([[self.pad] * (width - len(s)) + s for s in seqs], dtype=torch.long),
            "prompt_attention_mask": torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long),
            "row": torch.tensor([int(f["row"]) for f in features], dtype=torch.long),
            "prompts": [json.loads(f["prompt_json"]) for f in features],
            "columns": [json.loads(f["columns_json"]) for f in features],
        }


def completion_seed(seed: int, step: int, row: int, index: int) -> int:
    digest = hashlib.sha256(f"hfadapt-online-rl:{seed}:{step}:{row}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class SeededSampler:
    """A logits processor that samples each row from its own generator (Gumbel-max over the temperature /
    top-p scaled logits; generate then takes the argmax): a row's tokens do not depend on the batch."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float) -> None:
        self.seeds, self.generators = seeds, None
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        import torch

        device = scores.device
        if self.generators is None:  # on the logits' device: no noise of vocabulary size copied over each token
            self.generators = [torch.Generator(device=device).manual_seed(s) for s in self.seeds]
        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            from transformers import TopPLogitsWarper

            scores = TopPLogitsWarper(self.top_p)(input_ids, scores)
        u = torch.stack([torch.rand(scores.shape[-1], generator=g, dtype=torch.float64, device=device) for g in self.generators])
        gumbel = -torch.log(-torch.log(u.clamp(min=1e-300)))
        return scores + gumbel.to(dtype=scores.dtype)


def sample(model: Module, batch: dict[str, Any], recipe: Recipe, step: int, n: int, greedy: bool = False,
           tokenizer: Any = None) -> dict[str, Any]:
    """n completions per prompt of the batch: prompt ids and mask (repeated), completion ids, completion mask
    (up to and including the first EOS, TRL's), whether a completion hit max_completion_length, and the texts."""
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    rl, tok = recipe.rl, None
    gen_model = _generating_model(model)
    prompt_ids = batch["prompt_input_ids"].repeat_interleave(n, 0)
    prompt_mask = batch["prompt_attention_mask"].repeat_interleave(n, 0)
    rows = batch["row"].repeat_interleave(n).tolist()
    index = [j for _ in range(batch["row"].shape[0]) for j in range(n)]
    eos = _eos_ids(gen_model)
    pad = _pad_id(gen_model, eos)
    config = GenerationConfig(max_new_tokens=rl.max_completion_length, do_sample=False, num_beams=1, eos_token_id=eos,
                              pad_token_id=pad, use_cache=True)
    processors = LogitsProcessorList([] if greedy else [SeededSampler(
        [completion_seed(recipe.train.seed, step, r, j) for r, j in zip(rows, index)], rl.temperature, rl.top_p)])
    was_training = gen_model.training
    gen_model.eval()
    try:
        with torch.no_grad():
            out = gen_model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config, logits_processor=processors)
    finally:
        gen_model.train(was_training)
    completion = out[:, prompt_ids.shape[1]:]
    is_eos = torch.isin(completion, torch.tensor(eos, device=completion.device))
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos[:, 0], completion.shape[1], dtype=torch.long))
    positions = torch.arange(completion.shape[1], device=completion.device)[None]
    mask = (positions <= first[:, None]).long()
    width = int(mask.sum(1).max()) if mask.numel() else 0
    completion, mask = completion[:, :width], mask[:, :width]
    completion = completion.masked_fill(mask == 0, pad)
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion, "completion_mask": mask,
            "truncated": ~is_eos.any(1), "rows": rows, "index": index, "texts": _decode(recipe, completion, mask, tokenizer)}


def _decode(recipe: Recipe, completion: Tensor, mask: Tensor, tok: Any = None) -> list[str]:
    """The completions' texts; `tok` the run's tokenizer when evaluating (a pulled run's base may be a local path
    of its author's), else the recipe's, loaded once."""
    tok = tok if tok is not None else _TOKENIZERS.get(id(recipe))
    if tok is None:
        tok = _TOKENIZERS[id(recipe)] = load_lm_tokenizer(recipe)
    return [tok.decode(ids[m.bool()].tolist(), skip_special_tokens=True) for ids, m in zip(completion, mask)]


_TOKENIZERS: dict[int, Any] = {}


def _eos_ids(model: Any) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    if eos is None:
        raise HfadaptError("model: the base model names no EOS token (generation_config / config eos_token_id); online-rl stops completions at EOS")
    return list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]


def _pad_id(model: Any, eos: list[int]) -> int:
    pad = getattr(getattr(model, "generation_config", None), "pad_token_id", None)
    if pad is None:
        pad = getattr(model.config, "pad_token_id", None)
    return int(pad) if pad is not None else eos[0]


def _generating_model(model: Any) -> Any:
    """The model with `generate` inside a compiled / DDP-wrapped one."""
    m = model
    for _ in range(5):
        if hasattr(m, "generate"):
            return m
        m = getattr(m, "eager", None) or getattr(m, "module", None) or getattr(m, "_orig_mod", None)
        if m is None:
            break
    raise HfadaptError("online-rl: this model cannot generate")


def _peft_model(model: Any) -> Any:
    m = _generating_model(model)
    if not hasattr(m, "disable_adapter"):
        raise HfadaptError("rl.beta: the KL reference is the base with the adapter switched off; this model has no peft adapter")
    return m


# ---- rewards and advantages ----------------------------------------------------------------------------
def _score_all(scorers: list[Scorer], g: dict[str, Any], batch: dict[str, Any], n: int, split: str) -> tuple[Tensor, list[str]]:
    import torch

    prompts = [p for p in batch["prompts"] for _ in range(n)]
    columns = [c for c in batch["columns"] for _ in range(n)]
    counts = g["completion_mask"].sum(1).tolist()
    where = [f"{split} row {r}, completion {j}" for r, j in zip(g["rows"], g["index"])]
    values = [score(s, g["texts"], counts, prompts, columns, where) for s in scorers]
    return torch.tensor(values, dtype=torch.float64).T.contiguous().to(g["completion_ids"].device), where


def _weighted(per_fn: Tensor, scorers: list[Scorer]) -> Tensor:
    import torch

    w = torch.tensor([s.weight for s in scorers], dtype=per_fn.dtype, device=per_fn.device)
    return (per_fn * w).sum(-1).float()


def _dist() -> bool:
    import torch

    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _gather(t: Tensor) -> Tensor:
    import torch

    if not _dist():
        return t
    out = [torch.zeros_like(t) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(out, t.contiguous())
    return torch.cat(out)


def _sum_processes(t: Tensor) -> Tensor:
    import torch

    if _dist():
        t = t.clone()
        torch.distributed.all_reduce(t)
    return t


def compute_advantages(rewards: Tensor, n: int, algorithm: str, scale: str, gather: Any = None) -> tuple[Tensor, Tensor]:
    """(advantages, the std they were scaled by) of rewards laid out as groups of n (TRL's GRPOTrainer:
    mean baseline, std over the group or the whole batch (unbiased), + 1e-4; RLOO: the mean of the others)."""
    import torch

    grouped = rewards.view(-1, n)
    mean = grouped.mean(1).repeat_interleave(n)
    if scale == "batch":
        everything = gather(rewards) if gather is not None else rewards
        std = everything.std().expand_as(rewards)
    else:
        std = grouped.std(1).repeat_interleave(n)
    if algorithm == "rloo":
        total = grouped.sum(1).repeat_interleave(n)
        adv = rewards - (total - rewards) / (n - 1)
    else:
        adv = rewards - mean
    if scale != "none":
        adv = adv / (std + 1e-4)
    return adv, (std if scale != "none" else grouped.std(1).repeat_interleave(n))


def token_logps(model: Module, input_ids: Tensor, attention_mask: Tensor, completion_ids: Tensor, temperature: float) -> Tensor:
    """Per-token log-probs of the completion (the last completion_ids.shape[1] positions), logits / temperature, in float32."""
    import torch

    c = completion_ids.shape[1]
    keep = {"logits_to_keep": c + 1} if _keeps_logits(model) else {}  # the head over the completion only, as TRL
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **keep).logits
    logits = logits[:, -c - 1:-1, :].float() / temperature
    return torch.gather(torch.log_softmax(logits, -1), 2, completion_ids.unsqueeze(-1)).squeeze(-1)


def _keeps_logits(model: Any) -> bool:
    """Whether the causal LM inside `model` (peft-, DDP- or compile-wrapped) takes `logits_to_keep`."""
    import inspect

    m = _generating_model(model)
    base = m.get_base_model() if hasattr(m, "get_base_model") else m
    key = type(base)
    if key not in _KEEPS_LOGITS:
        _KEEPS_LOGITS[key] = "logits_to_keep" in inspect.signature(base.forward).parameters
    return _KEEPS_LOGITS[key]


_KEEPS_LOGITS: dict[type, bool] = {}


def policy_loss(logps: Tensor, old: Tensor | None, ref: Tensor | None, advantages: Tensor, mask: Tensor, loss_type: str,
                eps_low: float, eps_high: float, beta: float, max_completion_length: int, num_items: Tensor,
                num_processes: int) -> tuple[Tensor, dict[str, Tensor]]:
    """TRL GRPOTrainer's loss of one micro-batch (before gradient accumulation's division) and its figures:
    the clipped surrogate -min(r A, clip(r) A) per token, + beta * r * k3 KL, normalised by loss_type."""
    import torch

    mask = mask.to(logps.dtype)
    old = logps.detach() if old is None else old
    adv = advantages.to(logps.dtype)[:, None]
    coef_1 = torch.exp(logps - old)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(coef_1 * adv, coef_2 * adv)
    figures: dict[str, Tensor] = {}
    # token averages over the whole batch (every process's tokens): the loop then means over processes
    per_process_tokens = (num_items.clamp(min=1.0) / num_processes).to(logps.dtype)
    if beta != 0.0:
        assert ref is not None
        kl = torch.exp(ref - logps) - (ref - logps) - 1
        per_token = per_token + beta * kl * coef_1  # importance-corrected, as TRL's default use_bias_correction_kl
        figures["kl"] = ((kl * mask).sum() / per_process_tokens).detach()
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (per_token.size(0) * max_completion_length)
    elif loss_type == "dapo":
        loss = (per_token * mask).sum() / (num_items.clamp(min=1.0) / num_processes)
    else:
        raise ValueError(loss_type)
    with torch.no_grad():
        low = (coef_1 < 1 - eps_low) & (adv < 0)
        high = (coef_1 > 1 + eps_high) & (adv > 0)
        figures["clip_ratio"] = (((low | high).to(mask.dtype) * mask).sum() / per_process_tokens)
    return loss, figures


# ---- logs and report ----------------------------------------------------------------------------------
def _log_completions(recipe: Recipe, step: int, g: dict[str, Any], batch: dict[str, Any], rewards: Tensor, per_fn: Tensor,
                     advantages: Tensor, scorers: list[Scorer], n: int) -> None:
    import torch

    prompts = [p for p in batch["prompts"] for _ in range(n)]
    rows = [{"step": step, "row": r, "completion_index": j, "prompt": p if isinstance(p, str) else p[-1]["content"],
             "completion": c, "reward": float(rw), "rewards": {s.name: float(v) for s, v in zip(scorers, vals)},
             "advantage": float(a)}
            for r, j, p, c, rw, vals, a in zip(g["rows"], g["index"], prompts, g["texts"], rewards.tolist(), per_fn.tolist(), advantages.tolist())]
    if _dist():
        everything: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(everything, rows)
        rows = [r for part in everything for r in part]
        if torch.distributed.get_rank() != 0:
            return
    rows.sort(key=lambda r: (r["row"], r["completion_index"]))
    path = recipe.output_dir / COMPLETIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def read_completions(run_dir: Any) -> list[dict[str, Any]]:
    from pathlib import Path

    path = Path(run_dir) / COMPLETIONS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _report(report: ReportInput) -> str:
    """Reward curves (the sum and each function), completion length, KL and clip ratio over training
    steps, and sampled completions with their rewards at the first and the last logged step."""
    out = []
    curves = _train_curves(report)
    if curves:
        pyplot = plt()
        keys = [k for k in curves if k.startswith("reward")] + [k for k in ("completion_length", "kl", "clip_ratio") if k in curves]
        fig, axes = pyplot.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
        for ax, k in zip(axes[0], keys):
            steps, values = zip(*curves[k])
            ax.plot(steps, values, marker=".")
            ax.set_title(k, fontsize=8)
            ax.set_xlabel("step")
        out += ["<h3>Rewards and completions over training</h3>", img(fig)]
    rows = read_completions(report.recipe.output_dir)
    if rows:
        steps = sorted({r["step"] for r in rows})
        for label, s in (("early", steps[0]), ("late", steps[-1])):
            picked = [r for r in rows if r["step"] == s][:8]
            body = "".join(f"<tr><td>{e(r['row'])}.{e(r['completion_index'])}</td><td>{e(str(r['prompt'])[-200:])}</td>"
                           f"<td>{e(r['completion'][:300])}</td><td>{fmt(r['reward'])}</td><td>{fmt(r['advantage'])}</td></tr>" for r in picked)
            out.append(f"<h3>Sampled completions, {label} (step {s})</h3><table><tr><th>row.k</th><th>prompt</th>"
                       f"<th>completion</th><th>reward</th><th>advantage</th></tr>{body}</table>")
    else:
        out.append("<p class=note>No completions.jsonl in this run.</p>")
    return "".join(out)


def _train_curves(report: ReportInput) -> dict[str, list[tuple[int, float]]]:
    from hfadapt.rundir.layout import RunDir

    try:
        state = RunDir(report.recipe.output_dir).read_state()
        history = state.log_history if state is not None else []
    except Exception:  # noqa: BLE001 - a report of a partial run draws what there is
        history = []
    curves: dict[str, list[tuple[int, float]]] = {}
    for entry in history:
        for k, v in entry.items():
            if k.startswith("train/") and isinstance(v, (int, float)) and k not in ("train/lr", "train/epoch", "train/loss"):
                curves.setdefault(k[len("train/"):], []).append((entry["step"], float(v)))
    return curves


register_task(OnlineRL())
