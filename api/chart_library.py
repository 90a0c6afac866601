"""TradingView's Lightweight Charts for the /demo page: fetched from the npm registry at install
time (`make install`, the Docker build), checked against the pinned integrity hash, and served by
kisray itself, so the page needs no CDN and works offline.

Run `python -m api.chart_library` to install it; a second run changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import sys
import tarfile
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)

PACKAGE = "lightweight-charts"
VERSION = "5.2.1"
# The registry's `dist.integrity` for that version: a tampered or truncated download is refused.
INTEGRITY = (
    "sha512-"
    "IVwoK1RLFiLPubaKIjNbtjWLnpPMqiABSrTay6whmNa8L1+19292VtHJ+BWyPUuLCwF0tcQlhEWd1CLB2a1nsQ=="
)
REGISTRY_ENV = "KISRAY_NPM_REGISTRY"  # a mirror, for machines that cannot reach npmjs.org
DEFAULT_REGISTRY = "https://registry.npmjs.org"
# The standalone build defines window.LightweightCharts; the licence travels with it (Apache-2.0).
BUNDLE_MEMBER = "package/dist/lightweight-charts.standalone.production.js"
LICENSE_MEMBER = "package/LICENSE"
BUNDLE_NAME = "lightweight-charts.standalone.production.js"


def vendor_dir() -> Path:
    return Path(__file__).parent / "static" / "vendor" / f"{PACKAGE}-{VERSION}"


def bundle_path() -> Path | None:
    """The installed bundle, or None when `python -m api.chart_library` has not run."""
    path = vendor_dir() / BUNDLE_NAME
    return path if path.is_file() else None


def tarball_url(registry: str | None = None) -> str:
    base = (registry or os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY).rstrip("/")
    return f"{base}/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"


def verify(data: bytes, integrity: str = INTEGRITY) -> None:
    algorithm, _, expected = integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if actual != expected:
        raise ValueError(f"{PACKAGE} {VERSION}: the download does not match its integrity hash")


def install(registry: str | None = None) -> Path:
    """Download, verify and unpack the bundle (and its licence); a no-op when already there."""
    existing = bundle_path()
    if existing is not None:
        return existing
    response = httpx.get(tarball_url(registry), timeout=60, follow_redirects=True)
    response.raise_for_status()
    verify(response.content)
    target = vendor_dir()
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        for member, name in ((LICENSE_MEMBER, "LICENSE"), (BUNDLE_MEMBER, BUNDLE_NAME)):
            source = archive.extractfile(member)
            if source is None:
                raise ValueError(f"{PACKAGE} {VERSION}: {member} is missing from the package")
            # The bundle last, through a temporary name: its presence means the install finished.
            partial = target / f"{name}.part"
            partial.write_bytes(source.read())
            partial.replace(target / name)
    return target / BUNDLE_NAME


def main() -> int:
    try:
        path = install()
    except (httpx.HTTPError, ValueError, OSError, tarfile.TarError) as exc:
        print(f"error: could not install {PACKAGE} {VERSION}: {exc}", file=sys.stderr)
        return 1
    print(f"{PACKAGE} {VERSION}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
