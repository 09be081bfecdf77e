"""`receiver serve`, `receiver info` and `receiver listen`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette

from receiver import __version__, logs
from receiver.app import create_app, open_runtime
from receiver.errors import ReceiverError
from receiver.providers import WEBHOOK_PROVIDERS
from receiver.relay import listen, tunnels
from receiver.settings import ENV_PREFIX, Settings, unknown_variables, warn_unknown_variables, webhook_url
from receiver.store import describe_store, open_store
from receiver.web.server import server_config


def load_settings(overrides: dict[str, Any]) -> Settings:
    """Environment first, then CLI flags on top."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{_variable(e['loc'])}: {e['msg']}" for e in exc.errors())
        print(f"receiver: bad setting: {problems}", file=sys.stderr)  # the message only, never the value
        raise SystemExit(2) from None


def _variable(loc: tuple[int | str, ...]) -> str:
    """The environment variable a validation error is about (a field name, or the alias it was read from)."""
    name = "_".join(map(str, loc[:1])).upper()
    return name if name.startswith(ENV_PREFIX) or name == "DATABASE_URL" else f"{ENV_PREFIX}{name}"


class _Server(uvicorn.Server):
    """Ends open event streams as soon as a shutdown is asked for, instead of waiting them out."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        runtime = getattr(self._app.state, "runtime", None)
        if runtime is not None:
            runtime.stopping.set()
            runtime.notifier.wake_all()  # held long-polls answer now, while the server still can
        super().handle_exit(sig, frame)


async def _preflight(settings: Settings) -> None:
    """Open the store once before the server starts, so a bad URL, an unreachable database or a SQLite file
    another process serves ends here with one line, before any worker runs."""
    store = await open_store(settings.database_url, exclusive=True)
    await store.close()


def discover_tunnel(settings: Settings, overrides: dict[str, Any]) -> tuple[Settings, str | None]:
    """With RECEIVER_PUBLIC_URL unset, the settings with a local tunnel's URL as public URL, and a note
    saying which tunnel; unchanged (and no note) when discovery is off or finds nothing."""
    if settings.public_url is not None or not settings.tunnel_discovery:
        return settings, None
    probe = tunnels.TunnelProbe(settings.ngrok_api_url, settings.cloudflared_metrics_urls)
    tunnel = asyncio.run(tunnels.discover(settings.port, probe))
    if tunnel is None:
        return settings, None
    return load_settings({**overrides, "public_url": tunnel.public_url}), tunnel.describe(settings.port)


def serve(settings: Settings, tunnel_note: str | None = None) -> None:
    log_config = logs.configure(fmt=settings.log_format, level=settings.log_level, access_log=settings.access_log)
    warn_unknown_variables(os.environ, logging.getLogger("receiver.settings"))
    asyncio.run(_preflight(settings))
    if tunnel_note:
        logging.getLogger("receiver").info("public URL from a local tunnel: %s", tunnel_note)
    app = create_app(settings)
    config = server_config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=log_config,
        proxy_headers=True,
        timeout_graceful_shutdown=5,
        access_log=settings.access_log != "off",
    )
    _Server(config, app).run()


def info_warnings(settings: Settings) -> list[str]:
    """What `receiver info` says on stderr: unknown RECEIVER_ variables, and URLs that only work locally."""
    warnings = unknown_variables(os.environ)
    if settings.public_url is None:
        warnings.append(
            f"RECEIVER_PUBLIC_URL is not set and no tunnel was found: these URLs use {settings.base_public_url}, "
            "reachable only from this machine, and assume `receiver serve` runs on that host and port "
            "(pass --host/--port as to serve); providers need RECEIVER_PUBLIC_URL set to the receiver's public address"
        )
    return warnings


async def _info(settings: Settings, tunnel_note: str | None = None) -> str:
    runtime = await open_runtime(settings, serving=False)
    try:
        lines = [f"Public URL from a local tunnel: {tunnel_note}", ""] if tunnel_note else []
        lines += ["Webhook URLs (give each provider its own):"]
        lines += [
            f"  {p:<10} {webhook_url(settings, runtime.secrets, p)}" for p in WEBHOOK_PROVIDERS if p != "lumenfall"
        ]
        lines += [
            "  oxen       (no webhook: the receiver subscribes to Oxen's event stream"
            + (")" if settings.api_key("oxen") else "; set RECEIVER_OXEN_API_KEY)"),
            "  lumenfall  (no webhook: Lumenfall answers image generations synchronously, in the call the receiver",
            "             makes for POST /v1/generations; this URL only receives the callbacks of its asynchronous",
            "             video API, signed with RECEIVER_LUMENFALL_WEBHOOK_SECRET)",
            f"             {webhook_url(settings, runtime.secrets, 'lumenfall')}",
            "",
            f"API token:      {runtime.secrets.api_token}",
            f"Webhook token:  {runtime.secrets.webhook_token}",
            f"Signing secret: {runtime.secrets.signing_secret}",
            f"Store:          {describe_store(settings.database_url)}",
        ]
        return "\n".join(lines)
    finally:
        await runtime.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="receiver", description="Grok Imagine webhook and event-stream receiver")
    parser.add_argument("--version", action="version", version=f"receiver {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the service")
    serve_cmd.add_argument("--host", help="bind address (default 127.0.0.1, or RECEIVER_HOST)")
    serve_cmd.add_argument("--port", type=int, help="port (default 8000, or RECEIVER_PORT)")
    info_cmd = commands.add_parser("info", help="print webhook URLs, API token and signing secret")
    info_cmd.add_argument("--host")
    info_cmd.add_argument("--port", type=int)
    listen.add_arguments(commands.add_parser("listen", help="forward a receiver's events to a local URL"))
    args = parser.parse_args(argv)
    if args.command == "listen":
        raise SystemExit(listen.main(args))
    overrides = {"host": args.host, "port": args.port}
    settings, tunnel_note = discover_tunnel(load_settings(overrides), overrides)
    try:
        if args.command == "serve":
            serve(settings, tunnel_note)
        else:
            text = asyncio.run(_info(settings, tunnel_note))
            for warning in info_warnings(settings):
                print(f"receiver: warning: {warning}", file=sys.stderr)
            _print(text)
    except ReceiverError as exc:
        print(f"receiver: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _print(text: str) -> None:
    """Print to stdout; a reader that stops early (`receiver info | head -2`) ends it quietly."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python would report the pipe again while flushing stdout at exit: point stdout at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None


if __name__ == "__main__":
    main()
