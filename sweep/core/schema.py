"""One strict type schema for every settings dataclass: the field annotations themselves.

TOML, command-line flags and JSON files all end in a frozen dataclass; checking each field against
its annotation there means one set of rules for every source, and a wrong type is one line naming
every bad field instead of a crash deep in a trial.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any


class _Mismatch(Exception):
    pass


def short(value: Any, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters, for one-line messages about any user value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def not_one_of(name: str, value: Any, allowed: typing.Iterable[str]) -> str:
    """The one line for a value outside its choices: "NAME must be one of A, B; got 'X'"."""
    return f"{name} must be one of {', '.join(allowed)}; got {short(value)}"


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def conform(instance: Any) -> list[str]:
    """Check every field of a dataclass instance against its annotation, normalising in place (a list
    becomes a tuple, an integer in a float field a float). Returns one message per bad field."""
    return list(conform_fields(instance).values())


def conform_fields(instance: Any) -> dict[str, str]:
    """`conform`, its messages keyed by field name (to check the values of the other fields)."""
    problems = {}
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        hint = _hints(type(instance))[f.name]
        try:
            normal = _conform(value, hint)
        except _Mismatch:
            problems[f.name] = f"{display_name(f.name)} must be {describe(hint)}, got {short(value)}"
            continue
        if normal is not value:
            object.__setattr__(instance, f.name, normal)
    return problems


# `lam` is spelled `lambda` everywhere a user sees it: dicts, JSON, Optuna, messages (a Python keyword).
RENAMES = {"lam": "lambda"}


def display_name(name: str) -> str:
    return RENAMES.get(name, name)


def _conform(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            try:
                return _conform(value, arm)
            except _Mismatch:
                pass
        raise _Mismatch
    if hint is type(None):
        if value is None:
            return value
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_conform(v, args[0]) for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_conform(v, a) for v, a in zip(value, args, strict=True))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value if type(value) is float else float(value)
        raise _Mismatch
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise _Mismatch
    raise TypeError(f"no schema rule for the annotation {hint!r}")


def describe(hint: Any) -> str:
    """The type in words, for an error message."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        words = " or ".join(describe(a) for a in arms)
        return f"{words} (or unset)" if len(arms) < len(typing.get_args(hint)) else words
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return "[" + ", ".join(describe(a).removeprefix("a ").removeprefix("an ") for a in args) + "]"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, f"a {getattr(hint, '__name__', hint)}"
    )


def _plural(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return f"{describe(hint)} lists"
    return {bool: "booleans", int: "integers", float: "numbers", str: "strings"}.get(hint, describe(hint))
