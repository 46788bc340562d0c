"""Checking payloads (inputs, outputs, variables) before Baton records or sends them.

A payload is JSON data: objects with string keys, arrays, strings, finite numbers,
booleans and null. Checking walks it with an explicit stack, so a payload nested
100,000 deep is refused with its path instead of raising RecursionError, and a cyclic
one is refused instead of looping. The serialised form is returned, so the size limit
is measured on exactly the bytes Redis will hold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from app.errors import BatonError


class InvalidPayload(BatonError):
    """A payload that is not JSON data, nests too deeply or is too large."""


class PayloadTooLarge(InvalidPayload):
    """A payload over its size limit; the message gives the size and the limit."""


def check_payload(
    value: Any, where: str, *, max_depth: int, max_bytes: int | None = None,
    error: type[InvalidPayload] = InvalidPayload,
) -> str:
    """Check that `value` is JSON data within the limits; returns it serialised (compact).

    Errors read `<where>.<path>: <message>`; `error` is the class raised for a value that
    is not JSON or nests too deeply (a size over `max_bytes` is always PayloadTooLarge).
    """
    # the walk stops counting past twice the limit: a value that refers to one large
    # string a thousand times is refused without serialising a thousand copies of it
    far = None if max_bytes is None else 2 * max_bytes
    least = _check_shape(value, where, max_depth, error, far)
    if max_bytes is not None and far is not None and least > far:
        raise PayloadTooLarge(f"{where}: at least {_size(least)}, over the limit of "
                              f"{_size(max_bytes)}")
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if max_bytes is not None:
        size = len(text.encode())
        if size > max_bytes:
            raise PayloadTooLarge(f"{where}: {_size(size)} is over the limit of "
                                  f"{_size(max_bytes)}")
    return text


def check_shape(value: Any, where: str, *, max_depth: int) -> None:
    """check_payload's checks of what the value is, without serialising it (a definition,
    read from JSON text, whose size is limited by its count of tasks instead)."""
    _check_shape(value, where, max_depth, InvalidPayload, None)


def _check_shape(
    value: Any, where: str, max_depth: int, error: type[InvalidPayload], max_bytes: int | None,
) -> int:
    """Walk the value; returns a lower bound of its serialised size, which stops the walk
    as soon as it passes `max_bytes`.

    A node's path is kept as a link to its parent's (made into text only for an error), and
    scalars are checked where their container is, so the walk costs little more per node
    than serialising does.
    """
    budget = max_bytes if max_bytes is not None else -1
    least = 0
    stack: list[tuple[Any, Trail, int]] = [(value, None, 0)]
    open_containers: set[int] = set()
    exits: list[tuple[int, int]] = []  # (stack height at entry, id) to close containers

    def fail(trail: Trail, message: str) -> InvalidPayload:
        return error(f"{_short(_path(where, trail))}: {message}")

    def scalar(item: Any, trail: Trail, step: str | int | None) -> int:
        """The least size of a scalar (`step` leads to it from `trail`), or -1 for a
        container, to walk."""
        if isinstance(item, str):
            return len(item) + 2
        if item is None or isinstance(item, bool | int):
            return 1
        here = trail if step is None else (trail, step)
        if isinstance(item, float):
            if not math.isfinite(item):
                raise fail(here, f"{item} is not a JSON number")
            return 1
        if not isinstance(item, Mapping | list | tuple):
            raise fail(here, f"{_kind(item)} is not JSON data")
        return -1

    first = scalar(value, None, None)
    if first >= 0:
        return first
    while stack:
        while exits and len(stack) <= exits[-1][0]:
            open_containers.discard(exits.pop()[1])
        if 0 <= budget < least:
            return least
        node, trail, depth = stack.pop()
        least += 2  # its brackets
        if depth >= max_depth:
            raise fail(trail, f"nested more than {max_depth} deep")
        if id(node) in open_containers:
            raise fail(trail, "refers to itself (a cycle)")
        open_containers.add(id(node))
        exits.append((len(stack), id(node)))
        is_map = isinstance(node, Mapping)
        for key, item in (node.items() if is_map else enumerate(node)):
            if is_map:
                if not isinstance(key, str):
                    raise fail(trail, f"key {key!r} is not a string")
                least += len(key) + 3
            kind = type(item)
            if kind is str:
                least += len(item) + 2
            elif kind is int or kind is bool or item is None:
                least += 1
            elif kind is dict or kind is list:
                stack.append((item, (trail, key), depth + 1))
            else:
                size = scalar(item, trail, key)  # the rarer kinds: subclasses, floats, ...
                if size < 0:
                    stack.append((item, (trail, key), depth + 1))
                else:
                    least += size
    return least


Trail = tuple["Trail", "str | int"] | None
"""Where a node is: its parent's trail and its key or index (None for the value itself)."""


def _path(where: str, trail: Trail) -> str:
    steps: list[str | int] = []
    while trail is not None:
        trail, step = trail
        steps.append(step)
    text = [where]
    for step in reversed(steps):
        text.append(f"[{step}]" if isinstance(step, int) else f".{step}")
    return "".join(text)


def _kind(node: Any) -> str:
    name = type(node).__name__
    return f"an {name}" if name[:1] in "aeiou" else f"a {name}"


def _short(path: str, keep: int = 40) -> str:
    """A path of a deeply nested value, its middle left out so the message stays one line."""
    return path if len(path) <= 2 * keep + 3 else f"{path[:keep]}...{path[-keep:]}"


def _size(count: int) -> str:
    if count >= 1024 * 1024:
        return f"{count / (1024 * 1024):.1f} MiB"
    if count >= 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count} bytes"
