"""Loading the base model's tokenizer once, the same way for every text task."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfadapt.core.errors import HfadaptError, first_line

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from hfadapt.core.recipe import Recipe

# A tokenizer folder needs one of these: without them transformers 5 builds a 5-token fallback
# vocabulary and every word becomes [UNK].
TOKENIZER_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model",
    "sentencepiece.bpe.model", "spm.model", "vocab.model",
)
TOKENIZER_GLOBS = ("*.tiktoken", "*.model", "vocab.*")
VOCABULARY_FREE = ("ByT5Tokenizer", "CanineTokenizer")  # byte/character tokenizers ship no vocabulary
PROCESSOR_FILES = {
    "tokenizer": TOKENIZER_FILES,
    "image processor": ("preprocessor_config.json", "processor_config.json", "image_processor_config.json"),
}


def require_processor_files(path: str | Path, kind: str = "tokenizer", field: str = "model.name_or_path") -> None:
    """A local folder must hold the files of its tokenizer (kind='tokenizer') or image processor
    (kind='image processor'); otherwise one error naming the folder. Hub ids and missing paths pass
    (from_pretrained / check_local_path report those)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return
    names = PROCESSOR_FILES[kind]
    if any((folder / n).is_file() for n in names):
        return
    if kind == "tokenizer":
        if any(p.is_file() for g in TOKENIZER_GLOBS for p in folder.glob(g)):
            return
        config = folder / "tokenizer_config.json"
        if config.is_file():
            import json

            try:
                if json.loads(config.read_text()).get("tokenizer_class") in VOCABULARY_FREE:
                    return
            except (ValueError, UnicodeDecodeError, AttributeError):
                pass
    raise HfadaptError(
        f"{field}: {folder} has no {kind} files (looked for {', '.join(names[:4])}, ...); "
        f"copy the base model's {kind} files into it"
    )


def load_tokenizer(
    recipe: Recipe, path: str | None = None, need_fast: str | None = None, **kwargs: Any
) -> PreTrainedTokenizerBase:
    """AutoTokenizer of the recipe's base model (or of a run's saved folder `path`).

    A missing pad token becomes eos (decoder tokenizers ship without one; padded positions are
    masked anyway). `need_fast` names the task that needs a fast tokenizer (offsets, word ids).
    """
    from transformers import AutoTokenizer

    m = recipe.model
    source = path or m.name_or_path
    field = "model.name_or_path" if path is None else f"the run's folder {path}"
    from hfadapt.modeling.models import check_local_path

    check_local_path(source, field)
    require_processor_files(source, "tokenizer", field)
    try:
        tok = AutoTokenizer.from_pretrained(
            source, revision=None if path else m.revision, trust_remote_code=m.trust_remote_code, **kwargs
        )
    except Exception as e:  # noqa: BLE001 - any loading failure becomes one clear line
        raise HfadaptError(f"model.name_or_path: cannot load a tokenizer from '{source}': {first_line(e)}") from e
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
