"""`WS /ws` end to end: real Serve, real session actors, the real simulator behind kis-socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import ray
import websockets

from actors.recorder import Recorder
from api.cli.sim_process import SimulatorProcess
from engine.config import DEFAULT_SYMBOLS
from engine.live.hub import RENEW_EVERY_S, SPARE_LEASES
from engine.storage.migrate import migrate
from tests.api.ws_support import kill_socket_actor, start_socket_actor
from tests.conftest import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live_url(serve_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The /ws URL with a simulator behind the `kis-socket` actor; yields the ws:// base."""
    port = free_port()
    sim = SimulatorProcess(port, tmp_path_factory.mktemp("sim") / "sim.log")
    sim.start()
    start_socket_actor(f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}")
    try:
        yield serve_url.replace("http://", "ws://") + "/ws"
    finally:
        kill_socket_actor()
        sim.stop()


async def next_of(ws, kind: str, within: float = 10.0) -> dict:
    async with asyncio.timeout(within):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == kind:
                return message


async def test_subscribe_receives_only_its_trades_and_pongs(live_url: str) -> None:
    async with websockets.connect(live_url) as ws:
        session = await next_of(ws, "session")
        assert len(session["id"]) == 32
        await ws.send(json.dumps({"op": "subscribe", "channels": ["trade:005930", "book:005930"]}))
        # The session's first /ws client may wait for the socket actor's first connection.
        subscribed = await next_of(ws, "subscribed", within=30.0)
        assert subscribed["channels"] == ["trade:005930", "book:005930"]
        symbols = set()
        for _ in range(3):
            trades = await next_of(ws, "trade", within=15)
            symbols.add(trades["symbol"])
            assert trades["data"] and {"price", "volume", "time"} <= set(trades["data"][0])
        assert symbols == {"005930"}  # filtered at the source
        book = await next_of(ws, "book", within=15)
        assert len(book["data"]["asks"]) == 10
        await ws.send(json.dumps({"op": "ping"}))
        await next_of(ws, "pong")


async def test_subscribed_comes_before_any_data_of_the_channels_it_adds(live_url: str) -> None:
    """Channels another tab already streams deliver at once; the ack still leads them."""
    channels = ["trade:005930", "book:005930", "candle:005930:1m"]
    async with websockets.connect(live_url) as first:
        await next_of(first, "session")
        await first.send(json.dumps({"op": "subscribe", "channels": channels}))
        await next_of(first, "subscribed", within=30.0)
        await next_of(first, "trade", within=15)
        for _ in range(3):
            async with websockets.connect(live_url) as tab:
                await next_of(tab, "session")
                await tab.send(json.dumps({"op": "subscribe", "channels": channels}))
                async with asyncio.timeout(10):
                    before = []
                    while (message := json.loads(await tab.recv()))["type"] != "subscribed":
                        before.append(message["type"])
                assert message["channels"] == channels
                assert not {"trade", "book", "candle"} & set(before), before


async def test_bad_messages_get_errors_and_the_socket_stays_open(live_url: str) -> None:
    async with websockets.connect(live_url) as ws:
        await next_of(ws, "session")
        cases = [
            ("not json", "BAD_REQUEST"),
            (json.dumps({"op": "dance"}), "BAD_REQUEST"),
            (json.dumps({"op": "subscribe", "channels": ["trade:12"]}), "INVALID_SYMBOL"),
            (json.dumps({"op": "subscribe", "channels": ["candle:005930:7m"]}), "INVALID_INTERVAL"),
            (json.dumps({"op": "subscribe", "channels": "trade:005930"}), "BAD_REQUEST"),
        ]
        for text, code in cases:
            await ws.send(text)
            error = await next_of(ws, "error")
            assert error["code"] == code, (text, error)
        too_many = [f"trade:{n:06d}" for n in range(1, 26)]
        await ws.send(json.dumps({"op": "subscribe", "channels": too_many}))
        assert (await next_of(ws, "error"))["code"] == "SUBSCRIPTION_LIMIT"
        await ws.send(json.dumps({"op": "ping"}))
        await next_of(ws, "pong")
    base = live_url.replace("ws://", "http://").removesuffix("/ws")
    async with httpx.AsyncClient(timeout=10) as http:
        metrics = await http.get(f"{base}/metrics")
    counted = {
        line.split('"')[1]: float(line.split()[-1])
        for line in metrics.text.splitlines()
        if line.startswith("kisray_ws_client_messages_total{")
    }
    assert counted.get("other", 0) >= 1 and counted.get("ping", 0) >= 1, counted
    assert counted.get("subscribe", 0) >= 4, counted


async def test_a_binary_frame_gets_an_error_and_the_socket_stays_open(live_url: str) -> None:
    async with websockets.connect(live_url) as ws:
        await next_of(ws, "session")
        await ws.send(json.dumps({"op": "ping"}).encode())  # bytes: a binary frame
        error = await next_of(ws, "error")
        assert error["code"] == "BAD_REQUEST" and "text frames" in error["message"]
        await ws.send(json.dumps({"op": "ping"}))
        await next_of(ws, "pong")


async def test_unsubscribe_stops_the_channel_and_resume_restores_it(live_url: str) -> None:
    async with websockets.connect(live_url) as ws:
        session_id = (await next_of(ws, "session"))["id"]
        channels = ["trade:000660", "candle:000660:1m"]
        await ws.send(json.dumps({"op": "subscribe", "channels": channels}))
        await next_of(ws, "subscribed")
        candle = await next_of(ws, "candle", within=15)
        assert candle["interval"] == "1m" and candle["data"]["live"] is True
        await ws.send(json.dumps({"op": "unsubscribe", "channels": ["trade:000660"]}))
        assert (await next_of(ws, "unsubscribed"))["channels"] == ["trade:000660"]
        await asyncio.sleep(0.3)  # whatever was already queued drains
        while True:  # drain
            try:
                async with asyncio.timeout(0.2):
                    await ws.recv()
            except TimeoutError:
                break
        with pytest.raises(TimeoutError):
            await next_of(ws, "trade", within=2)
    async with websockets.connect(f"{live_url}?resume={session_id}") as ws:
        assert (await next_of(ws, "session"))["id"] == session_id
        assert (await next_of(ws, "subscribed"))["channels"] == ["candle:000660:1m"]
        await next_of(ws, "candle", within=15)


async def test_the_socket_token_is_checked(live_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from api.ws import check_access
    from engine.config import get_settings
    from engine.errors import UnauthorizedError

    class FakeHandshake:  # only what check_access reads: headers and query parameters
        def __init__(self, headers: dict[str, str], query: dict[str, str]) -> None:
            self.headers = headers
            self.query_params = query

    monkeypatch.setenv("KISRAY_API_TOKEN", "s3cret")
    monkeypatch.setenv("KISRAY_CORS_ORIGINS", "http://app.example")
    get_settings.cache_clear()
    try:
        check_access(FakeHandshake({"origin": "http://app.example"}, {"token": "s3cret"}))
        check_access(FakeHandshake({"authorization": "Bearer s3cret"}, {}))
        for headers, query in [
            ({}, {}),
            ({}, {"token": "wrong"}),
        ]:  # the origin is api.security's one policy (tests/api/test_security.py)
            with pytest.raises(UnauthorizedError):
                check_access(FakeHandshake(headers, query))
    finally:
        get_settings.cache_clear()


def test_demo_page_is_served_with_its_chart_library(serve_url: str) -> None:
    page = httpx.get(f"{serve_url}/demo", timeout=10)
    assert page.status_code == 200 and "new WebSocket" in page.text
    assert '<script src="demo/lightweight-charts.js">' in page.text  # no CDN
    library = httpx.get(f"{serve_url}/demo/lightweight-charts.js", timeout=10)
    assert library.status_code == 200
    assert library.headers["content-type"].startswith("text/javascript")
    assert "LightweightCharts" in library.text
    license_ = httpx.get(f"{serve_url}/demo/LICENSE-lightweight-charts", timeout=10)
    assert license_.status_code == 200 and "Apache License" in license_.text


async def test_candle_channel_is_the_recorders_forming_bar(
    live_url: str, serve_url: str, make_database: Callable[[], str], tmp_path: Path
) -> None:
    """One owner: /ws sends the recorder's forming bar (REST's live bar), not one built from the
    trades the replica happened to see since it subscribed."""
    url = make_database()
    await migrate(url)
    # Flushing every 2 s keeps each publication apart long enough for the watcher below.
    recorder = Recorder.options(
        name="recorder",
        namespace="kisray",
        runtime_env={"env_vars": {"KISRAY_RECORDER_FLUSH_S": "2"}},
    ).remote(url, ["005930"], candle_actor_name=None, state_dir=str(tmp_path / "recorder"))
    published: list[dict] = []  # every bar of 005930 the recorder published, in order

    async def watch() -> None:
        after = 0
        while True:
            after, bars = await recorder.forming_updates.remote(after, 5.0)
            bar = bars["005930"].as_data() if "005930" in bars else None
            if bar is not None and (not published or published[-1] != bar):
                published.append(bar)

    watcher = None
    try:
        deadline = time.monotonic() + 40
        while not await recorder.ready.remote():
            assert time.monotonic() < deadline, "recorder not ready"
            await asyncio.sleep(0.3)
        watcher = asyncio.create_task(watch())
        while not published:
            assert time.monotonic() < deadline, "the recorder published no forming bar"
            await asyncio.sleep(0.2)
        async with websockets.connect(live_url) as ws:
            await next_of(ws, "session")
            await ws.send(json.dumps({"op": "subscribe", "channels": ["candle:005930:1m"]}))
            await next_of(ws, "subscribed")
            before = published[-1]
            first = (await next_of(ws, "candle", within=3))["data"]  # at once, not next flush
            after_first = {
                s: b.as_data() for s, b in (await recorder.forming_bars.remote()).items()
            }
            assert first.pop("live") is True
            if first["time"] == before["time"] == after_first["005930"]["time"]:
                # forming_bars() is read between two publications: bounded by them.
                assert first["open"] == before["open"]
                assert before["volume"] <= first["volume"] <= after_first["005930"]["volume"]
            updates = [(await next_of(ws, "candle", within=8))["data"] for _ in range(3)]
        await asyncio.sleep(0.5)  # the watcher has seen the last publication too
        async with httpx.AsyncClient(timeout=10) as http:
            stats = (await http.get(f"{serve_url}/ws/stats")).json()
        assert stats["candle_source"] == "recorder"
        for data in updates:
            assert data.pop("live") is True
            assert data in published, (data, published[-5:])  # same minute, same volume/open
    finally:
        if watcher is not None:
            watcher.cancel()
        ray.kill(recorder, no_restart=True)


async def test_a_new_tab_takes_a_session_leased_ahead(live_url: str) -> None:
    """The replica keeps sessions leased before tabs arrive, so a new tab skips the pool's
    round trip; each one taken is replaced, and the pool counts them as leased."""
    from api.hub import replica_session_pool

    stats_url = live_url.replace("ws://", "http://") + "/stats"

    async def spares() -> int:
        async with httpx.AsyncClient() as client:
            return (await client.get(stats_url, timeout=10)).json()["spare_leases"]

    async def wait_for_spares() -> None:
        for _ in range(300):
            if await spares() >= SPARE_LEASES:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the replica holds {await spares()} spare leases after 30 s")

    await wait_for_spares()
    pool = replica_session_pool()
    leased_before = (await pool.stats.remote())["leased"]
    async with websockets.connect(live_url) as ws:
        first = (await next_of(ws, "session"))["id"]
        await wait_for_spares()  # the one taken was replaced
        assert (await pool.stats.remote())["leased"] == leased_before + 1
        async with websockets.connect(live_url) as other:
            assert (await next_of(other, "session"))["id"] != first


async def test_frames_are_not_compressed_by_default(live_url: str) -> None:
    """Deflate would cost ~0.14 ms of CPU per 25 KB frame (KISRAY_WS_COMPRESSION turns it on):
    the client offers permessage-deflate, as browsers do, and the server declines."""
    async with websockets.connect(live_url, compression="deflate") as ws:
        assert ws.response.status_code == 101
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None


async def test_take_lease_hands_out_a_session_leased_before_the_tab(ray_cluster: None) -> None:
    """The tab's session is one the hub already held, not a fresh round trip to the pool."""
    from api.hub import RayBarSource, RaySessionPool, RayUpstream, replica_session_pool
    from engine.live.hub import Hub
    from tests.api.test_ws_hub import FakeSocket, Remote

    pool = replica_session_pool()
    upstream = RayUpstream(lambda: Remote(FakeSocket()))
    hub = Hub(upstream, RaySessionPool(pool, replica_session_pool), RayBarSource())
    await hub._fill_spares()
    spares = {lease.session_id for lease in hub.spare_leases}
    assert len(spares) == SPARE_LEASES
    lease = await hub.take_lease("tab")
    try:
        assert lease.session_id in spares
    finally:
        await hub.stop()  # gives the spares back
        await pool.release.remote(lease.session_id, park=False)


async def test_candle_channels_at_any_interval_start_at_rest_and_never_step_back(
    live_url: str, serve_url: str, make_database: Callable[[], str], tmp_path: Path
) -> None:
    """What a chart does: `setData` from /candles, then `update()` from /ws at 1m and 5m. The
    first message is never older than the bar /candles just returned, a channel never steps back,
    and the 5m bar is the one /candles shows for the same forming minute. (Its own symbol: the
    replica still holds the earlier test's recorder's bar of 005930 for the current minute.)"""
    url = make_database()
    await migrate(url)
    recorder = Recorder.options(
        name="recorder",
        namespace="kisray",
        runtime_env={"env_vars": {"KISRAY_RECORDER_FLUSH_S": "2"}},
    ).remote(url, ["035420"], state_dir=str(tmp_path / "recorder"))  # pushes to `candles`

    async def rest_live(http: httpx.AsyncClient, interval: str) -> dict | None:
        params = {"interval": interval, "limit": 1}
        response = await http.get(f"{serve_url}/candles/035420", params=params)
        if response.status_code != 200:
            return None
        (row,) = response.json()["candles"][-1:]
        return row if row["live"] else None

    def key(bar: dict) -> tuple[int, int]:
        return bar["time"], bar["volume"]

    try:
        async with httpx.AsyncClient(timeout=10) as http:
            deadline = time.monotonic() + 40
            while await rest_live(http, "5m") is None:  # the candle service has a forming bar
                assert time.monotonic() < deadline, "no live bar in /candles"
                await asyncio.sleep(0.5)
            equal_seen = False
            for _ in range(3):  # each subscription on a fresh socket, as a page reload does
                shown = {i: await rest_live(http, i) for i in ("1m", "5m")}
                async with websockets.connect(live_url) as ws:
                    await next_of(ws, "session", within=30)  # the first may wait for the pool
                    channels = ["candle:035420:1m", "candle:035420:5m"]
                    await ws.send(json.dumps({"op": "subscribe", "channels": channels}))
                    subscribed = await next_of(ws, "subscribed", within=30)
                    assert subscribed["channels"] == channels
                    last: dict[str, dict] = {}
                    deadline = time.monotonic() + 12
                    while len(last) < 2 or time.monotonic() < deadline:
                        message = await next_of(ws, "candle", within=8)
                        interval, bar = message["interval"], message["data"]
                        assert bar.pop("live") is True
                        held = last.get(interval) or shown[interval]
                        assert key(bar) >= key(held), (interval, held, bar)  # never back
                        last[interval] = bar
                        if interval == "5m" and not equal_seen:
                            now = {i: await rest_live(http, i) for i in ("1m", "5m")}
                            rest = {
                                i: {k: v for k, v in b.items() if k in bar} for i, b in now.items()
                            }
                            if rest["1m"] == last.get("1m"):  # no flush in between
                                assert rest["5m"] == bar
                                equal_seen = True
            assert equal_seen, "never caught /candles and /ws on the same forming minute"
    finally:
        ray.kill(recorder, no_restart=True)
        candles = ray.get_actor("candles", namespace="kisray")
        await candles.update_forming_bar.remote("035420", None)


def _kill_actor_processes(class_name: str) -> int:
    """SIGKILL every worker process of this test session's cluster running an actor of this
    class (Ray titles the process `ray::<Class>` or `ray::<Class>.<method>`)."""
    killed = 0
    for proc in _cluster_workers():
        with contextlib.suppress(psutil.Error):
            title = (proc.cmdline() or [""])[0]
            if title == f"ray::{class_name}" or title.startswith(f"ray::{class_name}."):
                proc.kill()
                killed += 1
    return killed


def _cluster_workers() -> list[psutil.Process]:
    """The worker processes of this session's raylet (other Ray clusters may run here)."""
    flag = f"--gcs-address={ray.get_runtime_context().gcs_address}"
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline and cmdline[0].endswith("/raylet") and flag in cmdline:
            return proc.children(recursive=True)
    raise AssertionError("this session's raylet was not found")


async def expect(ws, kind: str, within: float) -> dict:
    """The next message of this kind; any error message on the way fails the test."""
    async with asyncio.timeout(within):
        while True:
            message = json.loads(await ws.recv())
            assert message["type"] != "error", message
            if message["type"] == kind:
                return message


@pytest.mark.parametrize("victim", ["SessionPool", "SessionActor"])
async def test_killed_session_actors_heal_for_new_and_open_tabs(live_url: str, victim: str) -> None:
    """kill -9 of the session pool (its sessions die with it) or of every session actor: the
    next 5 tabs get trades within 2 s of connecting, and an open tab's later ops still work,
    with no error and no reconnect."""
    async with websockets.connect(live_url) as open_tab:
        session_id = (await expect(open_tab, "session", 10))["id"]
        await open_tab.send(json.dumps({"op": "subscribe", "channels": ["trade:005930"]}))
        await expect(open_tab, "subscribed", 30)
        await expect(open_tab, "trade", 10)
        assert _kill_actor_processes(victim) >= 1
        # Every demo symbol's trades: one symbol alone can pause for 2 s between bursts.
        every_trade = [f"trade:{symbol}" for symbol in DEFAULT_SYMBOLS]
        for _ in range(5):
            started = time.monotonic()
            async with websockets.connect(live_url) as tab:
                await expect(tab, "session", 2)
                await tab.send(json.dumps({"op": "subscribe", "channels": every_trade}))
                await expect(tab, "trade", 2 - (time.monotonic() - started))
        await open_tab.send(json.dumps({"op": "subscribe", "channels": ["book:005930"]}))
        subscribed = await expect(open_tab, "subscribed", 5)
        assert subscribed["channels"] == ["trade:005930", "book:005930"]  # nothing forgotten
        await expect(open_tab, "book", 5)
        await open_tab.send(json.dumps({"op": "unsubscribe", "channels": ["trade:005930"]}))
        assert (await expect(open_tab, "unsubscribed", 5))["channels"] == ["trade:005930"]
        await asyncio.sleep(RENEW_EVERY_S + 1)  # a restarted pool has learnt the open sessions
    # The session's actor copy followed the tab: a resume restores exactly what it held.
    async with websockets.connect(f"{live_url}?resume={session_id}") as resumed:
        assert (await expect(resumed, "session", 5))["id"] == session_id
        assert (await expect(resumed, "subscribed", 10))["channels"] == ["book:005930"]
