"""Fixtures the API tests share."""

from __future__ import annotations

import pytest

from tests.api.isolated_stack import IsolatedStack, isolated_stack


@pytest.fixture(scope="module")
def iso(
    serve_url: str,  # deployed first, so it holds the first direct-ingress port
    serve_proxy_url: str,
    pytestconfig: pytest.Config,
    tmp_path_factory: pytest.TempPathFactory,
) -> IsolatedStack:
    """The second Serve application with a database, log directory and secrets of its own
    (started once per session, on first use)."""
    return isolated_stack(serve_proxy_url, pytestconfig, tmp_path_factory)
