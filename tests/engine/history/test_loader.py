"""`kisray load`: parsing, row checks with line numbers, idempotent upserts, aggregates current."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import polars as pl
import pytest

from engine.errors import InvalidCandlesError
from engine.history.loader import load_file, read_minute_file
from engine.history.sample_data import synthetic_minute_bars
from tests.engine.storage_support import (
    AGGREGATES,
    BACKENDS,
    as_tuples,
    expected_aggregate,
    fresh_database,
    relation_tuples,
)

HEADER = "symbol,ts,open,high,low,close,volume\n"


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest) -> str:
    return await fresh_database(request.param, request)


@pytest.fixture(scope="module")
def sample() -> pl.DataFrame:
    return synthetic_minute_bars(("005930", "000660", "035420"), date(2025, 3, 4), date(2025, 3, 7))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
async def test_load_makes_aggregates_and_reloading_changes_nothing(
    db_url: str, sample: pl.DataFrame, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"bars{suffix}"
    sample.write_csv(path) if suffix == ".csv" else sample.write_parquet(path)
    seen: list[tuple[int, int]] = []
    first = await load_file(
        db_url, path, batch_rows=1_000, on_progress=lambda d, t: seen.append((d, t))
    )
    assert first.rows_read == first.rows_changed == sample.height
    assert seen[-1] == (sample.height, sample.height) and len(seen) > 1
    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM market_candles_15m") > 0
        snapshot = {r: await relation_tuples(conn, r) for r, _, _ in AGGREGATES.values()}
        for interval, (relation, _, _) in AGGREGATES.items():
            assert snapshot[relation] == as_tuples(expected_aggregate(sample, interval))
        second = await load_file(db_url, path)
        assert second.rows_changed == 0
        assert await conn.fetchval("SELECT count(*) FROM market_candles") == sample.height
        for relation in snapshot:
            assert await relation_tuples(conn, relation) == snapshot[relation]
    finally:
        await conn.close()


async def test_bad_rows_are_reported_by_line_and_nothing_is_written(
    db_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        HEADER
        + "005930,2025-03-10T09:00:00+09:00,100,110,90,105,10\n"  # line 2: fine
        + "005930,2025-03-10T09:01:00+09:00,100,80,90,85,10\n"  # line 3: high < low
        + "005930,2025-03-10T09:02:00+09:00,100,110,90,105,-5\n"  # line 4: negative volume
        + "005930,yesterday-ish,100,110,90,105,10\n"  # line 5: time
        + "005930,2025-03-10T09:04:00+09:00,,110,90,105,10\n"  # line 6: missing open
    )
    with pytest.raises(InvalidCandlesError) as caught:
        await load_file(db_url, path)
    problems = dict(caught.value.problems)
    assert sorted(problems) == [3, 4, 5, 6]
    assert "high < low" in problems[3]
    assert "negative volume" in problems[4]
    assert "time" in problems[5]
    assert "open" in problems[6]
    assert "line 3" in str(caught.value)
    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM market_candles") == 0
    finally:
        await conn.close()


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "cols.csv"
    path.write_text("symbol,ts,open,close\n005930,2025-03-10T00:00:00Z,1,1\n")
    with pytest.raises(InvalidCandlesError, match="missing columns: high, low, volume"):
        read_minute_file(path)


def test_time_formats_and_the_symbol_option(tmp_path: Path) -> None:
    path = tmp_path / "times.csv"
    path.write_text(
        "ts,open,high,low,close,volume\n"
        "2025-03-10 09:00,71900,72000,71800,71950,1\n"  # naive: KST
        "2025-03-10T00:01:00Z,71900,72000,71800,71950,1\n"
        "2025-03-10 09:02:00+09:00,71900.5,72000,71800,71950,1\n"
        "1741564980,71900,72000,71800,71950,1\n"  # epoch seconds of 00:03 UTC
    )
    frame = read_minute_file(path, symbol="005930")
    assert frame["symbol"].to_list() == ["005930"] * 4
    assert frame["ts"].to_list() == [datetime(2025, 3, 10, 0, m, tzinfo=UTC) for m in range(4)]
    assert Decimal(frame["open"][2]) == Decimal("71900.5")
    with pytest.raises(InvalidCandlesError, match="missing columns: symbol"):
        read_minute_file(path)


def test_symbol_option_filters_a_file_with_many_symbols(
    sample: pl.DataFrame, tmp_path: Path
) -> None:
    path = tmp_path / "many.parquet"
    sample.write_parquet(path)
    frame = read_minute_file(path, symbol="000660")
    assert frame["symbol"].unique().to_list() == ["000660"]
    assert frame.height == sample.filter(pl.col("symbol") == "000660").height


def test_cli_load_prints_a_summary(sample: pl.DataFrame, tmp_path: Path, make_database) -> None:
    from typer.testing import CliRunner

    from api.cli.commands import app

    path = tmp_path / "cli.csv"
    sample.head(500).write_csv(path)
    result = CliRunner().invoke(
        app, ["load", str(path)], env={"KISRAY_DATABASE_URL": make_database()}
    )
    assert result.exit_code == 0, result.output
    assert "500 rows read, 500 new or changed" in result.output
