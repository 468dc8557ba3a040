"""What the language-model tasks share: chat rendering, prompts for generation (`hfadapt predict`),
prompt + completion tokenization with a completion mask, preference pairs and unpaired (KTO) rows, their collators, and log-prob gathering.

Used by causal-lm (chat template handling), preference (DPO & co.) and reward-model. Nothing here
imports torch at module level (`hfadapt validate` loads the task modules).

Preprocessed rows (`tokenize_pairs`): `prompt_input_ids`, `chosen_input_ids`, `rejected_input_ids`
(completion tokens only, as TRL stores them), `length` (the longer of prompt+chosen, prompt+rejected:
what length grouping sorts by) and `row` (the source row, for per-pair results). `PairCollator` pads
a list of them into ONE batch of 2B sequences, [chosen_1..chosen_B; rejected_1..rejected_B], with
`input_ids`, `attention_mask` and `completion_mask` (1 on completion tokens), right-padded: the layout
of TRL's DPO collator, so one forward scores both sides.

Unpaired rows (`tokenize_unpaired`): `prompt_input_ids`, `completion_input_ids`, `label` (bool),
`length`, `row`. `UnpairedCollator` pads B sequences and adds the KL batch KTO needs (prompt i with
the completion of row i-1 of the same batch, as TRL pairs them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.data.sources import ROW_COLUMN, check_columns, is_streamed, map_split, row_location

if TYPE_CHECKING:
    from torch import Tensor
    from torch.nn import Module
    from transformers import PreTrainedTokenizerBase

    from hfadapt.core.recipe import DataSection, Recipe
    from hfadapt.tasks.base import Split

Messages = list[dict[str, str]]
PAIR_COLUMNS = ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids", "length", "row")
UNPAIRED_COLUMNS = ("prompt_input_ids", "completion_input_ids", "label", "length", "row")


# ---- chat templates ------------------------------------------------------------------------------
def load_lm_tokenizer(recipe: Recipe, path: str | None = None) -> PreTrainedTokenizerBase:
    """The base model's (or a run's) tokenizer; data.chat_template, when given, replaces its template
    on a fresh load (it is saved with the adapter, so predict renders the same way). A pad token falls
    back to EOS (modeling/tokenization.py)."""
    from hfadapt.modeling.tokenization import load_tokenizer

    tok = load_tokenizer(recipe, path)
    template = getattr(recipe.data, "chat_template", None)
    if template and path is None:
        tok.chat_template = template
    return tok


def require_chat_template(tok: PreTrainedTokenizerBase, recipe: Recipe, what: str) -> None:
    """One error line when chat data meets a tokenizer without a template."""
    require_template_of(tok, recipe.model.name_or_path, what)


def require_template_of(tok: PreTrainedTokenizerBase, model: str, what: str) -> None:
    """require_chat_template given the model's name: for `datasets.map` functions, which capture plain
    values rather than the recipe (datasets must hash what a map function captures to cache its result)."""
    if not getattr(tok, "chat_template", None):
        raise HfadaptError(
            f"data.chat_template: the tokenizer of '{model}' has no chat template to render {what}; give one in data.chat_template (Jinja)"
        )


def check_messages(messages: object, where: str, allow_empty: bool = False) -> Messages:
    """`messages` as a list of {role, content} text messages, or one error line naming `where`."""
    if not isinstance(messages, list) or (not messages and not allow_empty):
        raise HfadaptError(f"{where}: expected a list of {{role, content}} messages, got {short(messages)}")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise HfadaptError(f"{where}: expected messages with a text 'role' and 'content', got {short(m)}")
    return messages


def render_chat(tok: PreTrainedTokenizerBase, messages: Messages, generation_prompt: bool, where: str) -> str:
    """The conversation as the chat template renders it; a template error becomes one line naming `where`."""
    try:
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as e:  # noqa: BLE001 - Jinja errors: name the template and the row
        raise HfadaptError(f"data.chat_template: cannot render {where}: {first_line(e)}") from e


def shared_prompt(chosen: Messages, rejected: Messages) -> tuple[Messages, Messages, Messages]:
    """(prompt, chosen, rejected): the longest common prefix of turns of two conversations is the
    prompt, the rest are the responses (TRL's `extract_prompt`)."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    return chosen[:n], chosen[n:], rejected[n:]


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# ---- prompts for generation (predict) -----------------------------------------------------------------
FORMAT_KEY = "hfadapt_lm_format"  # tokenizer_config.json entry: the data format a run was trained on


def trained_format(processor: PreTrainedTokenizerBase, recipe: Recipe) -> str:
    """The data format a run was trained on ("chat", "prompt_completion", "text"): saved with its tokenizer
    (FORMAT_KEY), else data.lm_format where the task has one and it is not "auto", else "text"."""
    fmt = processor.init_kwargs.get(FORMAT_KEY)
    if fmt:
        return fmt
    lm_format = getattr(recipe.data, "lm_format", "auto")
    return lm_format if lm_format != "auto" else "text"


def encode_prompts(items: list[str], processor: PreTrainedTokenizerBase, recipe: Recipe) -> dict[str, Any]:
    """Prompts -> a left-padded batch ready for generate(): a user turn rendered with the generation prompt
    when the run was trained on chat data, the text with the tokenizer's special tokens otherwise."""
    import torch

    fmt = trained_format(processor, recipe)
    seqs = []
    for item in items:
        if fmt == "chat":
            if not getattr(processor, "chat_template", None):
                raise HfadaptError("data.chat_template: this run was trained on chat data but its tokenizer has no chat template")
            text = processor.apply_chat_template([{"role": "user", "content": item}], tokenize=False, add_generation_prompt=True)
            seqs.append(processor(text, add_special_tokens=False)["input_ids"])
        else:
            seqs.append(processor(item, add_special_tokens=True)["input_ids"])
    width = max(len(s) for s in seqs)
    pad = processor.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], dtype=torch.long)
    attention_mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def generate(model: Module, processor: PreTrainedTokenizerBase, prompts: list[str], recipe: Recipe,
             extra: dict[str, Any] | None = None) -> list[str]:
    """Greedy (or as recipe.generation says) continuations of prompts, special tokens removed."""
    import torch

    g = recipe.generation
    batch = encode_prompts(prompts, processor, recipe)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    kwargs: dict[str, Any] = {"max_new_tokens": g.max_new_tokens, "num_beams": g.num_beams, "do_sample": g.do_sample, "pad_token_id": processor.pad_token_id}
    if g.do_sample:
        kwargs.update(temperature=g.temperature, top_p=g.top_p)
    gen_config = getattr(model, "generation_config", None)
    if processor.eos_token_id is not None and getattr(gen_config, "eos_token_id", None) is None:
        kwargs["eos_token_id"] = processor.eos_token_id
    kwargs.update(extra or {})
    with torch.no_grad():
        out = model.generate(**batch, **kwargs)
    new = out[:, batch["input_ids"].shape[1]:]
    return [t.strip() for t in processor.batch_decode(new, skip_special_tokens=True)]


# ---- prompt + completion -------------------------------------------------------------------------
def encode_prompt_completions(tok: PreTrainedTokenizerBase, prompt: str | Messages, completions: list[str | Messages],
                              where: str) -> tuple[list[int], list[list[int]]]:
    """Token ids of a prompt and of each completion after it, the way TRL's DPO trainer splits them.

    Text: `prompt` with the tokenizer's special tokens, `prompt + completion + EOS` likewise. Chat: the
    prompt rendered with the generation prompt, `prompt + completion` rendered whole. The completion
    starts where the prompt's ids and the whole's ids diverge (tokens can merge across the boundary).
    """
    if isinstance(prompt, list):
        p_ids = tok(render_chat(tok, prompt, True, where), add_special_tokens=False)["input_ids"]
        wholes = [tok(render_chat(tok, prompt + c, False, where), add_special_tokens=False)["input_ids"] for c in completions]  # type: ignore[operator]
    else:
        eos = tok.eos_token or ""
        p_ids = tok(prompt)["input_ids"]
        wholes = [tok(prompt + c + ("" if eos and c.endswith(eos) else eos))["input_ids"] for c in completions]  # type: ignore[operator]
    cut = min([len(p_ids)] + [common_prefix_length(p_ids, w) for w in wholes])
    return p_ids[:cut], [w[cut:] for w in wholes]


def truncate(prompt: list[int], completions: list[list[int]], max_prompt_length: int | None,
             max_length: int | None) -> tuple[list[int], list[list[int]], bool]:
    """TRL's (0.x) truncation of a prompt and its completions: when prompt + the longest completion
    exceed max_length, the prompt keeps its last max_prompt_length tokens (keep-end: the question is
    at the end); if still too long, every completion is cut to what is left. Returns (prompt,
    completions, whether anything was cut)."""
    if max_length is None:
        return prompt, completions, False
    longest = max((len(c) for c in completions), default=0)
    cut = False
    if len(prompt) + longest > max_length and max_prompt_length is not None and len(prompt) > max_prompt_length:
        prompt, cut = prompt[-max_prompt_length:], True
    if len(prompt) + longest > max_length:
        room = max(max_length - len(prompt), 0)
        completions, cut = [c[:room] for c in completions], True
    return prompt, completions, cut


# ---- preference pairs ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PairColumns:
    """Where a split's pairs are: a prompt column (text or messages; None or absent: the prompt is the
    common prefix of the two conversations) and the chosen / rejected columns (text or messages)."""

    prompt: str | None = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    fields: dict[str, str] = field(default_factory=lambda: {
        "prompt": "data.prompt_column", "chosen": "data.chosen_column", "rejected": "data.rejected_column",
    })


@dataclass
class TokenizedSplit:
    """A tokenized split and what tokenizing it counted."""

    dataset: Split
    rows: int | None  # raw rows (None: streamed)
    truncated: int | None  # pairs / rows cut by max_prompt_length / max_length (None: streamed)


def tokenize_pairs(ds: Split, split: str, tok: PreTrainedTokenizerBase, recipe: Recipe, columns: PairColumns,
                   max_prompt_length: int | None, max_length: int | None) -> TokenizedSplit:
    """A raw split of preference pairs -> rows of PAIR_COLUMNS (see the module docstring).

    Refused with one error line naming the file and row: a missing column, a value that is neither
    text nor a message list, an empty response, and a pair whose chosen equals its rejected (nothing
    to learn from, usually a data bug). Truncation is TRL's (`truncate`), counted.
    """
    d = recipe.data
    check_columns(ds, {columns.chosen: columns.fields["chosen"], columns.rejected: columns.fields["rejected"]}, split, d)
    has_prompt = columns.prompt is not None and columns.prompt in ds.column_names
    model = recipe.model.name_or_path  # the map function captures plain values and the data section, never the recipe

    def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        rows = batch.get(ROW_COLUMN, indices)
        out: dict[str, list[Any]] = {k: [] for k in PAIR_COLUMNS} | {"truncated": []}
        for j, row in enumerate(rows):
            at = row_location(split, row, d)
            chosen, rejected = batch[columns.chosen][j], batch[columns.rejected][j]
            prompt = batch[columns.prompt][j] if has_prompt else None  # type: ignore[index]
            prompt, chosen, rejected = _pair_parts(prompt, chosen, rejected, columns, at)
            if isinstance(chosen, list):
                require_template_of(tok, model, f"the chat messages of {at}")
            p, (c, r) = encode_prompt_completions(tok, prompt, [chosen, rejected], at)
            if not c or not r:
                raise HfadaptError(f"{columns.fields['chosen' if not c else 'rejected']} '{columns.chosen if not c else columns.rejected}', "
                                   f"{at}: the response has no tokens after the prompt")
            if c == r:  # differs as text (spaces) but not as tokens: nothing to prefer
                raise HfadaptError(f"{columns.fields['rejected']} '{columns.rejected}', {at}: the rejected response tokenizes "
                                   "exactly like the chosen one; remove the pair")
            p, (c, r), cut = truncate(p, [c, r], max_prompt_length, max_length)
            for k, v in zip(PAIR_COLUMNS, (p, c, r, len(p) + max(len(c), len(r)), row)):
                out[k].append(v)
            out["truncated"].append(cut)
        return out

    return _tokenized(ds, encode, split, "pairs", getattr(d, "num_proc", None))


def _pair_parts(prompt: object, chosen: object, rejected: object, columns: PairColumns,
                at: str) -> tuple[str | Messages, str | Messages, str | Messages]:
    chat = isinstance(chosen, list) or isinstance(rejected, list)
    where = {k: f"{columns.fields[k]} '{getattr(columns, k)}', {at}" for k in ("prompt", "chosen", "rejected")}
    for k, v in (("chosen", chosen), ("rejected", rejected)):
        if v is None:  # an empty CSV cell, a JSON null or a key missing from this row
            raise HfadaptError(f"{where[k]}: empty response (no value)")
    if chosen == rejected:  # before splitting: equal conversations would otherwise read as two empty responses
        raise HfadaptError(f"{where['rejected']}: the rejected response equals the chosen one; remove the pair")
    if chat:
        chosen = check_messages(chosen, where["chosen"])
        rejected = check_messages(rejected, where["rejected"])
        common, rest_c, rest_r = shared_prompt(chosen, rejected)
        if prompt is None or (isinstance(prompt, str) and common):
            # no prompt column, or a text prompt the conversations already open with (ultrafeedback_binarized)
            prompt, chosen, rejected = common, rest_c, rest_r
        elif isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        else:
            prompt = check_messages(prompt, where["prompt"], allow_empty=True)
            # Hub sets (ultrafeedback_binarized) repeat the prompt inside chosen/rejected: take it out once
            n = len(prompt)
            if chosen[:n] == prompt and rejected[:n] == prompt:
                chosen, rejected = chosen[n:], rejected[n:]
        for k, v in (("chosen", chosen), ("rejected", rejected)):
            if not v or all(not m["content"].strip() for m in v):
                raise HfadaptError(f"{where[k]}: empty response")
    else:
        if prompt is None:
            prompt = ""
        for k, v in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
            if not isinstance(v, str):
                raise HfadaptError(f"{where[k]}: expected text or a list of {{role, content}} messages, got {short(v)}")
            if k != "prompt" and not v.strip():
                raise HfadaptError(f"{where[k]}: empty response")
    if chosen == rejected:
        raise HfadaptError(f"{where['rejected']}: the rejected response equals the chosen one; remove the pair")
    return prompt, chosen, rejected  # type: ignore[return-value]


# ---- unpaired rows (KTO) -------------------------------------------------------------------------
BOOLEAN_LABELS = {True: True, False: False, "true": True, "false": False, "True": True, "False": False}


def tokenize_unpaired(ds: Split, split: str, tok: PreTrainedTokenizerBase, recipe: Recipe, prompt_column: str,
                      completion_column: str, label_column: str, max_prompt_length: int | None,
                      max_length: int | None) -> TokenizedSplit:
    """A raw split of (prompt, completion, boolean label) rows -> rows of UNPAIRED_COLUMNS. Prompt and
    completion may be text or message lists (trl-lib/kto-mix-14k). Labels must be booleans (JSON
    true/false, or the strings "true"/"false" of a CSV)."""
    d = recipe.data
    check_columns(ds, {prompt_column: "data.prompt_column", completion_column: "data.completion_column",
                       label_column: "data.label_column"}, split, d)
    model = recipe.model.name_or_path  # the map function captures plain values and the data section, never the recipe

    def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        rows = batch.get(ROW_COLUMN, indices)
        out: dict[str, list[Any]] = {k: [] for k in UNPAIRED_COLUMNS} | {"truncated": []}
        for j, row in enumerate(rows):
            at = row_location(split, row, d)
            label = batch[label_column][j]
            if not (isinstance(label, bool) or (isinstance(label, str) and label in BOOLEAN_LABELS)):
                raise HfadaptError(f"data.label_column '{label_column}', {at}: expected a boolean (true: desirable, "
                                   f"false: undesirable), got {short(label)}")
            prompt, completion = batch[prompt_column][j], batch[completion_column][j]
            where = f"data.completion_column '{completion_column}', {at}"
            if completion is None:  # an empty CSV cell, a JSON null or a key missing from this row
                raise HfadaptError(f"{where}: empty response (no value)")
            if isinstance(completion, list):
                completion = check_messages(completion, where)
                prompt = check_messages(prompt, f"data.prompt_column '{prompt_column}', {at}", allow_empty=True) \
                    if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
                require_template_of(tok, model, f"the chat messages of {at}")
                empty = all(not m["content"].strip() for m in completion)
            elif isinstance(completion, str) and isinstance(prompt, str):
                empty = not completion.strip()
            else:
                raise HfadaptError(f"{where}: expected text or a list of {{role, content}} messages, got {short(completion)}")
            if empty:
                raise HfadaptError(f"{where}: empty response")
            p, (c,) = encode_prompt_completions(tok, prompt, [completion], at)
            if not c:
                raise HfadaptError(f"{where}: the response has no tokens after the prompt")
            p, (c,), cut = truncate(p, [c], max_prompt_length, max_length)
            for k, v in zip(UNPAIRED_COLUMNS, (p, c, BOOLEAN_LABELS[label], len(p) + len(c), row)):
                out[k].append(v)
            out["truncated"].append(cut)
        return out

    return _tokenized(ds, encode, split, "rows", getattr(d, "num_proc", None))


def _tokenized(ds: Split, encode: Callable[..., dict[str, list[Any]]], split: str, what: str,
               num_proc: int | None) -> TokenizedSplit:
    """`encode` mapped over a split (cached by datasets), with the count of truncated rows it marked."""
    encoded = map_split(ds, encode, batched=True, with_indices=True, remove_columns=ds.column_names,
                        num_proc=num_proc, desc=f"Tokenizing {split} {what}")
    if is_streamed(encoded):
        return TokenizedSplit(encoded.remove_columns(["truncated"]), None, None)
    truncated = int(sum(encoded["truncated"]))
    return TokenizedSplit(encoded.remove_columns(["truncated"]), len(ds), truncated)


# ---- collators -----------------------------------------------------------------------------------
def pad_sequences(seqs: list[list[int]], masks: list[list[int]], pad_id: int) -> dict[str, Tensor]:
    """Right-padded input_ids, attention_mask and completion_mask tensors."""
    import torch

    width = max(len(s) for s in seqs)
    return {
        "input_ids": torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs], dtype=torch.long),
        "attention_mask": torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], dtype=torch.long),
        "completion_mask": torch.tensor([m + [0] * (width - len(m)) for m in masks], dtype=torch.long),
    }


class PairCollator:
    """Pairs -> one batch of 2B sequences [chosen; rejected] (input_ids, attention_mask, completion_mask),
    plus `row` (B source rows) and use_cache=False. Model inputs are input_ids and attention_mask."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        seqs, masks = [], []
        for side in ("chosen_input_ids", "rejected_input_ids"):
            for f in features:
                p, c = list(f["prompt_input_ids"]), list(f[side])
                seqs.append(p + c)
                masks.append([0] * len(p) + [1] * len(c))
        batch: dict[str, Any] = pad_sequences(seqs, masks, self.pad)
        batch["row"] = torch.tensor([int(f["row"]) for f in features], dtype=torch.long)
        return batch


class UnpairedCollator:
    """Unpaired rows -> B sequences (input_ids, attention_mask, completion_mask), `label` (bool), `row`,
    and the KL batch (`kl_input_ids`, `kl_attention_mask`, `kl_completion_mask`): prompt i followed by
    the completion of row i-1 (row B-1 for the first), TRL's mismatched pairs for KTO's reference point."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        prompts = [list(f["prompt_input_ids"]) for f in features]
        completions = [list(f["completion_input_ids"]) for f in features]
        shifted = [completions[-1]] + completions[:-1]
        batch: dict[str, Any] = pad_sequences(
            [p + c for p, c in zip(prompts, completions)], [[0] * len(p) + [1] * len(c) for p, c in zip(prompts, completions)], self.pad
        )
        kl = pad_sequences([p + c for p, c in zip(prompts, shifted)], [[0] * len(p) + [1] * len(c) for p, c in zip(prompts, shifted)], self.pad)
        batch.update({f"kl_{k}": v for k, v in kl.items()})
        batch["label"] = torch.tensor([bool(f["label"]) for f in features], dtype=torch.bool)
        batch["row"] = torch.tensor([int(f["row"]) for f in features], dtype=torch.long)
        return batch


# ---- log-probs -----------------------------------------------------------------------------------
def disable_dropout(model: Module) -> None:
    """Every dropout layer of `model` (the base and its LoRA branches) set to p=0: what TRL's preference
    and reward trainers do by default (`disable_dropout=True`)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def sequence_logps(logits: Tensor, input_ids: Tensor, completion_mask: Tensor) -> tuple[Tensor, Tensor]:
    """(sum of the completion tokens' log-probs, number of completion tokens) per sequence.

    logits[:, t] predicts input_ids[:, t + 1]; a position counts where completion_mask[:, t + 1] is 1.
    Log-softmax in float32. logits may be longer than input_ids on the left (prompt tuning's virtual
    tokens): only the last input_ids.shape[1] positions are read. Mean log-prob (SimPO, ORPO) is
    sum / count.
    """
    import torch

    logits = logits[:, -input_ids.shape[1]:, :]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = input_ids[:, 1:]
    token = torch.gather(logp, 2, targets.unsqueeze(-1)).squeeze(-1)
    mask = completion_mask[:, 1:].to(token.dtype)
    return (token * mask).sum(-1), mask.sum(-1)


def short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
