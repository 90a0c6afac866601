"""Immutable simulator configuration."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from engine.sim.market import DEFAULT_SYMBOLS


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 8765  # 0 = pick a free port (tests)
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    seed: int = 7
    rate: float = 20.0  # target trades per simulated second over all `symbols`
    speed: float = 1.0  # simulated seconds per real second
    ping_interval_s: float = 10.0  # PINGPONG period; a client silent for one more period is cut
    max_registrations: int = 41  # per session, all TRs counted together
    real_hours: bool = False  # follow the real KRX clock instead of an always-open session
    start: datetime | None = None  # pin the simulated clock (KST if naive); tests
    replay_path: str | None = None  # send these recorded raw frames instead of the synthetic market
    wide_book: bool = False  # emit the 62-field H0STASP0 seen live instead of the documented 59
    max_batch: int = 20  # most records packed in one data frame
    notice_interval_s: float = 15.0  # periodic H0STCNI0 notices to notice subscribers; 0 = off
    hts_id: str | None = None  # if set, notices for another HTS id cut the socket (as KIS does)
    token_interval_s: float = 60.0  # tokenP issuance limit per app key (EGW00133)
    rest_rate_per_s: int = 20  # REST calls per second per app key before EGW00201
    history_days: int = 400  # how far back chart endpoints serve bars
    tick_interval_s: float = 0.1  # how often the feed loop looks at the clock
