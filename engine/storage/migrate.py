"""Apply `sql/NNN_name[.mode].sql` migrations in order, once each, under an advisory lock.

File naming:
- `NNN_name.sql` applies in every mode;
- `NNN_name.timescaledb.sql` / `NNN_name.postgres.sql` apply only in that database mode;
  a version may have both variants (one is picked) but not a plain file beside them.
- A first line `-- kisray:no-transaction` runs the file statement by statement outside a
  transaction (TimescaleDB refuses some calls inside one); every other file runs in one.

The database mode (timescaledb or postgres) is decided once, on the first migration, and recorded
in `kisray_meta`; later runs keep it so a database never mixes the two schemas.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import logging
import re
from dataclasses import dataclass
from typing import Literal, cast

import asyncpg

from engine.errors import MigrationError
from engine.storage.pool import connect

logger = logging.getLogger(__name__)

DbMode = Literal["timescaledb", "postgres"]
MIGRATIONS_PACKAGE = "kisray_sql"
# Arbitrary but fixed: every kisray process that migrates takes this lock first.
MIGRATION_LOCK_KEY = 0x6B697372_61790001
NO_TRANSACTION_MARKER = "-- kisray:no-transaction"

_FILE_RE = re.compile(r"^(\d{3})_([a-z0-9_]+?)(?:\.(timescaledb|postgres))?\.sql$")

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    mode       text,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS kisray_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    mode: DbMode | None
    sql: str

    @property
    def transactional(self) -> bool:
        return not self.sql.lstrip().startswith(NO_TRANSACTION_MARKER)

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def filename(self) -> str:
        suffix = f".{self.mode}" if self.mode else ""
        return f"{self.version:03d}_{self.name}{suffix}.sql"


@dataclass(frozen=True, slots=True)
class MigrationReport:
    mode: DbMode
    timescaledb_version: str | None
    applied: tuple[str, ...]
    current_version: int


def discover(package: str = MIGRATIONS_PACKAGE) -> list[Migration]:
    found: list[Migration] = []
    for entry in importlib.resources.files(package).iterdir():
        match = _FILE_RE.match(entry.name)
        if not match:
            continue
        version, name = int(match[1]), match[2]
        mode = cast("DbMode | None", match[3])  # _FILE_RE admits no other suffix
        found.append(Migration(version, name, mode, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: (m.version, m.mode or ""))
    by_version: dict[int, list[Migration]] = {}
    for migration in found:
        by_version.setdefault(migration.version, []).append(migration)
    for version, group in by_version.items():
        modes = [m.mode for m in group]
        if (None in modes and len(group) > 1) or len(set(modes)) != len(modes):
            names = ", ".join(m.filename for m in group)
            raise MigrationError(f"conflicting migration files for version {version:03d}: {names}")
    return found


def plan(migrations: list[Migration], mode: DbMode, applied: set[int]) -> list[Migration]:
    return [
        m for m in migrations if m.version not in applied and (m.mode is None or m.mode == mode)
    ]


def split_statements(sql: str) -> list[str]:
    """Split SQL on top-level semicolons, respecting quotes, dollar quotes and comments."""
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end == -1 else end
            current.append(sql[i:end])
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end == -1 else end + 2
            current.append(sql[i:end])
            i = end
        elif ch == "'":
            end = i + 1
            while end < n:
                if sql[end] == "'" and not sql.startswith("''", end):
                    break
                end += 2 if sql.startswith("''", end) else 1
            current.append(sql[i : end + 1])
            i = end + 1
        elif ch == "$" and (tag := re.match(r"\$[A-Za-z_]*\$", sql[i:])):
            close = sql.find(tag[0], i + len(tag[0]))
            end = n if close == -1 else close + len(tag[0])
            current.append(sql[i:end])
            i = end
        elif ch == ";":
            statements.append("".join(current))
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    without_comments = re.sub(r"--[^\n]*|/\*.*?\*/", "", statement, flags=re.S)
    return bool(without_comments.strip())


ENABLE_TIMESCALEDB_HINT = (
    "add timescaledb to shared_preload_libraries in postgresql.conf and restart the server "
    "to use TimescaleDB mode"
)


async def _decide_mode(conn: asyncpg.Connection, url: str) -> tuple[DbMode, str | None]:
    recorded = await conn.fetchval("SELECT value FROM kisray_meta WHERE key = 'db_mode'")
    installed = await conn.fetchval(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    )
    if recorded == "postgres":
        return "postgres", None
    if recorded == "timescaledb":
        if installed is None:
            raise MigrationError(
                "this database was set up for TimescaleDB but the extension is gone; "
                "install it again or use a fresh database"
            )
        return "timescaledb", installed
    if installed is not None:
        return "timescaledb", installed
    available = await conn.fetchval(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
    )
    if available is None:
        return "postgres", None
    # Without the preload, CREATE EXTENSION raises FATAL, which ends the session it runs in:
    # ask first, and where the setting is not readable, try on a connection of its own.
    preloaded = await _timescaledb_preloaded(conn)
    if preloaded is False:
        logger.warning(
            "TimescaleDB %s is installed on this server but not preloaded; using PostgreSQL "
            "mode (%s)",
            available,
            ENABLE_TIMESCALEDB_HINT,
        )
        return "postgres", None
    version = await _create_extension(conn if preloaded else None, url)
    if version is None:
        return "postgres", None
    return "timescaledb", version


async def _timescaledb_preloaded(conn: asyncpg.Connection) -> bool | None:
    """Whether shared_preload_libraries names timescaledb; None when this role cannot read it."""
    try:
        libraries = await conn.fetchval("SELECT current_setting('shared_preload_libraries')")
    except asyncpg.InsufficientPrivilegeError:
        return None
    names = (name.strip().strip('"') for name in (libraries or "").split(","))
    return any(name == "timescaledb" or name.startswith("timescaledb-") for name in names)


async def _create_extension(conn: asyncpg.Connection | None, url: str) -> str | None:
    """CREATE EXTENSION timescaledb on `conn`, or on a throwaway connection when None (it may
    not survive the attempt). Returns the installed version, or None after one warning."""
    own = conn is None
    target = await connect(url) if conn is None else conn
    try:
        await target.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        return await target.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        )
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        logger.warning(
            "TimescaleDB is installed but cannot be enabled (%s); using PostgreSQL mode (%s)",
            str(exc).splitlines()[0],
            ENABLE_TIMESCALEDB_HINT,
        )
        return None
    finally:
        if own:
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await target.close()


async def migrate(url: str, migrations: list[Migration] | None = None) -> MigrationReport:
    migrations = discover() if migrations is None else migrations
    conn = await connect(url)
    try:
        # Session-level lock: a second migrator waits here until the first is done.
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            return await _migrate_locked(conn, migrations, url)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()


async def _migrate_locked(
    conn: asyncpg.Connection, migrations: list[Migration], url: str
) -> MigrationReport:
    await conn.execute(_BOOTSTRAP)
    mode, ts_version = await _decide_mode(conn, url)
    await conn.execute(
        "INSERT INTO kisray_meta (key, value) VALUES ('db_mode', $1) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        mode,
    )
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    applied_checksums = {r["version"]: r["checksum"] for r in rows}
    for migration in migrations:
        recorded = applied_checksums.get(migration.version)
        if recorded and migration.mode in (None, mode) and recorded != migration.checksum:
            logger.warning("migration %s changed after it was applied", migration.filename)

    applied: list[str] = []
    for migration in plan(migrations, mode, set(applied_checksums)):
        logger.info("applying migration %s", migration.filename)
        try:
            if migration.transactional:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await _record(conn, migration)
            else:
                for statement in split_statements(migration.sql):
                    await conn.execute(statement)
                await _record(conn, migration)
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"migration {migration.filename} failed: {exc}") from exc
        applied.append(migration.filename)

    current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
    return MigrationReport(mode, ts_version, tuple(applied), current)


async def _record(conn: asyncpg.Connection, migration: Migration) -> None:
    await conn.execute(
        "INSERT INTO schema_migrations (version, name, mode, checksum) VALUES ($1, $2, $3, $4)",
        migration.version,
        migration.name,
        migration.mode,
        migration.checksum,
    )


async def database_mode(conn: asyncpg.Connection) -> DbMode | None:
    """The mode recorded by the migrations, or None before the first migration."""
    try:
        return await conn.fetchval("SELECT value FROM kisray_meta WHERE key = 'db_mode'")
    except asyncpg.UndefinedTableError:
        return None
