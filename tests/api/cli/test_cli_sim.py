"""`kisray sim --symbols`: the documented comma-separated form and the repeated option."""

from __future__ import annotations

from api.cli.commands import split_symbols


def test_symbols_accept_commas_spaces_and_repeats() -> None:
    assert split_symbols(["005930,000660"]) == ("005930", "000660")
    assert split_symbols(["005930", "000660"]) == ("005930", "000660")
    assert split_symbols(["005930, 000660 035420", "000660"]) == ("005930", "000660", "035420")
    assert split_symbols(None) == () and split_symbols([" , "]) == ()
