-- 1-minute candles, TimescaleDB mode: the same table as a hypertable on `ts`, with old chunks
-- moved to the columnstore. The columnstore API needs TimescaleDB >= 2.18; kisray requires 2.25.
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

-- 7-day chunks: ~55k rows per chunk for 20 symbols; retention drops whole chunks.
SELECT create_hypertable('market_candles', 'ts',
                         chunk_time_interval => INTERVAL '7 days', if_not_exists => true);

CREATE OR REPLACE VIEW public.candles_1m AS
SELECT symbol, ts, open, high, low, close, volume
FROM market_candles
WHERE "interval" = '1m';

-- Every column of the unique key must be a segmentby or orderby column of the columnstore.
ALTER TABLE market_candles SET (
    timescaledb.enable_columnstore = true,
    timescaledb.segmentby = 'symbol, "interval"',
    timescaledb.orderby = 'ts DESC'
);

-- 30 days: older than every refresh window below the daily level (5m/15m 7 d, 1h 14 d), so hot
-- refreshes and late ticks of the last month touch rowstore chunks only.
CALL add_columnstore_policy('market_candles', after => INTERVAL '30 days', if_not_exists => true);
