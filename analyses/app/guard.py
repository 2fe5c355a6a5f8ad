"""Refuse cross-site requests that would change state or start work.

A web page on another site can make the browser send a simple POST to 127.0.0.1 (a form, or
fetch in no-cors mode) without any preflight; such a request would, for example, revert the
edits of a session. Browsers mark it: `Sec-Fetch-Site` is "cross-site" / "same-site", and `Origin`
names the other site. Every request that is not GET / HEAD / OPTIONS and carries either mark of
another origin is answered 403 before it reaches a route. Clients that are not browsers (curl,
Python) send neither header and are not affected.
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlsplit

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
SAME_SITE_FETCH = {"same-origin", "none"}


def cross_origin(method: str, headers: dict[str, str]) -> str:
    """Why a request comes from another origin ("" when it does not, or when it only reads)."""
    if method.upper() in SAFE_METHODS:
        return ""
    fetch_site = headers.get("sec-fetch-site", "").lower()
    if fetch_site and fetch_site not in SAME_SITE_FETCH:
        return f"Sec-Fetch-Site is {fetch_site!r}"
    origin = headers.get("origin")
    if origin is not None and origin != "null":
        if urlsplit(origin).netloc.lower() != headers.get("host", "").lower():
            return f"Origin {origin!r} is not this server ({headers.get('host', '')!r})"
    elif origin == "null":
        return "Origin is 'null' (a sandboxed or file page)"
    return ""


class SameOriginOnly:
    """ASGI middleware: 403 for state-changing requests from another origin (module docstring)."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> Any:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            why = cross_origin(scope.get("method", "GET"), headers)
            if why:
                from starlette.responses import JSONResponse

                response = JSONResponse({"error": f"cross-origin request refused: {why}"}, status_code=403)
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


__all__ = ["SameOriginOnly", "cross_origin"]
