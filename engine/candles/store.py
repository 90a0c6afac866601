"""Writing 1-minute candles and keeping the 5m/15m/1h/1d aggregates current.

`upsert_minute_bars` is the one write path for the recorder, the loader and backfill. It stages
the rows with COPY, upserts them into `market_candles`, and in PostgreSQL mode recomputes, in the
same transaction, exactly the aggregate buckets whose 1-minute rows changed (set-based, one
statement per level). In TimescaleDB mode the continuous aggregates take care of themselves; bulk
writes of old data call `refresh_aggregates` afterwards because policies only look back so far.

Daily buckets: a row belongs to the bar of its KST calendar date; that bar's `ts` is 00:00 UTC
of the date (= 09:00 KST). Sub-daily buckets are UTC-aligned, which is KST-aligned too.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

import asyncpg
import polars as pl

from engine.domain.bars import MinuteBar
from engine.domain.intervals import DAY, HOUR, MINUTE, RELATIONS
from engine.domain.kst import KST_OFFSET
from engine.errors import InvalidCandlesError
from engine.storage.contention import retry_on_contention
from engine.storage.migrate import DbMode, database_mode

logger = logging.getLogger(__name__)

MINUTE_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # date_bin origin: a UTC midnight
MAX_PROBLEMS_REPORTED = 50

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True, slots=True)
class AggregateLevel:
    """One aggregate relation and how its buckets are formed from its source relation.

    A bucket labelled L holds the source rows with ts in [L - shift, L - shift + width):
    shift is 0 for UTC-aligned buckets and 9 h for the KST-date daily bar labelled 00:00 UTC.
    """

    interval: str
    relation: str
    width: timedelta
    source: str
    shift: timedelta = timedelta(0)
    # TimescaleDB: the continuous aggregate behind the relation and its policy end offset.
    cagg: str = ""
    end_offset: timedelta = timedelta(0)
    schedule: timedelta = timedelta(0)

    def label(self, ts: datetime) -> datetime:
        """The bucket label (`ts` of the aggregate row) that a source timestamp falls into."""
        shifted = ts + self.shift - _EPOCH
        return _EPOCH + (shifted // self.width) * self.width

    def source_range(self, label: datetime) -> tuple[datetime, datetime]:
        start = label - self.shift
        return start, start + self.width


RAW_RELATION = RELATIONS[MINUTE]  # the 1-minute rows every aggregate is built from

# Order matters: each level reads a level computed before it.
LEVELS: tuple[AggregateLevel, ...] = (
    AggregateLevel(
        "5m",
        RELATIONS[5 * MINUTE],
        timedelta(minutes=5),
        RAW_RELATION,
        cagg="market_candles_5m",
        end_offset=timedelta(minutes=10),
        schedule=timedelta(minutes=5),
    ),
    AggregateLevel(
        "15m",
        RELATIONS[15 * MINUTE],
        timedelta(minutes=15),
        RELATIONS[5 * MINUTE],
        cagg="market_candles_15m",
        end_offset=timedelta(minutes=30),
        schedule=timedelta(minutes=15),
    ),
    AggregateLevel(
        "1h",
        RELATIONS[HOUR],
        timedelta(hours=1),
        RELATIONS[5 * MINUTE],
        cagg="market_candles_1h",
        end_offset=timedelta(hours=2),
        schedule=timedelta(minutes=30),
    ),
    AggregateLevel(
        "1d",
        RELATIONS[DAY],
        timedelta(days=1),
        RELATIONS[HOUR],
        shift=KST_OFFSET,
        cagg="market_candles_1d_kst",
        end_offset=timedelta(days=1),
        schedule=timedelta(hours=1),
    ),
)
LEVEL_BY_INTERVAL = {level.interval: level for level in LEVELS}

# Staging tables live per connection; rows never outlive the transaction.
_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS kisray_incoming (
    seq bigint, symbol text, ts timestamptz,
    open numeric, high numeric, low numeric, close numeric, volume bigint
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS kisray_touched (symbol text, ts timestamptz)
    ON COMMIT DELETE ROWS;
TRUNCATE kisray_incoming, kisray_touched;
"""

# The last row of a batch wins for a repeated (symbol, ts); unchanged rows are not rewritten,
# so reloading a file changes nothing and recomputes nothing.
_UPSERT = """
WITH changed AS (
    INSERT INTO market_candles AS m (symbol, "interval", ts, open, high, low, close, volume)
    SELECT DISTINCT ON (symbol, ts) symbol, '1m', ts, open, high, low, close, volume
    FROM kisray_incoming
    ORDER BY symbol, ts, seq DESC
    ON CONFLICT (symbol, "interval", ts) DO UPDATE
        SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
            close = EXCLUDED.close, volume = EXCLUDED.volume
        WHERE (m.open, m.high, m.low, m.close, m.volume)
              IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close,
                                EXCLUDED.volume)
    RETURNING m.symbol, m.ts
)
INSERT INTO kisray_touched SELECT symbol, ts FROM changed
"""


def _recompute_sql(level: AggregateLevel) -> str:
    # Identifiers come from LEVELS (constants), values are bound: $1 width, $2 shift, $3 origin.
    # LATERAL: one primary-key range scan per touched bucket, whatever the (often stale, mid-load)
    # statistics say; a plain join on a range condition can degrade into a quadratic hash join.
    source_filter = "AND s.\"interval\" = '1m'" if level.source == RAW_RELATION else ""
    return f"""
INSERT INTO {level.relation} AS t (symbol, ts, open, high, low, close, volume)
SELECT b.symbol, b.label, a.open, a.high, a.low, a.close, a.volume
FROM (SELECT DISTINCT symbol, date_bin($1::interval, ts + $2::interval, $3::timestamptz) AS label
      FROM kisray_touched) AS b
CROSS JOIN LATERAL (
    SELECT (array_agg(s.open ORDER BY s.ts))[1] AS open,
           max(s.high) AS high, min(s.low) AS low,
           (array_agg(s.close ORDER BY s.ts DESC))[1] AS close,
           sum(s.volume)::bigint AS volume
    FROM {level.source} AS s
    WHERE s.symbol = b.symbol {source_filter}
      AND s.ts >= b.label - $2::interval AND s.ts < b.label - $2::interval + $1::interval
) AS a
WHERE a.open IS NOT NULL
ON CONFLICT (symbol, ts) DO UPDATE
    SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
        close = EXCLUDED.close, volume = EXCLUDED.volume
    WHERE (t.open, t.high, t.low, t.close, t.volume)
          IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close,
                            EXCLUDED.volume)
"""


_RECOMPUTE = {level.interval: _recompute_sql(level) for level in LEVELS}


def bars_frame(bars: Sequence[MinuteBar]) -> pl.DataFrame:
    """MinuteBar records as a frame; prices as exact decimal strings."""
    return pl.DataFrame(
        {
            "symbol": [b.symbol for b in bars],
            "ts": [b.ts for b in bars],
            **{name: [str(getattr(b, name)) for b in bars] for name in PRICE_COLUMNS},
            "volume": [b.volume for b in bars],
        },
        schema={
            "symbol": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            **dict.fromkeys(PRICE_COLUMNS, pl.String),
            "volume": pl.Int64,
        },
    )


def find_problems(frame: pl.DataFrame) -> list[tuple[int, str]]:
    """(row index, reason) for every row that is not a valid 1-minute candle.

    Expects the columns of MINUTE_COLUMNS with `ts` already a UTC datetime and prices numeric or
    numeric strings; a null means the value was missing or did not parse.
    """
    missing = [c for c in MINUTE_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidCandlesError(f"missing columns: {', '.join(missing)}")
    prices = {c: pl.col(c).cast(pl.Float64, strict=False) for c in PRICE_COLUMNS}
    volume = pl.col("volume").cast(pl.Int64, strict=False)
    checks: list[tuple[pl.Expr, str]] = [
        (pl.col("symbol").is_null() | (pl.col("symbol").str.len_chars() == 0), "missing symbol"),
        (pl.col("ts").is_null(), "missing or unparsable time"),
        *((prices[c].is_null(), f"missing or non-numeric {c}") for c in PRICE_COLUMNS),
        (volume.is_null(), "missing or non-integer volume"),
        (volume < 0, "negative volume"),
        (prices["high"] < prices["low"], "high < low"),
        (
            (prices["high"] < prices["open"]) | (prices["high"] < prices["close"]),
            "high below open or close",
        ),
        (
            (prices["low"] > prices["open"]) | (prices["low"] > prices["close"]),
            "low above open or close",
        ),
        (pl.min_horizontal(*prices.values()) <= 0, "non-positive price"),
        (pl.col("ts").dt.truncate("1m") != pl.col("ts"), "time is not the start of a minute"),
    ]
    flagged = frame.select(
        pl.int_range(pl.len()).alias("row"),
        *(cond.fill_null(False).alias(f"c{i}") for i, (cond, _) in enumerate(checks)),
    )
    bad = flagged.filter(pl.any_horizontal(pl.exclude("row")))
    problems: list[tuple[int, str]] = []
    for record in bad.iter_rows(named=True):
        reasons = [checks[i][1] for i in range(len(checks)) if record[f"c{i}"]]
        problems.append((record["row"], "; ".join(reasons)))
    return problems


def _normalise(rows: pl.DataFrame | Sequence[MinuteBar]) -> pl.DataFrame:
    frame = rows if isinstance(rows, pl.DataFrame) else bars_frame(rows)
    missing = [c for c in MINUTE_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidCandlesError(f"missing columns: {', '.join(missing)}")
    ts_type = frame.schema["ts"]
    if not isinstance(ts_type, pl.Datetime) or ts_type.time_zone is None:
        raise InvalidCandlesError("ts must be a time-zone-aware datetime column")
    frame = frame.select(MINUTE_COLUMNS).with_columns(pl.col("ts").dt.convert_time_zone("UTC"))
    problems = find_problems(frame)
    if problems:
        shown = "; ".join(f"row {row + 1}: {why}" for row, why in problems[:5])
        raise InvalidCandlesError(
            f"{len(problems)} invalid candle rows, nothing written ({shown})",
            tuple((row + 1, why) for row, why in problems[:MAX_PROBLEMS_REPORTED]),
        )
    return frame


def _csv_payload(frame: pl.DataFrame) -> bytes:
    # CSV text keeps decimal strings exact; COPY parses them straight into numeric.
    staged = frame.with_row_index("seq").select("seq", *MINUTE_COLUMNS)
    return staged.write_csv(include_header=False).encode()


async def upsert_minute_bars(
    db: Executor,
    rows: pl.DataFrame | Sequence[MinuteBar],
    *,
    mode: DbMode | None = None,
) -> int:
    """Insert or update 1-minute candles; returns how many rows were new or changed.

    Raises InvalidCandlesError (writing nothing) if any row is invalid. Runs in one transaction
    (joining the caller's if `db` is a connection already inside one), so the aggregates change
    together with the 1-minute rows.
    """
    frame = _normalise(rows)
    if frame.height == 0:
        return 0
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await _upsert(conn, frame, mode)
    return await _upsert(db, frame, mode)


async def _upsert(conn: asyncpg.Connection, frame: pl.DataFrame, mode: DbMode | None) -> int:
    mode = mode or await database_mode(conn) or "postgres"
    async with conn.transaction():
        await conn.execute(_STAGING_DDL)
        await conn.copy_to_table(
            "kisray_incoming",
            source=io.BytesIO(_csv_payload(frame)),
            columns=["seq", *MINUTE_COLUMNS],
            format="csv",
        )
        await conn.execute(_UPSERT)
        changed = await conn.fetchval("SELECT count(*) FROM kisray_touched")
        if mode == "postgres" and changed:
            for level in LEVELS:
                await conn.execute(_RECOMPUTE[level.interval], level.width, level.shift, _EPOCH)
    logger.debug("upserted %d 1-minute rows, %d new or changed", frame.height, changed)
    return changed


async def refresh_aggregates(
    conn: asyncpg.Connection,
    start: datetime,
    end: datetime,
    *,
    mode: DbMode | None = None,
    now: datetime | None = None,
) -> None:
    """Make every aggregate exact for 1-minute rows with ts in [start, end).

    PostgreSQL mode: recompute every bucket overlapping the range from the 1-minute rows and drop
    buckets left without rows. TimescaleDB mode: refresh each continuous aggregate bottom-up,
    never past its policy's end offset (refreshing the hot bucket would move the watermark past
    it and switch off real-time aggregation there). Must not run inside a transaction in
    TimescaleDB mode.
    """
    mode = mode or await database_mode(conn) or "postgres"
    if mode == "timescaledb":
        await _refresh_caggs(conn, start, end, now or datetime.now(UTC))
        return
    # Widen to whole KST days: every bucket of every level nests in one, so each bucket touched
    # is recomputed from all of its rows.
    daily = LEVEL_BY_INTERVAL["1d"]
    start = daily.label(start) - daily.shift
    end = daily.label(end - timedelta(microseconds=1)) - daily.shift + daily.width
    async with conn.transaction():
        await conn.execute(_STAGING_DDL)
        await conn.execute(
            "INSERT INTO kisray_touched SELECT symbol, ts FROM market_candles "
            "WHERE \"interval\" = '1m' AND ts >= $1 AND ts < $2",
            start,
            end,
        )
        for level in LEVELS:
            first = level.label(start)
            last_end = level.label(end - timedelta(microseconds=1)) + level.width
            # Buckets in range with no source rows left (e.g. rows deleted by hand).
            await conn.execute(
                f"DELETE FROM {level.relation} AS t WHERE t.ts >= $1 AND t.ts < $2 "
                f"AND NOT EXISTS (SELECT 1 FROM kisray_touched k WHERE k.symbol = t.symbol "
                f"AND k.ts >= t.ts - $3::interval AND k.ts < t.ts - $3::interval + $4::interval)",
                first,
                last_end,
                level.shift,
                level.width,
            )
            await conn.execute(_RECOMPUTE[level.interval], level.width, level.shift, _EPOCH)


async def _refresh_caggs(
    conn: asyncpg.Connection, start: datetime, end: datetime, now: datetime
) -> None:
    # The window opens at the beginning of time, not at `start`: a refresh moves the watermark to
    # its end, and below the watermark a real-time aggregate reads only what is materialized. A
    # window opening at `start` would hide every bucket below it that was never materialized
    # (rows written before the first refresh). Only invalidated buckets are recomputed (no
    # `force`), so the open start costs nothing where nothing changed; `start` stays in the
    # signature for the PostgreSQL mode, which recomputes exactly the range it is given.
    del start
    for level in LEVELS:
        # Whole buckets only, never the hot bucket or the policy's end offset (KST days for the
        # daily level).
        window_end = min(
            level.label(end - timedelta(microseconds=1)) - level.shift + level.width,
            level.label(now - level.end_offset) - level.shift,
        )
        # A level on another aggregate takes its source's changes into its own log during the
        # refresh, and on 2.28.3 the window's last bucket among them can be left for the next
        # refresh (seen: a corrected minute missing from its 15m bucket, present in 5m and 1h).
        # A second call finds it in the log and recomputes it; with nothing pending it is cheap.
        for _ in range(1 if level.source == RAW_RELATION else 2):
            await _refresh_cagg(conn, level.cagg, window_end)


# Another session refreshing the same aggregate (the maintenance actor's minute, or a policy
# job) makes TimescaleDB refuse a concurrent refresh of an overlapping window with
# LockNotAvailableError; `kisray load` failed on it once. Waiting for that refresh and trying
# again is what the caller wants: its own rows still need recomputing.
CAGG_REFRESH_TRIES = 20
CAGG_REFRESH_RETRY_S = 0.5


async def _refresh_cagg(conn: asyncpg.Connection, cagg: str, window_end: datetime) -> None:
    await retry_on_contention(
        lambda: conn.execute(
            "CALL refresh_continuous_aggregate($1::regclass, NULL, $2::timestamptz)",
            cagg,
            window_end,
        ),
        lambda exc: isinstance(exc, asyncpg.exceptions.LockNotAvailableError),
        tries=CAGG_REFRESH_TRIES,
        wait_s=CAGG_REFRESH_RETRY_S,
        what=f"refresh of {cagg}",
    )
