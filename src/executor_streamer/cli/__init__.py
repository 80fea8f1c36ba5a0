"""The ``executor-streamer`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperArgument, TyperCommand

from ..backends import storage_for
from ..client import HubClient
from ..config import ExecutorStreamerConfig, StorageBackend
from ..core.hub import ExecutorStreamer
from ..core.subscription import Subscription
from ..demo import SimulatedAgent
from ..errors import ConfigError, InvalidInput, StorageUnavailable, StreamerError
from ..logs import configure_logging
from ..security import Scope, mint_token
from ..server.runner import build_server
from ..types.base import utc_now
from .render import event_line


class _Command(TyperCommand):
    """Help as people write it: ``tail [OPTIONS] STREAM`` and ``STREAM  what it is``
    (typer's own marks a required argument ``{STREAM}`` and lists it as ``STREAM <str>``).
    ``ctx`` and ``formatter`` are typer's vendored click types, which it does not export."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar or (param.name or "").upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                if param.help:
                    arguments.append((param.metavar or (param.name or "").upper(), param.help))
            elif (record := param.get_help_record(ctx)) is not None:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


app = typer.Typer(
    help="Executor Streamer: a real-time event hub for AI-agent and automation runs.",
    no_args_is_help=True,
    add_completion=False,
    # Plain help: typer's rich help shows a type beside every flag (``--admin <bool>``).
    rich_markup_mode=None,
)
console = Console(highlight=False)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="A TOML or JSON config file (hub.toml); nothing is read without it.",
    ),
]
UrlOption = Annotated[str, typer.Option("--url", metavar="URL", help="The hub's base URL.")]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        metavar="TOKEN",
        envvar="EXECUTOR_STREAMER_TOKEN",
        help="A JWT or API key for a hub with authentication on.",
        show_envvar=True,
    ),
]
DEFAULT_URL = "http://localhost:3001"


def load_config(config_file: Path | None, overrides: dict[str, Any]) -> ExecutorStreamerConfig:
    try:
        config = ExecutorStreamerConfig.load(config_file, overrides=overrides)
    except ConfigError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    configure_logging(config.logging)
    return config


@app.command(cls=_Command)
def serve(
    host: Annotated[
        str | None, typer.Option(metavar="HOST", help="Interface to bind (server.host).")
    ] = None,
    port: Annotated[int | None, typer.Option(metavar="PORT", help="Port (server.port).")] = None,
    config_file: ConfigOption = None,
    storage: Annotated[
        StorageBackend | None,
        typer.Option(metavar="memory|file|database|redis", help="History backend."),
    ] = None,
    connection_string: Annotated[
        str | None, typer.Option(metavar="URL", help="Backend URL or path.")
    ] = None,
) -> None:
    """Start the hub: REST, WebSocket, SSE and long polling. Ctrl-C or SIGTERM stops it,
    closing clients (WebSocket 1001) and flushing storage first."""
    overrides: dict[str, Any] = {"server": {}, "persistence": {}}
    if host is not None:
        overrides["server"]["host"] = host
    if port is not None:
        overrides["server"]["port"] = port
    if storage is not None:
        overrides["persistence"]["storage_backend"] = storage
    if connection_string is not None:
        overrides["persistence"]["connection_string"] = connection_string
    config = load_config(config_file, overrides)
    try:
        asyncio.run(_check_storage(config))
        hub = ExecutorStreamer(config)
    except (ConfigError, StorageUnavailable) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    address = f"http://{config.server.host}:{config.server.port}"
    console.print(
        f"[bold]Executor Streamer[/] on {address} (storage: {config.persistence.storage_backend})"
        f" — API docs at {address}/docs"
    )
    build_server(hub).run()


async def _check_storage(config: ExecutorStreamerConfig) -> None:
    """Reach and migrate storage once before serving, so a wrong connection string is one
    clear line instead of a failed application start-up."""
    store = storage_for(config)
    try:
        await store.start()
    finally:
        await store.close()


@app.command(cls=_Command)
def demo(
    url: UrlOption = DEFAULT_URL,
    runs: Annotated[
        int, typer.Option(min=1, metavar="N", help="How many agent runs to simulate.")
    ] = 1,
    pace: Annotated[
        float, typer.Option(min=0, metavar="SECONDS", help="Mean pause between steps.")
    ] = 0.4,
    session: Annotated[
        str, typer.Option(metavar="PREFIX", help="Workflow session id prefix.")
    ] = "demo-run",
    in_process: Annotated[
        bool, typer.Option("--in-process", help="Run a hub here instead of using --url.")
    ] = False,
    config_file: ConfigOption = None,
    token: TokenOption = None,
) -> None:
    """Simulate an agent run that publishes every event type (real PNG screenshots, a
    failing click that is retried), into a running hub or one started here. A credential
    that may only publish is enough: the first publish creates the stream."""
    config = load_config(config_file, {})
    with contextlib.suppress(KeyboardInterrupt):
        if in_process:
            asyncio.run(_demo_in_process(config, runs, pace, session))
        else:
            asyncio.run(_demo_over_http(url, token, runs, pace, session))


@app.command(cls=_Command)
def tail(
    stream: Annotated[
        str, typer.Argument(metavar="STREAM", help="Stream id or workflow session id.")
    ],
    url: UrlOption = DEFAULT_URL,
    types: Annotated[
        str | None,
        typer.Option(metavar="TYPES", help="Only these types, e.g. REASONING,STATUS"),
    ] = None,
    since: Annotated[
        int | None, typer.Option(min=0, metavar="SEQ", help="Replay history after this seq.")
    ] = None,
    token: TokenOption = None,
) -> None:
    """Print a stream's events as they arrive, until it closes (Ctrl-C stops)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_tail(url, token, stream, types.split(",") if types else None, since))


@app.command(cls=_Command)
def search(
    expression: Annotated[
        str | None,
        typer.Argument(
            metavar="EXPRESSION",
            help="A filter expression, e.g. 'type == \"COMMAND_FAILED\"' (docs/query.md).",
        ),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    last: Annotated[
        str | None,
        typer.Option(metavar="DURATION", help="Only the last 90s, 30m, 1h or 7d."),
    ] = None,
    streams: Annotated[
        str | None,
        typer.Option(metavar="PATTERN", help="Only runs matching wf-1, team-a:* or *."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="At most N events.")] = 50,
    token: TokenOption = None,
) -> None:
    """Print events across runs that match, newest first."""
    try:
        start = None if last is None else utc_now() - timedelta(seconds=parse_duration(last))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--last") from None
    asyncio.run(_search(url, token, expression, start, streams, limit))


@app.command(name="token", cls=_Command)
def mint(
    sub: Annotated[
        str,
        typer.Option("--sub", metavar="SUBJECT", help="Who the token is for (its subject)."),
    ],
    subscribe: Annotated[
        list[str] | None,
        typer.Option(
            metavar="PATTERN",
            help="A stream it may watch: 'wf-1', 'tenant-a:*' or '*'; repeat for more.",
        ),
    ] = None,
    publish: Annotated[
        list[str] | None,
        typer.Option(metavar="PATTERN", help="A stream it may publish into; repeat for more."),
    ] = None,
    admin: Annotated[
        bool,
        typer.Option(
            "--admin", help="Administer the hub: create, close and purge streams, and more."
        ),
    ] = False,
    ttl: Annotated[
        str,
        typer.Option(metavar="DURATION", help="How long it is good for: 90s, 30m, 1h, 7d."),
    ] = "1h",
    config_file: ConfigOption = None,
) -> None:
    """Print a JWT signed with security.jwt.secret (HS256) from --config or the
    environment, for tests and small setups; a real deployment's tokens come from its
    identity provider."""
    config = load_config(config_file, {})
    jwt = config.security.jwt
    if jwt is None or jwt.secret is None:
        console.print(
            "[bold red]error:[/] minting needs security.jwt.secret (HS256): pass the hub's "
            "config with --config hub.toml, or set EXECUTOR_STREAMER_SECURITY__JWT__SECRET; "
            "RS256 and ES256 tokens come from the holder of the private key",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    try:
        scope = Scope.from_claim(
            {"subscribe": subscribe or [], "publish": publish or [], "admin": admin}
        )
        token = mint_token(
            jwt.secret.get_secret_value(),
            sub,
            scope,
            parse_duration(ttl),
            audience=jwt.audience,
            issuer=jwt.issuer,
        )
    except (InvalidInput, ValueError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    typer.echo(token)


_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds in ``90``, ``90s``, ``30m``, ``1h`` or ``7d``."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a positive duration like 90s, 30m, 1h or 7d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


async def _tail(
    url: str, token: str | None, stream: str, types: list[str] | None, since: int | None
) -> None:
    async with HubClient(url, token=token) as hub:
        try:
            async for event in hub.watch(stream, since=since, types=types):
                console.print(event_line(event))
        except StreamerError as exc:
            console.print(f"[bold red]error:[/] {exc.to_dict()['code']}: {exc.message}")
            raise typer.Exit(1) from None
    console.print("[dim]stream closed[/]")


async def _search(
    url: str,
    token: str | None,
    expression: str | None,
    start: datetime | None,
    streams: str | None,
    limit: int,
) -> None:
    found = 0
    async with HubClient(url, token=token) as hub:
        try:
            async for event in hub.search(
                expression,
                start_time=start,
                streams=streams,
                page_size=min(limit, 1000),
                limit=limit,
            ):
                console.print(Text(f"{event.session_id} ", style="bold") + event_line(event))
                found += 1
        except StreamerError as exc:
            console.print(f"[bold red]error:[/] {exc.to_dict()['code']}: {exc.message}")
            raise typer.Exit(1) from None
    console.print(f"[dim]{found} event{'' if found == 1 else 's'}[/]")


async def _demo_over_http(
    url: str, token: str | None, runs: int, pace: float, session: str
) -> None:
    async with HubClient(url, token=token) as hub:
        for number in range(1, runs + 1):
            session_id = f"{session}-{number}"
            try:  # a producer's credential (publish scope) creates and closes its streams
                await hub.create_stream(session_id)
                console.print(watch_hint(url, session_id, token is not None), soft_wrap=True)
                await SimulatedAgent(hub, session_id, pace).run()
                await hub.close_stream(session_id)
            except StreamerError as exc:
                console.print(
                    f"[bold red]error:[/] {exc.to_dict()['code']}: {exc.message}", soft_wrap=True
                )
                raise typer.Exit(1) from None
            console.print(f"[green]done[/] {session_id}")


def watch_hint(url: str, session_id: str, with_token: bool) -> str:
    """How to watch a run: the viewer, the CLI and raw SSE, each line ready to paste. With
    authentication on, watching takes a token that may subscribe to the stream (the
    producer's may only publish), so the lines name it ``$WATCH_TOKEN``."""
    session = shlex.quote(session_id)
    events = shlex.quote(f"{url}/api/streams/{session_id}/events?since=0")
    tail = f"executor-streamer tail {session} --since 0 --url {url}"
    curl = f"curl -N {events}"
    lines = [f"publishing [bold]{session_id}[/]; watch it at {url}/view/{session_id} or with"]
    if with_token:
        tail += ' --token "$WATCH_TOKEN"'
        curl = f'curl -N -H "Authorization: Bearer $WATCH_TOKEN" {events}'
    lines += [f"  {tail}", f"  {curl}"]
    if with_token:
        lines.append("where WATCH_TOKEN is a token that may watch it (see `token --subscribe`)")
    return "\n".join(lines)


async def _demo_in_process(
    config: ExecutorStreamerConfig, runs: int, pace: float, session: str
) -> None:
    async with ExecutorStreamer(config) as hub:
        for number in range(1, runs + 1):
            session_id = f"{session}-{number}"
            await hub.create_stream(session_id)
            console.rule(f"stream {session_id}")
            async with hub.subscribe(session_id, since=0) as sub:
                printer = asyncio.create_task(_print_events(sub))
                try:
                    await SimulatedAgent(hub.publisher, session_id, pace).run()
                    await hub.destroy_stream(session_id)  # ends the subscription
                    await printer
                finally:
                    printer.cancel()
            stats = await hub.analytics.get_stream_stats(session_id)
            console.print(
                f"[dim]{stats.total_events} events, largest {stats.largest_event_size} B, "
                f"{stats.memory_usage} B held[/]"
            )


async def _print_events(sub: Subscription) -> None:
    async for event in sub:
        console.print(event_line(event))


def main() -> None:
    app()
