"""Loading the base model's tokenizer once, the same way for every text task."""

from __future__ import annotations

from typing import Any

from .errors import HfadaptError


def load_tokenizer(recipe: Any, path: str | None = None, need_fast: str | None = None, **kwargs: Any) -> Any:
    """AutoTokenizer of the recipe's base model (or of a run's saved folder `path`).

    A missing pad token becomes eos (decoder tokenizers ship without one; padded positions are
    masked anyway). `need_fast` names the task that needs a fast tokenizer (offsets, word ids).
    """
    from transformers import AutoTokenizer

    m = recipe.model
    source = path or m.name_or_path
    try:
        tok = AutoTokenizer.from_pretrained(
            source, revision=None if path else m.revision, trust_remote_code=m.trust_remote_code, **kwargs
        )
    except Exception as e:  # noqa: BLE001 - any loading failure becomes one clear line
        first = (str(e).strip() or type(e).__name__).splitlines()[0]
        raise HfadaptError(f"model.name_or_path: cannot load a tokenizer from '{source}': {first}") from e
    if need_fast and not getattr(tok, "is_fast", False):
        raise HfadaptError(
            f"model.name_or_path: {need_fast} needs a fast tokenizer (word ids, character offsets); "
            f"'{source}' loads {type(tok).__name__}"
        )
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise HfadaptError(f"model.name_or_path: tokenizer of '{source}' has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    return tok
