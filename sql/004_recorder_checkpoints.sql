-- Where the recorder left off, per symbol: the highest ACML_VOL (cumulative day volume) already
-- counted in stored bars and the bar that was still forming. Written in the same transaction as
-- the 1-minute bars of each flush, so a restarted recorder neither loses nor double counts volume.
CREATE TABLE IF NOT EXISTS recorder_checkpoints (
    symbol      text        PRIMARY KEY,
    trade_date  text        NOT NULL CHECK (trade_date ~ '^[0-9]{8}$'),
    cum_volume  bigint      NOT NULL CHECK (cum_volume >= 0),
    forming_ts  timestamptz,
    open        numeric,
    high        numeric,
    low         numeric,
    close       numeric,
    volume      bigint,
    open_cum    bigint      NOT NULL DEFAULT 0,
    close_cum   bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
