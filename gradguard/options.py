"""``KEY=VALUE`` settings: the one parser for command-line flags (``--option``,
``--threshold``), Flower configs (``guard-thresholds``) and scenario run configs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gradguard.errors import GradguardError


class OptionError(GradguardError, ValueError):
    """A ``KEY=VALUE`` item that cannot be read."""


def split_items(text: str) -> list[str]:
    """The non-blank items of a comma-separated list, stripped."""
    return [item.strip() for item in str(text).split(",") if item.strip()]


def split_pair(item: str) -> tuple[str, str]:
    """``"key = value"`` -> ``("key", "value")``, both stripped; the value is ``""`` when
    ``item`` has no ``=`` (lenient readers judge the pair themselves)."""
    key, _, value = item.partition("=")
    return key.strip(), value.strip()


def typed(text: str) -> bool | int | float | str:
    """``3`` -> int, ``0.5`` -> float, ``true``/``false`` -> bool, else the string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_pair(
    item: str, convert: Callable[[str], Any] = typed, what: str = "KEY=VALUE"
) -> tuple[str, Any]:
    """``(key, convert(value))``; :class:`OptionError` ("expected ``what``, got ...") when
    ``item`` has no ``=``, an empty key, or a value ``convert`` refuses (ValueError)."""
    key, value = split_pair(item)
    try:
        if "=" not in item or not key:
            raise ValueError
        return key, convert(value)
    except ValueError:
        raise OptionError(f"expected {what}, got {item!r}") from None


def parse_pairs(
    items: str | Iterable[str], convert: Callable[[str], Any] = typed, what: str = "KEY=VALUE"
) -> dict[str, Any]:
    """Every pair of a comma-separated string or of a list of items (a later key wins)."""
    given = split_items(items) if isinstance(items, str) else items
    return dict(parse_pair(item, convert, what) for item in given)
