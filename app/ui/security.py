"""Who may use the workflow view: HTTP basic auth, and CSRF protection of every POST.

Basic auth works as Flower's `--basic-auth`: one `user:password` (BATON_UI_AUTH), asked of
every request, static files and the live stream included. The view refuses to start
without it unless it listens on 127.0.0.1 and `--no-auth` was given (app.cli.ui).

CSRF: a signed double-submit token. The first page sets a cookie `baton_csrf` holding a
random nonce and its HMAC under the process's secret (BATON_UI_SECRET, else random per
start); each page carries the same token in its forms. A POST passes only when the form
field `csrf` (or header X-CSRF-Token) equals the cookie and the signature holds, and when
its Origin (or Referer) is this server's: a browser on another site can neither read the
token nor send a request that names this origin. SameSite=Strict keeps the cookie off
requests from other sites too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse

CSRF_COOKIE: Final = "baton_csrf"
CSRF_FIELD: Final = "csrf"
CSRF_HEADER: Final = "x-csrf-token"
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AuthConfigError(ValueError):
    """Raised for a BATON_UI_AUTH that is not `user:password`."""


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str

    @classmethod
    def parse(cls, text: str) -> Credentials:
        user, sep, password = text.partition(":")
        if not sep or not user or not password:
            raise AuthConfigError("BATON_UI_AUTH: expected user:password, both non-empty")
        return cls(user, password)

    def admits(self, header: str | None) -> bool:
        """Whether an Authorization header carries these credentials (constant time)."""
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            given = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, password = given.partition(":")
        # both compared whatever the first gives, so timing tells nothing
        same_user = hmac.compare_digest(user.encode(), self.user.encode())
        same_password = hmac.compare_digest(password.encode(), self.password.encode())
        return same_user and same_password


class BasicAuth:
    """ASGI middleware: 401 with a Basic challenge unless the request carries the credentials."""

    def __init__(self, app: ASGIApp, credentials: Credentials | None) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.credentials is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        header = headers.get(b"authorization", b"").decode("latin-1") or None
        if not self.credentials.admits(header):
            response = PlainTextResponse("authentication required", status_code=401,
                                         headers={"WWW-Authenticate": 'Basic realm="Baton"'})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class CsrfTokens:
    """Issues and checks the signed double-submit tokens of one process."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._key = secret or secrets.token_bytes(32)

    def issue(self) -> str:
        nonce = secrets.token_urlsafe(24)
        return f"{nonce}.{self._sign(nonce)}"

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        nonce, _, signature = token.partition(".")
        return bool(nonce) and hmac.compare_digest(signature, self._sign(nonce))

    def token_for(self, request: Request) -> tuple[str, bool]:
        """The request's token, and whether it is new (to be set as the cookie)."""
        cookie = request.cookies.get(CSRF_COOKIE)
        if self.valid(cookie):
            assert cookie is not None
            return cookie, False
        return self.issue(), True

    def refusal(self, request: Request, submitted: str | None) -> str | None:
        """Why a POST is refused (None: it passes)."""
        if request.method in _SAFE_METHODS:
            return None
        if not same_origin(request):
            return "cross-origin request refused"
        cookie = request.cookies.get(CSRF_COOKIE)
        if not self.valid(cookie):
            return "missing or invalid CSRF cookie (reload the page)"
        given = submitted or request.headers.get(CSRF_HEADER)
        if not given or not hmac.compare_digest(given, cookie or ""):
            return "missing or wrong CSRF token (reload the page)"
        return None

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()


def same_origin(request: Request) -> bool:
    """Whether a request comes from a page of this server, by what the browser says.

    A browser sends Origin with every POST from a page (and Sec-Fetch-Site); a request
    that names neither is from a client that is not a browser page, which a CSRF attack
    cannot be, and the token still has to match.
    """
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return False
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return True
    if origin == "null":
        return False
    parts = urlsplit(origin)
    # the host only: behind a TLS proxy the page is https while this server sees http
    return parts.netloc == request.headers.get("host", "")


def set_csrf_cookie(response: Any, token: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/")
