"""The one rule for a KRX symbol, used by settings, REST, `/ws` and the actors.

A listed code is 6 characters (`005930`; newer listings mix in letters, such as `0126Z0`);
ETNs and some ETFs carry a 7-character code with a letter prefix (`Q500001`). Upper-case ASCII
letters and digits only: no case folding, so the same code is the same key everywhere (the
database, the upstream registration, a channel name).
"""

from __future__ import annotations

import re

from engine.errors import InvalidSymbolError

_SYMBOL = re.compile(r"[0-9A-Z]{6,7}")
EXAMPLE = "005930"


def is_symbol(text: object) -> bool:
    return isinstance(text, str) and _SYMBOL.fullmatch(text) is not None


def parse_symbol(text: object) -> str:
    """`text` if it is a KRX code, else InvalidSymbolError (the client's INVALID_SYMBOL)."""
    if not is_symbol(text):
        raise InvalidSymbolError(
            f"malformed symbol {text!r}: expected a 6-character KRX code like {EXAMPLE} "
            "or a 7-character ETN/ETF code like Q500001"
        )
    return text  # type: ignore[return-value]  # is_symbol checked it is a str
