from __future__ import annotations

import asyncio

import asyncpg
import pytest

from engine.errors import MigrationError
from engine.storage.migrate import Migration, discover, migrate, plan, split_statements
from tests.timescale_server import TESTED_TIMESCALEDB


def test_discover_finds_the_shipped_migrations_in_order() -> None:
    migrations = discover()
    versions = [m.version for m in migrations]
    assert versions == sorted(versions)
    assert migrations[0].filename == "001_symbols.sql"


def test_plan_picks_the_variant_of_the_mode() -> None:
    migrations = [
        Migration(1, "base", None, "SELECT 1"),
        Migration(2, "aggs", "postgres", "SELECT 2"),
        Migration(2, "aggs", "timescaledb", "SELECT 3"),
    ]
    assert [m.sql for m in plan(migrations, "postgres", set())] == ["SELECT 1", "SELECT 2"]
    assert [m.sql for m in plan(migrations, "timescaledb", {1})] == ["SELECT 3"]


def test_split_statements_respects_quotes_dollar_quotes_and_comments() -> None:
    sql = """
    -- a comment; with a semicolon
    CREATE FUNCTION f() RETURNS int AS $$ BEGIN RETURN 1; END $$ LANGUAGE plpgsql;
    INSERT INTO t VALUES ('a;b', 'it''s; fine');
    /* block; comment */
    SELECT 1
    """
    statements = split_statements(sql)
    assert len(statements) == 3
    assert "RETURN 1; END" in statements[0]
    assert "'it''s; fine'" in statements[1]


async def test_migrate_applies_once_and_records_mode(make_database) -> None:
    url = make_database()
    first = await migrate(url)
    assert first.mode == "postgres"
    assert "001_symbols.sql" in first.applied
    second = await migrate(url)
    assert second.applied == ()
    assert second.current_version == first.current_version
    conn = await asyncpg.connect(url)
    try:
        assert (
            await conn.fetchval("SELECT value FROM kisray_meta WHERE key='db_mode'") == "postgres"
        )
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(
            plan(discover(), "postgres", set())
        )
    finally:
        await conn.close()


async def test_concurrent_migrators_apply_each_migration_exactly_once(make_database) -> None:
    url = make_database()
    slow = [
        Migration(1, "one", None, "SELECT pg_sleep(0.5); CREATE TABLE one (x int);"),
        Migration(2, "two", None, "CREATE TABLE two (x int);"),
    ]
    reports = await asyncio.gather(*(migrate(url, slow) for _ in range(3)))
    applied = [name for report in reports for name in report.applied]
    assert sorted(applied) == ["001_one.sql", "002_two.sql"]


async def test_a_failing_migration_rolls_back_entirely(make_database) -> None:
    url = make_database()
    migrations = [
        Migration(1, "good", None, "CREATE TABLE good (x int);"),
        Migration(2, "bad", None, "CREATE TABLE half (x int); SELECT no_such_function();"),
    ]
    with pytest.raises(MigrationError, match=r"002_bad\.sql"):
        await migrate(url, migrations)
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT to_regclass('good')") == "good"
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 1
    finally:
        await conn.close()


async def test_no_transaction_migrations_run_statement_by_statement(make_database) -> None:
    url = make_database()
    # VACUUM cannot run inside a transaction block: this only passes outside one.
    migrations = [
        Migration(1, "t", None, "CREATE TABLE t (x int);"),
        Migration(2, "vac", None, "-- kisray:no-transaction\nVACUUM t;\nANALYZE t;"),
    ]
    report = await migrate(url, migrations)
    assert report.applied == ("001_t.sql", "002_vac.sql")


@pytest.mark.timescale
async def test_timescaledb_installed_but_not_preloaded_means_postgres_mode_for_any_role(
    timescale_unloaded_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """CREATE EXTENSION without the preload raises FATAL and ends its session; migrate must
    neither run it on its own session nor die: it picks PostgreSQL mode with one warning, also
    for a role that cannot read shared_preload_libraries (it then tries on a spare connection).
    """
    admin = await asyncpg.connect(timescale_unloaded_url)
    try:
        await admin.execute("CREATE ROLE kisray_app LOGIN")
        await admin.execute("CREATE DATABASE app_db OWNER kisray_app")
        await admin.execute("CREATE DATABASE admin_db")
    finally:
        await admin.close()
    base = timescale_unloaded_url.rsplit("@", 1)[1].rsplit("/", 1)[0]
    for url in (f"postgresql://postgres@{base}/admin_db", f"postgresql://kisray_app@{base}/app_db"):
        caplog.clear()
        with caplog.at_level("WARNING", logger="engine.storage.migrate"):
            report = await migrate(url)
        assert report.mode == "postgres", url
        assert report.current_version == max(m.version for m in discover())
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1, warnings
        assert "shared_preload_libraries" in warnings[0]
        assert (await migrate(url)).applied == ()  # the database stays usable


@pytest.mark.timescale
async def test_a_preloaded_server_gets_timescaledb_mode_on_the_tested_version(
    make_timescale_database,
) -> None:
    report = await migrate(make_timescale_database())
    assert report.mode == "timescaledb"
    assert report.timescaledb_version == TESTED_TIMESCALEDB  # the compose file pins the same
