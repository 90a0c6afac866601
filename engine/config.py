"""Settings from the environment and `.env` (prefix KISRAY_); the only reader of os.environ."""

from __future__ import annotations

from datetime import time as dt_time
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from engine.domain.symbols import is_symbol
from engine.errors import ConfigError

KisEnv = Literal["sim", "paper", "real"]

# Official KIS hosts (docs/kis-protocol.md §1.1); `sim` points at the built-in simulator.
KIS_DEFAULT_URLS: dict[str, tuple[str, str]] = {
    "real": ("ws://ops.koreainvestment.com:21000", "https://openapi.koreainvestment.com:9443"),
    "paper": ("ws://ops.koreainvestment.com:31000", "https://openapivts.koreainvestment.com:29443"),
    "sim": ("ws://127.0.0.1:8765", "http://127.0.0.1:8765"),
}

# Fan-out defaults, shared with the hub's constructor so the two cannot drift apart.
WS_WINDOW_MS = 10.0
WS_FRAME_BUDGET = 4000.0

DEFAULT_SYMBOLS = ("005930", "000660", "035420", "035720", "005380", "051910")


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KISRAY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    database_url: SecretStr | None = Field(
        default=None, description="PostgreSQL URL; unset starts the embedded server"
    )
    data_dir: Path = Field(default=Path(".kisray/data"), description="embedded database, spools")
    log_dir: Path = Field(default=Path(".kisray/logs"), description="where kisray.log rotates")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    host: str = Field(default="127.0.0.1", description="API bind address")
    port: int = Field(default=8000, ge=1, le=65535, description="API port")

    kis_env: KisEnv = "sim"
    kis_app_key: SecretStr | None = None
    kis_app_secret: SecretStr | None = None
    kis_hts_id: str | None = None
    kis_ws_url: str | None = None
    kis_rest_url: str | None = None
    max_registrations: int = Field(default=41, ge=1, le=41)

    api_token: SecretStr | None = None
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_request_bytes: int = Field(
        default=64 * 1024, ge=1024, description="largest HTTP request body the API accepts"
    )

    symbols: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_SYMBOLS))
    sim_port: int = Field(default=8765, ge=1, le=65535, description="built-in simulator port")
    sim_seed: int = 7
    market_clock: Literal["wall", "sim"] = Field(
        default="wall",
        description="the candle service's now: the wall clock, or the built-in simulator's "
        "(set by `kisray up` when it starts the simulator)",
    )

    # Candle retention in days (0 = keep forever). The 1-minute floor keeps every aggregate
    # refresh window (the daily one looks back 60 days) inside the raw data.
    retention_1m_days: int = Field(default=365, ge=61, description="1-minute candles")
    retention_5m_days: int = Field(default=1095, ge=0, description="5-minute aggregate")
    retention_15m_days: int = Field(default=1095, ge=0, description="15-minute aggregate")
    retention_1h_days: int = Field(default=1825, ge=0, description="1-hour aggregate")
    retention_1d_days: int = Field(default=0, ge=0, description="daily aggregate")

    # Candle API: the KRX session window (KST) used for gap filling; special days such as the
    # year's first trading day keep the exchange calendar's shift against this window.
    session_open: dt_time = Field(default=dt_time(9, 0), description="session open, KST")
    session_close: dt_time = Field(default=dt_time(15, 30), description="session close, KST")
    closing_call_minutes: int = Field(
        default=10, ge=0, le=60, description="closing call auction before the close: no trades"
    )
    candles_max_buckets: int = Field(
        default=20_000, ge=100, description="most candles one /candles request may span"
    )
    candles_default_limit: int = Field(
        default=500, ge=1, description="candles returned when a request gives no `from`"
    )

    # Live WebSocket fan-out (docs/fanout.md).
    ws_session_pool: int = Field(
        default=8, ge=0, le=1000, description="pre-warmed sessions kept idle for new tabs"
    )
    replicas: int = Field(
        default=1,
        ge=1,
        le=64,
        description="API replicas; above 1, `kisray up` puts haproxy on KISRAY_PORT in front "
        "of them",
    )
    replica_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="first port of the replicas' own range when KISRAY_REPLICAS > 1 "
        "(default KISRAY_PORT + 1); the range holds one spare port",
    )
    sessions_per_actor: int = Field(
        default=250,  # measured: docs/fanout.md "Sessions per actor" and "Scale"
        ge=1,
        le=10_000,
        description="client sessions one session actor hosts (1: an actor per client)",
    )
    ws_window_ms: float = Field(
        default=WS_WINDOW_MS,
        ge=1.0,
        le=1000.0,
        description="shortest fan-out window: a replica pulls upstream and writes to each "
        "socket at most once per window",
    )
    ws_compression: bool = Field(
        default=False,
        description="permessage-deflate on /ws: ~8x fewer bytes for ~0.14 ms CPU per 25 KB frame",
    )
    ws_frame_budget: float = Field(
        default=WS_FRAME_BUDGET,
        ge=10.0,
        description="frames per second one replica writes over all its sockets; the window "
        "grows to sockets / budget",
    )

    # Recorder and backfill (docs/recorder.md).
    kis_rest_rate: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="KIS REST calls per second (unset: 20 real, 2 paper)",
    )
    recorder_spool_rows: int = Field(
        default=50_000, ge=0, description="bar rows buffered in memory before spilling to files"
    )
    recorder_flush_s: float = Field(
        default=1.0, gt=0, le=60, description="how often the recorder writes closed bars"
    )
    recorder_repair_delay_s: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="repair a suspect minute from the KIS minute chart this long after it ends",
    )
    recorder_stall_s: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="no trade of any symbol for this long in continuous trading is a stall",
    )
    recorder_repair_rate: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="KIS REST calls per second for repairs (unset: a quarter of the REST rate)",
    )
    seed_history_days: int = Field(
        default=3, ge=0, le=30, description="demo history kisray up backfills from the simulator"
    )

    # The KIS socket actor (docs/kis-socket.md).
    kis_consumer_lease_s: float = Field(
        default=10.0, gt=0, le=600, description="a silent consumer is released after this"
    )
    kis_silence_timeout_s: float = Field(
        default=30.0, gt=0, le=600, description="reconnect after this long without a message"
    )
    kis_backoff_base_s: float = Field(default=0.5, gt=0, le=60, description="first reconnect delay")
    kis_backoff_max_s: float = Field(default=30.0, gt=0, le=600, description="longest delay")
    kis_in_use_backoff_s: float = Field(
        default=60.0, gt=0, le=3600, description="quiet time after OPSP8996 (app key in use)"
    )
    kis_quiet_s: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="/health is not ready after this long without a KIS message (PINGPONG ~10 s)",
    )

    # Readiness (docs/operations.md).
    live_required: bool = Field(
        default=False,
        description="/health is ready only with live data up (kisray up sets it when it runs it)",
    )

    @field_validator("cors_origins", "symbols", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("symbols")
    @classmethod
    def _krx_codes(cls, value: list[str]) -> list[str]:
        bad = [s for s in value if not is_symbol(s)]
        if bad:
            raise ValueError(f"not a KRX code (like 005930 or Q500001): {', '.join(bad)}")
        return value

    @field_validator("session_close")
    @classmethod
    def _close_after_open(cls, value: dt_time, info: ValidationInfo) -> dt_time:
        opened = info.data.get("session_open")
        if opened is not None and value <= opened:
            raise ValueError("must be after KISRAY_SESSION_OPEN")
        return value

    @field_validator("data_dir", "log_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Ray workers may run with another cwd; resolve once, here.
        return value.expanduser().resolve()

    @field_validator("kis_ws_url")
    @classmethod
    def _ws_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value

    @field_validator("kis_rest_url")
    @classmethod
    def _http_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @property
    def database_dsn(self) -> str | None:
        """The configured database URL as a plain string (None: embedded, or not passed on)."""
        return self.database_url.get_secret_value() if self.database_url is not None else None

    @property
    def ws_url(self) -> str:
        if self.kis_ws_url:
            return self.kis_ws_url
        if self.kis_env == "sim":
            return f"ws://127.0.0.1:{self.sim_port}"
        return KIS_DEFAULT_URLS[self.kis_env][0]

    @property
    def rest_url(self) -> str:
        if self.kis_rest_url:
            return self.kis_rest_url
        if self.kis_env == "sim":
            return f"http://127.0.0.1:{self.sim_port}"
        return KIS_DEFAULT_URLS[self.kis_env][1]

    @property
    def replica_ports(self) -> range:
        """Where the API replicas listen: KISRAY_PORT itself for one; for more, their own range
        (one spare port, for a replica restarted before its old port is free) behind haproxy."""
        if self.replicas == 1:
            return range(self.port, self.port + 1)
        first = self.replica_port if self.replica_port is not None else self.port + 1
        return range(first, first + self.replicas + 1)

    @property
    def log_file(self) -> Path:
        return self.log_dir / "kisray.log"

    def secrets(self) -> list[str]:
        """Every configured secret value, for log redaction."""
        values = [self.kis_app_key, self.kis_app_secret, self.api_token]
        found = [v.get_secret_value() for v in values if v is not None]
        if self.database_url is not None:
            password = _url_password(self.database_url.get_secret_value())
            if password:
                found.append(password)
        return [s for s in found if len(s) >= 4]


def _url_password(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password
    except ValueError:
        return None


def load_settings(**overrides: Any) -> Settings:
    """Build Settings, turning validation failures into one ConfigError line per problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"KISRAY_{field.upper()}: {message}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
