"""Rewards of online-rl: declared in the recipe (`rl.rewards`), scored per completion, summed with weights.

Built in: `exact_match` (the whole completion, its last number or its `\\boxed{}` answer against a
column), `math_equal` (math-verify: equal as mathematical answers), `format` (a regex), `length` (a
target length in tokens) and `reward_model` (a `task: reward-model` run directory or a Hub sequence-
classification model, scored through its head). `function` loads `score(completion, **columns)` from
a Python file next to the recipe: it runs code, so a recipe loaded from the Hub may not name one unless
the user overrides `rl.trust_reward_code=true`; the run info records the file's sha256.

A reward that raises stops the run with one line naming the reward, the split row and the completion
index. Nothing here imports torch at module level.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal, Union

from pydantic import Field

from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.core.recipe import Section

if TYPE_CHECKING:
    from torch import Tensor

    from hfadapt.core.recipe import Recipe


class _Reward(Section):
    weight: float = Field(1.0, description="weight of this reward in the sum")
    name: str | None = Field(None, description="name in logs and the report; the type (or the function's name) when absent")


class ExactMatchReward(_Reward):
    """1 when the completion's answer equals the column's value (stripped), else 0."""

    type: Literal["exact_match"]
    column: str = Field(description="the data column holding the reference answer")
    extract: Literal["whole", "last_number", "boxed"] = Field(
        "whole", description="whole completion, its last number (commas dropped), or its last \\boxed{...} answer"
    )


class MathEqualReward(_Reward):
    """1 when math-verify finds the completion's answer equal to the column's (1/2 == 0.5 == \\frac{1}{2})."""

    type: Literal["math_equal"]
    column: str = Field(description="the data column holding the reference answer")


class FormatReward(_Reward):
    """1 when the completion matches a regular expression, else 0."""

    type: Literal["format"]
    pattern: str = Field(description="Python regular expression (re.DOTALL)")
    match: Literal["full", "search"] = Field("full", description="full: the whole completion matches; search: it occurs")


class LengthReward(_Reward):
    """-|tokens - target| / target: 0 at the target length, lower further away."""

    type: Literal["length"]
    target: int = Field(gt=0, description="target completion length in tokens")


class RewardModelReward(_Reward):
    """The score of a reward model's head on prompt + completion."""

    type: Literal["reward_model"]
    model: str = Field(description="a `task: reward-model` run directory, or a Hub id / folder of a sequence-classification model")


class FunctionReward(_Reward):
    """Your own Python: `file.py:name`, called as name(completion, **columns) -> float."""

    type: Literal["function"]
    function: str = Field(description="'my_rewards.py:score': a file next to the recipe and a function in it")


RewardSpec = Annotated[
    Union[ExactMatchReward, MathEqualReward, FormatReward, LengthReward, RewardModelReward, FunctionReward],
    Field(discriminator="type"),
]


def reward_name(spec: Any) -> str:
    if spec.name:
        return spec.name
    if spec.type == "function":
        return spec.function.rsplit(":", 1)[-1]
    return spec.type


def reward_columns(specs: list[Any], fn_params: dict[int, list[str]] | None = None) -> dict[str, str]:
    """Data columns the rewards read -> the field naming each (for the data loader's missing-column error)."""
    out = {}
    for i, spec in enumerate(specs):
        if getattr(spec, "column", None):
            out[spec.column] = f"rl.rewards[{i}].column"
        for col in (fn_params or {}).get(i, []):
            out[col] = f"rl.rewards[{i}].function ({spec.function}: parameter '{col}')"
    return out


# ---- answers -------------------------------------------------------------------------------------------
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def extract_answer(text: str, how: str) -> str | None:
    """The completion's answer: whole (stripped), its last number (commas dropped), or its last \\boxed{} content."""
    if how == "whole":
        return text.strip()
    if how == "last_number":
        found = _NUMBER.findall(text)
        return _plain_number(found[-1]) if found else None
    return last_boxed(text)


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...}, braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def _plain_number(s: str) -> str:
    s = s.replace(",", "").strip()
    try:
        v = float(s)
    except ValueError:
        return s
    return str(int(v)) if v.is_integer() else str(v)


def _reference(value: Any, how: str) -> str:
    text = str(value).strip()
    if how == "last_number":  # GSM8K's answers end with '#### 42'
        found = _NUMBER.findall(text.split("####")[-1])
        return _plain_number(found[-1]) if found else text
    if how == "boxed":
        return last_boxed(text) or text
    return text


# ---- loading ---------------------------------------------------------------------------------------------
KEPT_DIR = "rewards"  # RUN/rewards/<file>: the run's copy of each reward file (keep_reward_files)


def function_file(spec: FunctionReward, recipe: Recipe) -> tuple[Path, str]:
    """(the file, the function name) of a `function` reward: relative to the recipe's folder; for the recipe a
    run saved (RUN/recipe.yaml, or read from the run without a file), the run's own copy in RUN/rewards/."""
    where = f"rl.rewards: function '{spec.function}'"
    if ":" not in spec.function:
        raise HfadaptError(f"{where}: expected 'file.py:function_name'")
    file, name = spec.function.rsplit(":", 1)
    path = Path(file)
    kept = _run_folder(recipe) / KEPT_DIR / path.name if _run_folder(recipe) is not None else None
    if kept is not None and kept.is_file():
        return kept, name
    if not path.is_absolute():
        path = (Path(recipe.source).resolve().parent if recipe.source else Path.cwd()) / path
    if not path.is_file():
        raise HfadaptError(f"{where}: no file {path}")
    return path, name


def _run_folder(recipe: Recipe) -> Path | None:
    """The run directory when `recipe` is the one it saved (its recipe.yaml, or a recipe with no file), else None."""
    if recipe.source is None:
        return recipe.output_dir
    folder = Path(recipe.source).resolve().parent
    return folder if folder == recipe.output_dir.resolve() else None


def keep_reward_files(recipe: Recipe, run_dir: Path) -> None:
    """Copy each `function` reward's file into RUN/rewards/, so that resuming from RUN/recipe.yaml and
    `hfadapt eval RUN` find it without the recipe's folder. A copy already there (a resumed run) is kept:
    it is the code the run started with."""
    import shutil

    if getattr(recipe, "rl", None) is None or not recipe.rl.trust_reward_code:
        return
    sources: dict[str, Path] = {}
    for spec in recipe.rl.rewards:
        if spec.type != "function":
            continue
        src = function_file(spec, recipe)[0].resolve()
        other = sources.setdefault(src.name, src)
        if other != src:
            raise HfadaptError(f"rl.rewards: function '{spec.function}': two reward files named {src.name} ({other}, {src}); "
                               "the run keeps a copy of each under rewards/<name>: rename one")
        dst = run_dir / KEPT_DIR / src.name
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_function(spec: FunctionReward, recipe: Recipe) -> tuple[Callable[..., Any], list[str] | None, str]:
    """The user's function, the columns it names (None: it takes **columns, so every column), and the file's sha256.

    Refused with one line: a recipe from the Hub without rl.trust_reward_code, a missing file, a file that
    fails to import or lacks the name, and a function that cannot be called as name(completion, **columns)."""
    import importlib.util

    path, name = function_file(spec, recipe)
    if not recipe.rl.trust_reward_code:  # a recipe or run from the Hub (publishing/loading.py, RunDir.open), unless overridden
        raise HfadaptError(f"rl.trust_reward_code: the reward function '{spec.function}' of a recipe from the Hub would run "
                           f"{path} (sha256 {sha256_file(path)}); read that file, then override rl.trust_reward_code=true to run it")
    where = f"rl.rewards: function '{spec.function}'"
    module_name = f"hfadapt_reward_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    loader = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader)  # type: ignore[arg-type]
    try:
        loader.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as e:  # noqa: BLE001 - the user's file: one line naming it
        raise HfadaptError(f"{where}: importing {path} failed: {type(e).__name__}: {first_line(e)}") from e
    fn = getattr(module, name, None)
    if not callable(fn):
        raise HfadaptError(f"{where}: {path.name} has no function '{name}'")
    params = list(inspect.signature(fn).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not params or params[0].kind not in positional:
        raise HfadaptError(f"{where}: wrong signature {name}{inspect.signature(fn)}; expected {name}(completion, **columns) "
                           "with the completion text first")
    rest = params[1:]
    bad = [p.name for p in rest if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL)]
    if bad:
        raise HfadaptError(f"{where}: wrong signature {name}{inspect.signature(fn)}; after the completion it takes data "
                           f"columns by keyword, not positional parameters ({', '.join(bad)})")
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in rest):
        return fn, None, sha256_file(path)
    required = [p.name for p in rest if p.default is inspect.Parameter.empty]
    return fn, required, sha256_file(path)


@dataclass
class Scorer:
    """One reward, ready: `score(completions, token_counts, prompts, rows) -> list[float]`."""

    name: str
    weight: float
    spec: Any
    fn: Callable[..., Any] | None = None
    params: list[str] | None = None  # function rewards: the columns it takes (None: all)
    sha256: str | None = None
    model: Any = None
    tokenizer: Any = None


def build_scorers(recipe: Recipe) -> list[Scorer]:
    out = []
    for spec in recipe.rl.rewards:
        s = Scorer(reward_name(spec), spec.weight, spec)
        if spec.type == "function":
            s.fn, s.params, s.sha256 = load_function(spec, recipe)
        elif spec.type == "math_equal":
            try:
                import math_verify  # noqa: F401
            except ImportError as e:
                raise HfadaptError("rl.rewards: math_equal needs math-verify; pip install 'hfadapt[rl]'") from e
        out.append(s)
    names = [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise HfadaptError(f"rl.rewards: two rewards named '{dup[0]}'; give them distinct `name`s")
    return out


def load_reward_model(s: Scorer, device: Any) -> None:
    """A reward-model run (its adapter over the base, through plain peft) or a sequence-classification model."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    where = f"rl.rewards: reward_model '{s.spec.model}'"
    path = Path(s.spec.model)
    if (path / "adapter" / "adapter_config.json").is_file():  # a reward-model run directory: its saved adapter
        path = path / "adapter"
    try:
        if (path / "adapter_config.json").is_file():
            from peft import AutoPeftModelForSequenceClassification

            model = AutoPeftModelForSequenceClassification.from_pretrained(str(path))
        else:
            model = AutoModelForSequenceClassification.from_pretrained(s.spec.model)
        tok = AutoTokenizer.from_pretrained(str(path) if path.exists() else s.spec.model)
    except Exception as e:  # noqa: BLE001 - a path or Hub id of the user's: one line
        raise HfadaptError(f"{where}: cannot load it: {type(e).__name__}: {first_line(e)}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    s.model, s.tokenizer = model.to(device).eval(), tok


def score(s: Scorer, completions: list[str], token_counts: list[int], prompts: list[Any], rows: list[dict[str, Any]],
          where: list[str]) -> list[float]:
    """The reward of each completion; `where[i]` names its row and completion index for errors."""
    t = s.spec.type
    if t == "reward_model":
        return _score_with_model(s, completions, prompts)
    out = []
    for i, (c, n, row) in enumerate(zip(completions, token_counts, rows)):
        try:
            if t == "exact_match":
                got = extract_answer(c, s.spec.extract)
                value = float(got is not None and got == _reference(row[s.spec.column], s.spec.extract))
            elif t == "math_equal":
                value = _math_equal(c, row[s.spec.column])
            elif t == "format":
                m = re.fullmatch if s.spec.match == "full" else re.search
                value = float(m(s.spec.pattern, c, flags=re.DOTALL) is not None)
            elif t == "length":
                value = -abs(n - s.spec.target) / s.spec.target
            else:
                kwargs = dict(row) if s.params is None else {k: row[k] for k in s.params}
                value = float(s.fn(c, **kwargs))  # type: ignore[misc]
        except HfadaptError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's function or data: one line naming the completion
            raise HfadaptError(f"rl.rewards: {s.name} failed on {where[i]}: {type(e).__name__}: {first_line(e)}") from e
        if not math.isfinite(value):
            raise HfadaptError(f"rl.rewards: {s.name} returned {value} for {where[i]}; rewards must be finite numbers")
        out.append(value)
    return out


def _math_equal(completion: str, gold: Any) -> float:
    from math_verify import parse, verify

    answer = last_boxed(completion) or completion
    return float(verify(parse(str(gold)), parse(answer)))


def _score_with_model(s: Scorer, completions: list[str], prompts: list[Any]) -> list[float]:
    import torch

    tok = s.tokenizer
    texts = []
    for p, c in zip(prompts, completions):
        if isinstance(p, list) and getattr(tok, "chat_template", None):
            texts.append(tok.apply_chat_template(p + [{"role": "assistant", "content": c}], tokenize=False))
        else:
            texts.append((p if isinstance(p, str) else " ".join(m["content"] for m in p)) + c)
    batch = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=getattr(tok, "model_max_length", 2048) if
                getattr(tok, "model_max_length", 0) < 10**6 else 2048).to(s.model.device)
    with torch.no_grad():
        logits = s.model(**batch).logits
    return logits[:, 0].float().cpu().tolist()


def total(values: Tensor, scorers: list[Scorer]) -> Tensor:
    """[N, F] per-function rewards -> [N] weighted sum."""
    import torch

    w = torch.tensor([s.weight for s in scorers], dtype=values.dtype, device=values.device)
    return (values * w).sum(-1)
