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


def _check_shape(
    value: Any, where: str, max_depth: int, error: type[InvalidPayload], max_bytes: int | None,
) -> int:
    """Walk the value; returns a lower bound of its serialised size, which stops the walk
    as soon as it passes `max_bytes`."""
    budget = max_bytes if max_bytes is not None else -1
    least = 0
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    open_containers: set[int] = set()
    exits: list[tuple[int, int]] = []  # (stack height at entry, id) to close containers
    while stack:
        while exits and len(stack) <= exits[-1][0]:
            open_containers.discard(exits.pop()[1])
        if 0 <= budget < least:
            return least
        node, path, depth = stack.pop()
        least += 1  # a separator, or a scalar's shortest form
        if isinstance(node, str):
            least += len(node) + 2
            continue
        if node is None or isinstance(node, bool | int):
            continue
        if isinstance(node, float):
            if not math.isfinite(node):
                raise error(f"{_short(path)}: {node} is not a JSON number")
            continue
        if not isinstance(node, Mapping | list | tuple):
            raise error(f"{_short(path)}: {_kind(node)} is not JSON data")
        if depth >= max_depth:
            raise error(f"{_short(path)}: nested more than {max_depth} deep")
        if id(node) in open_containers:
            raise error(f"{_short(path)}: refers to itself (a cycle)")
        open_containers.add(id(node))
        exits.append((len(stack), id(node)))
        if isinstance(node, Mapping):
            for key, item in node.items():
                if not isinstance(key, str):
                    raise error(f"{_short(path)}: key {key!r} is not a string")
                least += len(key) + 3
                stack.append((item, f"{path}.{key}", depth + 1))
        else:
            for index, item in enumerate(node):
                stack.append((item, f"{path}[{index}]", depth + 1))
    return least


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
