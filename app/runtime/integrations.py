"""HTTP and EVENT: steps that talk to other systems, on the I/O queue (settings.io_queue).

HTTP calls a URL through httpx; only a 2xx answer completes the step. Each call is
bounded: connect and read timeouts, one overall deadline (name lookup, connects,
redirects, headers and body together), a response size cap, a few redirects followed
here so that every hop passes the host policy (app.runtime.http_policy), HTTP methods and
http/https only. The host is looked up once per hop and the request goes to the address
that was checked, with the name in the Host header and, for https, in SNI and the
certificate check.

EVENT publishes the step's input to a Redis stream named from its sink, so other systems
(choreography) can consume it with XREAD or a consumer group; the stream is capped in
length and the input by the step input limits.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import httpx

from app.compiler.canvas import CONTROL_TASKS
from app.config import Settings, get_settings
from app.errors import TerminalError
from app.policy import StepPolicy
from app.runtime.async_complete import completed_from_outside
from app.runtime.http_policy import Address, HostPolicy, HttpRefused, policy_for
from app.runtime.operators import OperatorError
from app.runtime.state import get_store
from app.runtime.step import StepContext, step_task
from app.runtime.system_retries import retry_policy

METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
SCHEMES: Final = ("http", "https")
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_CREDENTIALS: Final = ("authorization", "cookie", "proxy-authorization")


class HttpStatusError(OperatorError):
    """An HTTP step got an answer outside 2xx."""


class HttpTimeout(OperatorError):
    """An HTTP step's request did not end within its deadline (retried as the task says)."""


class HttpResponseTooLarge(TerminalError):
    """An HTTP step's answer is larger than http_max_response_bytes."""


class HttpTooManyRedirects(TerminalError):
    """An HTTP step was redirected more often than http_max_redirects."""


@dataclass(frozen=True)
class HttpLimits:
    """What one HTTP step may cost: the settings, lowered by the task's own timeouts."""

    connect: float
    read: float
    deadline: float
    max_bytes: int
    max_redirects: int

    @classmethod
    def of(cls, settings: Settings, request: dict[str, Any]) -> HttpLimits:
        return cls(
            connect=_lowered(settings.http_connect_timeout, request.get("connectionTimeOut")),
            read=_lowered(settings.http_read_timeout, request.get("readTimeOut")),
            deadline=settings.http_deadline,
            max_bytes=settings.http_max_response_bytes,
            max_redirects=settings.http_max_redirects,
        )


@dataclass(frozen=True)
class _Redirect:
    status: int
    location: str


@dataclass(frozen=True)
class _Answer:
    status: int
    reason: str
    headers: dict[str, str]
    body: Any


def _http(context: StepContext) -> dict[str, Any]:
    request = (context.input or {}).get("http_request")
    if not isinstance(request, dict) or not request.get("uri"):
        raise OperatorError("HTTP needs inputParameters.http_request with a uri")
    method = str(request.get("method") or "GET").upper()
    uri = str(request["uri"])
    if method not in METHODS:
        raise HttpRefused(f"http_request.method: '{method}' is not an HTTP method Baton "
                          f"sends (one of {', '.join(METHODS)})")
    url = _url(uri)
    given = request.get("headers") or {}
    if not isinstance(given, dict):
        raise OperatorError("http_request.headers: must be an object of header names to values")
    headers = {str(k): str(v) for k, v in given.items()
               if str(k).lower() != "host"}  # the Host header is the URL's, hop by hop
    if request.get("accept"):
        headers.setdefault("Accept", str(request["accept"]))
    body = request.get("body")
    content: bytes | None = None
    if body is not None:
        headers.setdefault("Content-Type", str(request.get("contentType") or
                                               "application/json"))
        content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    settings = get_settings()
    policy = policy_for(settings.http_allow, settings.http_deny, settings.redis_url)
    limits = HttpLimits.of(settings, request)
    try:
        answer = asyncio.run(_call(method, url, headers, content, limits, policy))
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
        raise OperatorError(f"{method} {uri}: {type(exc).__name__}: {exc}") from None
    except (HttpRefused, HttpResponseTooLarge, HttpTooManyRedirects) as exc:
        raise type(exc)(f"{method} {uri}: {exc}") from None
    response = {"statusCode": answer.status, "reasonPhrase": answer.reason,
                "headers": answer.headers, "body": answer.body}
    if not 200 <= answer.status < 300:
        raise HttpStatusError(f"{method} {uri} answered {answer.status} {answer.reason}")
    return {"response": response}


def _url(uri: str) -> httpx.URL:
    try:
        url = httpx.URL(uri)
    except httpx.InvalidURL as exc:
        raise HttpRefused(f"http_request.uri: '{uri}' is not a URL ({exc})") from None
    try:
        _check_scheme(url)
    except HttpRefused as exc:
        raise HttpRefused(f"http_request.uri: {exc}") from None
    return url


def _check_scheme(url: httpx.URL) -> None:
    if url.scheme not in SCHEMES:
        raise HttpRefused(f"'{url}': only http and https URLs are called, not "
                          f"'{url.scheme or 'no scheme'}'")
    if not url.raw_host:
        raise HttpRefused(f"'{url}' names no host")
    if url.port is not None and not 0 < url.port < 65536:
        raise HttpRefused(f"'{url}' names no valid port")


def _lowered(setting: float, milliseconds: Any) -> float:
    """A task's own timeout (Conductor's milliseconds) may lower a setting, never raise it."""
    if isinstance(milliseconds, int | float) and not isinstance(milliseconds, bool) \
            and milliseconds > 0:
        return min(setting, milliseconds / 1000)
    return setting


async def _call(method: str, url: httpx.URL, headers: dict[str, str], content: bytes | None,
                limits: HttpLimits, policy: HostPolicy) -> _Answer:
    try:
        async with asyncio.timeout(limits.deadline):
            return await _follow(method, url, headers, content, limits, policy)
    except TimeoutError:
        raise HttpTimeout(f"{method} {url}: no complete answer within the "
                          f"{limits.deadline:g} s deadline (BATON_HTTP_DEADLINE)") from None


async def _follow(method: str, url: httpx.URL, headers: dict[str, str],
                  content: bytes | None, limits: HttpLimits, policy: HostPolicy) -> _Answer:
    """Send, following redirects one by one, each target checked before it is called."""
    timeout = httpx.Timeout(connect=limits.connect, read=limits.read, write=limits.read,
                            pool=limits.connect)
    # trust_env off: no proxy variables and no .netrc credentials sent to whatever host a
    # definition names; the CA bundle still follows SSL_CERT_FILE / SSL_CERT_DIR
    transport = httpx.AsyncHTTPTransport(verify=_tls_context(), retries=0)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False,
                                 transport=transport) as client:
        hops = 0
        while True:
            sent = await _send(client, method, url, headers, content, limits, policy,
                               redirected=hops > 0)
            if isinstance(sent, _Answer):
                return sent
            if hops == limits.max_redirects:
                raise HttpTooManyRedirects(
                    f"more than {limits.max_redirects} redirects, the last to {url} "
                    "(BATON_HTTP_MAX_REDIRECTS)")
            hops += 1
            try:
                target = url.join(sent.location)
                _check_scheme(target)
            except httpx.InvalidURL as exc:
                raise HttpRefused(f"redirected to '{sent.location}', not a URL ({exc})") \
                    from None
            except HttpRefused as exc:
                raise HttpRefused(f"redirected by {url}: {exc}") from None
            if _origin(target) != _origin(url):
                headers = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIALS}
            if _turns_into_get(method, sent.status):
                method, content = "GET", None
                headers = {k: v for k, v in headers.items()
                           if k.lower() not in ("content-type", "content-length")}
            url = target


def _origin(url: httpx.URL) -> tuple[str, bytes, int]:
    return url.scheme, url.raw_host, url.port or _DEFAULT_PORTS[url.scheme]


def _turns_into_get(method: str, status: int) -> bool:
    """Browsers' rule: 303 turns any method but HEAD into GET, 301/302 turn POST into GET."""
    return (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST")


async def _send(client: httpx.AsyncClient, method: str, url: httpx.URL,
                headers: dict[str, str], content: bytes | None, limits: HttpLimits,
                policy: HostPolicy, redirected: bool) -> _Answer | _Redirect:
    """One request to a checked address of the URL's host: an answer or where it points."""
    host = url.raw_host.decode("ascii")
    port = url.port or _DEFAULT_PORTS[url.scheme]
    addresses = await _resolve(host, port)
    try:
        policy.check(host, port, addresses)
    except HttpRefused as exc:
        if not redirected:
            raise
        raise HttpRefused(f"redirected to {url}: {exc}") from None
    sent_headers = {**headers, "Host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    for position, address in enumerate(addresses):
        target = url.copy_with(host=str(address))
        try:
            async with client.stream(method, target, headers=sent_headers, content=content,
                                     extensions=extensions) as response:
                location = response.headers.get("location")
                if response.status_code in REDIRECTS and location:
                    return _Redirect(response.status_code, location)
                data = await _read(response, method, limits.max_bytes)
                return _Answer(response.status_code, response.reason_phrase,
                               dict(response.headers), _body(response, data))
        except (httpx.ConnectError, httpx.ConnectTimeout):
            if position == len(addresses) - 1:
                raise
    raise AssertionError("unreachable: a host resolves to at least one address")


async def _read(response: httpx.Response, method: str, limit: int) -> bytes:
    """The body, counted as it streams in (decoded): past `limit` bytes the step fails."""
    declared = response.headers.get("content-length", "")
    if method != "HEAD" and declared.isdigit() and int(declared) > limit:
        raise HttpResponseTooLarge(f"the answer has {int(declared)} bytes, more than the "
                                   f"{limit} bytes allowed (BATON_HTTP_MAX_RESPONSE_BYTES)")
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise HttpResponseTooLarge(
                f"the answer has more than the {limit} bytes allowed ({size} read so far; "
                "BATON_HTTP_MAX_RESPONSE_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


def _body(response: httpx.Response, data: bytes) -> Any:
    text = data.decode(response.encoding or "utf-8", errors="replace")
    if "json" in response.headers.get("content-type", ""):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            pass
    return text


@lru_cache(maxsize=4)
def _tls_context_for(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    return httpx.create_ssl_context(trust_env=True)


def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per CA bundle: loading the bundle costs tens of ms."""
    return _tls_context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


_resolver: tuple[int, ThreadPoolExecutor] | None = None


def _lookups() -> ThreadPoolExecutor:
    """This process's name-lookup threads (not the event loop's default executor, whose
    shutdown would wait for a lookup the deadline has given up on)."""
    global _resolver
    if _resolver is None or _resolver[0] != os.getpid():  # threads do not survive a fork
        _resolver = (os.getpid(), ThreadPoolExecutor(4, thread_name_prefix="baton-dns"))
    return _resolver[1]


async def _resolve(host: str, port: int) -> list[Address]:
    """Every address of `host`, in the resolver's order, each once."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        found = await loop.run_in_executor(_lookups(), lambda: socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM))
    except OSError as exc:
        raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]
    if not addresses:
        raise httpx.ConnectError(f"{host} has no address")
    return list(dict.fromkeys(addresses))


def _publish(context: StepContext) -> dict[str, Any]:
    """Publish the step's input to the Redis stream of its sink."""
    sink = context.spec.task.sink
    if not sink:
        raise OperatorError("EVENT needs a sink")
    fields = {"workflowId": context.run_id, "taskReferenceName": context.record_ref,
              "workflowType": context.plan.definition.name,
              "payload": json.dumps(context.input)}
    stream, event_id = get_store().publish_event(sink, fields)
    return {"event_produced": stream, "eventId": event_id, "sink": sink}


# retried as the task's taskDefinition says (an outage is often brief); a refusal, a
# too large answer or a redirect loop is a TerminalError and fails the step at once
http = step_task(CONTROL_TASKS["HTTP"], completed_from_outside(_http), policy=StepPolicy(),
                 doc="Call a URL; only a 2xx answer completes the step.")
event = step_task(CONTROL_TASKS["EVENT"], completed_from_outside(_publish),
                  policy=retry_policy("EVENT"))
