-- 1-minute candles, PostgreSQL mode. `ts` is the bucket start in UTC; prices are plain numeric so
-- KRW integers and decimal prices are stored exactly as given.
CREATE TABLE IF NOT EXISTS market_candles (
    symbol     text        NOT NULL,
    "interval" text        NOT NULL DEFAULT '1m',
    ts         timestamptz NOT NULL,
    open       numeric     NOT NULL CHECK (open > 0),
    high       numeric     NOT NULL,
    low        numeric     NOT NULL CHECK (low > 0),
    close      numeric     NOT NULL CHECK (close > 0),
    volume     bigint      NOT NULL CHECK (volume >= 0),
    CONSTRAINT market_candles_pkey PRIMARY KEY (symbol, "interval", ts),
    CONSTRAINT market_candles_range CHECK (high >= low AND high >= open AND high >= close
                                           AND low <= open AND low <= close)
);

-- For retention and "newest row" probes that do not filter by symbol.
CREATE INDEX IF NOT EXISTS market_candles_ts_idx ON market_candles (ts);

CREATE OR REPLACE VIEW public.candles_1m AS
SELECT symbol, ts, open, high, low, close, volume
FROM market_candles
WHERE "interval" = '1m';
