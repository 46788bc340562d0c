"""Transformations used only by the tests, loaded through BATON_TRANSFORMATIONS."""

from __future__ import annotations

from typing import Any

from app import transformation


class Refused(Exception):
    """A transformation's own error, to see it carried to the run."""


@transformation(queue="echo")
def echo(**values: Any) -> dict[str, Any]:
    """Return the input as the output."""
    return dict(values)


@transformation(queue="echo")
def add(a: int, b: int) -> dict[str, Any]:
    return {"sum": a + b}


@transformation(queue="faulty")
def refuse(reason: str = "no") -> dict[str, Any]:
    raise Refused(reason)


@transformation(queue="faulty")
def unserialisable() -> Any:
    return {"when": object()}


@transformation(queue="echo")
def scalar(value: Any = 1) -> Any:
    return value
