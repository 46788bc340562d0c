"""jq programs, evaluated in a separate evaluator process with time, memory and file limits.

libjq runs arbitrary user programs: `$ENV` and `env` read the environment, `import` and
`include` read files, `last(range(1e12))` never ends and `[range(1e9)]` takes gigabytes.
None of that may happen inside a worker process, which holds Redis credentials and whose
time a run's cancellation cannot take back. So each worker process keeps evaluators: small
`python -I` processes started with an empty environment in an empty directory, importing
nothing but jq, which may not open a file once started, with an address-space limit, and
with a CPU limit set before each evaluation as a backstop should their parent die. The
parent hands over (program, input) on a pipe and waits at most the time limit (plus a small
margin) for the answer; past it, it kills the evaluator, and the next evaluation starts a
fresh one.

Protocol, both ways: a header of two big-endian 32-bit lengths, then that many bytes of
each part. A request is (JSON `[program, time limit, result byte limit]`, input JSON text);
an answer is (one-letter kind, text): `R` the JSON array of results, `E` a jq error, `M`
memory exhausted. The evaluator writes one `ready` answer once it has started. A request
whose JSON has a fourth element, true, only compiles the program (answer `R` `null` or `E`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Final

from app.config import get_settings
from app.errors import BatonError
from app.payloads import InvalidPayload, check_payload
from app.runtime.javascript import ScriptError

_MARGIN_SECONDS: Final = 0.5
"""Wall time granted beyond the time limit for the round trip through the pipe."""
_START_SECONDS: Final = 30.0
"""How long a new evaluator may take to start (a busy machine starts Python slowly)."""
_MAX_IDLE: Final = 8
"""Idle evaluators kept per worker process (one per concurrently evaluating thread)."""
_HEADER: Final = struct.Struct(">II")

# The evaluator's whole program. It clears the environment before jq can read it, moves
# the protocol off fd 1 (fd 1 and 2 then lead to /dev/null, so debug/stderr output goes
# nowhere), warms jq up, then limits itself: no core dumps, no file writes, no new file
# descriptors (`import`, `include`, `modulemeta` cannot open anything) and an address
# space of its own size plus the memory limit. halt_error becomes an error instead of
# silently ending the evaluation, and `input` says why it has nothing to read.
_EVALUATOR: Final = r"""
import os, sys
os.environ.clear()
import json, resource, struct
import jq

HEADER = struct.Struct(">II")
PREFIX = ('def halt_error($code): error("halt_error: " + (if type == "string" then . '
          'else tojson end)); def halt_error: halt_error(5); '
          'def input: error("a jq program here has no further input"); def inputs: empty; [(')
SUFFIX = '\n)] | tojson'
CACHE_SIZE = 256

out = os.dup(1)
os.dup2(2, 1)
jq.compile(PREFIX + '.' + SUFFIX).input_text('null').all()
with open('/proc/self/statm') as statm:
    size = int(statm.read().split()[0]) * resource.getpagesize()
limit = size + int(sys.argv[1]) * 1024 * 1024
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
resource.setrlimit(resource.RLIMIT_NOFILE, (out + 1, out + 1))
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
cache = {}


def read(count):
    chunks = []
    while count:
        chunk = os.read(0, min(count, 1 << 20))
        if not chunk:
            sys.exit(0)
        chunks.append(chunk)
        count -= len(chunk)
    return b''.join(chunks)


def send(kind, text):
    data = text.encode('utf-8', 'replace')
    frame = HEADER.pack(1, len(data)) + kind + data
    while frame:
        frame = frame[os.write(out, frame):]


def compiled(program):
    found = cache.get(program)
    if found is None:
        try:
            jq.compile(program)  # alone first, so a syntax error quotes the program only
            found = jq.compile(PREFIX + program + SUFFIX)
        except ValueError as exc:
            found = str(exc)
        if len(cache) >= CACHE_SIZE:
            del cache[next(iter(cache))]
        cache[program] = found
    return found


def evaluate(program, text, max_bytes):
    program = compiled(program)
    if isinstance(program, str):
        return b'E', program
    outputs = program.input_text(text).all()
    result = outputs[0] if outputs else '[]'  # no output: the program halted
    if len(result) > max_bytes:
        return b'E', f'results are larger than {max_bytes} bytes'
    return b'R', result


send(b'R', 'ready')
while True:
    head_size, input_size = HEADER.unpack(read(HEADER.size))
    program, time_limit, max_bytes, *compile_only = json.loads(read(head_size))
    text = read(input_size).decode('utf-8', 'replace')
    usage = resource.getrusage(resource.RUSAGE_SELF)
    seconds = int(usage.ru_utime + usage.ru_stime) + int(-(-time_limit // 1)) + 1
    if cpu_hard != resource.RLIM_INFINITY:
        seconds = min(seconds, cpu_hard)
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, cpu_hard))
    try:
        if compile_only:
            found = compiled(program)
            kind, answer = (b'E', found) if isinstance(found, str) else (b'R', 'null')
        else:
            kind, answer = evaluate(program, text, max_bytes)
    except MemoryError:
        kind, answer = b'M', ''
    except ValueError as exc:
        kind, answer = b'E', str(exc)
    except Exception as exc:
        kind, answer = b'E', f'{type(exc).__name__}: {exc}'
    try:
        send(kind, answer)
    except MemoryError:
        send(b'M', '')
"""

_MODULE_DIRECTIVE: Final = re.compile(r"(module|import|include)(?![A-Za-z0-9_])")


class JqError(BatonError):
    """A jq program does not compile, fails, or may not run here (module directives)."""


@dataclass(frozen=True)
class _Answer:
    kind: bytes
    text: str


class _EvaluatorDied(Exception):
    """The evaluator process ended before it answered."""

    def __init__(self, returncode: int | None) -> None:
        super().__init__(f"jq evaluator ended with {returncode}")
        self.returncode = returncode


class _Evaluator:
    """One evaluator process and its two pipe ends (non-blocking, waited on with a deadline)."""

    def __init__(self, memory_mib: int) -> None:
        self.memory_mib = memory_mib
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-c", _EVALUATOR, str(memory_mib)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env={}, cwd=_empty_directory(), close_fds=True)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.to_child = self.process.stdin.fileno()
        self.from_child = self.process.stdout.fileno()
        os.set_blocking(self.to_child, False)
        os.set_blocking(self.from_child, False)
        self.writable, self.readable = select.poll(), select.poll()
        self.writable.register(self.to_child, select.POLLOUT)
        self.readable.register(self.from_child, select.POLLIN)
        try:
            ready = self._receive(time.monotonic() + _START_SECONDS)
        except (_EvaluatorDied, TimeoutError):
            self.kill()
            raise ScriptError("the jq evaluator did not start") from None
        if ready != _Answer(b"R", "ready"):
            self.kill()
            raise ScriptError("the jq evaluator did not start")

    def send(
        self, program: str, text: str, time_limit: float, max_bytes: int,
        compile_only: bool = False,
    ) -> float:
        """Hand over an evaluation (or a compilation); returns the deadline of its answer."""
        request = [program, time_limit, max_bytes, *([True] if compile_only else [])]
        head = json.dumps(request).encode()
        data = text.encode("utf-8", "surrogatepass")
        deadline = time.monotonic() + time_limit + _MARGIN_SECONDS
        self._send(_HEADER.pack(len(head), len(data)) + head + data, deadline)
        return deadline

    def receive(self, deadline: float) -> _Answer:
        return self._receive(deadline)

    def _send(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.to_child, view):]
            except BlockingIOError:  # the pipe is full: wait until the evaluator reads
                if not self.writable.poll(_milliseconds_until(deadline)):
                    raise TimeoutError from None
            except BrokenPipeError:
                raise _EvaluatorDied(self.process.wait()) from None

    def _receive(self, deadline: float) -> _Answer:
        buffer = bytearray()
        wanted = _HEADER.size
        while True:
            while len(buffer) < wanted:
                if not self.readable.poll(_milliseconds_until(deadline)):
                    raise TimeoutError
                try:
                    chunk = os.read(self.from_child, max(wanted - len(buffer), 1 << 16))
                except BlockingIOError:
                    continue
                if not chunk:
                    raise _EvaluatorDied(self.process.wait())
                buffer += chunk
            kind_size, text_size = _HEADER.unpack_from(buffer)
            if wanted == _HEADER.size:
                wanted += kind_size + text_size
                continue
            kind = bytes(buffer[_HEADER.size:_HEADER.size + kind_size])
            text = buffer[_HEADER.size + kind_size:wanted].decode("utf-8", "replace")
            return _Answer(kind, text)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.close()

    def close(self) -> None:
        """Close the pipes: an idle evaluator reads end-of-file and exits."""
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


class _Pool:
    """This process's idle evaluators; a thread takes one, or starts one, for each evaluation."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[_Evaluator] = []

    def take(self, memory_mib: int) -> _Evaluator:
        with self.lock:
            for index, evaluator in enumerate(self.idle):
                if evaluator.memory_mib == memory_mib:
                    return self.idle.pop(index)
        return _Evaluator(memory_mib)

    def give_back(self, evaluator: _Evaluator) -> None:
        with self.lock:
            if len(self.idle) < _MAX_IDLE:
                self.idle.append(evaluator)
                return
        evaluator.close()

    def forget(self) -> None:
        """After a fork: the evaluators belong to the parent; only drop this copy of the pipes."""
        self.lock = threading.Lock()
        idle, self.idle = self.idle, []
        for evaluator in idle:
            evaluator.close()


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.forget)
_directory: dict[int, str] = {}
_directory_lock = threading.Lock()


def _empty_directory() -> str:
    """This process's empty directory, the evaluators' working directory."""
    with _directory_lock:
        path = _directory.get(os.getpid())
        if path is None or not os.path.isdir(path):
            path = _directory[os.getpid()] = tempfile.mkdtemp(prefix="baton-jq-")
        return path


@atexit.register
def _remove_directory() -> None:
    path = _directory.get(os.getpid())
    if path is not None:
        with contextlib.suppress(OSError):
            os.rmdir(path)


def refuse_module_directives(program: str) -> None:
    """Refuse `module`, `import` and `include`, which read files; jq allows them only first."""
    if "\0" in program:
        raise JqError("the program contains a NUL character")
    position = _first_token(program)
    if _MODULE_DIRECTIVE.match(program, position):
        word = _MODULE_DIRECTIVE.match(program, position).group(1)  # type: ignore[union-attr]
        raise JqError(f"'{word}' is not allowed: jq programs cannot use modules here")


def _first_token(program: str) -> int:
    """Where the first token starts, skipping whitespace and comments as jq's lexer does.

    A comment runs to the end of its line, except that a backslash escapes a following
    backslash or line break (jq 1.7+), so a comment may continue onto the next line.
    """
    at, end = 0, len(program)
    while at < end:
        char = program[at]
        if char in " \t\r\n":
            at += 1
        elif char == "#":
            at += 1
            while at < end and program[at] != "\n":
                if program[at] == "\\" and program.startswith(("\\", "\n", "\r\n"), at + 1):
                    at += 3 if program.startswith("\r\n", at + 1) else 2
                else:
                    at += 1
        else:
            return at
    return at


def evaluate(
    program: str, value: Any, *, time_limit: float | None = None,
    memory_mib: int | None = None,
) -> list[Any]:
    """Every result of `program` applied to `value`, in a sandboxed evaluator.

    JqError for a program that does not compile or fails; ScriptError past the time or
    memory limit (settings `script_time_limit` and `jq_memory_mib` unless given).
    """
    settings = get_settings()
    time_limit = settings.script_time_limit if time_limit is None else time_limit
    memory_mib = settings.jq_memory_mib if memory_mib is None else memory_mib
    refuse_module_directives(program)
    try:
        text = check_payload(value, "input", max_depth=settings.max_json_depth)
    except InvalidPayload as exc:
        raise JqError(f"the program's input is not JSON data: {exc}") from None
    answer = _run(program, text, time_limit, memory_mib, settings.max_output_bytes)
    if answer.kind == b"M":
        raise ScriptError(f"jq went past its memory limit of {memory_mib} MiB")
    if answer.kind == b"E":
        message = answer.text.removeprefix("jq: ").strip()
        raise JqError(message or "the program failed")
    try:
        results = json.loads(answer.text)
    except (ValueError, RecursionError):
        raise JqError("the results nest too deeply to be written as JSON") from None
    assert isinstance(results, list)
    return results


def compile_check(program: str) -> str | None:
    """Why `program` does not compile, or None; compiled in an evaluator, never run.

    ScriptError if the evaluator fails (past the time limit, or it did not start).
    """
    try:
        refuse_module_directives(program)
    except JqError as exc:
        return str(exc)
    settings = get_settings()
    answer = _run(program, "null", settings.script_time_limit, settings.jq_memory_mib,
                  settings.max_output_bytes, compile_only=True)
    if answer.kind == b"M":
        raise ScriptError(f"jq went past its memory limit of {settings.jq_memory_mib} MiB")
    if answer.kind == b"E":
        return answer.text.removeprefix("jq: ").strip() or "the program does not compile"
    return None


def _run(
    program: str, text: str, time_limit: float, memory_mib: int, max_bytes: int,
    compile_only: bool = False,
) -> _Answer:
    evaluator = _pool.take(memory_mib)
    try:
        try:
            deadline = evaluator.send(program, text, time_limit, max_bytes, compile_only)
        except _EvaluatorDied:  # it ended while idle (killed from outside): start another
            evaluator.close()
            evaluator = _Evaluator(memory_mib)
            deadline = evaluator.send(program, text, time_limit, max_bytes, compile_only)
        answer = evaluator.receive(deadline)
    except TimeoutError:
        evaluator.kill()
        raise ScriptError(f"jq ran past its time limit of {time_limit:g}s") from None
    except _EvaluatorDied as died:
        evaluator.close()
        raise _death(died.returncode, time_limit, memory_mib) from None
    except BaseException:
        evaluator.kill()
        raise
    _pool.give_back(evaluator)
    return answer


def _milliseconds_until(deadline: float) -> int:
    return max(0, math.ceil((deadline - time.monotonic()) * 1000))


def _death(returncode: int | None, time_limit: float, memory_mib: int) -> ScriptError:
    if returncode == -signal.SIGXCPU:  # the CPU limit, should the parent's wait have slipped
        return ScriptError(f"jq ran past its time limit of {time_limit:g}s")
    if returncode == -signal.SIGABRT:  # libjq aborts when an allocation fails
        return ScriptError(f"jq went past its memory limit of {memory_mib} MiB")
    return ScriptError(f"the jq evaluator ended unexpectedly ({returncode})")
