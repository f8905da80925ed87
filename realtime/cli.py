"""Command line: ``realtime serve`` and ``realtime check-config``.

Exit codes: 0 ok, 1 runtime error, 2 usage or configuration error (one line, no traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from realtime.config import Settings, effective_items, load_settings
from realtime.errors import ConfigError
from realtime.logs import setup_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="realtime", description="Realtime push server")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("serve", "run the server"),
        ("check-config", "validate the configuration and print the effective settings"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", metavar="PATH", help="TOML config file (see config/)")
        p.add_argument("--host", help="listen address (REALTIME_HOST)")
        p.add_argument("--port", type=int, help="listen port (REALTIME_PORT)")
        p.add_argument("--broker-url", dest="broker_url", help="memory://, redis://, amqp://")
        p.add_argument("--redis-url", dest="redis_url", help="store for amqp:// brokers")
        p.add_argument("--workers", type=int, help="processes sharing the port")
        p.add_argument("--log-level", dest="log_level", help="DEBUG, INFO, WARNING, ERROR")
        p.add_argument("--log-json", dest="log_json", action="store_true", default=None)
        p.add_argument(
            "--dev",
            action="store_true",
            default=None,
            help="local use: built-in secret and API key, local origins allowed",
        )
        p.add_argument(
            "--demo",
            action="store_true",
            default=None,
            help="serve the live demo at / with a simulated contest (implies --dev)",
        )
    # parsed by realtime.loadtest itself (see main)
    sub.add_parser(
        "loadtest",
        help="hold N connections on a deployment, publish, measure (realtime loadtest -h)",
        add_help=False,
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = ("host", "port", "broker_url", "redis_url", "workers", "log_level", "log_json", "dev")
    values = {name: getattr(args, name) for name in names}
    values["demo"] = args.demo
    return {k: v for k, v in values.items() if v is not None}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["loadtest"]:
        from realtime import loadtest

        try:
            return loadtest.main(arguments[1:])
        except KeyboardInterrupt:
            return 130
    args = _parser().parse_args(arguments)
    try:
        settings = load_settings(args.config, overrides=_overrides(args))
    except ConfigError as exc:
        print(f"realtime: config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        return _check_config(settings)
    setup_logging(
        settings.log_level,
        settings.log_json,
        secrets=(settings.secret, settings.api_key, settings.admin_password),
    )
    from realtime.server import serve

    try:
        return serve(settings)
    except OSError as exc:  # e.g. the port is taken
        logging.getLogger("realtime").error("cannot start: %s", exc)
        return 1
    except KeyboardInterrupt:
        return 0


def _check_config(settings: Settings) -> int:
    section = None
    for sec, name, value in effective_items(settings):
        if sec != section:
            print(f"[{sec}]")
            section = sec
        print(f"{name} = {_toml(value)}")
    for name, ns in settings.namespaces.items():
        print(f"\n[namespaces.{name}]\naccess = {_toml(ns.access)}\ncoalesce_ms = {ns.coalesce_ms}")
        if ns.merge_max:
            print(f"merge_max = {ns.merge_max}")
        if ns.presence:
            print("presence = true")
    return 0


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return '""  # unset'
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
