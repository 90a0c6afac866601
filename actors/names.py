"""Every named Ray actor of kisray, in one place: the namespace, the names, the collector's
resource, and typed lookups. Nothing else spells an actor's name, so renaming one (or running
two stacks side by side) is a change here only. Importing it does not import ray."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.actor import ActorHandle

NAMESPACE = "kisray"
SERVE_APP = "kisray"  # the Serve application (its deployment is `KisrayIngress`)

KIS_SOCKET = "kis-socket"  # the one KIS WebSocket (singleton, detached)
RECORDER = "recorder"  # ticks → 1-minute candles, and the forming bar
CANDLES = "candles"  # candle series for REST and /ws roll-ups
SESSION_POOL = "session-pool"  # client sessions: leases, resume
MAINTENANCE = "maintenance"  # retention and aggregate refresh
SEED_HISTORY = "seed-history"  # the one-off history load of `kisray up`

# Only the production collector node advertises this resource (`ray start --resources=...`);
# the KIS socket actor and the recorder each ask for a sliver of it, so both fit there and
# nowhere else.
COLLECTOR_RESOURCE = "kis_collector"
COLLECTOR_SHARE = 0.01
COLLECTOR_ACTOR_OPTIONS: dict[str, Any] = {"resources": {COLLECTOR_RESOURCE: COLLECTOR_SHARE}}


def find(name: str) -> ActorHandle:
    """The running actor of that name; ValueError when there is none. Blocks on the GCS: call
    it off an event loop (`asyncio.to_thread`)."""
    # Imported here: `kisray up` reads these names before it sets Ray's environment (its auth
    # token path), and importing ray first would fix the token ray uses to the wrong one.
    import ray

    return ray.get_actor(name, namespace=NAMESPACE)


def find_kis_socket() -> ActorHandle:
    return find(KIS_SOCKET)


def find_recorder() -> ActorHandle:
    return find(RECORDER)


def find_candles() -> ActorHandle:
    return find(CANDLES)
