"""The per-replica hub: one consumer at the KIS socket actor, fanned out in-process to sockets.

The hub holds ONE registration at the upstream (the `kis-socket` actor) for the union of its
sockets' channels and keeps exactly one pull in flight, sent as soon as the previous batch
arrives; the upstream answers it no sooner than a window after that batch. So batches arrive in
order, the in-flight count is 1 whatever the number of clients, and the request's trip overlaps
the window. Each window is rendered once per channel (engine.live.channels.WindowCoalescer) and
appended to the subscribed sockets' outboxes (engine.live.fanout). Calls upstream per second are
therefore about 1/window per replica, not per client.

Candles come from the recorder, which owns every symbol's forming bar (the one REST /candles
serves as "live"): while some socket of the replica holds a `candle:SYMBOL:*` channel, a separate
task keeps ONE `forming_updates` long-poll outstanding at the recorder and publishes the bars
that changed (latest wins in each outbox). Coarser channels (`candle:SYMBOL:5m`, `:1d`...) get
the same 1-minute bar rolled into its bucket by the candle service (`live_bars`, the code
`/candles` uses for its live row), one call per symbol and update. A channel's bar never steps
back (`newer_bar`): a new subscriber gets the recorder's bar as of now, and an update that was
in flight meanwhile is dropped rather than shown after it. The window loop never waits on any of
it. With no recorder in the cluster the hub falls back to 1-minute bars built from the trades it
pulls (logged once) and looks for the recorder again every RECORDER_RECHECK_S.

The window adapts. Every socket costs about one frame per window, so the window is at least
sockets / frame budget (KISRAY_WS_FRAME_BUDGET): the frames per second of a replica stay bounded
as clients grow (up to `max_window_s`). On top, when rendering takes more than half of the
window it grows by half (up to BUSY_CEILING_S, or that floor) and shrinks back when cheap.

Each replica also leases a few sessions ahead of its next sockets (`take_lease`), so a new tab
does not wait for the session pool.

The cluster is reached through the protocols of engine.live.ports only; api/hub.py wires them
to Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from engine.config import WS_FRAME_BUDGET, WS_WINDOW_MS
from engine.domain.bars import LiveBar, MinuteBar
from engine.errors import UnknownConsumerError
from engine.kis import tr
from engine.kis.delivery import Batch
from engine.kis.registry import Registration
from engine.live.channels import (
    CANDLE,
    MINUTE_INTERVAL,
    TRADE,
    Channel,
    WindowCoalescer,
    candle_message,
    encode,
    newer_bar,
)
from engine.live.fanout import DEFAULT_MAX_BYTES, FanoutIndex, Outbox
from engine.live.gc_pauses import gc_pauses
from engine.live.ports import (
    BarSource,
    HasSessionId,
    LeaseRequest,
    PoolLostError,
    PoolRestartingError,
    SessionPool,
    Upstream,
    UpstreamLostError,
    UpstreamRestartingError,
)
from engine.live.recent import CatchUp, RecentTrades

log = logging.getLogger(__name__)

PULL_WAIT_S = 1.0
BUSY_CEILING_S = 0.1  # how far slow rendering alone may widen the window
RENEW_EVERY_S = 3.0
SPARE_LEASES = 2  # sessions a replica leases ahead of its next sockets
FORMING_WAIT_S = 2.0  # the recorder answers at each flush (1 s); this only bounds an idle poll
RECORDER_RECHECK_S = 5.0
RECORDER_CALL_TIMEOUT_S = 2.0
# A resumed tab that saw trades this replica has not had yet waits this long for them; then it
# gets a gap marker and the live stream.
CATCH_UP_WAIT_S = 2.0
RECOVER_RETRY_S = 0.2  # how often a hub asks a restarting socket actor again
POOL_WAIT_S = 10.0  # how long a pool call waits for a lost pool to come back
POOL_RETRY_S = 0.05

LeaseT = TypeVar("LeaseT", bound=HasSessionId)
T = TypeVar("T")


class Hub(Generic[LeaseT]):
    def __init__(
        self,
        upstream: Upstream,
        pool: SessionPool[LeaseT] | None,
        bars: BarSource,
        *,
        window_s: float = WS_WINDOW_MS / 1000,
        max_window_s: float = 0.25,
        frame_budget: float = WS_FRAME_BUDGET,
    ) -> None:
        self.upstream = upstream
        self.pool = pool  # renewed for all sockets at once
        # Sessions leased before any socket asks, so a new tab skips the pool's round trip.
        self.spare_target = SPARE_LEASES if pool is not None else 0
        self.spare_leases: list[LeaseT] = []
        self._spares_task: asyncio.Task[None] | None = None
        self.replica_id = uuid.uuid4().hex[:12]
        self.consumer_id = f"hub-{self.replica_id}"
        self.base_window_s = window_s
        self.window_s = window_s
        self.max_window_s = max_window_s
        self.frame_budget = frame_budget  # frames per second, all sockets together
        self.index = FanoutIndex()
        self.window = WindowCoalescer()
        self._lookup: asyncio.Future[bool] | None = None  # a recorder lookup under way
        self._looked_at = float("-inf")  # when the last one ended
        self.recent = RecentTrades()  # for tabs that resume here (engine.live.recent)
        # Resumed tabs' trade channels waiting for this replica to catch up with them:
        # (outbox, channel) → (the tab's last cum_volume, give up at).
        self._catching_up: dict[tuple[Outbox, Channel], tuple[int, float]] = {}
        self.sessions: dict[Outbox, str] = {}
        # Leased sessions of open sockets → what to call if the pool no longer holds one.
        self._watched: dict[str, Callable[[], None]] = {}
        self._regs: Counter[Registration] = Counter()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.upstream_status: str | None = None  # the KIS connection's, as last reported
        self.batches = 0
        self.records = 0
        self.deliveries = 0
        self.pull_s = 0.0
        self.last_batch_records = 0
        self._last_cost = 0.0  # seconds the last window took to render and publish
        self.lag_s = 0.0  # how late the pump wakes up, smoothed
        self.closed_high_water = 0  # the fullest outbox of the sockets that have closed
        self.slow_consumers = 0  # sockets cut with SLOW_CONSUMER
        # The candle source: the recorder's forming bars, or (no recorder) the trade-built ones.
        self.bars = bars
        self.recorder_located = False  # False again after a failed poll: look it up anew
        self.candle_source = "unknown"  # "recorder" | "trades" | "unknown" (not looked yet)
        self.forming: dict[str, MinuteBar] = {}  # symbol → the recorder's latest bar seen
        self.live: dict[Channel, LiveBar] = {}  # coarser channel → its last bar published
        self.forming_seq = 0
        self.forming_polls = 0
        self._candles_wanted = asyncio.Event()
        self._recorder_found = asyncio.Event()
        self._fallback_logged = False
        gc_pauses()  # from now on

    async def start(self) -> None:
        await self.upstream.register(self.consumer_id)
        self._tasks = [
            asyncio.create_task(self._pump(), name="hub-pump"),
            asyncio.create_task(self._renew(), name="hub-renew"),
            asyncio.create_task(self._candles(), name="hub-candles"),
        ]
        self._refill_spares()

    async def stop(self) -> None:
        for task in [*self._tasks, self._spares_task]:
            if task is not None:
                task.cancel()
        if self.pool is not None:
            for lease in self.spare_leases:
                with contextlib.suppress(Exception):
                    await self.pool.release(lease.session_id, False, None, self.replica_id)
        self.spare_leases.clear()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.upstream.unregister(self.consumer_id)

    # -- sockets ------------------------------------------------------------------------------

    def attach(self, outbox: Outbox, session_id: str) -> None:
        self.index.add(outbox)
        self.sessions[outbox] = session_id
        if self.upstream_status is not None:
            outbox.offer(None, encode({"type": "status", "upstream": self.upstream_status}))

    async def detach(self, outbox: Outbox) -> None:
        channels = [*self.index.channels_of(outbox), *self._stop_catching_up(outbox)]
        self.index.remove(outbox)
        self.sessions.pop(outbox, None)
        self.closed_high_water = max(self.closed_high_water, outbox.high_water_bytes)
        self.slow_consumers += outbox.overflowed
        self._note_candle_demand()
        await self._release([c.registration for c in channels])

    async def subscribe(
        self,
        outbox: Outbox,
        channels: list[Channel],
        ack: str | None = None,
        after: dict[str, int] | None = None,
    ) -> None:
        """Start delivering `channels` to the socket. `ack` (the client's `subscribed` message)
        goes out once the upstream took the channels and before any of their data. `after`
        (a resumed tab's last cum_volume per symbol): its trade channels first get the trades
        it missed, or a gap marker (engine.live.recent)."""
        candles = [c for c in channels if c.kind == CANDLE]
        if candles:
            await self._refresh_current_bars(candles)
        async with self._lock:
            mine = {*self.index.channels_of(outbox), *self._held_by(outbox)}
            regs = [c.registration for c in channels if c not in mine]
            new = [r for r in dict.fromkeys(regs) if self._regs[r] == 0]
            if new:
                await self._subscribe_upstream(new)  # may raise the limit
            self._regs.update(regs)
            # In one step, so the client reads: the ack, the current bars, then updates.
            if ack is not None:
                outbox.offer(None, ack)
            self._offer_current_bars(outbox, candles)
            live = channels
            if after:
                deadline = time.monotonic() + CATCH_UP_WAIT_S
                for channel in channels:
                    if channel.kind == TRADE and channel.symbol in after:
                        self._catching_up[(outbox, channel)] = (after[channel.symbol], deadline)
                live = [c for c in channels if (outbox, c) not in self._catching_up]
                self._catch_up()
            self.index.subscribe(outbox, live)
        if candles:
            self._note_candle_demand()

    def _catch_up(self) -> None:
        """Send waiting resumed tabs what they missed, then let them join the live stream. Runs
        right after a window was published (or at the subscription): what `recent` holds is
        exactly what the stream has sent, so nothing is sent twice or skipped."""
        now = time.monotonic()
        for key, (last, deadline) in list(self._catching_up.items()):
            outbox, channel = key
            state, replay = self.recent.replay(channel.symbol, last)
            if state is CatchUp.WAIT and now < deadline:
                continue
            if state is not CatchUp.REPLAY:
                outbox.offer(None, gap_message(channel.symbol, last))
            if replay is not None:
                outbox.offer(channel, replay)
            del self._catching_up[key]
            self.index.subscribe(outbox, [channel])

    def _held_by(self, outbox: Outbox) -> list[Channel]:
        return [c for (o, c) in self._catching_up if o is outbox]

    def _stop_catching_up(self, outbox: Outbox, only: list[Channel] | None = None) -> list[Channel]:
        held = [c for c in self._held_by(outbox) if only is None or c in only]
        for channel in held:
            del self._catching_up[(outbox, channel)]
        return held

    async def _subscribe_upstream(self, new: list[Registration]) -> None:
        """Subscribe upstream; if the socket actor was replaced or forgot us since the last pull,
        find it, register and retry once, instead of failing the client's subscription."""
        try:
            await self.upstream.subscribe(self.consumer_id, new)
            return
        except (UnknownConsumerError, UpstreamLostError) as exc:
            log.warning(
                "hub %s: socket actor changed (%s); registering again", self.replica_id, exc
            )
        await self.upstream.relocate()
        await self.upstream.register(self.consumer_id)
        wanted = list(dict.fromkeys([*self._regs, *new]))
        await self.upstream.subscribe(self.consumer_id, wanted)

    async def unsubscribe(self, outbox: Outbox, channels: list[Channel]) -> None:
        held = self.index.channels_of(outbox)
        mine = [c for c in channels if c in held]
        self.index.unsubscribe(outbox, mine)
        mine += self._stop_catching_up(outbox, channels)
        self._note_candle_demand()
        await self._release([c.registration for c in mine])

    async def _release(self, regs: list[Registration]) -> None:
        async with self._lock:
            gone = []
            for reg in regs:
                self._regs[reg] -= 1
                if self._regs[reg] <= 0:
                    del self._regs[reg]
                    gone.append(reg)
            if gone:
                # Trades of a symbol no longer received would leave a hole in `recent`.
                self.recent.forget(r.tr_key for r in gone if r.tr_id == tr.TRADE)
                await self.upstream.unsubscribe(self.consumer_id, gone)

    # -- the data plane -----------------------------------------------------------------------

    async def _pump(self) -> None:
        # The next pull is sent as soon as a batch is in: the upstream answers it no sooner
        # than one window after the previous batch, so the window bounds the calls per second
        # while the request's trip overlaps the window instead of adding to it.
        pending: Awaitable[Batch | None] | None = None
        while True:
            if pending is None:
                pending = self._pull()
            started = time.monotonic()
            try:
                batch = await pending
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                pending = None
                await self._recover(exc)
                continue
            self.pull_s = time.monotonic() - started
            self._adapt()
            pending = self._pull()
            if batch is not None:
                self.last_batch_records = len(batch.records)
                self._deliver(batch)
            # How late the loop comes back to us: the sockets' writes and other requests, or a
            # CPU shared with other processes. Smoothed over a few windows.
            due = time.monotonic()
            await asyncio.sleep(0)
            self.lag_s = 0.8 * self.lag_s + 0.2 * (time.monotonic() - due)

    def _pull(self) -> Awaitable[Batch | None]:
        return self.upstream.pull(self.consumer_id, PULL_WAIT_S, self.window_s)

    def _deliver(self, batch: Batch) -> None:
        t0 = time.monotonic()
        for status in batch.statuses:
            self.upstream_status = status
            self.index.broadcast(encode({"type": "status", "upstream": status}))
        self.window.add(batch.records)
        self.recent.add(batch.records)
        messages = self.window.drain(self.index.wanted())
        self.deliveries += self.index.publish(messages)
        if self._catching_up:
            self._catch_up()
        self.batches += 1
        self.records += len(batch.records)
        self._last_cost = time.monotonic() - t0

    # -- candles: the recorder's forming bars -------------------------------------------------

    def _note_candle_demand(self) -> None:
        wanted = self.index.wanted()
        # A coarser bar nobody watches would be stale when someone subscribes again.
        self.live = {c: bar for c, bar in self.live.items() if c in wanted}
        if any(c.kind == CANDLE for c in wanted):
            self._candles_wanted.set()
        else:
            self._candles_wanted.clear()

    async def _look_for_recorder(self) -> bool:
        """Find the recorder (True) or switch to trade-built candles (False, logged once). One
        lookup at a time (a GCS round trip, on a thread): callers meanwhile share its answer."""
        return await asyncio.shield(self._start_lookup())

    def _start_lookup(self) -> asyncio.Future[bool]:
        """The lookup under way, or a new one."""
        if self._lookup is None:
            self._lookup = asyncio.ensure_future(self._locate_recorder())
            self._lookup.add_done_callback(self._lookup_done)
        return self._lookup

    def _look_due(self) -> bool:
        return time.monotonic() - self._looked_at >= RECORDER_RECHECK_S

    def _lookup_done(self, _: asyncio.Future[bool]) -> None:
        self._lookup = None
        self._looked_at = time.monotonic()

    async def _locate_recorder(self) -> bool:
        try:
            await self.bars.locate()
        except Exception as exc:  # ValueError: no such actor; anything else: cannot tell
            if self.candle_source != "trades":
                if not self._fallback_logged:
                    log.warning(
                        "hub %s: no recorder actor (%s); building candles from trades until it "
                        "runs",
                        self.replica_id,
                        exc,
                    )
                    self._fallback_logged = True
                self.window.candles_from_trades = True
                self.forming.clear()
            self.recorder_located, self.candle_source = False, "trades"
            return False
        if self.candle_source != "recorder":
            log.info("hub %s: candles come from the recorder", self.replica_id)
            self.window.candles_from_trades = False
            self.window.forget_bars()
            self.forming_seq = 0  # another process counts its publications from 0
        else:
            # Looked up again after a failed call: the recorder found may be a replacement,
            # whose bars (and count) are not comparable with those held from the one before.
            self.forming.clear()
            self.forming_seq = 0
        self.recorder_located, self.candle_source = True, "recorder"
        self._recorder_found.set()
        return True

    async def _refresh_current_bars(self, channels: list[Channel]) -> None:
        """The forming bars a new candle subscription starts with, as the recorder has them now.

        Not the bar held here from earlier subscribers: while no candle channel is wanted the
        long-poll stops, so that one may be minutes old. The recorder's `forming_bars()` counts
        every trade it has, so it is never older than what `/candles` served a moment before
        (the candle service gets the bar at the recorder's flush)."""
        # Not looked yet: wait for that one lookup (shared by every tab meanwhile). Known
        # missing: look again in the background, at most every RECORDER_RECHECK_S, and serve
        # this tab trade-built bars now; a storm of new tabs (or resumes) must not queue
        # behind a GCS round trip each.
        if self.candle_source == "unknown":
            await self._look_for_recorder()
        elif self.candle_source != "recorder" and self._look_due():
            self._start_lookup()
        if self.candle_source == "recorder":
            bars = await self._current_forming_bars()
            for symbol in {c.symbol for c in channels}:
                bar = bars.get(symbol) if bars is not None else None
                if bar is None:
                    # The recorder could not say: what is held here may be minutes old, or from
                    # a recorder since replaced. The next publication brings the bar.
                    self.forming.pop(symbol, None)
                elif newer_bar(self.forming.get(symbol), bar):
                    self.forming[symbol] = bar
        # Coarser bars from the candle service's own forming bar, not the recorder's newer one:
        # that one may already be the next minute while the minute before is not written yet,
        # and rolled over the database it would lose that minute (less volume than /candles).
        coarse = [c for c in channels if c.interval != MINUTE_INTERVAL]
        for symbol in dict.fromkeys(c.symbol for c in coarse):
            await self._roll_up(symbol, None, [c for c in coarse if c.symbol == symbol])

    async def _current_forming_bars(self) -> dict[str, MinuteBar] | None:
        """The recorder's forming bars now, or None if it cannot tell. A call that fails (not
        one that is slow) looks the recorder up again and asks once more: the handle held
        may be of a recorder that was replaced, and the long-poll that would notice is idle
        while no candle channel is wanted."""
        for last_try in (False, True):
            try:
                return await asyncio.wait_for(self.bars.forming_bars(), RECORDER_CALL_TIMEOUT_S)
            except TimeoutError:
                log.warning("hub %s: forming_bars timed out", self.replica_id)
                break
            except Exception as exc:
                log.warning("hub %s: forming_bars failed: %s", self.replica_id, exc)
                if last_try or not await self._look_for_recorder():
                    break
        return None

    def _offer_current_bars(self, outbox: Outbox, channels: list[Channel]) -> None:
        """Each candle channel's newest bar held here (refreshed just before)."""
        for channel in channels:
            if channel.interval != MINUTE_INTERVAL:
                continue
            if self.candle_source == "recorder":
                bar = self.forming.get(channel.symbol)
                latest = candle_message(channel.symbol, bar) if bar is not None else None
            else:
                latest = self.window.latest_candle(channel.symbol)
            if latest is not None:
                outbox.offer(channel, latest)
        for channel in channels:
            interval = channel.interval  # None only on trade and book channels, never held here
            if interval is not None and interval != MINUTE_INTERVAL:
                held = self.live.get(channel)
                if held is not None:
                    outbox.offer(channel, candle_message(channel.symbol, held, interval))

    async def _roll_up(
        self, symbol: str, bar: MinuteBar | None, channels: list[Channel]
    ) -> dict[Channel, str]:
        """The coarser channels' bars for this 1-minute bar (None: the candle service's), kept
        when newer; their messages. A recorder publication comes after its flush wrote the
        closed minutes, so its bar and the database agree."""
        intervals = sorted({c.interval for c in channels if c.interval is not None})
        try:
            bars = await asyncio.wait_for(
                self.bars.live_bars(symbol, intervals, bar), RECORDER_CALL_TIMEOUT_S
            )
        except Exception as exc:
            log.warning("hub %s: live bars of %s failed: %s", self.replica_id, symbol, exc)
            return {}
        messages: dict[Channel, str] = {}
        for channel in channels:
            if channel.interval is None:  # never on a candle channel
                continue
            rolled = bars.get(channel.interval)
            if rolled is not None and newer_bar(self.live.get(channel), rolled):
                self.live[channel] = rolled
                messages[channel] = candle_message(symbol, rolled, channel.interval)
        return messages

    async def _candles(self) -> None:
        """One outstanding `forming_updates` long-poll, only while candle channels are wanted."""
        while True:
            await self._candles_wanted.wait()
            if not self.recorder_located and not await self._look_for_recorder():
                self._recorder_found.clear()
                with contextlib.suppress(TimeoutError):  # a new candle subscription may find it
                    await asyncio.wait_for(self._recorder_found.wait(), RECORDER_RECHECK_S)
                continue
            try:
                seq, bars = await self.bars.forming_updates(self.forming_seq, FORMING_WAIT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("hub %s: forming_updates failed: %s", self.replica_id, exc)
                await asyncio.sleep(1.0)
                self.recorder_located = False  # look it up again (it may be gone for good)
                continue
            self.forming_polls += 1
            self.forming_seq = seq  # a restarted recorder counts from 0 again: follow it
            await self._apply_forming(bars)

    async def _apply_forming(self, bars: dict[str, MinuteBar]) -> None:
        """Keep the bars that moved forward and publish them to the wanted channels, 1m and
        coarser (rolled up by the candle service)."""
        wanted = self.index.wanted()
        messages: dict[Channel, str] = {}
        changed = []
        for symbol, bar in bars.items():
            if not newer_bar(self.forming.get(symbol), bar):
                continue  # the same bar again, or older than one already sent
            self.forming[symbol] = bar
            changed.append(symbol)
            channel = Channel(CANDLE, symbol, MINUTE_INTERVAL)
            if channel in wanted:
                messages[channel] = candle_message(symbol, bar)
        if messages:
            self.deliveries += self.index.publish(messages)
        for symbol in changed:
            coarse = [
                c
                for c in wanted
                if c.kind == CANDLE and c.symbol == symbol and c.interval != MINUTE_INTERVAL
            ]
            if coarse:
                rolled = await self._roll_up(symbol, self.forming[symbol], coarse)
                if rolled:
                    self.deliveries += self.index.publish(rolled)

    def _adapt(self) -> None:
        """Grow the window while rendering takes over half of it (the replica cannot keep up:
        fewer, larger frames); shrink it back when cheap. The loop's lateness (`lag_ms` in the
        stats) is not a signal here: it mostly measures other processes sharing the CPU, and
        widening on it doubled p99 in the bench (docs/fanout.md)."""
        busy = self._last_cost
        floor = min(self.max_window_s, max(self.base_window_s, len(self.index) / self.frame_budget))
        # Slow rendering widens the window only to BUSY_CEILING_S: one hiccup (the process
        # descheduled) must not set a few tabs' window to what 1,000 sockets need.
        ceiling = max(floor, BUSY_CEILING_S)
        if busy > self.window_s / 2 and self.window_s < ceiling:
            self.window_s = min(ceiling, self.window_s * 1.5)
        elif busy < self.window_s / 8 and self.window_s > floor:
            self.window_s = max(floor, self.window_s / 1.5)
        self.window_s = max(self.window_s, floor)

    async def _recover(self, exc: Exception) -> None:
        """The socket actor forgot us (restart, missed lease) or is away: register again. While
        it restarts ask again every RECOVER_RETRY_S, so data flows as soon as it is back."""
        if isinstance(exc, UnknownConsumerError):
            log.warning("hub %s: the socket actor forgot it; registering again", self.replica_id)
        elif isinstance(exc, UpstreamRestartingError):
            log.debug("hub %s: the socket actor is restarting", self.replica_id)
            await asyncio.sleep(RECOVER_RETRY_S)
        else:
            log.warning("hub %s pull failed: %s; retrying", self.replica_id, exc)
            await asyncio.sleep(RECOVER_RETRY_S)
            with contextlib.suppress(Exception):  # it may have been replaced: look it up again
                await self.upstream.relocate()
        try:
            await self.upstream.register(self.consumer_id)
            async with self._lock:
                if self._regs:
                    await self.upstream.subscribe(self.consumer_id, list(self._regs))
        except UpstreamRestartingError:
            await asyncio.sleep(RECOVER_RETRY_S)  # still restarting
        except Exception as again:
            log.warning("hub %s re-register failed: %s", self.replica_id, again)
            await asyncio.sleep(1.0)

    # -- sessions -----------------------------------------------------------------------------

    async def call_pool(self, call: Callable[[SessionPool[LeaseT]], Awaitable[T]]) -> T:
        """A call to the session pool that rides out its loss: while it restarts, try again
        until POOL_WAIT_S; if it is gone for good (killed without restart), find or recreate it.
        Spare leases die with a pool's process, so they are dropped."""
        if self.pool is None:
            raise LookupError("this hub has no session pool")
        deadline = time.monotonic() + POOL_WAIT_S
        while True:
            try:
                return await call(self.pool)
            except PoolLostError as exc:
                if time.monotonic() > deadline:
                    raise
                if self.spare_leases:
                    log.warning("hub %s: the session pool was lost: %s", self.replica_id, exc)
                    self.spare_leases.clear()
                if isinstance(exc, PoolRestartingError):
                    await asyncio.sleep(POOL_RETRY_S)  # restarting: the same one will do
                else:
                    await self.pool.relocate()

    def spare_lease(self) -> LeaseT | None:
        """A session leased ahead for a new socket, if one is at hand (no round trip)."""
        lease = self.spare_leases.pop() if self.spare_leases else None
        self._refill_spares()
        return lease

    async def take_lease(self, client_id: str, session_id: str | None = None) -> LeaseT:
        """A session for a new socket: a spare one at once, else a round trip to the pool
        (under `session_id` when the tab already has its id)."""
        lease = None if session_id else self.spare_lease()
        if lease is None:
            lease = await self.call_pool(
                lambda pool: pool.acquire(
                    LeaseRequest(client_id, self.replica_id, None, session_id)
                )
            )
        return lease

    async def resume_lease(self, client_id: str, session_id: str) -> LeaseT:
        return await self.call_pool(
            lambda pool: pool.acquire(LeaseRequest(client_id, self.replica_id, session_id))
        )

    async def replace_session(self, session_id: str, channels: list[Channel]) -> LeaseT:
        """A socket's session actor died: a new one under the same id, holding `channels`."""
        return await self.call_pool(lambda pool: pool.adopt(session_id, self.replica_id, channels))

    def watch(self, session_id: str, on_lost: Callable[[], None]) -> None:
        """Renew this socket's lease; call `on_lost` if the pool no longer holds it."""
        self._watched[session_id] = on_lost

    def unwatch(self, session_id: str) -> None:
        self._watched.pop(session_id, None)

    async def release_lease(self, session_id: str, park: bool, channels: list[Channel]) -> None:
        self.unwatch(session_id)
        await self.call_pool(
            lambda pool: pool.release(session_id, park, tuple(channels), self.replica_id)
        )

    def _refill_spares(self) -> None:
        if self.spare_target and (self._spares_task is None or self._spares_task.done()):
            self._spares_task = asyncio.create_task(self._fill_spares(), name="hub-spares")

    async def _fill_spares(self) -> None:
        while len(self.spare_leases) < self.spare_target:
            try:
                lease = await self.call_pool(
                    lambda pool: pool.acquire(LeaseRequest(uuid.uuid4().hex, self.replica_id))
                )
            except Exception as exc:  # the next socket pays the round trip and tries again
                log.warning("hub %s: could not lease a spare session: %s", self.replica_id, exc)
                return
            self.spare_leases.append(lease)

    async def _renew(self) -> None:
        """Keep the session pool's leases every RENEW_EVERY_S. (The pull in flight keeps the
        socket actor's.)"""
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            try:
                lost = await self._renew_leases()
            except Exception as exc:
                log.warning("session lease renewal failed: %s", exc)
                continue
            if lost:  # the pool restarted or reclaimed them: spares go, sockets re-adopt
                self.spare_leases = [s for s in self.spare_leases if s.session_id not in lost]
                for sid in lost & set(self._watched):
                    self._watched[sid]()

    async def _renew_leases(self) -> set[str]:
        """The sockets' and the spares' leases, renewed in one call; the ones the pool lost."""
        held = [*self._watched, *(lease.session_id for lease in self.spare_leases)]
        if self.pool is None or not held:
            return set()
        return set(await self.call_pool(lambda pool: pool.renew(self.replica_id, held)))

    def stats(self) -> dict[str, object]:
        return {
            "replica": self.replica_id,
            "sockets": len(self.index),
            "registrations": len(self._regs),
            "window_ms": round(self.window_s * 1000, 1),
            "batches": self.batches,
            "records": self.records,
            "deliveries": self.deliveries,
            "pull_ms": round(self.pull_s * 1000, 1),
            "deliver_ms": round(self._last_cost * 1000, 1),
            "lag_ms": round(self.lag_s * 1000, 1),
            "last_batch_records": self.last_batch_records,
            "candle_source": self.candle_source,
            "forming_polls": self.forming_polls,
            "outbox_max_bytes": max((o.pending_bytes for o in self.sessions), default=0),
            "outbox_high_water": max(
                [self.closed_high_water, *(o.high_water_bytes for o in self.sessions)]
            ),
            "outbox_limit": DEFAULT_MAX_BYTES,
            "slow_consumers": self.slow_consumers,
            "spare_leases": len(self.spare_leases),
            "gc_worst_ms": round(gc_pauses().worst_recent() * 1000, 1),
            "gc_total_ms": round(gc_pauses().total_s * 1000, 1),
            "gc_full": gc_pauses().full,
        }


def gap_message(symbol: str, last: int) -> str:
    return encode(
        {
            "type": "gap",
            "symbol": symbol,
            "after_cum_volume": last,
            "message": f"trades of {symbol} after this one may be missing: fetch "
            f"/candles/{symbol} to fill the chart",
        }
    )
