"""Files served to plain GET requests on the roomer port: the browser client
(``/roomer.js``, ``/roomer.d.ts``, shipped in the package) and, when ``static_dir`` is set,
the files of one folder.

Every response carries an ETag and ``Cache-Control: no-cache`` (the browser keeps the file
but asks again; an unchanged file then costs a 304 with no body). A folder never lets a
request out of itself: the path is split on ``/`` before percent-decoding, and a segment
that decodes to a separator, a NUL or a control character, is empty, or starts with ``.``
(``.``, ``..``, dotfiles such as ``.env``) is refused; what is left is resolved with symlinks
followed and must still be a regular file inside the folder. Refusals are a plain 404 whose
body never repeats the request.
"""

from __future__ import annotations

import hashlib
import os
import stat
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import unquote_to_bytes

from picows import WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener

__all__ = ["CONTENT_TYPES", "StaticFiles", "content_type"]

#: Content types by file suffix; fixed here rather than read from the machine's
#: mime.types, so a page is served the same way everywhere (``.js`` must be JavaScript,
#: or browsers refuse to run it as a module).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".ts": "application/typescript; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".xml": "application/xml",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/x-icon",
    ".wasm": "application/wasm",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".wav": "audio/wav",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".pdf": "application/pdf",
}

#: The browser client, served from the package on every roomer port.
BUILTIN = ("/roomer.js", "/roomer.d.ts")

CACHE_CONTROL = "no-cache"
NOT_FOUND = b"not found\n"


def content_type(name: str) -> str:
    """The Content-Type for a file name (``application/octet-stream`` if unknown)."""
    return CONTENT_TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")


def _matches(if_none_match: str | None, etag: str) -> bool:
    # RFC 9110 §13.1.2: a list of entity tags or "*", compared weakly (W/ ignored).
    if not if_none_match:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def _response(status: HTTPStatus, body: bytes | None, headers: dict[str, str]) -> Any:
    response = WSUpgradeResponse.create_ok_response(body, headers)
    response.status = status
    if "Content-Type" not in headers:
        del response.headers["Content-Type"]  # picows' default, wrong on a 304
    if status is HTTPStatus.OK and not body:
        # picows writes Content-Length only for a non-empty body.
        response.headers["Content-Length"] = "0"
    return WSUpgradeResponseWithListener(response, None)


def _file_response(request: WSUpgradeRequest, body: bytes | None, etag: str,
                   kind: str) -> Any:
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if _matches(request.headers.get("If-None-Match"), etag):
        return _response(HTTPStatus.NOT_MODIFIED, None, headers)
    headers["Content-Type"] = kind
    headers["X-Content-Type-Options"] = "nosniff"
    return _response(HTTPStatus.OK, body, headers)


def not_found() -> Any:
    """A 404 that says nothing about the request."""
    return WSUpgradeResponseWithListener(
        WSUpgradeResponse.create_error_response(
            HTTPStatus.NOT_FOUND, NOT_FOUND, {"Content-Type": "text/plain; charset=utf-8"}),
        None)


class StaticFiles:
    """The files of one roomer port: the built-in client, then ``static_dir`` if set."""

    def __init__(self, static_dir: str | None = None) -> None:
        self._builtin: dict[str, tuple[bytes, str, str]] = {}
        package = resources.files("roomer")
        for path in BUILTIN:
            body = package.joinpath("static", path[1:]).read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            self._builtin[path] = (body, etag, content_type(path))
        self.root = os.path.realpath(static_dir) if static_dir is not None else None

    def respond(self, request: WSUpgradeRequest) -> Any:
        """The response to a plain GET, or a 404 when nothing here has that path."""
        raw = request.path.split(b"?", 1)[0].split(b"#", 1)[0]
        builtin = self._builtin.get(raw.decode("latin-1"))
        if builtin is not None:
            body, etag, kind = builtin
            return _file_response(request, body, etag, kind)
        if self.root is None:
            return not_found()
        found = self.resolve(raw)
        if found is None:
            return not_found()
        real, st = found
        etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
        if _matches(request.headers.get("If-None-Match"), etag):
            return _file_response(request, None, etag, "")
        try:
            with open(real, "rb") as f:
                body = f.read()
        except OSError:
            return not_found()
        return _file_response(request, body, etag, content_type(real))

    def resolve(self, raw_path: bytes) -> tuple[str, os.stat_result] | None:
        """The real path and stat of the regular file inside ``static_dir`` that a raw
        request path (bytes, no query) names, or None. ``/`` and ``dir/`` name
        ``index.html``."""
        root = self.root
        if root is None or not raw_path.startswith(b"/"):
            return None  # absolute-form targets ("http://host/x") and "*" included
        segments = raw_path[1:].split(b"/")
        if segments[-1] == b"":
            segments[-1] = b"index.html"
        parts: list[str] = []
        for segment in segments:
            try:
                name = unquote_to_bytes(segment).decode("utf-8")
            except UnicodeDecodeError:
                return None
            if not name or name.startswith(".") or any(
                    c in "/\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in name):
                return None
            parts.append(name)
        real = os.path.realpath(os.path.join(root, *parts))
        if os.path.commonpath([real, root]) != root or real == root:
            return None  # a symlink that leads out of the folder
        try:
            st = os.stat(real)
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return real, st
