-- Instruments kisray knows about: the configured symbols, and anything loaded or recorded.
CREATE TABLE IF NOT EXISTS symbols (
    symbol     text PRIMARY KEY CHECK (symbol ~ '^[0-9A-Z]{6,7}$'),
    name       text,
    market     text NOT NULL DEFAULT 'KRX',
    added_at   timestamptz NOT NULL DEFAULT now()
);
