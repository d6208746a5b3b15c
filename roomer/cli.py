"""``roomer serve`` and ``roomer bench``: a thin layer over the library.

What goes wrong is one line on stderr, ``roomer: error: ...``, and the exit status says
whose move it is: 2 for a usage error (a flag value or a combination of flags that cannot
work, named), 1 when what was asked could not be done (the app does not import, the broker
is unreachable, the address is in use or not ours to bind, another ``--workers`` group
serves the port). 0 after a clean stop (SIGINT, SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib
import logging
import os
import re
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from . import COMPILED, __version__
from .config import Config
from .server import Server
from .workers import GroupError, SupervisorLink, resolve_workers, run_workers, say_line

__all__ = ["CommandError", "UsageError", "main"]

DEFAULT_APP = "roomer.demo:setup"

#: The flags that still apply when the app is a ready Server (built in its code): the
#: others are Server options, fixed when it was built.
READY_SERVER_FLAGS = "--static, --host, --port, --workers, --reuse-port, TLS and --log-level"


class CommandError(SystemExit):
    """What was asked could not be done: one line, exit status 1. A SystemExit, so that
    the functions here still end a program that calls them outside :func:`main`."""

    status = 1


class UsageError(CommandError):
    """The command line is wrong: one line, exit status 2."""

    status = 2


# What `--flag none` gives an option that may be None (None itself means "not given").
NONE = object()


def _pair(text: str) -> tuple[float, float]:
    """COUNT/SECONDS, as the (count, seconds) of rate_limit and error_limit."""
    count, sep, seconds = text.partition("/")
    if not sep:
        raise ValueError(text)
    return float(count), float(seconds)


_pair.__name__ = "COUNT/SECONDS"  # argparse names the type in its error message


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535; 0 picks a free one)")
    return port


def _value_or_none(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return NONE if text.lower() == "none" else kind(text)

    parse.__name__ = getattr(kind, "__name__", "value")  # argparse names it in errors
    return parse


def _scaled(kind: Callable[[str], Any], scale: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return kind(text) * scale
    parse.__name__ = getattr(kind, "__name__", "value")  # argparse names it in errors
    return parse


def _shown(value: Any) -> str:
    """A default as it is typed on the command line: ``200/1``, ``20``, ``none``."""
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return "/".join(_shown(part) for part in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _flag_help(name: str, spec: Any) -> str:
    meta = spec.metadata
    if Config.option_type(name) is bool:
        return str(meta["help"])
    shown = meta.get("shown") or _shown(spec.default)
    none = meta.get("none")
    if none and spec.default is None:
        return f"{meta['help']} (default: none, {none})"
    return f"{meta['help']} (default {shown}" + (f"; none: {none})" if none else ")")


class _Parser(argparse.ArgumentParser):
    """One line for a usage error, not the usage text."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _add_server_flags(serve: argparse.ArgumentParser) -> None:
    # Declared once, in roomer.Config; a flag's default is None ("not given") so an
    # app's own Server keeps its value.
    for name, spec in Config.cli_options():
        meta = spec.metadata
        kind = Config.option_type(name)
        if kind is bool:
            serve.add_argument(meta["flag"], dest=name, action="store_true", default=None,
                               help=_flag_help(name, spec))
            continue
        parse: Callable[[str], Any] = _pair if kind is tuple else kind
        if "scale" in meta:
            parse = _scaled(parse, meta["scale"])
        if Config.allows_none(name):
            parse = _value_or_none(parse)
        serve.add_argument(meta["flag"], dest=name, type=parse, default=None,
                           metavar=meta.get("metavar"), choices=meta.get("choices"),
                           help=_flag_help(name, spec))


def _parser() -> argparse.ArgumentParser:
    # allow_abbrev=False everywhere: "--node-i web" must not pass for --node-id (worker
    # node ids are derived from the exact flag, and an abbreviation hides a typo).
    parser = _Parser(prog="roomer", description="Room-based WebSocket server.",
                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"roomer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="run a roomer server", allow_abbrev=False)
    serve.add_argument(
        "app", nargs="?", default=DEFAULT_APP,
        help="module:attr — a Server, or a function taking the Server to set it up "
             f"(default {DEFAULT_APP}, the demo lobby)")
    serve.add_argument(
        "--app-dir", default=".", metavar="DIR",
        help="folder the app's module is imported from, put first on the import path "
             "(default: the current folder)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8080,
                       help="port (default 8080; 0 picks a free one)")
    serve.add_argument("--workers", default="1", metavar="N",
                       help="server processes sharing the port (SO_REUSEPORT) and, through "
                            "--backplane, the rooms, restarted when they crash; auto: one "
                            "per core (default 1)")
    serve.add_argument("--reuse-port", action="store_true",
                       help="bind with SO_REUSEPORT, beside other servers on the same port "
                            "(with --workers: beside a running group, on purpose)")
    serve.add_argument("--certfile", metavar="PEM",
                       help="serve wss:// and https:// with this certificate (chain) file")
    serve.add_argument("--keyfile", metavar="PEM",
                       help="the certificate's private key (default: inside --certfile)")
    _add_server_flags(serve)
    serve.add_argument("--log-level", default="info",
                       choices=("debug", "info", "warning", "error"),
                       help="how much to log (default info)")

    # Listed for --help only: main() hands everything after "bench" to the harness.
    sub.add_parser("bench", help="run the lobby fan-out benchmark against peers "
                                 "(roomer bench --help)", allow_abbrev=False)
    return parser


# the flags, checked before anything is loaded --------------------------------------------


def _in_flag_terms(message: str, name: str) -> str:
    """Config's message about option ``name`` in the words of its flag: the option's name
    dropped from the front, ``None`` written as it is typed."""
    message = message.removeprefix(name).lstrip(": ")
    return re.sub(r"\bNone\b", "none", message)


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Server options given as flags, checked by Config itself.

    Raises:
        UsageError: a value Config refuses, naming its flag.
    """
    flags = dict(Config.cli_options())
    options: dict[str, Any] = {key: None if value is NONE else value for key in flags
                               if (value := getattr(args, key)) is not None}
    for key, value in options.items():
        try:
            Config(**{key: value})
        except (TypeError, ValueError) as exc:
            flag = flags[key].metadata["flag"]
            raise UsageError(f"argument {flag}: {_in_flag_terms(str(exc), key)}") from None
    try:
        Config(**options)  # what only a combination breaks
    except (TypeError, ValueError) as exc:
        raise UsageError(re.sub(r"\bNone\b", "none", str(exc))) from None
    return options


def _check_host(host: str) -> None:
    try:
        # "" is every interface, as for asyncio's create_server.
        socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise UsageError(f"argument --host: cannot resolve {host!r} ({why})") from None


# the app ----------------------------------------------------------------------------------


def _load_app(spec: str, app_dir: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"app must be module:attr, got {spec!r}")
    # As uvicorn does: the console script does not put the current folder on the import
    # path (python -m does), so `roomer serve chat:server` would not find chat.py.
    folder = os.path.abspath(app_dir)
    if not os.path.isdir(folder):
        raise UsageError(f"argument --app-dir: {folder!r} is not a folder")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CommandError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise CommandError(f"{module_name!r} has no attribute {attr!r}") from None


def _serve_static(server: Server, folder: str) -> None:
    """Serve ``folder`` from a ready Server (``--static``), its own static_dir replaced."""
    try:
        server.serve_static(folder)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"argument --static: {_in_flag_terms(str(exc), 'static_dir')}") \
            from None


def build_server(args: argparse.Namespace) -> Server:
    """The Server that ``roomer serve`` runs, from the app spec and the flags.

    Raises:
        UsageError: a flag that is wrong or cannot apply to the app.
        CommandError: the app cannot be loaded.
    """
    flags = dict(Config.cli_options())
    options = server_options(args)
    app = _load_app(args.app, args.app_dir)
    if isinstance(app, Server):
        static = options.pop("static_dir", None)
        if options:
            given = ", ".join(flags[key].metadata["flag"] for key in options)
            raise UsageError(
                f"{args.app} is a ready Server, its options set in its code: {given} "
                f"cannot change it (set them where it is built; {READY_SERVER_FLAGS} do "
                "apply)")
        if static is not None:
            _serve_static(app, static)
        return app
    if not callable(app):
        raise CommandError(f"{args.app} is neither a Server nor a setup function")
    server = Server(**options)
    setup: Callable[[Server], Any] = app
    result = setup(server)
    return result if isinstance(result, Server) else server


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server-side TLS context of --certfile/--keyfile, or None for plain ws://.

    Raises:
        UsageError: --keyfile without --certfile.
        CommandError: the certificate or key cannot be loaded.
    """
    if args.certfile is None:
        if args.keyfile is not None:
            raise UsageError("--keyfile needs --certfile")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.certfile, args.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(f"cannot load the certificate: {exc}") from exc
    return context


# serving ----------------------------------------------------------------------------------


def _listen_error(exc: OSError, host: str, port: int) -> CommandError:
    where = f"cannot listen on {host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return CommandError(f"{where}: the address is in use (another server on this port? "
                            "--reuse-port shares it on purpose)")
    if exc.errno == errno.EACCES:
        return CommandError(f"{where}: permission denied (ports below 1024 need privileges)")
    if isinstance(exc, socket.gaierror):
        return CommandError(f"{where}: {exc.strerror}")
    if exc.errno is None and "could not bind on any address" in str(exc):
        return CommandError(f"{where}: no interface of this machine has that address")
    return CommandError(f"{where}: {exc.strerror or exc}")


def _serve(args: argparse.Namespace, server: Server, context: ssl.SSLContext | None,
           link: SupervisorLink | None, label: str) -> int:
    ws, http = ("wss", "https") if context is not None else ("ws", "http")
    listening = False

    def started(srv: Server) -> None:
        nonlocal listening
        listening = True
        host, port = srv.address
        mode = "compiled" if COMPILED else "pure Python (ROOMER_NO_EXTENSIONS or no build)"
        say_line(f"{label}roomer {__version__} listening on {ws}://{host}:{port}/ws")
        if srv.config.backplane is not None:
            cluster = srv.registry.cluster
            node = cluster.node_id if cluster is not None else "?"
            say_line(f"{label}backplane: {srv.stats()['backplane']['url']} as node {node}")
        say_line(f"{label}extensions: {mode}; broadcaster: "
                 f"{'sync' if srv.config.sync_broadcast else 'async'}")
        if "/" in srv.routes:
            say_line(f"{label}demo lobby: {http}://{host}:{port}/")
        if link is not None:
            def orphaned() -> Any:
                say_line(f"{label}roomer: the supervisor (pid {link.pid}) is gone; "
                         "stopping", sys.stderr)
                return asyncio.get_running_loop().create_task(srv.shutdown())

            link.listening(orphaned)

    from .backplane.errors import MissingExtra

    try:
        server.run(args.host, args.port, reuse_port=args.reuse_port, ssl=context,
                   on_started=started)
    except (ConnectionError, MissingExtra) as exc:
        if listening:
            raise
        # The broker is unreachable (or its client library missing) at start: nothing
        # listens, and the message says which broker and why.
        raise CommandError(str(exc)) from None
    except OSError as exc:
        if listening:
            raise
        raise _listen_error(exc, args.host, args.port) from None
    say_line(f"{label}roomer stopped")
    return 0


def _check_workers(args: argparse.Namespace, server: Server, count: int) -> None:
    """Many workers need a port of their own choosing and a shared backplane."""
    backplane = server.config.backplane
    if backplane is None or backplane.lower().startswith("memory:"):
        raise UsageError(
            f"--workers {count} needs --backplane redis://... or nats://...: each "
            "worker holds its own clients, so without a broker between them rooms would "
            "split silently (clients on different workers would not see each other)")
    if args.port == 0:
        raise UsageError("--workers needs a fixed --port (port 0 would give each "
                         "worker a different one)")
    if args.node_id is not None:
        if len(f"{args.node_id}-{count}") > 64:
            raise UsageError(f"--node-id with --workers {count}: worker n is "
                             "NAME-n, at most 64 characters")
    elif server.config.node_id is not None:
        raise UsageError(f"{args.app} sets node_id {server.config.node_id!r}: every "
                         "worker would share it, and node ids must be unique; give "
                         "--node-id NAME (workers are NAME-1, NAME-2, ...) or none")


def _run(argv: list[str], link: SupervisorLink | None, label: str) -> int:
    args = _parser().parse_args(argv)
    try:
        workers = resolve_workers(args.workers)
    except ValueError:
        raise UsageError(f"argument --workers: takes a count or 'auto', not "
                         f"{args.workers!r}") from None
    _check_host(args.host)
    server_options(args)  # every flag value checked before the app is loaded
    context = tls_context(args)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "debug":
        # picows logs every accepted connection at INFO: far too loud for a busy server.
        logging.getLogger("picows").setLevel(logging.WARNING)
    server = build_server(args)
    if workers > 1:
        _check_workers(args, server, workers)
        try:
            return run_workers(workers, argv, args.host, args.port, share=args.reuse_port)
        except GroupError as exc:
            raise CommandError(str(exc)) from None
    return _serve(args, server, context, link, label)


def main(argv: list[str] | None = None) -> int:
    """``roomer``'s entry point: the exit status (what went wrong is one line on stderr).

    Args:
        argv: the arguments after ``roomer`` (default: ``sys.argv[1:]``).
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from .benchmark.harness import main as bench_main

        return bench_main(argv[1:])
    worker = os.environ.get("ROOMER_WORKER")
    label = f"worker {worker}: " if worker else ""
    link = SupervisorLink.from_env()
    if link is not None and not link.attach():
        say_line(f"{label}roomer: the supervisor (pid {link.pid}) is gone; not starting",
                 sys.stderr)
        return 1
    try:
        return _run(argv, link, label)
    except CommandError as exc:
        say_line(f"{label}roomer: error: {exc}", sys.stderr)
        return exc.status


if __name__ == "__main__":
    sys.exit(main())
