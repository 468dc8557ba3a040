"""preference: policy optimisation of a causal LM adapter from preference data (DPO, robust DPO, IPO,
hinge, SimPO, ORPO, KTO), computed in hfadapt's own loop.

Data: pairs (data.prompt_column, data.chosen_column, data.rejected_column; text, or chat message lists
whose common prefix is the prompt, as TRL does), or for KTO unpaired rows (data.prompt_column,
data.completion_column, data.label_column: a boolean). Tokenized and truncated by tasks/language.py.

Loss settings live in the task's data section (data.loss, data.beta, ...): the recipe has no
task-owned top-level section. Chosen and rejected go through the model as one batch [chosen; rejected];
the reference is the same model with the adapter switched off (peft `disable_adapter`, no second copy
of the weights), or, for a run that starts from an SFT adapter (model.adapter), that adapter frozen
(peft `set_adapter("reference")`, see modeling/adapters.py continue_adapter); ORPO and SimPO need none.
data.reference=precomputed computes the reference log-probs once before training (add_model_columns:
columns of the preprocessed splits, cached with them) and skips the reference passes. Metrics carry TRL's names (rewards/chosen, rewards/rejected,
rewards/accuracies, rewards/margins, logps/chosen, logps/rejected), logged every training step
("train/rewards/...") and computed on held-out pairs at every evaluation. `hfadapt predict` generates
like causal-lm.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Literal

from pydantic import Field

from hfadapt.core.errors import HfadaptError
from hfadapt.core.recipe import DataSection
from hfadapt.data.sources import is_streamed
from hfadapt.modeling.adapters import REFERENCE_ADAPTER, StartingAdapterModelSection
from hfadapt.tasks.base import EvalContext, Task, register_task
from hfadapt.tasks.language import (
    disable_dropout,
    FORMAT_KEY, PairCollator, PairColumns, UnpairedCollator, encode_prompts, generate, load_lm_tokenizer, sequence_logps, tokenize_pairs,
    tokenize_unpaired,
)
from hfadapt.tasks.reporting import ReportInput, e, fmt, img, plt

if TYPE_CHECKING:
    from torch import Tensor
    from torch.nn import Module
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from hfadapt.core.recipe import Recipe
    from hfadapt.data.labels import LabelInfo
    from hfadapt.tasks.base import Collate, Split

REFERENCE_FREE = ("orpo", "simpo")
REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")  # data.reference=precomputed
METRIC_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")


class PreferenceData(DataSection):
    """Preference pairs (or KTO's unpaired rows) and the preference loss."""

    prompt_column: str = Field("prompt", description="the prompt: text or messages; absent: the common prefix of chosen and rejected conversations")
    chosen_column: str = Field("chosen", description="the preferred response: text or messages")
    rejected_column: str = Field("rejected", description="the dispreferred response: text or messages")
    completion_column: str = Field("completion", description="loss kto: the response (text or messages)")
    label_column: str = Field("label", description="loss kto: true for a desirable response, false for an undesirable one")
    chat_template: str | None = Field(None, description="Jinja chat template for tokenizers without one")
    max_length: int = Field(512, gt=1, description="tokens of prompt + response; longer pairs are truncated (TRL's way) and counted")
    max_prompt_length: int | None = Field(256, gt=0, description="when a pair is too long, the prompt keeps its last this many tokens")
    loss: Literal["dpo", "robust", "ipo", "hinge", "orpo", "simpo", "kto"] = Field(
        "dpo", description="dpo (sigmoid; conservative with label_smoothing), robust (rDPO), ipo, hinge, orpo, simpo, kto"
    )
    reference: Literal["adapter", "precomputed"] = Field(
        "adapter", description="adapter: a reference pass each step (the base with the adapter off, or model.adapter's "
        "SFT adapter frozen); precomputed: reference log-probs computed once before training and cached with the data"
    )
    beta: float = Field(0.1, gt=0, description="strength of the implicit KL penalty (dpo, robust, ipo's tau, hinge, kto); SimPO's beta")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="share of flipped labels assumed (dpo: conservative, robust, simpo)")
    simpo_gamma: float = Field(0.5, description="simpo: target reward margin (gamma/beta is subtracted from the logit)")
    orpo_lambda: float = Field(0.1, gt=0, description="orpo: weight of the odds-ratio term next to the NLL (TRL's ORPO beta)")
    desirable_weight: float = Field(1.0, gt=0, description="kto: weight of desirable rows' losses")
    undesirable_weight: float = Field(1.0, gt=0, description="kto: weight of undesirable rows' losses")
    disable_dropout: bool = Field(
        True, description="dropout off in the model and its adapter, as TRL's default: the policy and the reference "
        "(a pass of the same model) see the same network, and reference log-probs are the precomputed ones"
    )


class Preference(Task):
    name = "preference"
    modality = "text"
    peft_task_type = "CAUSAL_LM"
    auto_class = "AutoModelForCausalLM"
    data_model = PreferenceData
    model_model = StartingAdapterModelSection  # model.adapter: DPO from an SFT run
    reference_adapter = True  # that SFT adapter, frozen, is the reference
    pipeline_tag = "text-generation"
    card_example = "Write a haiku about rain."
    extra_result_keys = METRIC_KEYS
    default_best_metric = "rewards/accuracies"
    restores_eval_order = True  # evaluation reads pairs longest first; per-pair results are put back in dataset order

    # ---- recipe -----------------------------------------------------------------------------
    def check(self, recipe: Recipe) -> list[str]:
        d, problems = recipe.data, []
        if recipe.eval.metrics:
            problems.append("eval.metrics: preference computes its reward metrics itself; remove eval.metrics")
        if d.max_prompt_length is not None and d.max_prompt_length >= d.max_length:
            problems.append(f"data.max_prompt_length: {d.max_prompt_length} leaves no room for the response within data.max_length {d.max_length}")
        if d.label_smoothing and d.loss not in ("dpo", "robust", "simpo"):
            problems.append(f"data.label_smoothing: used by dpo, robust and simpo, not {d.loss}")
        if d.loss == "robust" and not d.label_smoothing:
            problems.append("data.label_smoothing: robust DPO needs the share of flipped labels (e.g. 0.1)")
        if d.reference == "precomputed":
            if d.loss in REFERENCE_FREE:
                problems.append(f"data.reference: {d.loss} has no reference model; remove data.reference")
            elif d.loss == "kto":
                problems.append("data.reference: precomputed is for paired losses; KTO's reference point pairs rows within each batch")
            elif d.streaming:
                problems.append("data.reference: precomputed needs the train split in memory; not with data.streaming")
        return problems

    def columns(self, recipe: Recipe, with_labels: bool = True) -> dict[str, str]:
        d = recipe.data
        if not with_labels:
            return {}
        if d.loss == "kto":
            return {d.prompt_column: "data.prompt_column", d.completion_column: "data.completion_column", d.label_column: "data.label_column"}
        return {d.chosen_column: "data.chosen_column", d.rejected_column: "data.rejected_column"}

    # ---- model and processor ------------------------------------------------------------------
    def load_processor(self, recipe: Recipe, path: str | None = None) -> PreTrainedTokenizerBase:
        return load_lm_tokenizer(recipe, path)

    # ---- data ---------------------------------------------------------------------------------
    def preprocess(self, ds: Split, split: str, processor: PreTrainedTokenizerBase, recipe: Recipe, info: LabelInfo | None,
                   train: bool) -> Split:
        d = recipe.data
        if d.loss == "kto":
            out = tokenize_unpaired(ds, split, processor, recipe, d.prompt_column, d.completion_column, d.label_column,
                                    d.max_prompt_length, d.max_length)
            what, first = "rows", d.completion_column
        else:
            out = tokenize_pairs(ds, split, processor, recipe, PairColumns(d.prompt_column, d.chosen_column, d.rejected_column),
                                 d.max_prompt_length, d.max_length)
            what, first = "pairs", d.chosen_column
        if train:  # `hfadapt predict` renders prompts the way training saw them (causal-lm's encode_inputs)
            processor.init_kwargs[FORMAT_KEY] = "chat" if _first_is_chat(ds, first) else "prompt_completion"
        if is_streamed(out.dataset):
            return out.dataset
        from accelerate import PartialState

        if len(out.dataset) == 0:
            raise HfadaptError(f"data: the {split} split has no {what}")
        if out.truncated and PartialState().is_main_process:
            print(f"hfadapt: preference {split}: truncated {out.truncated} of {out.rows} {what} to data.max_length {d.max_length} "
                  f"(prompts to their last data.max_prompt_length {d.max_prompt_length} tokens first)")
        return out.dataset

    def add_model_columns(self, ds: Split, split: str, model: Module, processor: PreTrainedTokenizerBase, recipe: Recipe,
                          accelerator: Accelerator) -> Split:
        """data.reference=precomputed: the reference log-probs of each pair's chosen and rejected completions
        (REFERENCE_COLUMNS), from one pass in evaluation mode over the split before training; batch_terms
        then uses them instead of the reference pass."""
        if recipe.data.reference != "precomputed" or is_streamed(ds):
            return ds
        return precompute_reference(ds, split, model, processor, recipe, accelerator)

    def collator(self, processor: PreTrainedTokenizerBase) -> Collate:
        return _Collator(processor.pad_token_id)

    def count_units(self, batch: dict[str, Any], processor: PreTrainedTokenizerBase) -> dict[str, Any]:
        """Pairs (KTO: rows) and the non-pad tokens of the batch (chosen + rejected)."""
        unit = "rows" if "label" in batch else "pairs"
        return {unit: batch["row"].numel(), "tokens": batch["attention_mask"].sum()}

    def plan_batch(self, recipe: Recipe, config: PretrainedConfig, batch_size: int) -> tuple[dict[str, Any], str]:
        """The concatenated batch: 2 x batch_size sequences of max_length (chosen + rejected; KTO: rows + the
        KL batch); described per example, as `hfadapt plan` prints "batch_size x what". The reference passes run without gradients and keep no activations."""
        from hfadapt.modeling.meta import meta_tokens

        d = recipe.data
        n = d.max_length
        kind = "rows + their KL batch" if d.loss == "kto" else "chosen + rejected"
        reference = d.loss not in ("simpo", "orpo") and d.reference == "adapter"
        passes = "a policy pass with gradients + a reference pass without" if reference else "a policy pass with gradients, no reference pass"
        return {"input_ids": meta_tokens(2 * batch_size, n), "use_cache": False}, f"2 sequences of {n} tokens ({kind}); {passes}"

    def encode_inputs(self, items: list[str], processor: PreTrainedTokenizerBase, recipe: Recipe) -> dict[str, Any]:
        return encode_prompts(items, processor, recipe)

    # ---- training -----------------------------------------------------------------------------
    def prepare_model(self, model: PreTrainedModel, recipe: Recipe) -> None:
        if recipe.data.disable_dropout:
            disable_dropout(model)

    def training_loss(self, model: Module, batch: dict[str, Any], recipe: Recipe) -> tuple[Tensor, dict[str, Tensor]]:
        """The preference loss of one micro-batch and TRL's reward figures for it."""
        terms = batch_terms(model, batch, recipe.data)
        return terms["batch_loss"], summary(terms)

    # ---- evaluation and prediction ----------------------------------------------------------
    def evaluate(self, ctx: EvalContext, model: Module, dataloader: DataLoader) -> dict[str, Any]:
        import torch

        was_training = model.training
        model.eval()
        keys = ("loss", "chosen_rewards", "rejected_rewards", "chosen_logps", "rejected_logps", "nll_sum", "nll_count", "label", "row")
        parts: dict[str, list[Tensor]] = {k: [] for k in keys}
        for batch in dataloader:
            with torch.no_grad():
                terms = batch_terms(model, batch, ctx.recipe.data)
            got = ctx.accelerator.gather_for_metrics({k: terms[k].detach().double() for k in keys})
            for k in keys:
                parts[k].append(got[k].cpu())
        model.train(was_training)
        t = {k: ctx.in_dataset_order(torch.cat(v)) for k, v in parts.items()}
        results = metric_values(t, ctx.recipe.data.loss)
        if ctx.predictions_file is not None:
            from hfadapt.rundir.predictions import save_predictions

            save_predictions(ctx, _prediction_rows(ctx, t))
        return results

    def predict(self, model: Module, processor: PreTrainedTokenizerBase, items: list[str], recipe: Recipe,
                info: LabelInfo | None) -> list[dict[str, Any]]:
        return [{"generated_text": t} for t in generate(model, processor, items, recipe)]

    def report_section(self, report: ReportInput) -> str:
        """Reward accuracy and margin over the evaluations, a histogram of the final margins and the
        held-out pairs the model ranks most wrongly (eval_predictions.jsonl)."""
        out = []
        evals = [(s, v) for s, v in report.evaluations if "rewards/accuracies" in v and s is not None]
        if evals:
            pyplot = plt()
            fig, axes = pyplot.subplots(1, 2, figsize=(9, 3))
            steps = [s for s, _ in evals]
            for ax, key in zip(axes, ("rewards/accuracies", "rewards/margins")):
                ax.plot(steps, [v[key] for _, v in evals], marker="o")
                ax.set_xlabel("step")
                ax.set_title(key)
            out += ["<h3>Reward accuracy and margin over evaluations</h3>", img(fig)]
        rows = [r for r in report.predictions if "margin" in r]
        if not rows:
            out.append("<p class=note>No eval_predictions.jsonl in this run (written at the end of training when there is a validation split).</p>")
            return "".join(out)
        pyplot = plt()
        fig, ax = pyplot.subplots(figsize=(5, 3))
        ax.hist([r["margin"] for r in rows], bins=30)
        ax.axvline(0, color="k", lw=1)
        ax.set_xlabel("reward margin (chosen - rejected)" if "chosen" in rows[0] else "reward")
        out += ["<h3>Final reward margins</h3>", img(fig)]
        worst = sorted((r for r in rows if "rejected" in r), key=lambda r: r["margin"])[:10]
        if worst:
            cells = "".join(
                f"<tr><td>{r['row']}</td><td>{fmt(r['margin'])}</td><td>{e(r['prompt'])}</td><td>{e(r['chosen'])}</td><td>{e(r['rejected'])}</td></tr>"
                for r in worst
            )
            out.append("<h3>Held-out pairs ranked most wrongly</h3><table><tr><th>row</th><th>margin</th><th>prompt</th>"
                       f"<th>chosen</th><th>rejected</th></tr>{cells}</table>")
        return "".join(out)


class _Collator:
    """Pairs -> PairCollator's [chosen; rejected] batch; KTO rows -> UnpairedCollator's batch."""

    def __init__(self, pad_token_id: int) -> None:
        self.pairs, self.unpaired = PairCollator(pad_token_id), UnpairedCollator(pad_token_id)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = (self.pairs if "chosen_input_ids" in features[0] else self.unpaired)(features)
        if REFERENCE_COLUMNS[0] in features[0]:  # precomputed: [chosen; rejected] as the sequences
            import torch

            batch["ref_logps"] = torch.tensor([f[c] for c in REFERENCE_COLUMNS for f in features], dtype=torch.float32)
        return batch


# ---- the losses --------------------------------------------------------------------------------
def pair_losses(d: PreferenceData, chosen: Tensor, rejected: Tensor, ref_chosen: Tensor | None, ref_rejected: Tensor | None,
                n_chosen: Tensor, n_rejected: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(per-pair loss, chosen reward, rejected reward) from summed completion log-probs of the policy
    (and reference), and completion token counts. ORPO's per-pair loss is the odds-ratio term only
    (its NLL is added per batch). Formulas and reward definitions are TRL's (DPOTrainer, CPOTrainer
    for SimPO, ORPOTrainer)."""
    import torch
    import torch.nn.functional as F

    ls, beta = d.label_smoothing, d.beta
    if d.loss in REFERENCE_FREE:
        avg_c, avg_r = chosen / n_chosen.clamp(min=1), rejected / n_rejected.clamp(min=1)
        if d.loss == "simpo":
            logits = (avg_c - avg_r) - d.simpo_gamma / beta
            losses = -F.logsigmoid(beta * logits) * (1 - ls) - F.logsigmoid(-beta * logits) * ls
            return losses, beta * avg_c.detach(), beta * avg_r.detach()
        avg_c, avg_r = avg_c.float(), avg_r.float()
        log_odds = (avg_c - avg_r) - (_log1mexp(avg_c) - _log1mexp(avg_r))
        lam = d.orpo_lambda
        return -lam * F.logsigmoid(log_odds), lam * avg_c.detach(), lam * avg_r.detach()
    assert ref_chosen is not None and ref_rejected is not None
    lc, lr = chosen - ref_chosen, rejected - ref_rejected
    delta = lc - lr
    if d.loss == "dpo":  # sigmoid; with label_smoothing: conservative DPO (cDPO)
        losses = -F.logsigmoid(beta * delta) * (1 - ls) - F.logsigmoid(-beta * delta) * ls
    elif d.loss == "robust":
        losses = (-(1 - ls) * F.logsigmoid(beta * delta) + ls * F.logsigmoid(-beta * delta)) / (1 - 2 * ls)
    elif d.loss == "ipo":  # TRL normalises the log-ratios by completion length
        ipo = lc / n_chosen.clamp(min=1) - lr / n_rejected.clamp(min=1)
        losses = (ipo - 1 / (2 * beta)) ** 2
    elif d.loss == "hinge":
        losses = torch.relu(1 - beta * delta)
    else:
        raise ValueError(d.loss)
    return losses, beta * lc.detach(), beta * lr.detach()


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, stable (Maechler 2012)."""
    import torch

    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def batch_terms(model: Module, batch: dict[str, Any], d: PreferenceData) -> dict[str, Tensor]:
    """Per-example terms of one batch (pairs: B; KTO: B rows) and the batch's loss ("batch_loss")."""
    if "label" in batch:
        return _kto_terms(model, batch, d)
    import torch
    import torch.nn.functional as F

    ids, mask, completion = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    b = ids.shape[0] // 2
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    logps, counts = sequence_logps(logits, ids, completion)
    ref = None
    if d.loss not in REFERENCE_FREE:
        ref = batch.get("ref_logps")  # data.reference=precomputed
        if ref is None:
            ref, _ = reference_logps(model, ids, mask, completion)
    c, r = logps[:b], logps[b:]
    losses, cr, rr = pair_losses(d, c, r, ref[:b] if ref is not None else None, ref[b:] if ref is not None else None, counts[:b], counts[b:])
    zero = torch.zeros_like(c)
    nll_sum, nll_count = zero, zero
    batch_loss = losses.mean()
    if d.loss == "orpo":  # NLL of the chosen sequences, prompt included (TRL's ORPO), mean over their tokens
        chosen_logits = logits[:b, -ids.shape[1]:][:, :-1].float()
        targets = ids[:b, 1:].masked_fill(mask[:b, 1:] == 0, -100)
        token = F.cross_entropy(chosen_logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")
        nll_sum, nll_count = token.sum(-1), (targets != -100).sum(-1).to(token.dtype)
        batch_loss = nll_sum.sum() / nll_count.sum().clamp(min=1) + batch_loss
    return {
        "batch_loss": batch_loss, "loss": losses.detach(), "chosen_rewards": cr, "rejected_rewards": rr,
        "chosen_logps": (c / counts[:b] if d.loss in REFERENCE_FREE else c).detach(),
        "rejected_logps": (r / counts[b:] if d.loss in REFERENCE_FREE else r).detach(),
        "nll_sum": nll_sum.detach(), "nll_count": nll_count, "label": torch.ones_like(c), "row": batch["row"],
    }


def _kto_terms(model: Module, batch: dict[str, Any], d: PreferenceData) -> dict[str, Tensor]:
    """KTO (TRL's KTOTrainer, loss_type kto): losses 1 - sigmoid(beta (logratio - z)) for desirable rows and
    1 - sigmoid(beta (z - logratio)) for undesirable ones, where the reference point z is the batch mean of
    policy - reference log-probs of mismatched pairs (prompt i + completion i-1), no gradient, averaged
    over processes and clamped at 0."""
    import torch

    ids, mask, completion, label = batch["input_ids"], batch["attention_mask"], batch["completion_mask"], batch["label"].bool()
    kl_ids, kl_mask, kl_completion = batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_completion_mask"]
    logps, _ = sequence_logps(model(input_ids=ids, attention_mask=mask, use_cache=False).logits, ids, completion)
    with torch.no_grad():
        kl_logps, _ = sequence_logps(model(input_ids=kl_ids, attention_mask=kl_mask, use_cache=False).logits, kl_ids, kl_completion)
    ref, _ = reference_logps(model, ids, mask, completion)
    ref_kl, _ = reference_logps(model, kl_ids, kl_mask, kl_completion)
    z = (kl_logps - ref_kl).mean().detach()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(z)
        z = z / torch.distributed.get_world_size()
    z = z.clamp(min=0)
    ratio = logps - ref
    losses = torch.where(label, d.desirable_weight * (1 - torch.sigmoid(d.beta * (ratio - z))),
                         d.undesirable_weight * (1 - torch.sigmoid(d.beta * (z - ratio))))
    rewards = d.beta * ratio.detach()
    nan = torch.full_like(rewards, float("nan"))
    return {
        "batch_loss": losses.mean(), "loss": losses.detach(), "kl": z,
        "chosen_rewards": torch.where(label, rewards, nan), "rejected_rewards": torch.where(label, nan, rewards),
        "chosen_logps": torch.where(label, logps.detach(), nan), "rejected_logps": torch.where(label, nan, logps.detach()),
        "nll_sum": torch.zeros_like(rewards), "nll_count": torch.zeros_like(rewards), "label": label.to(rewards.dtype), "row": batch["row"],
    }


def reference_logps(model: Module, ids: Tensor, mask: Tensor, completion: Tensor) -> tuple[Tensor, Tensor]:
    """Completion log-probs under the reference (no gradient): the base model with the adapter switched off,
    or a starting SFT adapter's frozen copy (model.adapter: the adapter named REFERENCE_ADAPTER)."""
    import torch

    peft_model = _peft_model(model)
    with torch.no_grad(), _reference(peft_model):
        logits = peft_model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    return sequence_logps(logits, ids, completion)


@contextmanager
def _reference(peft_model: Any) -> Iterator[None]:
    """The reference active for the duration: REFERENCE_ADAPTER where the run loaded one, else no adapter.
    peft's set_adapter also sets which adapter requires grad; switching back restores the trained one's."""
    if REFERENCE_ADAPTER not in getattr(peft_model, "peft_config", {}):
        with peft_model.disable_adapter():
            yield
        return
    trained = peft_model.active_adapter
    peft_model.set_adapter(REFERENCE_ADAPTER, inference_mode=True)
    try:
        yield
    finally:
        peft_model.set_adapter(trained)


def precompute_reference(ds: Split, split: str, model: Module, processor: PreTrainedTokenizerBase, recipe: Recipe,
                         accelerator: Accelerator) -> Split:
    """`ds` with the reference log-probs of chosen and rejected (REFERENCE_COLUMNS, float64) from one pass in
    evaluation mode (datasets.map in batches of the evaluation batch size; the main process first, so the
    others read its cache). The cache key is the split's fingerprint and what decides the reference: the
    model section, the reference adapter's weights, the seed of a random base, the precision and device."""
    import hashlib

    import torch
    from datasets.fingerprint import Hasher

    peft_model = _peft_model(model)
    digest = hashlib.sha256()
    for name, p in sorted(peft_model.named_parameters()):
        if f".{REFERENCE_ADAPTER}." in name:
            digest.update(name.encode() + p.detach().float().cpu().numpy().tobytes())
    m = recipe.model
    identity = [getattr(ds, "_fingerprint", None), "preference-reference-1", m.model_dump(mode="json"), digest.hexdigest(),
                recipe.train.seed if m.init == "config" else None, accelerator.mixed_precision, accelerator.device.type,
                torch.__version__]
    collate = _Collator(processor.pad_token_id)
    device = accelerator.device

    def refs(rows: dict[str, list[Any]]) -> dict[str, list[float]]:
        features = [dict(zip(rows, values)) for values in zip(*rows.values())]
        batch = collate(features)
        ids, mask, completion = (batch[k].to(device) for k in ("input_ids", "attention_mask", "completion_mask"))
        ref, _ = reference_logps(model, ids, mask, completion)
        b = len(features)
        return {REFERENCE_COLUMNS[0]: ref[:b].double().cpu().tolist(), REFERENCE_COLUMNS[1]: ref[b:].double().cpu().tolist()}

    was_training = model.training
    model.eval()  # deterministic: no dropout in the reference
    try:
        with accelerator.main_process_first():
            out = ds.remove_columns([c for c in REFERENCE_COLUMNS if c in ds.column_names]).map(
                refs, batched=True, batch_size=recipe.train.eval_batch_size or recipe.train.batch_size,
                new_fingerprint=Hasher.hash(identity), desc=f"preference: reference log-probs ({split})",
            )
    finally:
        model.train(was_training)
    if accelerator.is_main_process:
        print(f"hfadapt: preference {split}: reference log-probs of {len(out)} pairs computed (data.reference=precomputed)")
    return out


def _peft_model(model: Any) -> Any:
    """The peft model inside a compiled / DDP-wrapped one."""
    m = model
    for _ in range(5):
        if hasattr(m, "disable_adapter"):
            return m
        m = getattr(m, "eager", None) or getattr(m, "module", None) or getattr(m, "_orig_mod", None)
        if m is None:
            break
    raise HfadaptError("preference: the reference is the base model with the adapter switched off; this model has no peft adapter")


def summary(terms: dict[str, Tensor]) -> dict[str, Tensor]:
    """TRL's figures of one batch: means of rewards and log-probs, reward accuracy and margin."""
    import torch

    cr, rr = terms["chosen_rewards"], terms["rejected_rewards"]
    out = {"rewards/chosen": cr.nanmean(), "rewards/rejected": rr.nanmean(),
           "logps/chosen": terms["chosen_logps"].nanmean(), "logps/rejected": terms["rejected_logps"].nanmean()}
    if "kl" in terms:  # KTO: unpaired; accuracy: rewards on the side their label says
        label = terms["label"].bool()
        reward = torch.where(label, cr, rr)
        out["rewards/accuracies"] = torch.where(label, reward > 0, reward < 0).float().mean()
        out["rewards/margins"] = out["rewards/chosen"] - out["rewards/rejected"]
        out["kl"] = terms["kl"]
    else:
        out["rewards/accuracies"] = (cr > rr).float().mean()
        out["rewards/margins"] = (cr - rr).mean()
    return out


def metric_values(t: dict[str, Tensor], loss: str) -> dict[str, Any]:
    """The evaluation's results over all examples (per-example tensors in dataset order)."""
    import torch

    n = int(t["loss"].shape[0])
    value = float(t["loss"].mean())
    if loss == "orpo":
        value += float(t["nll_sum"].sum() / t["nll_count"].sum().clamp(min=1))
    label = t["label"].bool()
    cr, rr = t["chosen_rewards"], t["rejected_rewards"]
    if loss == "kto":
        reward = torch.where(label, cr, rr)
        accuracy = float(torch.where(label, reward > 0, reward < 0).double().mean())
        margin = float(cr.nanmean() - rr.nanmean())
    else:
        accuracy, margin = float((cr > rr).double().mean()), float((cr - rr).mean())
    results = {"loss": value, "samples": n, "rewards/chosen": float(cr.nanmean()), "rewards/rejected": float(rr.nanmean()),
               "rewards/accuracies": accuracy, "rewards/margins": margin,
               "logps/chosen": float(t["chosen_logps"].nanmean()), "logps/rejected": float(t["rejected_logps"].nanmean())}
    return {k: (v if not (isinstance(v, float) and math.isnan(v)) else float("nan")) for k, v in results.items()}


def _prediction_rows(ctx: EvalContext, t: dict[str, Tensor]) -> Iterator[dict[str, Any]]:
    """Per pair: source row, reward margin, rewards, and the decoded prompt / chosen / rejected (shortened)."""
    from hfadapt.rundir.predictions import MAX_TEXT

    ds, tok = ctx.dataset, ctx.processor
    kto = ctx.recipe.data.loss == "kto"
    for i in range(int(t["loss"].shape[0])):
        row = ds[i]
        out: dict[str, Any] = {"row": int(t["row"][i]), "loss": float(t["loss"][i])}
        out["prompt"] = tok.decode(row["prompt_input_ids"], skip_special_tokens=True)[-MAX_TEXT:]
        if kto:
            desirable = bool(t["label"][i])
            reward = float(t["chosen_rewards"][i] if desirable else t["rejected_rewards"][i])
            out.update(label=desirable, reward=reward, margin=reward if desirable else -reward,
                       completion=tok.decode(row["completion_input_ids"], skip_special_tokens=True)[:MAX_TEXT])
        else:
            cr, rr = float(t["chosen_rewards"][i]), float(t["rejected_rewards"][i])
            out.update(margin=cr - rr, chosen_reward=cr, rejected_reward=rr,
                       chosen=tok.decode(row["chosen_input_ids"], skip_special_tokens=True)[:MAX_TEXT],
                       rejected=tok.decode(row["rejected_input_ids"], skip_special_tokens=True)[:MAX_TEXT])
        yield out


def _first_is_chat(ds: Split, column: str) -> bool:
    try:
        first = next(iter(ds))
    except StopIteration:
        return False
    return isinstance(first.get(column), list)


register_task(Preference())
