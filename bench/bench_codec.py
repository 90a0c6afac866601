"""Decoder throughput: records/s for H0STCNT0 and H0STASP0, single- vs multi-record frames,
against a naive baseline (envelope split + split('^') only, no typing) in the same run.

Records have the live widths the simulator sends by default (47 trade, 63 book fields). The
RESULT line carries the multi-record figures of both, so a ratio can be read from one run.

Run: .venv/bin/python bench/bench_codec.py
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from engine.kis import BOOK, TRADE, build_data_frame, encode_book, encode_trade, parse_data_frame
from engine.kis.tr import BOOK_LIVE_WIDTH, TRADE_LIVE_WIDTH
from engine.sim.market import SyntheticMarket

SESSION_DATE = "20250312"
TARGET_RECORDS = 300_000


def frames_for(tr_id: str, per_frame: int) -> tuple[list[str], int]:
    market = SyntheticMarket(seed=1, rate=60)
    trades = market.trades_between("005930", SESSION_DATE, 9 * 3600, 11 * 3600)
    if tr_id == TRADE:
        encoded = [encode_trade(t, TRADE_LIVE_WIDTH) for t in trades]
    else:
        books = [market.book("005930", SESSION_DATE, 9 * 3600 + s) for s in range(2000)]
        encoded = [encode_book(b, BOOK_LIVE_WIDTH) for b in books]
    frames = [
        build_data_frame(tr_id, encoded[i : i + per_frame])
        for i in range(0, len(encoded) - per_frame + 1, per_frame)
    ]
    return frames, per_frame * len(frames)


def naive(frame: str) -> int:
    _, _, count, payload = frame.split("|", 3)
    return len(payload.split("^")) // int(count)


def codec(frame: str) -> int:
    return len(parse_data_frame(frame, session_date=SESSION_DATE).records)


def rate(fn: Callable[[str], int], frames: list[str], records: int) -> float:
    # CPU time of this process: decoding is single-threaded, and on a shared machine wall time
    # mostly measures the neighbours.
    best = 0.0
    for _ in range(3):
        done, start = 0, time.process_time()
        while done < TARGET_RECORDS:
            for f in frames:
                fn(f)
            done += records
        best = max(best, done / (time.process_time() - start))
    return best


def main() -> None:
    rows, headline = [], {}
    for tr_id, name in ((TRADE, "trade"), (BOOK, "book")):
        for per_frame in (1, 10):
            frames, records = frames_for(tr_id, per_frame)
            ours, base = rate(codec, frames, records), rate(naive, frames, records)
            rows.append((tr_id, per_frame, ours, base))
            if per_frame > 1:
                headline[f"{name}_records_per_s"] = round(ours)
                headline[f"{name}_naive_per_s"] = round(base)
    print(f"{'TR':<10}{'records/frame':>14}{'codec rec/s':>14}{'naive rec/s':>14}{'ratio':>8}")
    for tr_id, per_frame, ours, base in rows:
        print(f"{tr_id:<10}{per_frame:>14}{ours:>14,.0f}{base:>14,.0f}{ours / base:>8.2f}")
    print(f"target ≥ {TARGET_RECORDS:,} records/s (multi-record frames are the headline)")
    print("RESULT " + json.dumps(headline))


if __name__ == "__main__":
    main()
