"""The `kisray` command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console

from engine.config import Settings, load_settings
from engine.errors import KisrayError
from engine.logs import configure_from_settings

logger = logging.getLogger("kisray.cli")
console = Console(stderr=True)
app = typer.Typer(
    name="kisray",
    help="Realtime market-data engine for Korean stock charts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class Profile(StrEnum):
    local = "local"
    production = "production"


def _fail(exc: BaseException | str, code: int = 2) -> typer.Exit:
    console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings(**overrides: object) -> Settings:
    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except KisrayError as exc:
        raise _fail(exc) from None
    return settings


@contextlib.contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The configured database, or the embedded one for the length of one command.

    An embedded server that was already running (a `kisray up`) is used and left running.
    """
    from engine.storage.embedded import EmbeddedPostgres

    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    embedded = EmbeddedPostgres(settings.data_dir)
    was_running = embedded.running_pid() is not None
    url = embedded.start().url
    try:
        yield url
    finally:
        if not was_running:
            embedded.stop()


@app.command()
def up(
    profile: Annotated[
        Profile, typer.Option(help="local: core + simulator; production: + the KIS collector")
    ] = Profile.local,
    host: Annotated[str | None, typer.Option(help="API bind address")] = None,
    port: Annotated[int | None, typer.Option(help="API port")] = None,
    no_sim: Annotated[bool, typer.Option("--no-sim", help="don't start the simulator")] = False,
    address: Annotated[
        str | None, typer.Option(envvar="RAY_ADDRESS", help="join this Ray cluster")
    ] = None,
) -> None:
    """Run the whole stack until Ctrl-C or SIGTERM, then stop everything it started."""
    from api.cli.stack import Stack

    settings = _settings(host=host, port=port)
    configure_from_settings(settings, rotate=True)
    stop_requested = threading.Event()
    starting = True

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("received %s, stopping", signal.Signals(signum).name)
        stop_requested.set()
        if starting:
            raise KeyboardInterrupt  # abort start-up; Stack.start cleans up what it began

    def install_handlers() -> None:
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    production = profile is Profile.production
    if production:
        from api.cli.collector import require_kis_credentials

        try:
            require_kis_credentials(settings)
        except KisrayError as exc:
            raise _fail(exc) from None
        no_sim = True  # production talks to the configured KIS servers, never the simulator
    stack = Stack(
        settings,
        ray_address=address,
        with_simulator=not no_sim,
        with_collector=production,
        after_ray_init=install_handlers,
    )
    install_handlers()
    try:
        stack.start()
    except KisrayError as exc:
        raise _fail(exc, 1) from None
    except KeyboardInterrupt:
        console.print("start-up interrupted; everything started so far was stopped.")
        raise typer.Exit(130) from None
    install_handlers()
    starting = False
    try:
        report = stack.migration
        console.print(f"[bold green]kisray is up[/] (profile {profile.value})")
        console.print(f"  API        {stack.api_url}   (docs {stack.api_url}/docs)")
        if settings.replicas > 1:
            ports = settings.replica_ports
            console.print(
                f"  replicas   {settings.replicas} behind haproxy (their own ports "
                f"{ports.start}-{ports.stop - 1})"
            )
        console.print(f"  health     {stack.api_url}/health")
        console.print(f"  demo       {stack.api_url}/demo   (live chart, trades, order book)")
        mode = report.mode if report else "?"
        where = "embedded" if settings.database_url is None else "external"
        console.print(f"  database   {where}, {mode} mode, data in {settings.data_dir}")
        if not no_sim:
            console.print(f"  simulator  {settings.rest_url} (KIS REST + WebSocket, synthetic)")
        if stack.collector is not None:
            style = "" if stack.collector.started else "[bold yellow]"
            console.print(f"  collector  {style}KIS {settings.kis_env}, {stack.collector.detail}")
        console.print(f"  logs       {settings.log_file}")
        console.print("  Ctrl-C stops everything.")
        while not stop_requested.wait(0.5):
            pass
    finally:
        console.print("stopping…")
        stack.stop()
        console.print("stopped.")


@app.command("migrate")
def migrate_command() -> None:
    """Apply the sql/ migrations to the configured database (idempotent)."""
    from engine.storage.migrate import migrate

    settings = _settings()
    configure_from_settings(settings)
    try:
        with database_url(settings) as url:
            report = asyncio.run(migrate(url))
    except KisrayError as exc:
        raise _fail(exc, 1) from None
    applied = ", ".join(report.applied) or "nothing new"
    console.print(
        f"database mode {report.mode}; schema version {report.current_version}; applied: {applied}"
    )


@app.command()
def status() -> None:
    """Show the running system: API, Ray, KIS socket, database mode, aggregate freshness."""
    import json

    import httpx

    from api.cli.stack import STATE_FILE

    settings = _settings()
    state_path = settings.data_dir / STATE_FILE
    if not state_path.exists():
        raise _fail(f"kisray is not running (no {state_path}); start it with `kisray up`", 1)
    state = json.loads(state_path.read_text())
    console.print(f"kisray up (pid {state['pid']}), Ray at {state['ray_address']}")
    if state.get("ray_auth_token_path"):  # how `ray` commands join the private head
        console.print(
            f"  Ray token  RAY_AUTH_TOKEN_PATH={state['ray_auth_token_path']}", soft_wrap=True
        )
    console.print(f"  API        {state['api_url']}")
    try:
        reply = httpx.get(f"{state['api_url']}/health", timeout=5)
        health = reply.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise _fail(f"the API at {state['api_url']} does not answer: {exc}", 1) from None
    database, kis = health.get("database", {}), health.get("kis", {})
    console.print(f"  status     {health.get('status')}")
    console.print(
        f"  database   {state['database']}, mode {database.get('mode')}, "
        f"reachable {database.get('reachable')}, latency {database.get('latency_ms')} ms"
    )
    console.print(
        f"  KIS        {kis.get('env')} {kis.get('state')}, "
        f"{kis.get('registrations')} registrations, {kis.get('ws_url')}"
    )
    for name, info in (health.get("aggregates") or {}).items():
        console.print(f"  aggregate  {name}: {info}")
    if reply.status_code != 200:
        raise typer.Exit(1)


def split_symbols(values: list[str] | None) -> tuple[str, ...]:
    """`--symbols 005930,000660 --symbols 035420` → the three codes, in order, once each."""
    out: list[str] = []
    for value in values or ():
        for code in value.replace(",", " ").split():
            if code not in out:
                out.append(code)
    return tuple(out)


@app.command()
def sim(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="port (default KISRAY_SIM_PORT)")] = None,
    symbols: Annotated[
        list[str] | None,
        typer.Option(
            "--symbols",
            help="symbols to simulate: repeat the option or give a comma-separated list",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="market seed (default KISRAY_SIM_SEED)")] = None,
    rate: Annotated[float, typer.Option(help="trades per simulated second, all symbols")] = 20.0,
    speed: Annotated[float, typer.Option(help="simulated seconds per real second")] = 1.0,
    real_hours: Annotated[
        bool, typer.Option("--real-hours", help="follow the KRX clock (closed at night)")
    ] = False,
    trade_width: Annotated[
        int, typer.Option(help="H0STCNT0 fields per record: 47 (live 2026) or 46 (documented)")
    ] = 47,
    book_width: Annotated[
        int, typer.Option(help="H0STASP0 fields per record: 63 (live 2026), 62 or 59 (documented)")
    ] = 63,
    max_batch: Annotated[int, typer.Option(help="most trade records in one frame")] = 20,
    trade_frames: Annotated[
        str, typer.Option(help="burst (mostly one record a frame, as live) or packed")
    ] = "burst",
    books_per_frame: Annotated[int, typer.Option(help="book snapshots in one frame")] = 1,
    replay: Annotated[
        str | None, typer.Option(help="replay raw frames from this file instead")
    ] = None,
    ping_interval: Annotated[float, typer.Option(help="PINGPONG period in seconds")] = 10.0,
) -> None:
    """Run the KIS simulator (REST + WebSocket) on its own."""
    from engine.sim.config import SimulatorConfig
    from engine.sim.server import run_simulator

    settings = _settings()
    configure_from_settings(settings)
    config = SimulatorConfig(
        host=host,
        port=settings.sim_port if port is None else port,
        symbols=split_symbols(symbols) or tuple(settings.symbols),
        seed=settings.sim_seed if seed is None else seed,
        rate=rate,
        speed=speed,
        real_hours=real_hours,
        trade_width=trade_width,
        book_width=book_width,
        max_batch=max_batch,
        trade_frames=trade_frames,
        books_per_frame=books_per_frame,
        replay_path=replay,
        ping_interval_s=ping_interval,
        max_registrations=settings.max_registrations,
    )
    console.print(f"KIS simulator on ws://{host}:{config.port} and http://{host}:{config.port}")
    with contextlib.suppress(KeyboardInterrupt):
        run_simulator(config)


@app.command()
def load(
    path: Annotated[str, typer.Argument(help="CSV or Parquet file of 1-minute candles")],
    symbol: Annotated[
        str | None, typer.Option(help="the symbol of a file without a symbol column / only this")
    ] = None,
    batch_rows: Annotated[int, typer.Option(help="rows per COPY batch", min=1)] = 100_000,
) -> None:
    """Import 1-minute candles (columns: symbol, ts, open, high, low, close, volume)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from engine.history.loader import load_file
    from engine.storage.migrate import migrate

    settings = _settings()
    configure_from_settings(settings)
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with database_url(settings) as url:
            asyncio.run(migrate(url))
            with Progress(*columns, console=console, transient=True) as progress:
                task = progress.add_task("loading", total=None)

                def advance(done: int, total: int) -> None:
                    progress.update(task, completed=done, total=total)

                report = asyncio.run(
                    load_file(url, path, symbol=symbol, batch_rows=batch_rows, on_progress=advance)
                )
    except KisrayError as exc:
        raise _fail(exc, 1) from None
    console.print(
        f"{report.rows_read} rows read, {report.rows_changed} new or changed, "
        f"{len(report.symbols)} symbols, {report.first_ts} .. {report.last_ts}, "
        f"{report.seconds:.1f} s; aggregates are current"
    )


@app.command()
def backfill(
    symbol: Annotated[str, typer.Argument(help="6-character KRX code, e.g. 005930")],
    from_: Annotated[
        str | None, typer.Option("--from", help="first KST date, YYYY-MM-DD (default: --to)")
    ] = None,
    to: Annotated[
        str | None, typer.Option(help="last KST date, YYYY-MM-DD (default: today)")
    ] = None,
    gaps: Annotated[
        bool, typer.Option("--gaps", help="fetch only the days the gap detector finds incomplete")
    ] = False,
) -> None:
    """Fetch 1-minute bars from the KIS minute-chart endpoints into the database."""
    from datetime import date, timedelta

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from engine.domain.symbols import parse_symbol
    from engine.errors import InvalidRangeError
    from engine.history.backfill import backfill_symbol, kst_today
    from engine.storage.migrate import migrate

    settings = _settings()
    configure_from_settings(settings)
    try:
        code = parse_symbol(symbol)
        try:
            last = date.fromisoformat(to) if to else kst_today()
            first = date.fromisoformat(from_) if from_ else last
        except ValueError as exc:
            raise InvalidRangeError(f"--from/--to: {exc}") from None
        with database_url(settings) as url:
            asyncio.run(migrate(url))
            total = (last - first).days + 1
            columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console, transient=True) as progress:
                task = progress.add_task(f"backfill {code}", total=max(total, 1))

                def advance(day: str, rows: int) -> None:
                    done = (
                        last - date(int(day[:4]), int(day[4:6]), int(day[6:])) + timedelta(days=1)
                    )
                    progress.update(
                        task, completed=min(total, done.days), description=f"{rows} rows"
                    )

                reports = asyncio.run(
                    backfill_symbol(settings, url, code, first, last, gaps=gaps, progress=advance)
                )
    except KisrayError as exc:
        raise _fail(exc, 1) from None
    if gaps and not reports:
        console.print(f"{code}: no gaps between {first} and {last}")
        return
    for r in reports:
        console.print(
            f"{code} {r.first} .. {r.last}: {r.rows_fetched} rows fetched, "
            f"{r.rows_changed} new or changed, {len(r.days)} days, {r.calls} KIS calls"
        )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
