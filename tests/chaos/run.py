"""One chaos run: clusters, clients, publishers, seeded faults, then the checker.

``run_chaos(config)`` starts one cluster per transport (``cluster.py``), gives each its own
channels, clients and publishers, injects random faults drawn from ``random.Random(seed)`` for
``duration`` seconds, heals everything, lets the clients settle, reconciles the log with the
stores, and checks every history (``tests.guarantee.checker``). The fault schedule follows the
seed; the timings of real processes do not, so a seed reproduces the same mix of faults, not
the same interleaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.client import ChaosClient, Identity
from tests.chaos.cluster import Cluster
from tests.chaos.publisher import PublishLog, publish_burst, publish_loop, reconcile
from tests.conftest import make_token
from tests.guarantee.checker import Violation, check, format_violations

logger = logging.getLogger("tests.chaos")

_NUMBERS = re.compile(r"[0-9a-f]{8}/|\d+")  # epochs and offsets, to group violations
USERS = 10
SUBMISSIONS = 6
# fault kinds and weights per transport; slow readers and churn bursts on both
FAULTS = {
    "redis": {
        "pubsub_kill": 4,
        "store_kill": 1,
        "redis_restart": 1,
        "node_kill": 2,
        "slow_readers": 3,
        "churn_burst": 3,
    },
    "amqp": {
        "amqp_close": 4,
        "store_kill": 1,
        "redis_restart": 1,
        "node_kill": 2,
        "slow_readers": 3,
        "churn_burst": 3,
    },
}


@dataclass
class ChaosConfig:
    """What to run: ``clients`` are split evenly between the transports' clusters."""

    seed: int
    duration: float = 45.0
    clients: int = 150
    transports: tuple[str, ...] = ("redis", "amqp")
    publish_rate: float = 25.0  # events a second per cluster
    fault_interval: tuple[float, float] = (0.8, 2.5)
    settle: float = 20.0  # at most; ends early once every client is up to date
    workdir: Path = Path("/tmp")
    amqp_url: str | None = None


@dataclass
class ChaosResult:
    """Everything a run produced; ``dump`` writes it for a later ``check``."""

    seed: int
    published: list[dict[str, Any]]
    histories: dict[str, list[dict[str, Any]]]
    rights: dict[str, Any]
    faults: Counter[str]
    fault_log: list[str]
    violations: list[Violation]
    numbers: dict[str, Any] = field(default_factory=dict)

    def report(self, limit: int = 20) -> str:
        lines = [
            f"chaos seed={self.seed}: {len(self.violations)} violation(s)",
            "faults: " + ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items())),
            "numbers: " + json.dumps(self.numbers, sort_keys=True),
        ]
        if self.violations:
            kinds = Counter(
                f"rule {v.rule}: {_NUMBERS.sub('N', v.detail)}" for v in self.violations
            )
            lines.append("by kind: " + "; ".join(f"{k} x{n}" for k, n in kinds.most_common()))
            shown = {v.client for v in self.violations[:limit]}
            lines.append(
                format_violations(self.violations, _trimmed(self.histories, shown), limit=limit)
            )
            lines.append(f"(replay the fault schedule with seed {self.seed})")
        return "\n".join(lines)

    def dump(self, path: Path) -> None:
        path.write_text(
            json.dumps(
                {
                    "seed": self.seed,
                    "published": self.published,
                    "histories": self.histories,
                    "rights": self.rights,
                    "faults": dict(self.faults),
                    "fault_log": self.fault_log,
                    "numbers": self.numbers,
                }
            )
        )


def _trimmed(
    histories: dict[str, list[dict[str, Any]]], clients: set[str]
) -> dict[str, list[dict[str, Any]]]:
    """The given clients' histories with each padding string shown as its length."""

    def short(rec: dict[str, Any]) -> dict[str, Any]:
        out = dict(rec)
        data = out.get("data")
        if isinstance(data, dict) and isinstance(data.get("pad"), str):
            out["data"] = {**data, "pad": f"<{len(data['pad'])} bytes>"}
        if isinstance(out.get("state"), dict):
            out["state"] = {"offset": out["state"]["offset"]}
        if out.get("missed"):
            out["missed"] = [m["offset"] if isinstance(m, dict) else m for m in out["missed"]]
        return out

    return {c: [short(r) for r in histories[c]] for c in clients}


@dataclass
class _Side:
    """One cluster with its channels, clients and publish log."""

    cluster: Cluster
    tag: str
    public: list[str]
    private: list[str]
    clients: list[ChaosClient] = field(default_factory=list)
    log: PublishLog = field(default_factory=PublishLog)
    down: set[int] = field(default_factory=set)
    restarts: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def channels(self) -> list[str]:
        return self.public + self.private

    @property
    def frozen(self) -> list[str]:
        """Channels published on only while the faults go on."""
        return [c for c in self.channels if c.endswith("-0") or c.startswith("submission:")]

    @property
    def steady(self) -> list[str]:
        return [c for c in self.channels if c not in self.frozen]


def _make_side(cluster: Cluster, tag: str, count: int, rng: random.Random) -> _Side:
    public = [f"contest:{tag}-{i}" for i in range(4)] + [f"leaderboard:{tag}-{i}" for i in range(2)]
    users = [f"user:{tag}-u{i}" for i in range(USERS)]
    submissions = [f"submission:{tag}-s{i}" for i in range(SUBMISSIONS)]
    side = _Side(cluster, tag, public, users + submissions)
    for i in range(count):
        cid = f"{tag}{i:04d}"
        identities: list[Identity] = []
        if i % 5:  # one in five is anonymous; the others can log in as two users
            for u in (i, i + 1 + rng.randrange(USERS - 1)):
                uid = f"{tag}-u{u % USERS}"
                granted = [submissions[u % SUBMISSIONS]] if u % 2 else []
                token = make_token(uid, channels=granted or None, ttl=7200)
                identities.append(Identity(uid, token, (f"user:{uid}", *granted)))
        mine = list(identities[0].channels) if identities else []
        wanted = rng.sample(public, 2) + mine[: rng.randint(0, len(mine))]
        side.clients.append(
            ChaosClient(
                cid,
                cluster.live_urls,
                random.Random(rng.random()),
                identities,
                wanted,
                public=public,
                private=users + submissions,
            )
        )
    return side


async def run_chaos(config: ChaosConfig) -> ChaosResult:
    """Run the clusters under faults for ``config.duration`` s; check every history."""
    rng = random.Random(config.seed)
    loop = asyncio.get_running_loop()
    sides: list[_Side] = []
    faults: Counter[str] = Counter()
    fault_log: list[str] = []
    started = loop.time()

    def note(side: _Side, kind: str, what: str) -> None:
        faults[f"{side.tag}:{kind}"] += 1
        fault_log.append(
            f"t={loop.time():.2f} (+{loop.time() - started:.1f}s) {side.tag} {kind}: {what}"
        )

    per = config.clients // len(config.transports)
    try:
        for transport in config.transports:
            tag = transport[0]
            cluster = Cluster(tag, transport, config.workdir, config.amqp_url)
            sides.append(_make_side(cluster, tag, per, rng))
            await loop.run_in_executor(None, cluster.start)
        clients_stop = asyncio.Event()
        publish_stop = asyncio.Event()
        faults_stop = asyncio.Event()
        tasks = [loop.create_task(c.run(clients_stop)) for side in sides for c in side.clients]
        await asyncio.sleep(2.0)  # everyone connected and subscribed before the flow
        for side in sides:
            # "frozen" channels get their last events while the faults go on (a final verdict
            # published during an outage must still arrive); the others go on after healing
            for channels, stop in (
                (side.steady, publish_stop),
                (side.steady, publish_stop),
                (side.frozen, faults_stop),
            ):
                tasks.append(
                    loop.create_task(
                        publish_loop(
                            stop,
                            side.cluster.live_http,
                            channels,
                            config.publish_rate / 3,
                            random.Random(rng.random()),
                            side.log,
                        )
                    )
                )
        chaos = [
            loop.create_task(_faults(side, config, random.Random(rng.random()), faults_stop, note))
            for side in sides
        ] + [
            loop.create_task(_churn(side, random.Random(rng.random()), faults_stop))
            for side in sides
        ]
        await asyncio.sleep(config.duration)
        faults_stop.set()
        await asyncio.gather(*chaos)
        for side in sides:
            await asyncio.gather(*side.restarts)
            for client in side.clients:
                client.churning = False
        await _heal(sides, loop)
        await asyncio.gather(*(_last_words(s, random.Random(rng.random()), note) for s in sides))
        await _heal(sides, loop)
        await asyncio.sleep(3.0)  # events keep flowing on the healed clusters
        publish_stop.set()
        for side in sides:
            await _publish_where_the_store_lost_the_channel(side, rng)
        await asyncio.sleep(1.0)
        settle_end = loop.time() + config.settle
        while loop.time() < settle_end and not await loop.run_in_executor(  # noqa: ASYNC110
            None, _all_caught_up, sides
        ):
            await asyncio.sleep(0.5)
        settled_after = config.settle - max(0.0, settle_end - loop.time())
        clients_stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        published: list[dict[str, Any]] = []
        reconciled = 0
        for side in sides:
            for channel in side.channels:
                epoch, history = await loop.run_in_executor(None, side.cluster.stored, channel)
                reconciled += reconcile(side.log, channel, epoch, history)
            reconciled += _reconcile_from_histories(side)
            published += side.log.published
        published = _store_order(published)
    finally:
        for side in sides:
            await loop.run_in_executor(None, side.cluster.stop)
    histories = {c.cid: c.history for side in sides for c in side.clients}
    rights = {c.cid: c.rights() for side in sides for c in side.clients}
    violations = check(published, histories, rights, settled=True)
    numbers = _numbers(sides, published, reconciled, settled_after)
    return ChaosResult(
        config.seed, published, histories, rights, faults, fault_log, violations, numbers
    )


async def _faults(
    side: _Side,
    config: ChaosConfig,
    rng: random.Random,
    stop: asyncio.Event,
    note: Any,
) -> None:
    """Inject one random fault every ``fault_interval`` seconds until ``stop`` is set."""
    loop = asyncio.get_running_loop()
    cluster = side.cluster
    kinds = FAULTS[cluster.transport]
    names, weights = list(kinds), list(kinds.values())
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(*config.fault_interval))
            return
        kind = rng.choices(names, weights)[0]
        try:
            if kind == "pubsub_kill":
                note(side, kind, await loop.run_in_executor(None, cluster.kill_pubsub, rng))
            elif kind == "store_kill":
                note(side, kind, await loop.run_in_executor(None, cluster.kill_store_connections))
            elif kind == "redis_restart":
                down = rng.uniform(0.0, 1.5)
                note(side, kind, await loop.run_in_executor(None, cluster.restart_redis, down))
            elif kind == "amqp_close":
                i = rng.randrange(2)
                note(side, kind, await loop.run_in_executor(None, cluster.cut_amqp, i))
            elif kind == "node_kill":
                up = [i for i in range(2) if i not in side.down]
                if len(up) < 2:
                    continue  # one node always serves
                i = rng.choice(up)
                side.down.add(i)
                note(side, kind, await loop.run_in_executor(None, cluster.kill_node, i))
                side.restarts.append(loop.create_task(_restart_later(side, i, rng.uniform(0.5, 3))))
            elif kind == "slow_readers":
                # a few clients stop reading while a burst of large events goes out on a
                # channel some of them follow: past max_send_buffer they are cut off (1013)
                channel = rng.choice(side.public)
                following = [c for c in side.clients if channel in c.subs]
                victims = rng.sample(following or side.clients, min(len(following) or 1, 4))
                victims += rng.sample(side.clients, max(1, len(side.clients) // 40))
                seconds = rng.uniform(2.0, 8.0)
                for client in victims:
                    client.pause(seconds)
                note(
                    side,
                    kind,
                    f"{len(victims)} clients stop reading for {seconds:.1f}s, burst on {channel}",
                )
                await publish_burst(side.cluster.live_http, channel, 25, 6000, rng, side.log)
            elif kind == "churn_burst":
                victims = rng.sample(side.clients, max(1, len(side.clients) // 8))
                done = await asyncio.gather(*(c.churn_once() for c in victims))
                note(side, kind, f"{len(victims)} clients: {Counter(d.split()[0] for d in done)}")
        except Exception as exc:  # a fault that could not be injected is reported, not fatal
            note(side, f"{kind}_failed", repr(exc))


async def _last_words(side: _Side, rng: random.Random, note: Any) -> None:
    """The frozen channels' last events, published through one node while a fault hits.

    AMQP: that node's connection is cut while it publishes (a store write whose send fails);
    Redis: the other node's pub/sub connection is killed (it misses the PUBLISH). Nothing is
    published on these channels afterwards, so a lost last event shows in rule 6.
    """
    loop = asyncio.get_running_loop()
    cluster = side.cluster
    i = rng.randrange(2)
    node = cluster.nodes[i].url

    async def publish(channel: str) -> None:
        await publish_burst(lambda: [node], channel, 3, 50, rng, side.log)

    async def fault() -> str:
        await asyncio.sleep(rng.uniform(0.0, 0.05))
        if cluster.transport == "amqp":
            return await loop.run_in_executor(None, cluster.cut_amqp, i)
        return await loop.run_in_executor(None, cluster.kill_pubsub, rng)

    *_, what = await asyncio.gather(*(publish(c) for c in side.frozen), fault())
    note(
        side, "last_words", f"3 events on each of {len(side.frozen)} channels via node {i}; {what}"
    )


async def _restart_later(side: _Side, i: int, delay: float) -> None:
    await asyncio.sleep(delay)
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, side.cluster.start_node, i)
    finally:
        side.down.discard(i)


async def _churn(side: _Side, rng: random.Random, stop: asyncio.Event) -> None:
    """Background subscribe churn: each client changes something about every 10 s."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.expovariate(len(side.clients) / 10))
            return
        client = rng.choice(side.clients)
        if client.churning:
            await client.churn_once()


async def _publish_where_the_store_lost_the_channel(side: _Side, rng: random.Random) -> None:
    """One event on each channel whose store lost it after its last publish.

    Without it, the log's last event of such a channel is in an epoch the store no longer
    has, and no subscriber could be "up to date" (rule 6).
    """
    loop = asyncio.get_running_loop()
    last_epoch = {p["channel"]: p["epoch"] for p in side.log.published}
    for channel in side.channels:
        epoch, _ = await loop.run_in_executor(None, side.cluster.stored, channel)
        if channel in last_epoch and epoch != last_epoch[channel]:
            before = side.log.ok
            for _ in range(5):
                await publish_burst(side.cluster.live_http, channel, 1, 10, rng, side.log)
                if side.log.ok > before:
                    break


async def _heal(sides: list[_Side], loop: asyncio.AbstractEventLoop) -> None:
    """Every node and Redis up and healthy again (up to 60 s)."""
    for side in sides:
        if side.cluster.redis.command("PING") != "+PONG":
            await loop.run_in_executor(None, side.cluster.redis.start)
        for i in range(2):
            if not side.cluster.up(i):
                await loop.run_in_executor(None, side.cluster.start_node, i)
    deadline = loop.time() + 60
    while loop.time() < deadline:
        healthy = [await loop.run_in_executor(None, s.cluster.healthy) for s in sides]
        if all(healthy):
            return
        await asyncio.sleep(0.5)
    logger.warning("chaos: clusters not healthy 60 s after the faults stopped")


def _all_caught_up(sides: list[_Side]) -> bool:
    """Every live subscription of every client is at its channel's stored position."""
    for side in sides:
        stored = {}
        for channel in side.channels:
            epoch, history = side.cluster.stored(channel)
            stored[channel] = (epoch, history[-1]["offset"] if history else None)
        for client in side.clients:
            for sub in client.subs.values():
                epoch, last = stored[sub.channel]
                if epoch is None:
                    continue
                if sub.status != "live" or (sub.epoch, sub.offset) != (epoch, last):
                    return False
    return True


def _reconcile_from_histories(side: _Side) -> int:
    """Log the events clients saw whose publish failed (stored, reply lost, store lost since)."""
    known = {(p["channel"], p["epoch"], p["offset"]) for p in side.log.published}
    added = 0
    for client in side.clients:
        epochs: dict[str, str] = {}
        for rec in client.history:
            if rec["kind"] == "subscribed":
                epochs[rec["channel"]] = rec["epoch"]
                seen = [*rec["missed"], *([rec["state"]] if rec["state"] else [])]
            elif rec["kind"] == "event":
                seen = [rec]
            else:
                continue
            channel = rec["channel"]
            for event in seen:
                n = event["data"].get("n") if isinstance(event["data"], dict) else None
                attempt = side.log.attempts.get(n) if isinstance(n, int) else None
                key = (channel, epochs.get(channel), event["offset"])
                if attempt is None or key[1] is None or key in known:
                    continue
                known.add(key)
                side.log.published.append(
                    {
                        "channel": channel,
                        "epoch": key[1],
                        "offset": event["offset"],
                        "type": event["type"],
                        "data": event["data"],
                        "state": attempt["state"],
                    }
                )
                added += 1
    return added


def _store_order(published: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log in store order: per channel, epochs as they first appeared, offsets ascending.

    Replies of concurrent publishers arrive out of order; the checker reads an offset that
    goes down within an epoch as a store rollback.
    """
    first_seen: dict[tuple[str, str], int] = {}
    for i, rec in enumerate(published):
        first_seen.setdefault((rec["channel"], rec["epoch"]), i)
    return sorted(published, key=lambda r: (first_seen[(r["channel"], r["epoch"])], r["offset"]))


def _numbers(
    sides: list[_Side], published: list[dict[str, Any]], reconciled: int, settled_after: float
) -> dict[str, Any]:
    codes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    out: dict[str, Any] = {
        "clients": sum(len(s.clients) for s in sides),
        "published": len(published),
        "publish_failed": sum(s.log.failed for s in sides),
        "publish_retries": sum(s.log.retries for s in sides),
        "publish_duplicates": sum(s.log.duplicates for s in sides),
        "publish_gave_up": sum(s.log.gave_up for s in sides),
        "reconciled_from_store": reconciled,
        "settled_after_s": round(settled_after, 1),
    }
    events = connects = resyncs = recoveries = churn = pauses = cut = reauths = 0
    for side in sides:
        for c in side.clients:
            events += sum(1 for r in c.history if r["kind"] == "event")
            connects += c.stats.connects
            resyncs += c.stats.resyncs
            recoveries += c.stats.recoveries
            churn += c.stats.churn
            pauses += c.stats.pauses
            reauths += c.stats.reauths
            cut += c.stats.cut_while_paused
            codes.update(c.stats.close_codes)
            errors.update(c.stats.errors)
    live = sum(
        1
        for side in sides
        for c in side.clients
        if any(s.status == "live" for s in c.subs.values())
        and c.history
        and c.history[-1]["kind"] != "disconnect"
    )
    out.update(
        live_at_end=live,  # clients whose subscriptions rule 6 checks
        events_received=events,
        connects=connects,
        resyncs=resyncs,
        recoveries=recoveries,
        churn_actions=churn,
        paused_readers=pauses,
        reauths=reauths,
        cut_while_not_reading=cut,
        close_codes=dict(codes),
        errors=dict(errors),
    )
    return out
