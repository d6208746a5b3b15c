"""``roomer serve`` and ``roomer bench``: a thin layer over the library."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import ssl
import sys
from collections.abc import Callable
from typing import Any

from . import COMPILED, __version__
from .config import Config
from .server import Server
from .workers import resolve_workers, run_workers

__all__ = ["main"]

DEFAULT_APP = "roomer.demo:setup"


# What `--flag none` gives an option that may be None (None itself means "not given").
NONE = object()


def _pair(text: str) -> tuple[float, float]:
    """COUNT/SECONDS, as the (count, seconds) of rate_limit and error_limit."""
    count, sep, seconds = text.partition("/")
    if not sep:
        raise ValueError(text)
    return float(count), float(seconds)


_pair.__name__ = "COUNT/SECONDS"  # argparse names the type in its error message


def _value_or_none(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return NONE if text.lower() == "none" else kind(text)

    parse.__name__ = getattr(kind, "__name__", "value")  # argparse names it in errors
    return parse


def _add_server_flags(serve: argparse.ArgumentParser) -> None:
    # Declared once, in roomer.Config; a flag's default is None ("not given") so an
    # app's own Server keeps its value.
    for name, spec in Config.cli_options():
        meta = spec.metadata
        kind = Config.option_type(name)
        if kind is bool:
            serve.add_argument(meta["flag"], dest=name, action="store_true", default=None,
                               help=meta["help"])
            continue
        parse: Callable[[str], Any] = _pair if kind is tuple else kind
        extra = ""
        if Config.allows_none(name):
            parse = _value_or_none(parse)
            extra = "; 'none' for None"
        serve.add_argument(meta["flag"], dest=name, type=parse, default=None,
                           metavar=meta.get("metavar"), choices=meta.get("choices"),
                           help=f"{meta['help']} (default {spec.default}{extra})")


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
    serve.add_argument("--workers", default="1", metavar="N",
                       help="server processes sharing the port (SO_REUSEPORT) and, through "
                            "--backplane, the rooms; 'auto': one per core (default 1)")
    serve.add_argument("--reuse-port", action="store_true",
                       help="bind with SO_REUSEPORT, beside other servers on the same port")
    serve.add_argument("--certfile", metavar="PEM",
                       help="serve wss:// and https:// with this certificate (chain) file")
    serve.add_argument("--keyfile", metavar="PEM",
                       help="the certificate's private key (default: inside --certfile)")
    _add_server_flags(serve)
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
    flags = dict(Config.cli_options())
    options = {key: None if value is NONE else value for key in flags
               if (value := getattr(args, key)) is not None}
    app = _load_app(args.app)
    if isinstance(app, Server):
        if options:
            given = ", ".join(flags[key].metadata["flag"] for key in options)
            raise SystemExit(f"roomer: {args.app} is a ready Server; set {given} in its code")
        return app
    if not callable(app):
        raise SystemExit(f"roomer: {args.app} is neither a Server nor a setup function")
    server = Server(**options)
    setup: Callable[[Server], Any] = app
    result = setup(server)
    return result if isinstance(result, Server) else server


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server-side TLS context of --certfile/--keyfile, or None for plain ws://."""
    if args.certfile is None:
        if args.keyfile is not None:
            raise SystemExit("roomer: --keyfile needs --certfile")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.certfile, args.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(f"roomer: cannot load the certificate: {exc}") from exc
    return context


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "debug":
        # picows logs every accepted connection at INFO: far too loud for a busy server.
        logging.getLogger("picows").setLevel(logging.WARNING)
    server = build_server(args)
    context = tls_context(args)
    ws, http = ("wss", "https") if context is not None else ("ws", "http")
    worker = os.environ.get("ROOMER_WORKER")
    label = f"worker {worker}: " if worker else ""

    def started(srv: Server) -> None:
        host, port = srv.address
        mode = "compiled" if COMPILED else "pure Python (ROOMER_NO_EXTENSIONS or no build)"
        print(f"{label}roomer {__version__} listening on {ws}://{host}:{port}/ws", flush=True)
        if srv.config.backplane is not None:
            cluster = srv.registry.cluster
            node = cluster.node_id if cluster is not None else "?"
            print(f"{label}backplane: {srv.stats()['backplane']['url']} as node {node}",
                  flush=True)
        print(f"{label}extensions: {mode}; broadcaster: "
              f"{'sync' if srv.config.sync_broadcast else 'async'}", flush=True)
        if "/" in srv.routes:
            print(f"{label}demo lobby: {http}://{host}:{port}/", flush=True)

    from .backplane.errors import MissingExtra

    try:
        server.run(args.host, args.port, reuse_port=args.reuse_port, ssl=context,
                   on_started=started)
    except (ConnectionError, MissingExtra) as exc:
        # The broker is unreachable (or its client library missing) at start: nothing
        # listens, and the message says which broker and why.
        raise SystemExit(f"{label}roomer: {exc}") from None
    print(f"{label}roomer stopped", flush=True)
    return 0


def _check_workers(args: argparse.Namespace, count: int) -> None:
    """Many workers need a port of their own choosing and a shared backplane."""
    server = build_server(args)
    backplane = server.config.backplane
    if backplane is None or backplane.lower().startswith("memory:"):
        raise SystemExit(
            f"roomer: --workers {count} needs --backplane redis://... or nats://...: each "
            "worker holds its own clients, so without a broker between them rooms would "
            "split silently (clients on different workers would not see each other)")
    if args.port == 0:
        raise SystemExit("roomer: --workers needs a fixed --port (port 0 would give each "
                         "worker a different one)")
    if args.node_id is not None:
        if len(f"{args.node_id}-{count}") > 64:
            raise SystemExit(f"roomer: --node-id with --workers {count}: worker n is "
                             "NAME-n, at most 64 characters")
    elif server.config.node_id is not None:
        raise SystemExit(f"roomer: {args.app} sets node_id {server.config.node_id!r}: every "
                         "worker would share it, and node ids must be unique; give "
                         "--node-id NAME (workers are NAME-1, NAME-2, ...) or none")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from .benchmark.harness import main as bench_main

        return bench_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        workers = resolve_workers(args.workers)
    except ValueError:
        raise SystemExit(f"roomer: --workers takes a count or 'auto', not {args.workers!r}")\
            from None
    if workers > 1:
        _check_workers(args, workers)
        return run_workers(workers, argv)
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
