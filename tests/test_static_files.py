"""Files on the roomer port: the browser client (/roomer.js, /roomer.d.ts) with caching
headers, and a user's static folder that no request path can leave."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from rawclient import TIMEOUT, connect, eventually
from rawhttp import exchange, get, open_socket, parse, read_to_end

import roomer
from roomer.cli import _parser, build_server

STATIC = Path(roomer.__file__).parent / "static"


async def raw_get(server: roomer.Server, target: bytes,
                  headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET with the request target sent byte for byte (no client-side normalising)."""
    host, port = server.address
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
    try:
        head = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        for key, value in (headers or {}).items():
            head += f"{key}: {value}\r\n".encode()
        writer.write(head + b"\r\n")
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    header_block, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = header_block.decode("latin-1").split("\r\n")
    parsed = {}
    for line in lines:
        key, _, value = line.partition(":")
        parsed[key.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, body


@pytest.mark.parametrize(("path", "kind"), [
    ("/roomer.js", "text/javascript; charset=utf-8"),
    ("/roomer.d.ts", "application/typescript; charset=utf-8"),
])
async def test_client_files_are_served_with_caching_headers(make_server, path, kind) -> None:
    server = await make_server()
    status, headers, body = await raw_get(server, path.encode())
    assert status == 200
    assert body == (STATIC / path[1:]).read_bytes()
    assert headers["content-type"] == kind
    assert headers["content-length"] == str(len(body))
    assert headers["cache-control"] == "no-cache"
    assert headers["x-content-type-options"] == "nosniff"
    etag = headers["etag"]
    assert etag == '"' + hashlib.sha256(body).hexdigest()[:20] + '"'

    for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        status, again, body = await raw_get(server, path.encode(), {"If-None-Match": sent})
        assert (status, body) == (304, b""), sent
        assert again["etag"] == etag and again["cache-control"] == "no-cache"
        assert "content-type" not in again
    status, _, body = await raw_get(server, path.encode() + b"?v=2",
                                    {"If-None-Match": '"stale"'})
    assert status == 200 and body == (STATIC / path[1:]).read_bytes()


async def test_client_file_is_an_es_module_exporting_roomer(make_server) -> None:
    server = await make_server()
    _, _, body = await raw_get(server, b"/roomer.js")
    source = body.decode()
    assert "export default roomer;" in source
    assert "export function roomer(" in source and "export class RoomerError" in source


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A static folder with a page, a subfolder, a dotfile, and links in and out of it;
    beside it, a secret that must never be served."""
    (tmp_path / "secret.txt").write_text("top secret")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "also-secret.txt").write_text("also secret")
    public = tmp_path / "public"
    public.mkdir()
    (public / "index.html").write_text("<h1>home</h1>")
    (public / "app.js").write_text("export const x = 1;")
    (public / "style.css").write_text("body{}")
    (public / "data.bin").write_bytes(b"\x00\x01")
    (public / "empty.txt").write_bytes(b"")
    (public / "snow ☃.txt").write_text("unicode name")
    (public / ".env").write_text("TOKEN=secret")
    (public / "sub").mkdir()
    (public / "sub" / "index.html").write_text("<h1>sub</h1>")
    (public / "sub" / "page.html").write_text("<h1>page</h1>")
    os.symlink(tmp_path / "secret.txt", public / "leak.txt")
    os.symlink(tmp_path / "outside", public / "leakdir")
    os.symlink(public / "app.js", public / "alias.js")
    return public


@pytest.mark.parametrize(("target", "body", "kind"), [
    (b"/", b"<h1>home</h1>", "text/html; charset=utf-8"),
    (b"/index.html", b"<h1>home</h1>", "text/html; charset=utf-8"),
    (b"/app.js", b"export const x = 1;", "text/javascript; charset=utf-8"),
    (b"/style.css?cache=1", b"body{}", "text/css; charset=utf-8"),
    (b"/data.bin", b"\x00\x01", "application/octet-stream"),
    (b"/empty.txt", b"", "text/plain; charset=utf-8"),
    (b"/snow%20%E2%98%83.txt", b"unicode name", "text/plain; charset=utf-8"),
    (b"/sub/", b"<h1>sub</h1>", "text/html; charset=utf-8"),
    (b"/sub/page.html", b"<h1>page</h1>", "text/html; charset=utf-8"),
    (b"/alias.js", b"export const x = 1;", "text/javascript; charset=utf-8"),
])
async def test_static_folder_serves_its_files(make_server, site, target, body, kind) -> None:
    server = await make_server(static_dir=str(site))
    status, headers, got = await raw_get(server, target)
    assert (status, got) == (200, body)
    assert headers["content-type"] == kind
    assert headers["content-length"] == str(len(body))
    etag = headers["etag"]
    status, _, got = await raw_get(server, target, {"If-None-Match": etag})
    assert (status, got) == (304, b"")


async def test_changed_file_gets_a_new_etag(make_server, site) -> None:
    server = await make_server(static_dir=site)
    _, headers, _ = await raw_get(server, b"/app.js")
    (site / "app.js").write_text("export const x = 22;")
    status, again, body = await raw_get(server, b"/app.js", {"If-None-Match": headers["etag"]})
    assert (status, body) == (200, b"export const x = 22;")
    assert again["etag"] != headers["etag"]


ESCAPES = [
    b"/../secret.txt",
    b"/sub/../../secret.txt",
    b"/%2e%2e/secret.txt",
    b"/%2E%2E/secret.txt",
    b"/.%2e/secret.txt",
    b"/%2e%2e%2fsecret.txt",
    b"/sub%2f..%2f..%2fsecret.txt",
    b"/..%2Fsecret.txt",
    b"/%252e%252e/secret.txt",  # double-encoded: a literal "%2e%2e" file, not a parent
    b"/..\\secret.txt",
    b"/sub\\..\\..\\secret.txt",
    b"/..%5csecret.txt",
    b"/%5c..%5csecret.txt",
    b"/app.js%00.html",
    b"/%00",
    b"/sub/%00/../index.html",
    b"//etc/passwd",
    b"/%2fetc%2fpasswd",
    b"/%2Fetc/passwd",
    b"/etc/passwd",
    b"http://x/secret.txt",
    b"/leak.txt",
    b"/leakdir/also-secret.txt",
    b"/.env",
    b"/%2eenv",
    b"/sub/./page.html",
    b"/sub",
    b"/leakdir/",
    b"/missing.html",
    b"/%ff%fe.txt",
    b"/a%0d%0aX-Injected:%20yes",
]


@pytest.mark.parametrize("target", ESCAPES, ids=[t.decode("latin-1") for t in ESCAPES])
async def test_no_path_leaves_the_folder(make_server, site, target) -> None:
    server = await make_server(static_dir=str(site))
    status, headers, body = await raw_get(server, target)
    assert status == 404
    assert body == b"not found\n"  # nothing of the request is echoed
    assert "x-injected" not in headers
    assert b"secret" not in body


async def test_static_folder_keeps_routes_and_client_first(make_server, site) -> None:
    (site / "roomer.js").write_text("not the client")
    server = await make_server(static_dir=site, routes={"/": ("text/plain", b"route")})
    assert (await raw_get(server, b"/"))[2] == b"route"
    assert (await raw_get(server, b"/roomer.js"))[2] == (STATIC / "roomer.js").read_bytes()
    assert (await raw_get(server, b"/healthz"))[0] == 200
    a = await connect(server)  # upgrades still work on any path
    assert server.members("root") == [a.id]


async def test_without_static_folder_unknown_paths_are_404(make_server) -> None:
    server = await make_server()
    status, _, body = await raw_get(server, b"/index.html")
    assert (status, body) == (404, b"not found\n")


def test_static_dir_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a folder"):
        roomer.Server(static_dir=str(tmp_path / "missing"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a folder"):
        roomer.Server(static_dir=tmp_path / "file")
    with pytest.raises(TypeError, match="static_dir"):
        roomer.Server(static_dir=42)
    server = roomer.Server(static_dir=os.path.relpath(tmp_path))
    assert server.config.static_dir == str(tmp_path)


def test_static_flag_reaches_the_server(tmp_path: Path) -> None:
    server = build_server(_parser().parse_args(["serve", "--static", str(tmp_path)]))
    assert server.config.static_dir == str(tmp_path)
    assert "/" in server.routes  # the demo app still runs beside the folder


# byte ranges -------------------------------------------------------------------------------

DATA = bytes(range(100))


@pytest.fixture
async def ranged(make_server, tmp_path: Path) -> roomer.Server:
    (tmp_path / "data.bin").write_bytes(DATA)
    (tmp_path / "empty.bin").write_bytes(b"")
    return await make_server(static_dir=tmp_path, routes={"/route": ("text/plain", DATA)})


@pytest.mark.parametrize(("spec", "start", "stop"), [
    ("bytes=0-9", 0, 10),
    ("bytes=90-", 90, 100),
    ("bytes=-5", 95, 100),
    ("bytes=95-200", 95, 100),
    ("bytes=-500", 0, 100),
    ("BYTES = 3-3", 3, 4),
])
async def test_one_range_gets_206(ranged, spec: str, start: int, stop: int) -> None:
    reply = await exchange(ranged.address[1], get("/data.bin", Range=spec))
    assert reply.status == 206
    assert reply.body == DATA[start:stop]
    assert reply.headers["content-range"] == f"bytes {start}-{stop - 1}/100"
    assert reply.headers["content-length"] == str(stop - start)
    assert reply.headers["accept-ranges"] == "bytes"


@pytest.mark.parametrize("spec", ["bytes=100-", "bytes=500-600", "bytes=-0"])
async def test_an_unsatisfiable_range_gets_416(ranged, spec: str) -> None:
    reply = await exchange(ranged.address[1], get("/data.bin", Range=spec))
    assert (reply.status, reply.body) == (416, b"range not satisfiable\n")
    assert reply.headers["content-range"] == "bytes */100"


@pytest.mark.parametrize("spec", ["bytes=0-1,5-6", "bytes=5-1", "items=0-1", "bytes=abc",
                                  "bytes=-", "bytes=1-2-3", "bytes=\u0661-\u0662", "<script>"])
async def test_ranges_roomer_does_not_serve_get_the_whole_file(ranged, spec: str) -> None:
    reply = await exchange(ranged.address[1], get("/data.bin", Range=spec))
    assert (reply.status, reply.body) == (200, DATA)
    assert b"script" not in reply.raw


async def test_if_range_and_other_companions_of_range(ranged) -> None:
    port = ranged.address[1]
    etag = (await exchange(port, get("/data.bin"))).headers["etag"]
    reply = await exchange(port, get("/data.bin", Range="bytes=0-1", If_Range=etag))
    assert (reply.status, reply.body) == (206, DATA[:2])
    for stale in ('"other"', f"W/{etag}", "Sun, 06 Nov 1994 08:49:37 GMT"):
        reply = await exchange(port, get("/data.bin", Range="bytes=0-1", If_Range=stale))
        assert (reply.status, reply.body) == (200, DATA), stale
    reply = await exchange(port, get("/data.bin", Range="bytes=0-1", If_None_Match=etag))
    assert (reply.status, reply.body) == (304, b"")
    reply = await exchange(port, get("/data.bin", "HEAD", Range="bytes=0-1"))
    assert (reply.status, reply.body, reply.headers["content-length"]) == (200, b"", "100")
    reply = await exchange(port, get("/empty.bin", Range="bytes=0-"))
    assert (reply.status, reply.body) == (200, b"")
    reply = await exchange(port, get("/route", Range="bytes=0-1"))  # routes: whole
    assert (reply.status, reply.body) == (200, DATA)
    client = (STATIC / "roomer.js").read_bytes()
    reply = await exchange(port, get("/roomer.js", Range="bytes=-10"))
    assert (reply.status, reply.body) == (206, client[-10:])


# a file that changes while it is sent ---------------------------------------------------------

SENT = 20 << 20


async def _slow_download(server: roomer.Server, name: str, change) -> tuple[dict[str, str],
                                                                             bytes]:
    """GET a file with a small receive buffer; ``change()`` after the first MiB arrived."""
    sock = await open_socket(server.address[1], rcvbuf=4096)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, get("/" + name))
        got = bytearray()
        while len(got) < (1 << 20):
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), TIMEOUT)
            assert chunk
            got += chunk
        change()
        got += await read_to_end(sock)
    finally:
        sock.close()
    reply = parse(bytes(got))
    return reply.headers, reply.body


async def test_a_file_removed_or_replaced_while_sent_is_sent_as_it_was(make_server,
                                                                        tmp_path: Path) -> None:
    data = os.urandom(SENT)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    server = await make_server(static_dir=tmp_path)

    def replace() -> None:
        path.unlink()
        path.write_bytes(b"new")

    headers, body = await _slow_download(server, "big.bin", replace)
    assert headers["content-length"] == str(SENT)
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert (await raw_get(server, b"/big.bin"))[2] == b"new"


@pytest.mark.parametrize("change", ["truncated", "rewritten in place"])
async def test_a_file_changed_in_place_while_sent_cuts_the_answer(make_server, tmp_path: Path,
                                                                  change: str,
                                                                  caplog) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(SENT))
    server = await make_server(static_dir=tmp_path)

    def alter() -> None:
        if change == "truncated":
            os.truncate(path, 1000)
        else:
            with open(path, "r+b") as f:  # same size, new bytes in the middle
                f.seek(SENT // 2)
                f.write(b"\x00" * 4096)

    headers, body = await _slow_download(server, "big.bin", alter)
    assert headers["content-length"] == str(SENT)
    assert len(body) < SENT  # never passed off as the whole file
    await eventually(lambda: server.counters["http_open"] == 0)
    assert "plain HTTP answer cut short" in caplog.text


async def test_head_of_an_escape_is_404_too(make_server, site) -> None:
    server = await make_server(static_dir=site)
    reply = await exchange(server.address[1], get("/../secret.txt", "HEAD"))
    assert (reply.status, reply.body) == (404, b"")
    reply = await exchange(server.address[1], get("/%2e%2e/secret.txt", Range="bytes=0-"))
    assert (reply.status, reply.body) == (404, b"not found\n")
