"""What ships with hfadapt: recipes and model-card templates, found in the source checkout's
top-level recipes/ and model_cards/ or, after a wheel install, inside the package
(hfadapt/_recipes, hfadapt/_model_cards)."""

from __future__ import annotations

from pathlib import Path

from hfadapt.core.errors import HfadaptError
from hfadapt.core.registry import did_you_mean


def shipped_dir(name: str) -> Path:
    """A top-level folder of the source checkout, or its copy inside an installed wheel."""
    package = Path(__file__).resolve().parent.parent  # hfadapt/
    for candidate in (package.parent / name, package / f"_{name}"):
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


def _shipped(name: str) -> Path | None:
    try:
        root = recipes_dir()
    except HfadaptError:
        return None
    stem = name[:-5] if name.endswith(".yaml") else name
    candidate = root / f"{stem}.yaml"
    return candidate if candidate.is_file() else None
