"""reward-model: a Bradley-Terry reward model on AutoModelForSequenceClassification with one output.

Data: preference pairs in the formats of the preference task (tasks/language.py): prompt/chosen/rejected
text columns, or chosen/rejected chat message lists whose common prefix is the prompt (TRL's
`extract_prompt`), or a prompt column beside chat responses (HuggingFaceH4/ultrafeedback_binarized).
Each side is scored whole: prompt + response (+ EOS for text; the chat template for conversations),
the way TRL's RewardTrainer tokenizes it. Pairs go through the model in one batch [chosen; rejected]
(language.PairCollator); the loss is -log sigmoid(r_chosen - r_rejected), averaged over pairs.

Decoder bases need a pad token to find the last token of each sequence: the tokenizer's pad (EOS
where it has none, modeling/tokenization.py) is written into the model config (processor_model_kwargs),
as TRL's RewardTrainer does. The score head is trained fully with the adapter (peft's SEQ_CLS
modules_to_save, as text-classification).

Evaluation: the pairwise loss, `accuracy` (share of held-out pairs with r_chosen > r_rejected),
`margin` (mean r_chosen - r_rejected) and the mean rewards of each side; per-pair rewards go to the
predictions file at the final evaluation, and the report shows the most wrongly ranked pairs.

`hfadapt predict` scores each input: a JSON list of {role, content} messages is a conversation,
rendered with the chat template; any other input is text, scored as a training side is
(`text + EOS`, tokenized with the tokenizer's special tokens). Output: {"score": float}.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import Field

from hfadapt.core.errors import HfadaptError
from hfadapt.core.recipe import DataSection
from hfadapt.rundir.predictions import MAX_TEXT, save_predictions
from hfadapt.tasks import language
from hfadapt.tasks.base import EvalContext, Task, register_task
from hfadapt.tasks.reporting import ReportInput, e, img, metric_table, plt

if TYPE_CHECKING:
    from torch import Tensor
    from torch.nn import Module
    from torch.utils.data import DataLoader
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from hfadapt.core.recipe import Recipe
    from hfadapt.data.labels import LabelInfo
    from hfadapt.tasks.base import Collate, Split

RESULT_KEYS = ("accuracy", "margin", "reward_chosen", "reward_rejected")


class RewardModelData(DataSection):
    """Preference pairs: a prompt (optional) and a chosen and a rejected response, as text or chat messages."""

    prompt_column: str | None = Field(
        "prompt", description="the prompt (text or messages); absent or null: the common prefix of the chosen and rejected conversations"
    )
    chosen_column: str = Field("chosen", description="the preferred response (text, or a list of {role, content} messages)")
    rejected_column: str = Field("rejected", description="the other response, in the same form")
    chat_template: str | None = Field(None, description="Jinja chat template for tokenizers without one")
    max_length: int = Field(512, gt=0, description="tokens of prompt + response; longer pairs are truncated (counted)")
    max_prompt_length: int | None = Field(
        256, gt=0, description="when a pair is too long, the prompt keeps its last max_prompt_length tokens first (TRL's truncation)"
    )
    disable_dropout: bool = Field(True, description="dropout off in the model and its adapter, as TRL's RewardTrainer by default")


class RewardModel(Task):
    name = "reward-model"
    modality = "text"
    peft_task_type = "SEQ_CLS"
    auto_class = "AutoModelForSequenceClassification"
    data_model = RewardModelData
    pipeline_tag = "text-classification"  # the Hub has no reward-model tag; the model is a one-output classifier
    card_example = "Question: what is the capital of France? Answer: Paris."
    extra_result_keys = RESULT_KEYS
    default_best_metric = "accuracy"  # share of held-out pairs ranked right, as the preference task

    # ---- recipe -------------------------------------------------------------------------------------
    def check(self, recipe: Recipe) -> list[str]:
        d, problems = recipe.data, []
        if recipe.eval.metrics:
            problems.append(f"eval.metrics: reward-model computes {', '.join(RESULT_KEYS)} itself; remove eval.metrics")
        if d.max_prompt_length is not None and d.max_prompt_length >= d.max_length:
            problems.append(f"data.max_prompt_length: {d.max_prompt_length} leaves no room for a response within data.max_length {d.max_length}")
        return problems

    def columns(self, recipe: Recipe, with_labels: bool = True) -> dict[str, str]:
        d = recipe.data
        return {d.chosen_column: "data.chosen_column", d.rejected_column: "data.rejected_column"}

    # ---- model and processor ------------------------------------------------------------------------
    def load_processor(self, recipe: Recipe, path: str | None = None) -> PreTrainedTokenizerBase:
        return language.load_lm_tokenizer(recipe, path)

    def model_kwargs(self, info: LabelInfo | None) -> dict[str, Any]:
        return {"num_labels": 1}  # one output: the reward

    def processor_model_kwargs(self, processor: PreTrainedTokenizerBase) -> dict[str, Any]:
        # The head reads each sequence at its last non-pad token (config.pad_token_id): it must be the
        # pad the collator uses, whatever the base config says (TRL's RewardTrainer sets it the same way).
        return {"pad_token_id": processor.pad_token_id}

    # ---- data ---------------------------------------------------------------------------------------
    def preprocess(self, ds: Split, split: str, processor: PreTrainedTokenizerBase, recipe: Recipe, info: LabelInfo | None,
                   train: bool) -> Split:
        d = recipe.data
        columns = language.PairColumns(d.prompt_column, d.chosen_column, d.rejected_column)
        out = language.tokenize_pairs(ds, split, processor, recipe, columns, d.max_prompt_length, d.max_length)
        if out.truncated:
            from accelerate import PartialState

            if PartialState().is_main_process:
                print(f"hfadapt: reward-model {split}: truncated {out.truncated} of {out.rows} pairs to data.max_length {d.max_length} "
                      f"(data.max_prompt_length {d.max_prompt_length})")
        return out.dataset

    def collator(self, processor: PreTrainedTokenizerBase) -> Collate:
        return language.PairCollator(processor.pad_token_id)

    def count_units(self, batch: dict[str, Any], processor: PreTrainedTokenizerBase) -> dict[str, Any]:
        """Pairs and the non-pad tokens of both sides, as the preference task counts them (a batch holds
        2 sequences per pair, which the loop's samples count)."""
        return {"pairs": batch["row"].numel(), "tokens": batch["attention_mask"].sum()}

    def prepare_model(self, model: PreTrainedModel, recipe: Recipe) -> None:
        if recipe.data.disable_dropout:
            language.disable_dropout(model)

    def training_loss(self, model: Module, batch: dict[str, Any], recipe: Recipe) -> tuple[Tensor, dict[str, Tensor]]:
        chosen, rejected = _rewards(model, batch).chunk(2)
        margin = (chosen - rejected).detach()
        return pairwise_loss(chosen, rejected).mean(), {"accuracy": (margin > 0).float().mean(), "margin": margin.mean()}

    def plan_batch(self, recipe: Recipe, config: PretrainedConfig, batch_size: int) -> tuple[dict[str, Any], str]:
        """Both sides of batch_size pairs at data.max_length (the worst case)."""
        from hfadapt.modeling.meta import meta_tokens

        n = recipe.data.max_length
        return {"input_ids": meta_tokens(2 * batch_size, n)}, f"pairs of 2 sequences of {n} tokens (chosen + rejected)"

    def encode_inputs(self, items: list[str], processor: PreTrainedTokenizerBase, recipe: Recipe) -> dict[str, Any]:
        """Texts or conversations (a JSON list of messages) -> a right-padded batch, each tokenized as a
        side of a training pair is: text + EOS with special tokens; chat rendered whole by the template."""
        seqs = []
        for n, item in enumerate(items, 1):
            messages = _as_messages(item)
            if messages is not None:
                where = f"predict input {n}"
                language.require_chat_template(processor, recipe, f"the conversation of {where}")
                text = language.render_chat(processor, language.check_messages(messages, where), False, where)
                ids = processor(text, add_special_tokens=False)["input_ids"]
            else:
                eos = processor.eos_token or ""
                ids = processor(item if not eos or item.endswith(eos) else item + eos)["input_ids"]
            seqs.append(ids[: recipe.data.max_length])
        batch = language.pad_sequences(seqs, [[0] * len(s) for s in seqs], processor.pad_token_id)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    # ---- evaluation, prediction, report -------------------------------------------------------------
    def evaluate(self, ctx: EvalContext, model: Module, dataloader: DataLoader) -> dict[str, Any]:
        """Pairwise loss, accuracy, mean margin and mean rewards over held-out pairs, each pair counted once."""
        import torch

        was_training = model.training
        model.eval()
        chosen, rejected, rows = [], [], []
        for batch in dataloader:
            with torch.no_grad():
                c, r = _rewards(model, batch).chunk(2)
            c, r, row = ctx.accelerator.gather_for_metrics((c.contiguous(), r.contiguous(), batch["row"]))
            chosen.append(c.cpu())
            rejected.append(r.cpu())
            rows.append(row.cpu())
        model.train(was_training)
        c, r, row = torch.cat(chosen), torch.cat(rejected), torch.cat(rows)
        # back to dataset order whatever order the loader read the pairs in (source row -> position)
        position = {int(v): i for i, v in enumerate(ctx.dataset["row"])}
        order = torch.tensor(sorted(range(len(row)), key=lambda i: position[int(row[i])]), dtype=torch.long)
        c, r, row = c[order], r[order], row[order]
        margin = c - r
        results: dict[str, Any] = {
            "loss": float(pairwise_loss(c, r).mean()) if len(c) else float("nan"),
            "samples": int(c.shape[0]),
            "accuracy": float((margin > 0).float().mean()),
            "margin": float(margin.mean()),
            "reward_chosen": float(c.mean()),
            "reward_rejected": float(r.mean()),
        }
        if ctx.predictions_file is not None:
            save_predictions(ctx, _prediction_rows(ctx, [position[int(v)] for v in row], row, c, r))
        return results

    def predict(self, model: Module, processor: PreTrainedTokenizerBase, items: list[str], recipe: Recipe,
                info: LabelInfo | None) -> list[dict[str, Any]]:
        import torch

        batch = self.encode_inputs(items, processor, recipe)
        device = next(model.parameters()).device
        with torch.no_grad():
            scores = _rewards(model, {k: v.to(device) for k, v in batch.items()})
        return [{"score": float(s)} for s in scores.tolist()]

    def report_section(self, report: ReportInput) -> str:
        """Accuracy and margin of the final evaluation, a histogram of per-pair margins, and the held-out
        pairs the model ranks most wrongly (lowest r_chosen - r_rejected)."""
        evals = {k: v for k, v in report.split("eval").items() if k in ("loss", "samples", *RESULT_KEYS)}
        out = ["<h3>Held-out pairs</h3>", metric_table(evals, "eval") if evals else "<p class=note>No final evaluation in this run.</p>"]
        rows = report.predictions
        if not rows:
            out.append("<p class=note>No eval_predictions.jsonl in this run (it is written at the end of training when there is a validation split).</p>")
            return "".join(out)
        fig, ax = plt().subplots(figsize=(5.5, 3.2))
        ax.hist([r["margin"] for r in rows], bins=min(40, max(5, len(rows) // 4)), color="#4c72b0")
        ax.axvline(0.0, color="grey", lw=1, ls="--")
        ax.set_xlabel("r(chosen) - r(rejected)")
        ax.set_ylabel("pairs")
        ax.set_title("validation: reward margins")
        out += ["<h3>Margins</h3>", img(fig), "<h3>Most wrongly ranked pairs</h3>"]
        wrong = sorted((r for r in rows if r["margin"] <= 0), key=lambda r: r["margin"])[:10]
        if not wrong:
            out.append("<p class=note>Every held-out pair is ranked the right way.</p>")
        else:
            body = "".join(
                f"<tr><td>{r['row']}</td><td>{e(r.get('prompt') or '')}</td><td>{e(r.get('chosen') or '')}</td>"
                f"<td>{e(r.get('rejected') or '')}</td><td>{r['reward_chosen']:.3f}</td><td>{r['reward_rejected']:.3f}</td>"
                f"<td>{r['margin']:.3f}</td></tr>"
                for r in wrong
            )
            out.append("<table class=mistakes><tr><th>row</th><th>prompt</th><th>chosen</th><th>rejected</th>"
                       "<th>r(chosen)</th><th>r(rejected)</th><th>margin</th></tr>" + body + "</table>")
        return "".join(out)


# ---- the loss and the rewards ------------------------------------------------------------------------
def pairwise_loss(chosen: Tensor, rejected: Tensor) -> Tensor:
    """Bradley-Terry: -log sigmoid(r_chosen - r_rejected) per pair (float32)."""
    import torch.nn.functional as F

    return -F.logsigmoid(chosen.float() - rejected.float())


def _rewards(model: Module, batch: dict[str, Any]) -> Tensor:
    """One reward per sequence of the batch (float32): the single logit of the classification head,
    read by the model at each sequence's last non-pad token (config.pad_token_id)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out.logits.squeeze(-1).float()


def _as_messages(item: str) -> list[Any] | None:
    """A predict input that is a JSON list (a conversation), or None (text)."""
    text = item.strip()
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def _prediction_rows(ctx: EvalContext, positions: list[int], rows: Tensor, chosen: Tensor, rejected: Tensor) -> list[dict[str, Any]]:
    """One row per held-out pair for eval_predictions.jsonl: its source row, both rewards, the margin
    and the decoded prompt and responses (shortened)."""
    tok, ds = ctx.processor, ctx.dataset
    cols = ds.select_columns(["prompt_input_ids", "chosen_input_ids", "rejected_input_ids"])[positions] if positions else {}

    def text(key: str) -> list[str]:
        return [t[:MAX_TEXT] for t in tok.batch_decode(cols[key], skip_special_tokens=True)] if positions else []

    prompts, chosens, rejecteds = text("prompt_input_ids"), text("chosen_input_ids"), text("rejected_input_ids")
    return [
        {"index": i, "row": int(rows[i]), "reward_chosen": float(chosen[i]), "reward_rejected": float(rejected[i]),
         "margin": float(chosen[i] - rejected[i]), "prompt": prompts[i], "chosen": chosens[i], "rejected": rejecteds[i]}
        for i in range(len(positions))
    ]


register_task(RewardModel())
