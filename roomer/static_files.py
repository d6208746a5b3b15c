"""Files served to plain GET and HEAD requests on the roomer port: the browser client
(``/roomer.js``, ``/roomer.d.ts``, shipped in the package) and, when ``static_dir`` is set,
the files of one folder.

Every file answer carries an ETag and ``Cache-Control: no-cache`` (the browser keeps the file
but asks again; an unchanged file then costs a 304 with no body) and ``Accept-Ranges:
bytes``: one byte range (``Range: bytes=a-b``, ``a-``, ``-n``) gets a 206, an unsatisfiable
one a 416, several ranges or a stale ``If-Range`` the whole file.

A folder never lets a request out of itself: the path is split on ``/`` before
percent-decoding, and a segment that decodes to a separator, a NUL or a control character,
is empty, or starts with ``.`` (``.``, ``..``, dotfiles such as ``.env``) is refused; what is
left is resolved with symlinks followed and must still be a regular file inside the folder.
Refusals are a plain 404 whose body never repeats the request.

A file is opened once per answer and streamed from that descriptor in pieces (never read
whole): its ETag and length are those of the opened file, so a file replaced (renamed
over) while being sent is sent as it was, and one truncated or rewritten in place cuts the
answer short (the client sees an incomplete body, never a mix passed off as whole).
"""

from __future__ import annotations

import hashlib
import os
import stat
from importlib import resources
from urllib.parse import unquote_to_bytes

from picows import WSUpgradeRequest

from .http_messages import UNSATISFIABLE, Body, BytesBody, byte_range

__all__ = ["CONTENT_TYPES", "FileBody", "StaticFiles", "content_type"]

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
RANGE_NOT_SATISFIABLE = b"range not satisfiable\n"

# (status, headers, body); the caller adds Content-Length, Date and Connection.
Reply = tuple[int, list[tuple[str, str]], Body | None]


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


class FileBody(Body):
    """An open regular file (all of it, or a byte range after ``limit``), read with
    ``pread`` in pieces.

    It owns the descriptor. ``read`` raises OSError when the file no longer holds what
    its opening ``fstat`` promised (truncated, or changed in place by the last piece)."""

    __slots__ = ("_at", "_fd", "_stat")

    def __init__(self, fd: int, st: os.stat_result) -> None:
        super().__init__(st.st_size)
        self._fd = fd
        self._stat = st
        self._at = 0

    def _seek(self, start: int) -> None:
        self._at = start

    def read(self, size: int) -> bytes:
        size = min(size, self.remaining)
        piece = os.pread(self._fd, size, self._at)
        if len(piece) != size:
            raise OSError(f"file shrank while being sent ({self._at + len(piece)} bytes)")
        self._at += size
        self.remaining -= size
        if not self.remaining:
            now = os.fstat(self._fd)
            if (now.st_size, now.st_mtime_ns) != (self._stat.st_size, self._stat.st_mtime_ns):
                raise OSError("file changed while being sent")
        return piece

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


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

    def reply(self, request: WSUpgradeRequest, path: bytes) -> Reply | None:
        """The answer to a GET or HEAD of ``path`` (bytes, origin-form, no query), or None
        when nothing here has that path."""
        builtin = self._builtin.get(path.decode("latin-1"))
        if builtin is not None:
            data, etag, kind = builtin
            return _file_reply(request, BytesBody(data), len(data), etag, kind)
        found = self.resolve(path)
        if found is None:
            return None
        try:
            # The final component was resolved already: a symlink there now was put in
            # after the check, and is not followed.
            fd = os.open(found, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return None
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
        return _file_reply(request, FileBody(fd, st), st.st_size, etag, content_type(found))

    def resolve(self, raw_path: bytes) -> str | None:
        """The real path of the regular file inside ``static_dir`` that a raw request path
        (bytes, no query) names, or None. ``/`` and ``dir/`` name ``index.html``."""
        root = self.root
        if root is None or not raw_path.startswith(b"/"):
            return None  # "*" included
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
        return real


def _file_reply(request: WSUpgradeRequest, body: Body, size: int, etag: str,
                kind: str) -> Reply:
    headers = [("ETag", etag), ("Cache-Control", CACHE_CONTROL)]
    if _matches(request.headers.get("If-None-Match"), etag):
        body.close()
        return 304, headers, None
    headers += [("Content-Type", kind), ("X-Content-Type-Options", "nosniff"),
                ("Accept-Ranges", "bytes")]
    wanted = None
    if request.method == b"GET":  # RFC 9110 §14.2: Range is defined for GET only
        if_range = request.headers.get("If-Range")
        # A stale If-Range (or a date: no Last-Modified is sent) asks for the whole file.
        if if_range is None or if_range == etag:
            wanted = byte_range(request.headers.get("Range"), size)
    if wanted is None:
        return 200, headers, body
    if wanted == UNSATISFIABLE:
        body.close()
        headers = [("Content-Range", f"bytes */{size}"),
                   ("Content-Type", "text/plain; charset=utf-8")]
        return 416, headers, BytesBody(RANGE_NOT_SATISFIABLE)
    start, stop = wanted
    body.limit(start, stop)
    headers.append(("Content-Range", f"bytes {start}-{stop - 1}/{size}"))
    return 206, headers, body
