"""Name -> class registries (timm's ``@register_model`` pattern), with errors that list the names.

Each family (strategies, benchmarks, models) owns one :class:`Registry`. Looking up an unknown
name raises :class:`UnknownNameError` naming the registered entries and the closest match, which
the config layer turns into a field error.
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not registered; ``str()`` lists the registered names."""

    def __init__(self, family: str, name: str, known: list[str]):
        self.family, self.name, self.known = family, name, known
        super().__init__(name)

    def __str__(self) -> str:
        hint = close_match_hint(self.name, self.known)
        return f"unknown {self.family} {self.name!r}{hint}; registered: {', '.join(self.known)}"


def close_match_hint(name: str, candidates: list[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest candidate, or ``""``."""
    match = difflib.get_close_matches(str(name), candidates, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


class Registry(Generic[T]):
    """A mapping from names to registered objects of one family."""

    def __init__(self, family: str):
        self.family = family
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.family} {name!r} is registered twice")
            self._entries[name] = obj
            try:
                obj.registered_name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.family, name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
