"""KRX reference data shared by the simulator, the sample data and the UDF datafeed: the tick
table (호가단위) and a small symbol master.

The symbol master covers the built-in symbols (the simulator's and `KISRAY_SYMBOLS`' defaults)
only; a symbol outside it is described by its code. KIS publishes the full master (the
`kospi_code.mst` files) for a deployment that needs every listing.
"""

from __future__ import annotations

# KOSPI/KOSDAQ unified tick table (since 2023): (upper bound exclusive, tick); TOP_TICK above.
TICK_TABLE: tuple[tuple[int, int], ...] = (
    (2_000, 1),
    (5_000, 5),
    (20_000, 10),
    (50_000, 50),
    (200_000, 100),
    (500_000, 500),
)
TOP_TICK = 1_000

SYMBOL_NAMES: dict[str, str] = {
    "005930": "삼성전자",
    "000660": "SK하이닉스",
    "035420": "NAVER",
    "035720": "카카오",
    "005380": "현대차",
    "051910": "LG화학",
}


def tick_size(price: int) -> int:
    for bound, tick in TICK_TABLE:
        if price < bound:
            return tick
    return TOP_TICK


def variable_tick_size() -> str:
    """The table in TradingView's `variable_tick_size` form: tick, bound, tick, …, last tick
    (prices in KRW, with pricescale 1)."""
    parts: list[str] = []
    for bound, tick in TICK_TABLE:
        parts += [str(tick), str(bound)]
    return " ".join([*parts, str(TOP_TICK)])
