"""The production profile's collector: the KIS socket actor and the recorder, pinned by the
`kis_collector` Ray resource to the node that advertises it (the production collector node).

`kisray up --profile production` checks the KIS credentials first, then starts the collector.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from actors.names import COLLECTOR_ACTOR_OPTIONS, COLLECTOR_RESOURCE
from engine.config import Settings
from engine.errors import ConfigError

logger = logging.getLogger(__name__)

# The custom resource only the collector node advertises (`ray start --resources=...`); the KIS
# socket actor and the recorder request one unit, so Ray can place them nowhere else.
# The node advertises one unit; each collector actor asks for a sliver of it, so both the KIS
# socket actor and the recorder fit there and nowhere else.

PRODUCTION_KIS_ENVS = ("paper", "real")


@dataclass(frozen=True)
class CollectorStatus:
    started: bool
    detail: str


def require_kis_credentials(settings: Settings) -> None:
    """The production profile talks to the real KIS servers: refuse to start without what they
    need. Raises ConfigError with one line naming the setting (never its value)."""
    if settings.kis_env not in PRODUCTION_KIS_ENVS:
        raise ConfigError(
            f"KISRAY_KIS_ENV: the production profile needs paper or real, not {settings.kis_env}"
        )
    missing = [
        f"KISRAY_{name.upper()}"
        for name in ("kis_app_key", "kis_app_secret")
        if not _present(getattr(settings, name))
    ]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)}: required by the production profile "
            f"(KIS {settings.kis_env} credentials)"
        )


def _present(secret: object) -> bool:
    if secret is None:
        return False
    value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)
    return bool(value.strip())


def start_recorder() -> object:
    """Get or create the cluster's Recorder (actors/recorder.py) on the collector node. It finds
    the KIS socket actor by name and waits for it, so the two may start in either order."""
    from actors.recorder import recorder_actor

    return recorder_actor(actor_options=COLLECTOR_ACTOR_OPTIONS)


def start_collector(settings: Settings) -> CollectorStatus:
    """Start (or find) the KIS socket actor and the recorder, pinned to the collector node.

    Both are named and detached: a second `kisray up` or a restarted head finds the running
    ones instead of opening a second KIS socket.
    """
    from actors.kis_socket import get_or_create_kis_socket

    get_or_create_kis_socket("production")
    start_recorder()
    detail = f"KIS socket actor and recorder requested on a node with {COLLECTOR_RESOURCE}"
    logger.info("collector: %s (KIS %s)", detail, settings.kis_env)
    return CollectorStatus(True, detail)
