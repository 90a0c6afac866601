-- Aggregates, PostgreSQL mode: plain tables with the contract's names and columns, kept current by
-- engine.db.candles (every write of 1-minute rows recomputes the touched buckets in the same
-- transaction). Roll-up tree, the same as on TimescaleDB: 1m -> 5m -> {15m, 1h}, 1h -> 1d.
-- Daily rows: the KST calendar date's bar, `ts` = 00:00 UTC of that date (09:00 KST).
CREATE TABLE IF NOT EXISTS market_candles_5m (
    symbol text        NOT NULL,
    ts     timestamptz NOT NULL,
    open   numeric     NOT NULL,
    high   numeric     NOT NULL,
    low    numeric     NOT NULL,
    close  numeric     NOT NULL,
    volume bigint      NOT NULL,
    PRIMARY KEY (symbol, ts)
);

CREATE TABLE IF NOT EXISTS market_candles_15m (LIKE market_candles_5m INCLUDING ALL);
CREATE TABLE IF NOT EXISTS market_candles_1h (LIKE market_candles_5m INCLUDING ALL);
CREATE TABLE IF NOT EXISTS market_candles_1d (LIKE market_candles_5m INCLUDING ALL);

-- Retention and freshness probes filter or sort on ts alone.
CREATE INDEX IF NOT EXISTS market_candles_5m_ts_idx ON market_candles_5m (ts);
CREATE INDEX IF NOT EXISTS market_candles_15m_ts_idx ON market_candles_15m (ts);
CREATE INDEX IF NOT EXISTS market_candles_1h_ts_idx ON market_candles_1h (ts);
CREATE INDEX IF NOT EXISTS market_candles_1d_ts_idx ON market_candles_1d (ts);
