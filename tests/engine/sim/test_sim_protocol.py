"""The simulator speaks the KIS WebSocket protocol (docs/kis-protocol.md §2–§5) to a client."""

from __future__ import annotations

import asyncio
from itertools import pairwise

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from engine.kis import (
    BOOK,
    NOTICE,
    TRADE,
    Ack,
    AckKind,
    PingPong,
    RealtimeFrame,
    Trade,
    decode,
    subscribe_message,
    unsubscribe_message,
)

TIMEOUT = 5.0


async def sim_stats(rest_url: str) -> dict:
    async with httpx.AsyncClient(base_url=rest_url) as client:
        return (await client.get("/_sim/stats")).json()


async def next_of(ws, kind: type, keys=None, echo: bool = True):  # type: ignore[no-untyped-def]
    """Read frames until one of `kind` arrives, echoing PINGPONG on the way."""
    while True:
        msg = decode(await asyncio.wait_for(ws.recv(), TIMEOUT), keys, session_date="20250312")
        if isinstance(msg, PingPong) and echo:
            await ws.send(msg.raw)
        if isinstance(msg, kind):
            return msg


async def test_approval_key_is_issued_per_call(sim_factory, approval) -> None:
    async with sim_factory() as sim, httpx.AsyncClient(base_url=sim.rest_url) as client:
        bad = await client.post("/oauth2/Approval", json={"grant_type": "client_credentials"})
        assert bad.status_code == 403
    async with sim_factory() as sim:
        first, second = await approval(sim.rest_url), await approval(sim.rest_url)
        assert first != second and len(first) == 36


async def test_subscribe_ack_carries_key_and_data_frames_follow(sim_factory, approval) -> None:
    async with sim_factory(speed=20) as sim:
        key = await approval(sim.rest_url)
        async with websockets.connect(sim.ws_url + "/tryitout", ping_interval=None) as ws:
            await ws.send(subscribe_message(key, TRADE, "005930"))
            ack = await next_of(ws, Ack)
            assert (ack.kind, ack.msg_cd, ack.tr_id, ack.tr_key) == (
                AckKind.SUBSCRIBED,
                "OPSP0000",
                TRADE,
                "005930",
            )
            assert ack.aes_key is not None
            assert len(ack.aes_key.key) == 32 and len(ack.aes_key.iv) == 16
            frame = await next_of(ws, RealtimeFrame)
            assert frame.tr_id == TRADE and all(isinstance(r, Trade) for r in frame.records)
            assert frame.records[0].symbol == "005930" and frame.records[0].trade_date == "20250312"
            await ws.send(subscribe_message(key, TRADE, "005930"))
            assert (await next_of(ws, Ack)).kind is AckKind.ALREADY_SUBSCRIBED


async def _widths_and_counts(ws, frames: int) -> dict[str, tuple[set[int], list[int]]]:  # type: ignore[no-untyped-def]
    seen: dict[str, tuple[set[int], list[int]]] = {TRADE: (set(), []), BOOK: (set(), [])}
    for _ in range(frames):
        frame = await next_of(ws, RealtimeFrame)
        count = int(frame.raw.split("|")[2])
        assert count == len(frame.records)
        widths, counts = seen[frame.tr_id]
        counts.append(count)
        widths.add(frame.raw.split("|", 3)[3].count("^") // count + 1)
    return seen


async def test_live_widths_and_one_book_per_frame_by_default(sim_factory, approval) -> None:
    async with sim_factory(speed=30) as sim:
        key = await approval(sim.rest_url)
        async with websockets.connect(sim.ws_url, ping_interval=None) as ws:
            await ws.send(subscribe_message(key, BOOK, "000660"))
            await ws.send(subscribe_message(key, TRADE, "000660"))
            seen = await _widths_and_counts(ws, 40)
    assert seen[TRADE][0] == {47} and seen[BOOK][0] == {63}
    assert set(seen[BOOK][1]) == {1}


async def test_older_widths_and_batched_frames_on_request(sim_factory, approval) -> None:
    options = {"trade_width": 46, "book_width": 62, "max_batch": 3, "books_per_frame": 5}
    # At speed 300 one feed cycle spans several simulated seconds: enough books to batch.
    async with sim_factory(speed=300, **options) as sim:
        key = await approval(sim.rest_url)
        async with websockets.connect(sim.ws_url, ping_interval=None) as ws:
            await ws.send(subscribe_message(key, BOOK, "000660"))
            await ws.send(subscribe_message(key, TRADE, "000660"))
            seen = await _widths_and_counts(ws, 40)
    assert seen[TRADE][0] == {46} and seen[BOOK][0] == {62}
    assert max(seen[TRADE][1]) <= 3 and max(seen[BOOK][1]) == 5


async def test_unsubscribe_acks(sim_factory, approval) -> None:
    async with sim_factory() as sim:
        key = await approval(sim.rest_url)
        async with websockets.connect(sim.ws_url, ping_interval=None) as ws:
            await ws.send(subscribe_message(key, TRADE, "005930"))
            assert (await next_of(ws, Ack)).msg_cd == "OPSP0000"
            await ws.send(unsubscribe_message(key, TRADE, "005930"))
            ack = await next_of(ws, Ack)
            assert (ack.msg_cd, ack.kind, ack.ok) == ("OPSP0001", AckKind.UNSUBSCRIBED, True)
            await ws.send(unsubscribe_message(key, TRADE, "005930"))
            assert (await next_of(ws, Ack)).msg_cd == "OPSP0003"


async def test_the_42nd_registration_is_refused(sim_factory, approval) -> None:
    async with sim_factory() as sim:
        key = await approval(sim.rest_url)
        async with websockets.connect(sim.ws_url, ping_interval=None) as ws:
            codes = []
            for i in range(42):
                tr_id = TRADE if i % 2 else BOOK
                await ws.send(subscribe_message(key, tr_id, f"{100000 + i:06d}"))
                codes.append((await next_of(ws, Ack)).msg_cd)
            assert codes[:41] == ["OPSP0000"] * 41 and codes[41] == "OPSP0008"
        stats = await sim_stats(sim.rest_url)
        assert stats["registrations"] == [] and stats["connections_total"] == 1


async def test_second_connection_with_the_same_app_key_is_refused(sim_factory, approval) -> None:
    async with sim_factory() as sim:
        key = await approval(sim.rest_url)
        other_key = await approval(sim.rest_url)  # a different approval key, same app key
        async with websockets.connect(sim.ws_url, ping_interval=None) as first:
            await first.send(subscribe_message(key, TRADE, "005930"))
            assert (await next_of(first, Ack)).ok
            async with websockets.connect(sim.ws_url, ping_interval=None) as second:
                await second.send(subscribe_message(other_key, TRADE, "000660"))
                nack = await next_of(second, Ack)
                assert (nack.msg_cd, nack.rt_cd, nack.kind) == (
                    "OPSP8996",
                    "9",
                    AckKind.APPKEY_IN_USE,
                )
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(second.recv(), TIMEOUT)
            # The first keeps its session.
            await first.send(subscribe_message(key, TRADE, "000660"))
            assert (await next_of(first, Ack)).msg_cd == "OPSP0000"
        async with httpx.AsyncClient(base_url=sim.rest_url) as client:
            stats = (await client.get("/_sim/stats")).json()
        assert stats["max_concurrent_connections"] == 1 and stats["rejected_connections"] == 1


async def test_unknown_approval_key_gets_opsp0011(sim_factory, approval) -> None:
    async with sim_factory() as sim, websockets.connect(sim.ws_url, ping_interval=None) as ws:
        await ws.send(subscribe_message("not-issued", TRADE, "005930"))
        assert (await next_of(ws, Ack)).kind is AckKind.INVALID_APPROVAL


async def test_client_that_does_not_echo_pingpong_is_dropped(sim_factory, approval) -> None:
    async with sim_factory(ping_interval_s=0.2) as sim:
        key = await approval(sim.rest_url)
        async with websockets.connect(sim.ws_url, ping_interval=None) as silent:
            await silent.send(subscribe_message(key, TRADE, "005930"))
            await next_of(silent, Ack)
            await next_of(silent, PingPong, echo=False)
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(silent.recv(), TIMEOUT)
        # Echoing clients survive several intervals, with a text echo or an RFC 6455 pong.
        async with websockets.connect(sim.ws_url, ping_interval=None) as text_echo:
            for _ in range(4):
                await next_of(text_echo, PingPong)
        async with websockets.connect(sim.ws_url, ping_interval=None) as pong_echo:
            for _ in range(4):
                ping = await next_of(pong_echo, PingPong, echo=False)
                await pong_echo.pong(ping.raw.encode())
        stats = await sim_stats(sim.rest_url)
        assert stats["dropped_no_echo"] == 1 and stats["echoes_received"] >= 6


async def test_encrypted_notice_decrypts(sim_factory, approval) -> None:
    async with sim_factory() as sim:
        key = await approval(sim.rest_url)
        async with websockets.connect(sim.ws_url, ping_interval=None) as ws:
            await ws.send(subscribe_message(key, NOTICE, "myhtsid"))
            ack = await next_of(ws, Ack)
            assert ack.encrypted and ack.aes_key is not None
            async with httpx.AsyncClient(base_url=sim.rest_url) as client:
                sent = (await client.post("/_sim/notice", json={"hts_id": "myhtsid"})).json()
            assert sent == {"sent": 1}
            frame = await next_of(ws, RealtimeFrame, keys={NOTICE: ack.aes_key})
            assert frame.encrypted and frame.raw.startswith("1|H0STCNI0|001|")
            notice = frame.records[0]
            assert notice.customer_id == "myhtsid" and notice.is_fill and notice.qty == 10


async def test_faults_drop_malformed_pause_and_reject(sim_factory, approval) -> None:
    async with sim_factory(speed=20) as sim, httpx.AsyncClient(base_url=sim.rest_url) as client:
        key = await approval(sim.rest_url)
        async with websockets.connect(sim.ws_url, ping_interval=None) as ws:
            await ws.send(subscribe_message(key, TRADE, "005930"))
            await next_of(ws, Ack)
            reply = await client.post("/_sim/fault", json={"kind": "malformed"})
            assert reply.json()["affected"] == 1
            from engine.errors import KisProtocolError

            with pytest.raises(KisProtocolError):
                while True:
                    decode(await asyncio.wait_for(ws.recv(), TIMEOUT))
            await client.post("/_sim/fault", json={"kind": "drop"})
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), TIMEOUT)
        await client.post("/_sim/fault", json={"kind": "reject_next"})
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(sim.ws_url, ping_interval=None)
        assert (await client.post("/_sim/fault", json={"kind": "nope"})).status_code == 400
        stats = (await client.get("/_sim/stats")).json()
        assert stats["rejected_connections"] == 1 and stats["connections_open"] == 0


async def test_paused_symbol_leaves_a_gap_in_acml_vol(sim_factory, approval) -> None:
    async with sim_factory(speed=30) as sim, httpx.AsyncClient(base_url=sim.rest_url) as client:
        key = await approval(sim.rest_url)
        async with websockets.connect(sim.ws_url, ping_interval=None) as ws:
            await ws.send(subscribe_message(key, TRADE, "005930"))
            await next_of(ws, Ack)
            records: list[Trade] = []

            async def read() -> None:
                while True:
                    records.extend((await next_of(ws, RealtimeFrame)).records)

            reader = asyncio.create_task(read())
            await asyncio.sleep(0.3)
            await client.post(
                "/_sim/fault", json={"kind": "pause_symbol", "symbol": "005930", "seconds": 0.5}
            )
            await asyncio.sleep(0.9)
            reader.cancel()
            # Contiguous trades add exactly their own volume to ACML_VOL; ~15 simulated seconds
            # of trades never arrived, so one step jumps over them.
            steps = [b.cum_volume - a.cum_volume - b.volume for a, b in pairwise(records)]
            assert steps and max(steps) > 0 and steps.count(0) >= len(steps) - 1


async def test_pingpong_carries_the_simulated_time(sim_factory, approval) -> None:
    # The data says 2025-03-12 10:00 (pinned); the heartbeat must not say today's wall time.
    async with sim_factory(ping_interval_s=0.1) as sim:
        key = await approval(sim.rest_url)
        async with websockets.connect(sim.ws_url, ping_interval=None) as ws:
            await ws.send(subscribe_message(key, TRADE, "005930"))
            ping = await next_of(ws, PingPong)
    assert ping.datetime is not None and ping.datetime.startswith("2025031210000")
