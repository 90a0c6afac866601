"""The demo's chart library: pinned to one npm release and refused when its bytes differ."""

from __future__ import annotations

import pytest

from api import chart_library


def test_a_download_that_differs_from_the_pinned_hash_is_refused() -> None:
    with pytest.raises(ValueError, match="integrity"):
        chart_library.verify(b"not the package")


def test_the_hash_check_accepts_the_bytes_it_was_made_from() -> None:
    import base64
    import hashlib

    data = b"package bytes"
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    chart_library.verify(data, integrity)  # no error
    with pytest.raises(ValueError):
        chart_library.verify(data + b"!", integrity)


def test_make_install_put_the_bundle_where_the_demo_serves_it_from() -> None:
    path = chart_library.bundle_path()
    assert path is not None, "make install runs `python -m api.chart_library`"
    assert path.parent == chart_library.vendor_dir()
    assert (path.parent / "LICENSE").is_file()
    assert "LightweightCharts" in path.read_text(encoding="utf-8")[:200_000]


def test_the_registry_can_be_a_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(chart_library.REGISTRY_ENV, "https://npm.example.internal/")
    assert chart_library.tarball_url() == (
        "https://npm.example.internal/lightweight-charts/-/lightweight-charts-5.2.1.tgz"
    )
