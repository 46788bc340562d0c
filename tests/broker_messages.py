"""The messages the broker receives, as it receives them: Redis MONITOR on the tests' server.

Kombu's Redis transport puts each task message on its queue with one LPUSH of the JSON
envelope (headers, properties and the base64 body): the payload's length is the
message's size in Redis. MONITOR shows every command's arguments escaped (sdscatrepr);
they are unescaped here to count the bytes Redis stored.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis

_ESCAPES = {"n": 10, "r": 13, "t": 9, "a": 7, "b": 8, "\\": 92, '"': 34}
_HEX = re.compile(r"[0-9a-fA-F]{2}")


def monitor_arguments(line: str) -> list[bytes]:
    """The command's arguments in one MONITOR line, unescaped."""
    start = line.find("] ")
    text = line[start + 2:] if start >= 0 else line
    arguments: list[bytes] = []
    position = 0
    while True:
        position = text.find('"', position)
        if position < 0:
            return arguments
        position += 1
        value = bytearray()
        while text[position] != '"':
            char = text[position]
            if char == "\\":
                escaped = text[position + 1]
                if escaped == "x" and _HEX.fullmatch(text, position + 2, position + 4):
                    value.append(int(text[position + 2:position + 4], 16))
                    position += 4
                    continue
                value.append(_ESCAPES.get(escaped, ord(escaped)))
                position += 2
                continue
            value.extend(char.encode())
            position += 1
        arguments.append(bytes(value))
        position += 1


@dataclass
class Captured:
    """Sizes (bytes) of the task messages pushed on queues, with the queue of each."""

    sizes: list[tuple[str, int]] = field(default_factory=list)

    @property
    def largest(self) -> int:
        return max((size for _, size in self.sizes), default=0)

    @property
    def count(self) -> int:
        return len(self.sizes)


@contextmanager
def broker_messages(url: str) -> Iterator[Captured]:
    """Record every message put on a queue of the Redis at `url` while the block runs."""
    captured = Captured()
    client = redis.Redis.from_url(url)
    connection = client.connection_pool.get_connection()
    connection.send_command("MONITOR")
    assert connection.read_response() in (b"OK", "OK")
    stopping = threading.Event()
    marker = b"baton-monitor-end"

    def read() -> None:
        while True:
            response = connection.read_response()
            line = response.decode("latin-1") if isinstance(response, bytes) else response
            arguments = monitor_arguments(line)
            if not arguments:
                continue
            command = arguments[0].upper()
            if command == b"ECHO" and arguments[1:] == [marker] and stopping.is_set():
                return
            if command == b"LPUSH" and len(arguments) >= 3:
                captured.sizes.extend((arguments[1].decode(), len(payload))
                                      for payload in arguments[2:])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield captured
    finally:
        stopping.set()
        client.echo(marker)  # the reader stops once MONITOR shows this, after all before it
        reader.join(timeout=30)
        connection.disconnect()
        client.connection_pool.disconnect()
