"""GET /candles and /symbols through Serve, on the session's migrated database."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from datetime import UTC, date, datetime

import asyncpg
import httpx
import pytest

from engine.candles.store import refresh_aggregates, upsert_minute_bars
from engine.history.sample_data import synthetic_minute_bars

# Codes no other test uses, in a month nobody else loads.
SYMBOL, OTHER = "900100", "900110"
SYMBOLS = (SYMBOL, OTHER)


def kst(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) - 9 * 3600


# 1-minute rows deleted (with their aggregate buckets) inside the 14 June 2023 session.
HOLE = (kst(2023, 6, 14, 13, 0), kst(2023, 6, 14, 13, 30))


async def _load(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET TIME ZONE 'UTC'")
        bars = synthetic_minute_bars(list(SYMBOLS), date(2023, 6, 2), date(2023, 6, 16), seed=11)
        await upsert_minute_bars(conn, bars)
        start, end = (datetime.fromtimestamp(t, UTC) for t in HOLE)
        await conn.execute(
            "DELETE FROM market_candles WHERE symbol = $1 AND ts >= $2 AND ts < $3",
            SYMBOL,
            start,
            end,
        )
        await refresh_aggregates(conn, start, end)
    finally:
        await conn.close()


def loaded_client(serve_url: str, migrated_url: str) -> Iterator[httpx.Client]:
    """A client of the Serve app, with this module's candles loaded (idempotent)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _load(migrated_url)).result()
    with httpx.Client(base_url=serve_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def api(serve_url: str, migrated_url: str) -> Iterator[httpx.Client]:
    yield from loaded_client(serve_url, migrated_url)


def get(api: httpx.Client, path: str, **params) -> httpx.Response:
    return api.get(path, params=params)


def test_five_minute_candles_return_data(api) -> None:
    reply = get(api, f"/candles/{SYMBOL}", interval="5m", limit=20)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["symbol"] == SYMBOL and body["interval"] == "5m"
    times = [c["time"] for c in body["candles"]]
    assert len(times) == 20 and times == sorted(set(times))
    assert times[-1] == kst(2023, 6, 16, 15, 30)


def test_deleted_block_is_filled_flat_and_nothing_over_the_holiday(api) -> None:
    # 5 June is a Monday, 6 June Memorial Day: no session, nothing filled over it.
    reply = get(
        api, f"/candles/{SYMBOL}", interval="1m", **{"from": "2023-06-05T15:00", "to": "2023-06-08"}
    )
    days = {datetime.fromtimestamp(c["time"] + 9 * 3600, UTC).day for c in reply.json()["candles"]}
    assert days == {5, 7}
    reply = get(
        api,
        f"/candles/{SYMBOL}",
        interval="3m",
        **{"from": HOLE[0] - 600, "to": HOLE[1] + 600},
    )
    candles = reply.json()["candles"]
    assert [c["time"] for c in candles] == list(range(HOLE[0] - 540, HOLE[1] + 600, 180))
    filled = [c for c in candles if c["is_filled"]]
    assert [c["time"] for c in filled] == list(range(HOLE[0], HOLE[1], 180))
    previous = [c for c in candles if c["time"] < HOLE[0]][-1]["close"]
    assert all(c["open"] == c["high"] == c["low"] == c["close"] == previous for c in filled)
    assert all(c["volume"] == 0 for c in filled)
    unfilled = get(
        api,
        f"/candles/{SYMBOL}",
        interval="3m",
        fill="false",
        **{"from": HOLE[0] - 600, "to": HOLE[1] + 600},
    ).json()["candles"]
    assert [c for c in unfilled if HOLE[0] <= c["time"] < HOLE[1]] == []


def test_iso_and_epoch_bounds_agree(api) -> None:
    iso = get(
        api,
        f"/candles/{OTHER}",
        interval="1h",
        **{"from": "2023-06-07T09:00:00+09:00", "to": "2023-06-07T12:00:00"},
    )
    epoch = get(
        api,
        f"/candles/{OTHER}",
        interval="1h",
        **{"from": kst(2023, 6, 7, 9), "to": kst(2023, 6, 7, 12)},
    )
    assert iso.json() == epoch.json()
    assert [c["time"] for c in iso.json()["candles"]] == [kst(2023, 6, 7, h) for h in (9, 10, 11)]


def test_daily_bars_are_stamped_at_utc_midnight(api) -> None:
    body = get(
        api, f"/candles/{OTHER}", interval="1d", **{"from": "2023-06-01", "to": "2023-06-10"}
    )
    stamps = [datetime.fromtimestamp(c["time"], UTC) for c in body.json()["candles"]]
    assert [s.day for s in stamps] == [2, 5, 7, 8, 9]
    assert all((s.hour, s.minute) == (0, 0) for s in stamps)


def test_symbols_lists_first_and_last(api) -> None:
    reply = get(api, "/symbols")
    assert reply.status_code == 200
    listed = {s["symbol"]: s for s in reply.json()["symbols"]}
    assert listed[SYMBOL]["first"] == kst(2023, 6, 2, 9, 0)
    assert listed[SYMBOL]["last"] == kst(2023, 6, 16, 15, 30)


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"interval": "7m"}, 400, "INVALID_INTERVAL"),
        ({"interval": "1m", "from": "2023-06-08", "to": "2023-06-07"}, 400, "INVALID_RANGE"),
        ({"interval": "1m", "from": "2020-01-01", "to": "2023-06-07"}, 400, "INVALID_RANGE"),
        ({"interval": "1m", "from": "not-a-time"}, 400, "INVALID_RANGE"),
        ({"interval": "1m", "limit": "many"}, 400, "INVALID_RANGE"),
        ({"interval": "1m", "fill": "maybe"}, 422, "BAD_REQUEST"),
    ],
)
def test_bad_requests_get_the_envelope(api, params, status, code) -> None:
    reply = get(api, f"/candles/{SYMBOL}", **params)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == reply.headers["X-Request-ID"]


def test_malformed_symbol_and_no_data(api) -> None:
    reply = get(api, "/candles/59 30;", interval="1m")
    assert (reply.status_code, reply.json()["error"]["code"]) == (400, "INVALID_SYMBOL")
    reply = get(api, "/candles/999990", interval="1m")
    assert (reply.status_code, reply.json()["error"]["code"]) == (404, "NO_DATA_FOUND")
    weekend = get(
        api, f"/candles/{SYMBOL}", interval="5m", **{"from": "2023-06-10", "to": "2023-06-12"}
    )
    assert (weekend.status_code, weekend.json()["error"]["code"]) == (404, "NO_DATA_FOUND")


def test_client_request_id_is_echoed(api) -> None:
    reply = api.get("/candles/999990", headers={"X-Request-ID": "trace-42"})
    assert reply.json()["error"]["request_id"] == "trace-42"
    assert reply.headers["X-Request-ID"] == "trace-42"


def test_unknown_route_gets_the_envelope(api) -> None:
    reply = api.get("/no/such/route")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "NOT_FOUND"
