"""Name -> class registries (timm's ``@register_model`` pattern), with errors that list the names.

Each family (strategies, benchmarks, models) owns one :class:`Registry`. Looking up an unknown
name raises :class:`UnknownNameError` naming the registered entries and the closest match, which
the config layer turns into a field error.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, TypeVar

from medcl.errors import UnknownNameError, close_match_hint

__all__ = ["Registry", "UnknownNameError", "close_match_hint"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to registered objects of one family."""

    def __init__(self, family: str, params: str | None = None):
        self.family, self.params = family, params  # params: the entries' attribute holding their pydantic model
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

    def validate(self, name: str, values: dict[str, Any] | Any | None = None) -> Any:
        """The typed parameters of entry ``name``: ``values`` validated by its parameter model (the
        attribute named by ``params``), or returned as they are when already an instance of it.
        Raises :class:`UnknownNameError` or pydantic's ``ValidationError``."""
        model = getattr(self.get(name), self.params)
        return values if isinstance(values, model) else model.model_validate(values or {})

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
