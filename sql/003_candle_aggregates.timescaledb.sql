-- kisray:no-transaction
-- Aggregates, TimescaleDB mode: hierarchical continuous aggregates (TimescaleDB >= 2.25).
--
--   market_candles (1m hypertable) -> market_candles_5m -> market_candles_15m
--                                                       -> market_candles_1h -> market_candles_1d_kst
--   market_candles_1d is a view over market_candles_1d_kst that relabels each KST-date bucket
--   (it starts at 15:00 UTC the day before) to 00:00 UTC of the date, the contract's daily `ts`.
--
-- Every level: open = first(open), close = last(close), max, min, sum: exact roll-ups.
-- Every level is real-time (materialized_only = false; the default is true since 2.13): the
-- live union recurses down to the raw rows only when no level on the way is materialized-only.
-- WITH NO DATA, then policies with explicit end offsets: a refresh with an open end would put the
-- watermark at "now" and the real-time part would add nothing.
-- This file runs statement by statement outside a transaction, so every statement is idempotent.

CREATE MATERIALIZED VIEW IF NOT EXISTS market_candles_5m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT symbol,
       time_bucket(INTERVAL '5 minutes', ts) AS ts,
       first(open, ts) AS open,
       max(high) AS high,
       min(low) AS low,
       last(close, ts) AS close,
       sum(volume)::bigint AS volume
FROM market_candles
WHERE "interval" = '1m'
GROUP BY symbol, time_bucket(INTERVAL '5 minutes', ts)
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS market_candles_15m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT symbol,
       time_bucket(INTERVAL '15 minutes', ts) AS ts,
       first(open, ts) AS open,
       max(high) AS high,
       min(low) AS low,
       last(close, ts) AS close,
       sum(volume)::bigint AS volume
FROM market_candles_5m
GROUP BY symbol, time_bucket(INTERVAL '15 minutes', ts)
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS market_candles_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT symbol,
       time_bucket(INTERVAL '1 hour', ts) AS ts,
       first(open, ts) AS open,
       max(high) AS high,
       min(low) AS low,
       last(close, ts) AS close,
       sum(volume)::bigint AS volume
FROM market_candles_5m
GROUP BY symbol, time_bucket(INTERVAL '1 hour', ts)
WITH NO DATA;

-- A bucket with a time zone counts as variable-width, so it must be the top of the stack (a
-- variable-width cagg may sit on a fixed-width one, not the reverse). Asia/Seoul has no DST,
-- so every bucket is exactly 24 h: [D-1 15:00 UTC, D 15:00 UTC) for the KST date D. This puts
-- pre-market (08:30-09:00 KST) and after-hours (15:40-18:00 KST) rows on the date's own bar.
CREATE MATERIALIZED VIEW IF NOT EXISTS market_candles_1d_kst
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT symbol,
       time_bucket(INTERVAL '1 day', ts, 'Asia/Seoul') AS kst_day,
       first(open, ts) AS open,
       max(high) AS high,
       min(low) AS low,
       last(close, ts) AS close,
       sum(volume)::bigint AS volume
FROM market_candles_1h
GROUP BY symbol, time_bucket(INTERVAL '1 day', ts, 'Asia/Seoul')
WITH NO DATA;

-- The contract name: 00:00 UTC of the KST date (= 09:00 KST). +9 h maps the bucket start
-- (KST midnight) onto it exactly because KST never changes its offset.
CREATE OR REPLACE VIEW market_candles_1d AS
SELECT symbol, kst_day + INTERVAL '9 hours' AS ts, open, high, low, close, volume
FROM market_candles_1d_kst;

-- Explicit even though the WITH clause says the same: a view left over from an interrupted
-- run (IF NOT EXISTS skips it) must not stay materialized-only.
ALTER MATERIALIZED VIEW market_candles_5m SET (timescaledb.materialized_only = false);
ALTER MATERIALIZED VIEW market_candles_15m SET (timescaledb.materialized_only = false);
ALTER MATERIALIZED VIEW market_candles_1h SET (timescaledb.materialized_only = false);
ALTER MATERIALIZED VIEW market_candles_1d_kst SET (timescaledb.materialized_only = false);

-- Refresh policies. end_offset leaves out the hot (still forming) bucket and a little more, so a
-- policy never materializes a partial bucket; real-time aggregation serves the tail. Each
-- start_offset lies inside the retention of the level it reads (1m raw: 365 d by default,
-- never configurable below 61 d), so a refresh never runs over dropped source rows. Late rows
-- older than start_offset are refreshed by the engine (loader, backfill, freshness watchdog).
SELECT add_continuous_aggregate_policy('market_candles_5m',
    start_offset => INTERVAL '7 days', end_offset => INTERVAL '10 minutes',
    schedule_interval => INTERVAL '5 minutes', if_not_exists => true);
SELECT add_continuous_aggregate_policy('market_candles_15m',
    start_offset => INTERVAL '7 days', end_offset => INTERVAL '30 minutes',
    schedule_interval => INTERVAL '15 minutes', if_not_exists => true);
SELECT add_continuous_aggregate_policy('market_candles_1h',
    start_offset => INTERVAL '14 days', end_offset => INTERVAL '2 hours',
    schedule_interval => INTERVAL '30 minutes', if_not_exists => true);
SELECT add_continuous_aggregate_policy('market_candles_1d_kst',
    start_offset => INTERVAL '60 days', end_offset => INTERVAL '1 day',
    schedule_interval => INTERVAL '1 hour', if_not_exists => true);

-- Retention: raw 1-minute rows 365 d, 5m/15m 3 years, 1h 5 years, daily kept. Separate policies:
-- one on the hypertable does not apply to its aggregates. engine.db.retention re-applies the
-- configured values (KISRAY_RETENTION_*) to these jobs at start-up.
SELECT add_retention_policy('market_candles', drop_after => INTERVAL '365 days',
                            if_not_exists => true);
SELECT add_retention_policy('market_candles_5m', drop_after => INTERVAL '1095 days',
                            if_not_exists => true);
SELECT add_retention_policy('market_candles_15m', drop_after => INTERVAL '1095 days',
                            if_not_exists => true);
SELECT add_retention_policy('market_candles_1h', drop_after => INTERVAL '1825 days',
                            if_not_exists => true);
