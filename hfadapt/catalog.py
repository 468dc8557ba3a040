"""Shipped recipes: found in the source checkout's top-level recipes/ or, after a wheel
install, inside the package (hfadapt/_recipes)."""

from __future__ import annotations

from pathlib import Path

from .errors import HfadaptError


def recipes_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "recipes", here / "_recipes"):
        if candidate.is_dir():
            return candidate
    raise HfadaptError("no shipped recipes found (neither ./recipes nor hfadapt/_recipes exists)")


def shipped_recipes() -> list[str]:
    root = recipes_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml") if "assets" not in p.relative_to(root).parts)


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
    from .registry import did_you_mean

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
