"""One tiny registry, used by tasks and adapter methods."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from hfadapt.core.errors import HfadaptError

T = TypeVar("T")


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(Generic[T]):
    """Maps names to objects registered where they are defined; duplicate names raise."""

    def __init__(
        self, kind: str, known: Callable[[], list[str]] | None = None, load: Callable[[str], None] | None = None
    ) -> None:
        """`known`/`load`: a registry whose entries register themselves when their module is imported
        (tasks) lists the names it can load and imports one on first `get`."""
        self.kind = kind
        self._items: dict[str, T] = {}
        self._known = known
        self._load = load

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str, field: str | None = None) -> T:
        if name not in self._items and self._load is not None and name in self.names():
            self._load(name)
        try:
            return self._items[name]
        except KeyError:
            where = f"{field}: " if field else ""
            raise HfadaptError(
                f"{where}unknown {self.kind} '{name}'{did_you_mean(name, self.names())}; "
                f"known: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(set(self._items) | set(self._known() if self._known else ()))

    def loaded(self) -> list[str]:
        """Every entry, loading those not imported yet."""
        return [name for name in self.names() if self.get(name) is not None]

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
