"""The ``executor-streamer`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ..config import ExecutorStreamerConfig, StorageBackend
from ..core.hub import ExecutorStreamer
from ..core.subscription import Subscription
from ..demo import SimulatedAgent
from ..errors import ConfigError
from ..logs import configure_logging
from .render import event_line

app = typer.Typer(
    help="Executor Streamer: a real-time event hub for AI-agent and automation runs.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(highlight=False)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="A TOML or JSON config file.", exists=False)
]


def load_config(config_file: Path | None, overrides: dict[str, Any]) -> ExecutorStreamerConfig:
    try:
        config = ExecutorStreamerConfig.load(config_file, overrides=overrides)
    except ConfigError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    configure_logging(config.logging)
    return config


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (config: server.host).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (config: server.port).")] = None,
    config_file: ConfigOption = None,
    storage: Annotated[StorageBackend | None, typer.Option(help="History backend.")] = None,
    connection_string: Annotated[str | None, typer.Option(help="Backend URL or path.")] = None,
) -> None:
    """Start the hub on embedded defaults.

    The network API (REST, WebSocket, SSE) is not built yet; until it is, the hub runs
    in-process and a simulated agent publishes runs into it, shown live here.
    """
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
    console.print(
        "[bold]Executor Streamer[/] core running in-process "
        f"(storage: {config.persistence.storage_backend}). The network API is not built "
        "yet, so a simulated agent publishes runs here. Ctrl-C stops."
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_watch_runs(config, runs=None, pace=0.4))


@app.command()
def demo(
    runs: Annotated[int, typer.Option(min=1, help="How many agent runs to simulate.")] = 1,
    pace: Annotated[float, typer.Option(min=0, help="Mean pause between steps, seconds.")] = 0.2,
    config_file: ConfigOption = None,
) -> None:
    """Simulate an agent run that publishes every event type, and watch it arrive."""
    config = load_config(config_file, {})
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_watch_runs(config, runs=runs, pace=pace))


async def _watch_runs(config: ExecutorStreamerConfig, runs: int | None, pace: float) -> None:
    async with ExecutorStreamer(config) as hub:
        for number in itertools.count(1) if runs is None else range(1, runs + 1):
            session_id = f"demo-run-{number}"
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
