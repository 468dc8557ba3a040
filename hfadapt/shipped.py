"""What ships with hfadapt: recipes and model-card templates, found in the source checkout's
top-level recipes/ and model_cards/ or, after a wheel install, inside the package
(hfadapt/_recipes, hfadapt/_model_cards)."""

from __future__ import annotations

from pathlib import Path

from .errors import HfadaptError
from .registry import did_you_mean


def shipped_dir(name: str) -> Path:
    """A top-level folder of the source checkout, or its copy inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / name, here / f"_{name}"):
        if candidate.is_dir():
            return candidate
    raise HfadaptError(f"no shipped {name} found (neither ./{name} nor hfadapt/_{name} exists)")


def recipes_dir() -> Path:
    return shipped_dir("recipes")


def shipped_recipes() -> list[str]:
    root = recipes_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml") if "assets" not in p.relative_to(root).parts)


def model_cards_dir() -> Path:
    return shipped_dir("model_cards")


def resolve_recipe_path(name: str) -> Path:
    """A path to a recipe file, or the name of a shipped recipe ('text/sst2-bert-lora')."""
    path = Path(name)
    if path.is_file():
        read_recipe_text(path)  # a binary or non-UTF-8 file is refused here, with its line
        return path
    if path.suffix in (".yaml", ".yml") and (path.is_absolute() or path.parent != Path(".")) and not _shipped(name):
        raise HfadaptError(f"{name}: recipe file not found")
    shipped = _shipped(name)
    if shipped is not None:
        return shipped
    raise HfadaptError(
        f"{name}: no such recipe file or shipped recipe{did_you_mean(name, shipped_recipes())} "
        "(`hfadapt recipes` lists the shipped ones)"
    )


def read_recipe_text(path: str | Path) -> str:
    """The text of a recipe file; a binary, non-UTF-8 or unreadable file is one HfadaptError naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise HfadaptError(f"{path}: cannot read the recipe: {e.strerror or e}") from None
    if b"\0" in data:
        line = data[: data.index(b"\0")].count(b"\n") + 1
        raise HfadaptError(f"{path}: not a recipe: a binary file (NUL byte on line {line}); a recipe is a YAML text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise HfadaptError(f"{path}: line {line} is not UTF-8 (byte 0x{data[e.start]:02x}); save the recipe as UTF-8") from None


def _shipped(name: str) -> Path | None:
    try:
        root = recipes_dir()
    except HfadaptError:
        return None
    stem = name[:-5] if name.endswith(".yaml") else name
    candidate = root / f"{stem}.yaml"
    return candidate if candidate.is_file() else None
