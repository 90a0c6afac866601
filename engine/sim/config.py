"""Immutable simulator configuration."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from engine.kis import tr
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
    trade_width: int = 47  # H0STCNT0 fields: 47 as captured live in 2026, or the documented 46
    book_width: int = 63  # H0STASP0 fields: 63 as captured live in 2026, 62 earlier, 59 documented
    max_batch: int = 20  # most trade records packed in one frame (the burst model's cap)
    trade_frames: str = "burst"  # "burst": mostly one record a frame; "packed": max_batch each
    books_per_frame: int = 1  # H0STASP0 snapshots per frame (live: one)
    chart_tr_cont: bool = True  # send tr_cont M/D on minute charts (an assumption, see the docs)
    chart_cut_at_cursor: bool = False  # old shape: a completed minute cut at the cursor second
    notice_interval_s: float = 15.0  # periodic H0STCNI0 notices to notice subscribers; 0 = off
    hts_id: str | None = None  # if set, notices for another HTS id cut the socket (as KIS does)
    token_interval_s: float = 60.0  # tokenP issuance limit per app key (EGW00133)
    # How long the server accepts a token (EGW00123 after). Replies still advertise KIS's 86400 s,
    # so a shorter lifetime plays a token the server retires before its client expects it.
    token_lifetime_s: float = 86_400.0
    rest_rate_per_s: int = 20  # REST calls per second per app key before EGW00201
    history_days: int = 400  # how far back chart endpoints serve bars
    tick_interval_s: float = 0.1  # how often the feed loop looks at the clock

    def __post_init__(self) -> None:
        if self.trade_width not in tr.TRADE_WIDTHS:
            raise ValueError(f"trade_width must be one of {tr.TRADE_WIDTHS}")
        if self.book_width not in tr.BOOK_WIDTHS:
            raise ValueError(f"book_width must be one of {tr.BOOK_WIDTHS}")
        if self.trade_frames not in ("burst", "packed"):
            raise ValueError('trade_frames must be "burst" or "packed"')
        if self.max_batch < 1 or self.books_per_frame < 1:
            raise ValueError("max_batch and books_per_frame must be at least 1")
