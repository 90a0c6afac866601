"""Ingest throughput: H0STCNT0 trades through the bar builder and the writer, sustained.

Feeds synthetic trades (10 symbols, one trade per symbol per second, 2 % duplicates, trading days
one after another) into `RecorderCore` — BarBuilder + checkpoints + spool + batched upserts into a
private embedded PostgreSQL with the PostgreSQL-mode aggregates kept current — flushing about once
a second of wall time, for `--seconds` (default 60). Trade generation is outside the timed part.

Baselines measured in the same run: a naive builder (a dict of per-minute OHLC and Σ CNTG_VOL, no
duplicate or reorder handling, no writer) and our builder alone.

Run: .venv/bin/python bench/bench_ingest.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import tempfile
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import psutil

from engine.kis.records import Trade
from engine.kis.timeconv import kst_to_utc
from engine.recorder.builder import BarBuilder
from engine.recorder.core import RecorderCore
from engine.storage.embedded import EmbeddedPostgres
from engine.storage.migrate import migrate

SYMBOLS = tuple(f"{100000 + i * 10:06d}" for i in range(10))
MINUTES_PER_DAY = 381
FIRST_DAY = date(2024, 1, 2)


def trade_days() -> Iterator[str]:
    d = FIRST_DAY
    while True:
        if d.weekday() < 5:
            yield d.strftime("%Y%m%d")
        d += timedelta(days=1)


def minute_chunks(seed: int = 1) -> Iterator[list[Trade]]:
    """One list of trades per session minute, all symbols interleaved by second."""
    rng = random.Random(seed)
    for day in trade_days():
        cum = dict.fromkeys(SYMBOLS, 0)
        price = {s: 10_000 + 1_000 * i for i, s in enumerate(SYMBOLS)}
        for minute in range(MINUTES_PER_DAY):
            chunk: list[Trade] = []
            total = 9 * 60 + minute
            hhmm = f"{total // 60:02d}{total % 60:02d}"
            for second in range(60):
                hhmmss = f"{hhmm}{second:02d}"
                ts = kst_to_utc(day, hhmmss)
                for s in SYMBOLS:
                    vol = rng.randint(1, 300)
                    cum[s] += vol
                    price[s] = max(100, price[s] + rng.choice((-10, 0, 10)))
                    p = price[s]
                    t = Trade(
                        s, ts, day, hhmmss, p, "2", 0, 0.0, 0.0, p, p, p, p, p,
                        vol, cum[s], 0, 0.0, "1", "20", False, "0",
                    )  # fmt: skip
                    chunk.append(t)
                    if rng.random() < 0.02:
                        chunk.append(t)  # a duplicate, as after a reconnect
            yield chunk


def naive_rate(seconds: float) -> float:
    bars: dict[tuple[str, int], list[int]] = {}
    done, spent = 0, 0.0
    for chunk in minute_chunks(2):
        started = time.perf_counter()
        for t in chunk:
            key = (t.symbol, int(t.ts.timestamp()) // 60)
            bar = bars.get(key)
            if bar is None:
                bars[key] = [t.price, t.price, t.price, t.price, t.volume]
            else:
                if t.price > bar[1]:
                    bar[1] = t.price
                if t.price < bar[2]:
                    bar[2] = t.price
                bar[3] = t.price
                bar[4] += t.volume
        spent += time.perf_counter() - started
        done += len(chunk)
        if len(bars) > 50_000:
            bars.clear()
        if spent >= seconds:
            return done / spent
    return 0.0


def builder_rate(seconds: float) -> float:
    builder = BarBuilder()
    done, spent = 0, 0.0
    for chunk in minute_chunks(3):
        started = time.perf_counter()
        builder.add_many(chunk)
        builder.drain()
        spent += time.perf_counter() - started
        done += len(chunk)
        if spent >= seconds:
            return done / spent
    return 0.0


async def pipeline(url: str, spool: Path, seconds: float) -> dict:
    core = RecorderCore(url, spool, idle_close_s=3600)
    await core.start()
    proc = psutil.Process()
    done, spent = 0, 0.0
    wall_start = time.monotonic()
    next_flush = wall_start + 1.0
    rss_start = rss_peak = 0.0
    samples: list[tuple[float, float]] = []
    for chunk in minute_chunks(4):
        started = time.perf_counter()
        core.add_trades(chunk)
        now = time.monotonic()
        if now >= next_flush:
            await core.flush()
            next_flush = now + 1.0
        spent += time.perf_counter() - started
        done += len(chunk)
        elapsed = now - wall_start
        if not samples or elapsed - samples[-1][0] >= 5:
            gc.collect()
            rss = proc.memory_info().rss / 2**20
            samples.append((elapsed, rss))
            if elapsed >= 10 and not rss_start:
                rss_start = rss  # after warm-up: pools, caches and the first days are in place
            rss_peak = max(rss_peak, rss)
        if elapsed >= seconds:
            break
    started = time.perf_counter()
    result = await core.flush()
    spent += time.perf_counter() - started
    health = core.health()
    await core.close()
    rss_end = samples[-1][1]
    return {
        "ticks": done,
        "seconds_in_pipeline": spent,
        "wall_seconds": time.monotonic() - wall_start,
        "ticks_per_s": done / spent,
        "rows_written": health["written_rows"],
        "backlog": result.backlog_batches,
        "rss_start_mb": rss_start or samples[0][1],
        "rss_end_mb": rss_end,
        "rss_peak_mb": rss_peak,
        "rss_samples": samples,
        "duplicates": health["ticks"]["duplicates"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    naive = naive_rate(min(5.0, args.seconds / 4))
    ours = builder_rate(min(5.0, args.seconds / 4))
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        server = EmbeddedPostgres(Path(tmp))
        status = server.start()
        try:
            asyncio.run(migrate(status.url))
            run = asyncio.run(pipeline(status.url, Path(tmp) / "spool", args.seconds))
        finally:
            server.stop()
    growth = run["rss_end_mb"] - run["rss_start_mb"]
    print(f"{'stage':<44}{'ticks/s':>12}")
    print(f"{'naive builder (baseline, no dedupe, no DB)':<44}{naive:>12,.0f}")
    print(f"{'BarBuilder alone':<44}{ours:>12,.0f}")
    print(f"{'BarBuilder + writer (PostgreSQL, aggregates)':<44}{run['ticks_per_s']:>12,.0f}")
    print()
    print(
        f"{run['ticks']:,} ticks ({run['duplicates']:,} duplicates) in {run['wall_seconds']:.0f} s "
        f"wall, {run['seconds_in_pipeline']:.1f} s in the pipeline; "
        f"{run['rows_written']:,} 1-minute rows written; backlog {run['backlog']}"
    )
    print(
        "RSS MB (t, rss): "
        + " ".join(f"{t:.0f}s:{rss:.0f}" for t, rss in run["rss_samples"])
        + f"; growth after warm-up {growth:+.1f} MB"
    )
    result = {
        "ticks_per_s": round(run["ticks_per_s"]),
        "rss_growth_mb": round(growth, 1),
        "seconds": round(run["wall_seconds"]),
        "wall_ticks_per_s": round(run["ticks"] / run["wall_seconds"]),  # incl. trade generation
        "baseline_naive_ticks_per_s": round(naive),
        "builder_only_ticks_per_s": round(ours),
        "rows_written": run["rows_written"],
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
