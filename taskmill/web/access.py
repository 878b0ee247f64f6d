"""Who may use the dashboard: the bind rule and the token gate.

The dashboard can cancel tasks and pause the scheduler, so it is served to this machine only
unless a token guards it: ``check_bind`` refuses any other address without one. ``TokenGate``
checks every request (pages, the JSON API and the event stream alike).

With a token, a request shows it as ``Authorization: Bearer <token>``, as the ``token`` query
parameter (opening ``/?token=...`` also sets a cookie, so the page's own requests carry it), or
as that cookie. Without a token, the ``Host`` header must name the loopback interface: a page
of another site whose name was made to resolve to 127.0.0.1 (DNS rebinding) cannot read it.

Every action is a POST that must carry the ``X-Taskmill`` header: a form or an image on
another site can send a POST, but not with a header of its own, so no other page can act
through a browser that has the cookie or sits on this machine.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ACTION_HEADER", "COOKIE", "TokenGate", "check_bind", "is_loopback"]

COOKIE = "taskmill_token"
ACTION_HEADER = "x-taskmill"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]+")
"""What a token may hold: it travels in a URL, a header and a cookie unquoted."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine's loopback interface."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """``ValueError`` when binding ``host`` needs a token and none is given."""
    if token is not None and not TOKEN_CHARS.fullmatch(token):
        raise ValueError(
            "a dashboard token is letters, digits and . _ ~ - (e.g. python3 -c "
            "'import secrets; print(secrets.token_urlsafe())')"
        )
    if token is None and not is_loopback(host):
        raise ValueError(
            f"the dashboard serves {host!r} only with a token (--token or TASKMILL_WEB_TOKEN); "
            "without one it binds to 127.0.0.1"
        )


def _host_name(headers: Headers) -> str:
    host = headers.get("host", "")
    if host.startswith("["):  # [::1]:8765
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class TokenGate:
    """ASGI middleware: lets a request through only if it may use the dashboard (see the module
    docstring); answers 401, 403 or 421 otherwise."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = None if token is None else token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if self.token is not None and scope["path"] == "/" and self._from_query(scope):
            await self.app(scope, receive, self._setting_cookie(send))
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: Headers) -> PlainTextResponse | None:
        if self.token is None:
            if _host_name(headers).lower() not in LOOPBACK_NAMES:
                return PlainTextResponse("this dashboard answers to localhost only\n", 421)
        elif not self._shown(scope, headers):
            return PlainTextResponse(
                "a token is required: open /?token=<token>, or send Authorization: Bearer\n",
                401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if scope["method"] == "POST" and ACTION_HEADER not in headers:
            return PlainTextResponse(f"an action needs the {ACTION_HEADER} header\n", 403)
        return None

    def _matches(self, shown: str | None) -> bool:
        assert self.token is not None
        return shown is not None and hmac.compare_digest(shown.encode(), self.token)

    def _from_query(self, scope: Scope) -> bool:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return any(self._matches(value) for value in query.get("token", []))

    def _shown(self, scope: Scope, headers: Headers) -> bool:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and self._matches(auth[7:].strip()):
            return True
        cookie = SimpleCookie(headers.get("cookie", ""))
        if COOKIE in cookie and self._matches(cookie[COOKIE].value):
            return True
        return self._from_query(scope)

    def _setting_cookie(self, send: Send) -> Send:
        assert self.token is not None
        value = f"{COOKIE}={self.token.decode()}; Path=/; HttpOnly; SameSite=Strict"

        async def with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"set-cookie", value.encode("latin-1"))]
                message = {**message, "headers": headers}
            await send(message)

        return with_cookie
