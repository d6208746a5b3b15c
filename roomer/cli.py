"""``roomer serve`` and ``roomer bench``: a thin layer over the library."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

from . import COMPILED, __version__
from .server import Server

__all__ = ["main"]

DEFAULT_APP = "roomer.demo:setup"

# CLI flag -> Server option; None means "not given" so an app's own Server keeps its value.
SERVER_FLAGS = {
    "sync_broadcast": "--sync-broadcast",
    "max_message_size": "--max-message-size",
    "outbox_limit": "--outbox-limit",
    "slow_consumer": "--slow-consumer",
    "write_timeout": "--write-timeout",
    "root_presence": "--root-presence",
    "allow_root_broadcast": "--allow-root-broadcast",
    "max_rooms_per_connection": "--max-rooms",
    "ping_interval": "--ping-interval",
    "read_buffer_size": "--read-buffer-size",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roomer", description="Room-based WebSocket server.")
    parser.add_argument("--version", action="version", version=f"roomer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a roomer server")
    serve.add_argument(
        "app", nargs="?", default=DEFAULT_APP,
        help="module:attr — a Server, or a function taking the Server to set it up "
             f"(default: {DEFAULT_APP}, the demo lobby)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--sync-broadcast", action="store_true", default=None,
                       help="every member gets every broadcast, in one global order; "
                            "slow receivers make senders wait")
    serve.add_argument("--max-message-size", type=int, metavar="BYTES",
                       help="largest message accepted (default 1048576); larger closes 1009")
    serve.add_argument("--outbox-limit", type=int, metavar="BYTES",
                       help="bytes queued per connection before drops/waits (default 1048576)")
    serve.add_argument("--slow-consumer", choices=("drop", "disconnect"),
                       help="async mode: drop messages for a full outbox (default) or "
                            "disconnect the receiver with 1008")
    serve.add_argument("--write-timeout", type=float, metavar="SECONDS",
                       help="sync mode: disconnect a receiver over its limit this long "
                            "(default 10)")
    serve.add_argument("--root-presence", action="store_true", default=None,
                       help="send new_member/member_left in root (costly in connect storms)")
    serve.add_argument("--allow-root-broadcast", action="store_true", default=None,
                       help="let clients broadcast into root")
    serve.add_argument("--max-rooms", type=int, metavar="N", dest="max_rooms_per_connection",
                       help="rooms one connection may join (default unlimited)")
    serve.add_argument("--ping-interval", type=float, metavar="SECONDS",
                       help="ping a connection idle this long; no pong in as long closes it "
                            "(default 20)")
    serve.add_argument("--read-buffer-size", type=int, metavar="BYTES",
                       help="initial per-connection read buffer (default 1024; grows as needed)")
    serve.add_argument("--log-level", default="info",
                       choices=("debug", "info", "warning", "error"), help="default info")

    # Listed for --help only: main() hands everything after "bench" to the harness.
    sub.add_parser("bench", help="run the lobby fan-out benchmark against peers "
                                 "(roomer bench --help)")
    return parser


def _load_app(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"roomer: app must be module:attr, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"roomer: cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"roomer: {module_name!r} has no attribute {attr!r}") from None


def build_server(args: argparse.Namespace) -> Server:
    """The Server that ``roomer serve`` runs, from the app spec and the flags."""
    options = {key: getattr(args, key) for key in SERVER_FLAGS
               if getattr(args, key) is not None}
    app = _load_app(args.app)
    if isinstance(app, Server):
        if options:
            given = ", ".join(SERVER_FLAGS[key] for key in options)
            raise SystemExit(f"roomer: {args.app} is a ready Server; set {given} in its code")
        return app
    if not callable(app):
        raise SystemExit(f"roomer: {args.app} is neither a Server nor a setup function")
    server = Server(**options)
    setup: Callable[[Server], Any] = app
    result = setup(server)
    return result if isinstance(result, Server) else server


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "debug":
        # picows logs every accepted connection at INFO: far too loud for a busy server.
        logging.getLogger("picows").setLevel(logging.WARNING)
    server = build_server(args)

    def started(srv: Server) -> None:
        host, port = srv.address
        mode = "compiled" if COMPILED else "pure Python (ROOMER_NO_EXTENSIONS or no build)"
        print(f"roomer {__version__} listening on ws://{host}:{port}/ws", flush=True)
        print(f"extensions: {mode}; broadcaster: "
              f"{'sync' if srv.sync_broadcast else 'async'}", flush=True)
        if "/" in srv.routes:
            print(f"demo lobby: http://{host}:{port}/", flush=True)

    server.run(args.host, args.port, on_started=started)
    print("roomer stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from .benchmark.harness import main as bench_main

        return bench_main(argv[1:])
    return _serve(_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
