"""One error hierarchy for kisray. Raised inside; mapped to HTTP/WebSocket once, at the edge.

Each class carries the public error code and HTTP status from the contract's table.
"""

from __future__ import annotations


class KisrayError(Exception):
    code: str = "INTERNAL_ERROR"
    http_status: int = 500

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message or self.code


class ConfigError(KisrayError):
    """Invalid configuration: start-up stops with one line naming the setting."""

    code = "CONFIG_ERROR"


class BadRequestError(KisrayError):
    code = "BAD_REQUEST"
    http_status = 400


class InvalidSymbolError(BadRequestError):
    code = "INVALID_SYMBOL"


class InvalidIntervalError(BadRequestError):
    code = "INVALID_INTERVAL"


class InvalidRangeError(BadRequestError):
    code = "INVALID_RANGE"


class UnauthorizedError(KisrayError):
    code = "UNAUTHORIZED"
    http_status = 401


class NoDataFoundError(KisrayError):
    code = "NO_DATA_FOUND"
    http_status = 404


class SubscriptionLimitError(KisrayError):
    code = "SUBSCRIPTION_LIMIT"
    http_status = 429


class DatabaseUnavailableError(KisrayError):
    code = "DB_CONNECTION_ERROR"
    http_status = 503


class UpstreamUnavailableError(KisrayError):
    code = "UPSTREAM_UNAVAILABLE"
    http_status = 503


class MigrationError(KisrayError):
    """A migration failed or the migration files are inconsistent with the database."""

    code = "MIGRATION_ERROR"


class StartupError(KisrayError):
    """A part of the stack (Ray, Serve, the database) could not be started."""

    code = "STARTUP_ERROR"


class AlreadyRunningError(KisrayError):
    """Another `kisray up` owns this data directory."""

    code = "ALREADY_RUNNING"


class KisProtocolError(KisrayError):
    """A KIS frame or message that does not parse. Carries the raw input for debugging."""

    code = "KIS_PROTOCOL_ERROR"

    def __init__(self, message: str, raw: str | bytes | None = None) -> None:
        super().__init__(message)
        self.raw = raw


class UnknownConsumerError(KisrayError):
    """A consumer id the KIS socket does not know: never registered, released, or the socket
    restarted. The consumer registers again and re-subscribes what it still wants."""

    code = "UNKNOWN_CONSUMER"
    http_status = 409


class InvalidCandlesError(BadRequestError):
    """1-minute candles that fail validation; nothing of the batch or file was written.

    `problems` holds (line or row number, what is wrong) pairs, in input order.
    """

    def __init__(self, message: str, problems: tuple[tuple[int, str], ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class PayloadTooLargeError(BadRequestError):
    """A request body over the configured limit; it is refused before it is read."""

    http_status = 413


class UriTooLongError(BadRequestError):
    """A request target (path and query) over the server's limit; refused before routing."""

    code = "URI_TOO_LONG"
    http_status = 414


class HeadersTooLargeError(BadRequestError):
    """Request headers over the server's limit in total; refused before routing."""

    code = "HEADERS_TOO_LARGE"
    http_status = 431
