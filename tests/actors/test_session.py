"""SessionActor limits and slots, and SessionPool leases: pre-warmed, renewed, reclaimed,
resumed, at one session per actor and at several."""

from __future__ import annotations

import asyncio

import pytest
import ray

from actors.session import SessionActor, SessionLimits, SessionPool, SessionSlot
from engine.errors import SubscriptionLimitError
from engine.live.channels import Channel, channel_names, parse_channels
from engine.live.ports import LeaseRequest

pytestmark = pytest.mark.slow


def cause(exc: BaseException) -> BaseException:
    return getattr(exc, "cause", None) or exc


def ch(*names: str) -> list[Channel]:
    return list(parse_channels(list(names)))


def held(channels: list[Channel] | tuple[Channel, ...]) -> list[str]:
    return channel_names(channels)


async def test_session_validates_limits_and_keeps_order(ray_cluster: None) -> None:
    actor = SessionActor.remote(SessionLimits(max_channels=4, max_symbols=2))
    session = SessionSlot(actor, "host", "slot-a")
    neighbour = SessionSlot(actor, "host", "slot-b")  # another client on the same actor
    await neighbour.subscribe(ch("trade:000660"))
    added, now = await session.subscribe(ch("trade:005930", "book:005930"))
    assert held(added) == held(now) == ["trade:005930", "book:005930"]
    added, now = await session.subscribe(ch("trade:005930", "candle:005930:1m"))
    assert held(added) == ["candle:005930:1m"] and len(now) == 3
    for refused in [
        ch("trade:000660", "book:000660"),  # 5 channels > 4
        ch("trade:000660", "trade:035420"),  # 3 symbols > 2
    ]:
        with pytest.raises(ray.exceptions.RayTaskError) as info:
            await session.subscribe(refused)
        assert isinstance(cause(info.value), SubscriptionLimitError)
    assert len(await session.channels()) == 3  # a refused request changed nothing
    # Calls from one caller run in order (max_concurrency=1): fire both, then look.
    session.unsubscribe(ch("trade:005930"))
    last = session.subscribe(ch("trade:005930"))
    assert held((await last)[1])[-1] == "trade:005930"
    assert held(await neighbour.channels()) == ["trade:000660"]  # sessions are apart
    await neighbour.reset()
    assert await neighbour.channels() == [] and await actor.hosted.remote() == 1
    ray.kill(actor)


PER_ACTOR = pytest.mark.parametrize("per_actor", [1, 4])  # the design card's layout, and shared


@PER_ACTOR
async def test_pool_leases_reclaims_and_resumes(ray_cluster: None, per_actor: int) -> None:
    pool = SessionPool.remote(warm=2, lease_s=1.0, park_s=5.0, per_actor=per_actor)
    assert await pool.prewarm.remote(2, hold_s=0) == max(2, per_actor)  # whole actors
    lease = await pool.acquire.remote(LeaseRequest("client-1", "replica-a"))
    assert lease.channels == ()
    await lease.session.subscribe(ch("trade:005930"))
    # Renewed by its replica, the lease survives its period.
    for _ in range(3):
        await asyncio.sleep(0.5)
        await pool.renew.remote("replica-a", [lease.session_id])
    assert (await pool.stats.remote())["leased"] == 1
    # A closed socket parks the session; a resume gets its channels back.
    await pool.release.remote(lease.session_id)
    again = await pool.acquire.remote(LeaseRequest("client-1b", "replica-a", lease.session_id))
    assert again.session_id == lease.session_id and held(again.channels) == ["trade:005930"]
    # A replica that stops renewing loses its sessions; they come back reset.
    await asyncio.sleep(2.5)
    stats = await pool.stats.remote()
    assert stats["leased"] == 0 and stats["reclaimed"] == 1
    fresh = await pool.acquire.remote(LeaseRequest("client-2", "replica-b", "no-such-session"))
    assert fresh.session_id != lease.session_id and fresh.channels == ()
    assert await fresh.session.channels() == []  # whichever actor it is, it was reset
    ray.kill(pool)


@PER_ACTOR
async def test_a_socket_closed_during_its_replacement_resumes_its_session(
    ray_cluster: None, per_actor: int
) -> None:
    """The pool restarted (or the actor died) and the tab left while its replacement was still
    starting: the release waits for it, and a resume gets the session and its channels."""
    pool = SessionPool.remote(warm=0, lease_s=10.0, park_s=10.0, per_actor=per_actor)
    replacing = pool.adopt.remote("tab-1", "replica-a", ch("trade:005930"))
    await pool.release.remote("tab-1", True, tuple(ch("trade:005930", "book:005930")))
    resumed = await pool.acquire.remote(LeaseRequest("client-1b", "replica-a", "tab-1"))
    await replacing
    assert resumed.session_id == "tab-1"
    assert held(resumed.channels) == ["trade:005930", "book:005930"]
    assert held(await resumed.session.channels()) == ["trade:005930", "book:005930"]
    ray.kill(pool)


@PER_ACTOR
async def test_a_resume_on_another_replica_takes_the_session_at_once(
    ray_cluster: None, per_actor: int
) -> None:
    """The tab's replica died without releasing: a resume on another replica gets the session
    and its channels without waiting for that release, and the old replica's late renewal or
    release neither re-adopts nor parks what the tab now holds."""
    pool = SessionPool.remote(warm=1, lease_s=10.0, park_s=10.0, per_actor=per_actor)
    lease = await pool.acquire.remote(LeaseRequest("client-1", "replica-a"))
    await lease.session.subscribe(ch("trade:005930"))
    started = asyncio.get_running_loop().time()
    moved = await pool.acquire.remote(LeaseRequest("client-1b", "replica-b", lease.session_id))
    assert asyncio.get_running_loop().time() - started < 1.5  # RESUME_WAIT_S is 2 s
    assert moved.session_id == lease.session_id and held(moved.channels) == ["trade:005930"]
    assert await pool.renew.remote("replica-a", [lease.session_id]) == []
    await pool.release.remote(lease.session_id, True, tuple(ch("trade:005930")), "replica-a")
    assert await pool.renew.remote("replica-b", [lease.session_id]) == []
    assert (await pool.stats.remote())["leased"] == 1
    assert held(await moved.session.channels()) == ["trade:005930"]
    ray.kill(pool)


async def test_sessions_share_actors_and_a_lost_actor_loses_only_its_own(ray_cluster: None) -> None:
    """Four sessions per actor: eight tabs start two actors, not eight; killing one actor
    leaves the other's sessions alone, and its sessions are adopted onto a live actor."""
    pool = SessionPool.remote(warm=0, lease_s=10.0, park_s=10.0, per_actor=4)
    leases = [await pool.acquire.remote(LeaseRequest(f"c{i}", "replica-a")) for i in range(8)]
    for i, lease in enumerate(leases):
        await lease.session.subscribe(ch(f"trade:{100000 + i}"))
    actors = {lease.session.host: lease.session.actor for lease in leases}
    assert len(actors) == 2 and (await pool.stats.remote())["started"] == 2
    lost_host, lost = next(iter(actors.items()))
    ray.kill(lost, no_restart=True)
    with pytest.raises(ray.exceptions.RayActorError):  # the kill lands after calls in flight
        for _ in range(50):
            await lost.ready.remote()
            await asyncio.sleep(0.1)
    for i, lease in enumerate(leases):
        if lease.session.host != lost_host:
            assert held(await lease.session.channels()) == [f"trade:{100000 + i}"]
            continue
        with pytest.raises(ray.exceptions.RayActorError):
            await lease.session.channels()
        new = await pool.adopt.remote(lease.session_id, "replica-a", ch(f"trade:{100000 + i}"))
        assert new.session.host != lost_host
        assert held(await new.session.channels()) == [f"trade:{100000 + i}"]
    ray.kill(pool)


async def test_ops_of_several_sessions_apply_in_one_call_in_order(ray_cluster: None) -> None:
    actor = SessionActor.remote(SessionLimits(max_channels=2, max_symbols=2))
    answers = await actor.apply.remote(
        [
            ("slot-a", "subscribe", ch("trade:005930")),
            ("slot-b", "subscribe", ch("trade:000660", "book:000660")),
            ("slot-a", "unsubscribe", ch("trade:005930")),
            ("slot-a", "subscribe", ch("book:005930")),
            ("slot-b", "subscribe", ch("trade:035420")),  # a third channel: over the limit
            ("slot-a", "open", []),  # not an op a replica may send
        ]
    )
    assert held(answers[0][0]) == ["trade:005930"]
    assert isinstance(answers[4], SubscriptionLimitError)  # this op failed, not the call
    assert isinstance(answers[5], ValueError)
    slot_a, slot_b = SessionSlot(actor, "host", "slot-a"), SessionSlot(actor, "host", "slot-b")
    assert held(await slot_a.channels()) == ["book:005930"]
    assert held(await slot_b.channels()) == ["trade:000660", "book:000660"]
    ray.kill(actor)


async def test_a_batch_of_leases_gives_distinct_sessions(ray_cluster: None) -> None:
    pool = SessionPool.remote(warm=4, lease_s=5.0, per_actor=4)
    await pool.prewarm.remote(4, hold_s=0)
    requests = [LeaseRequest(f"client-{i}", "replica-a") for i in range(6)]  # 2 over the warm
    requests.append(LeaseRequest("client-x", "replica-a", None, "given-id"))
    leases = await pool.acquire_many.remote(requests)
    ids = [lease.session_id for lease in leases]
    assert len(set(ids)) == 7 and ids[-1] == "given-id"
    assert len({(lease.session.host, lease.session.slot) for lease in leases}) == 7
    assert await pool.renew.remote("replica-a", ids) == []  # every one of them is leased
    stats = await pool.stats.remote()
    assert stats["leased"] == 7 and stats["actors"] >= 2
    # Sockets closing together are released in one call: parked, reset, or not known.
    parked, reset = leases[0], leases[1]
    releases = [
        (parked.session_id, True, tuple(ch("trade:005930")), "replica-a"),
        (reset.session_id, False, None, "replica-a"),
        ("no-such-session", True, None, "replica-a"),
    ]
    idle = (await pool.stats.remote())["idle"]
    assert await pool.release_many.remote(releases) == [None, None, None]
    assert (await pool.stats.remote())["leased"] == 5
    for _ in range(50):  # the reset one goes back to idle, in the background
        if (await pool.stats.remote())["idle"] == idle + 1:
            break
        await asyncio.sleep(0.1)
    assert (await pool.stats.remote())["idle"] == idle + 1
    back = await pool.acquire.remote(LeaseRequest("client-0b", "replica-b", parked.session_id))
    assert back.session_id == parked.session_id and held(back.channels) == ["trade:005930"]
    gone = await pool.acquire.remote(LeaseRequest("client-1b", "replica-b", reset.session_id))
    assert gone.session_id != reset.session_id and gone.channels == ()
