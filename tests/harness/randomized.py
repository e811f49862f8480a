"""The randomized delivery scenario (PROTOCOL.md §5.2-5.4) shared by test_chat_randomized.py
(one node) and test_cluster_chat.py (participants spread over the nodes of a cluster).

One agent and two customers, every participant on two connections: the agent on two
steady connections, each customer on one steady connection and one that disconnects
and reconnects over and over (sending `delivered` or `read` for what it saw before
leaving, or not, and closing cleanly or vanishing), while every steady connection
sends with random small delays.

Every task draws from its own generator seeded from the round's seed, so the choices
do not depend on how the tasks interleave; CHAT_RANDOM_SEED repeats a run.

Checked for every connection and session: its view (acks, `message` and
`offline_message` seqs) is ascending and contiguous from its first frame, with no
duplicate; the only holes allowed are the user's own messages sent from another
connection before this one was authenticated (own messages are never replayed);
a reconnect's first delivery is the first message above the delivery cursor not
sent by the user. At the end every acked message was seen by every participant,
a final reconnect replays exactly what lies above the cursor, and the history
route (of every node) holds exactly the acked messages.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from harness import config
from harness.chat import User, connect, history, new_agent_user, new_customer, send, session_action, view
from harness.http import body_of
from harness.ws import Client


def base_seed() -> int:
    """CHAT_RANDOM_SEED, or a fresh random seed; round k runs with base_seed + k."""
    return int(os.environ.get("CHAT_RANDOM_SEED") or random.SystemRandom().randrange(1, 2**31))


def rounds(env_var: str, default: int = 3) -> int:
    return int(os.environ.get(env_var, str(default)))


# ------------------------------------------------------------------ how nodes are chosen
@dataclass(frozen=True)
class Placement:
    """Which node each step of the scenario uses.

    With ``spread`` every customer creation, claim, reconnect and final connect goes to a node drawn
    from the scenario's generators, and connection labels name their node; otherwise everything
    happens on ``nodes[0]``."""

    nodes: Sequence[Any]
    agent_nodes: tuple[Any, Any]  # the agent's two steady connections
    stable_nodes: tuple[Any, Any]  # each customer's steady connection
    spread: bool

    def pick(self, rng: random.Random) -> Any:
        return rng.choice(self.nodes) if self.spread else self.nodes[0]

    def label(self, base: str, node: Any) -> str:
        return f"{base}@{node.node_id}" if self.spread else base


def one_node(node: Any) -> Placement:
    return Placement([node], (node, node), (node, node), spread=False)


def spread_over(nodes: Sequence[Any]) -> Placement:
    """The agent on nodes 1 and 3, the customers' steady connections on nodes 2 and 1, the rest random."""
    n1, n2, n3 = nodes
    return Placement(list(nodes), (n1, n3), (n2, n1), spread=True)


@dataclass(frozen=True)
class Load:
    agent_sends: tuple[tuple[int, int], tuple[int, int]]  # randint bounds of the agent's two senders
    customer_sends: tuple[int, int]  # randint bounds of each customer's steady sender
    flap_quota: int  # most messages sent by a customer's flapping connections
    min_reconnects: int  # per customer
    min_total: int  # fewest acked messages


# ------------------------------------------------------------------ the run
@dataclass
class Conn:
    ws: Client
    user: User
    node: str
    cursor: dict[str, int] = field(default_factory=dict)  # the delivery cursor per session when it authenticated
    flapping: bool = False


@dataclass
class Sent:
    message_id: str
    text: str
    sender: str
    label: str


class Run:
    def __init__(self, placement: Placement, load: Load, seed: int) -> None:
        self.placement, self.load, self.seed = placement, load, seed
        self.sent: dict[tuple[str, int], Sent] = {}
        self.conns: list[Conn] = []
        self.cursor: dict[str, int] = {}  # the customer's delivery cursor (only flappers move it)
        self.senders_done = asyncio.Event()
        self.reconnects = 0

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}:{name}")

    async def connect(self, node: Any, user: User, base: str, **kw: Any) -> Conn:
        label = self.placement.label(base, node)
        return Conn(await connect(node, user, label), user, node.node_id, **kw)

    async def send(self, ws: Client, who: User, sid: str, text: str) -> None:
        ack = await send(ws, sid, text, timeout=config.FRAME_WAIT * 2)
        key = (sid, ack["seq"])
        assert key not in self.sent, f"seq {ack['seq']} acked twice in {sid}: {self.sent[key]} and {ws.label}"
        self.sent[key] = Sent(ack["messageId"], text, who.id, ws.label)

    async def sender(self, ws: Client, who: User, sids: list[str], n: int) -> None:
        rng = self.rng(ws.label)
        for i in range(n):
            await asyncio.sleep(rng.uniform(0, 0.03))
            await self.send(ws, who, rng.choice(sids), f"{ws.label} #{i} {rng.randrange(10**6)}")

    async def flapper(self, customer: User) -> None:
        rng = self.rng(f"flap-{customer.id}")
        sid = customer.session_id
        sent = n = 0
        while not (self.senders_done.is_set() and n >= self.load.min_reconnects):
            node = self.placement.pick(rng)  # spread: every reconnect goes to a random node
            conn = await self.connect(node, customer, f"{customer.name}-flap-{n}",
                                      cursor={sid: self.cursor.get(sid, 0)}, flapping=True)
            n += 1
            self.reconnects += 1
            label = conn.ws.label
            self.conns.append(conn)
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(rng.uniform(0, 0.08))
                if sent < self.load.flap_quota and rng.random() < 0.6:
                    await self.send(conn.ws, customer, sid, f"{label} {rng.randrange(10**6)}")
                    sent += 1
            await asyncio.sleep(rng.uniform(0.0, 0.1))
            seen = [s for _, s in view(conn.ws, sid)]
            how = rng.random()
            if seen and how < 0.6:
                kind = "delivered" if how < 0.45 else "read"
                ok = await conn.ws.request({"type": kind, "sessionId": sid, "upToSeq": max(seen)})
                assert ok["type"] == "ok", ok
                self.cursor[sid] = max(self.cursor.get(sid, 0), max(seen))
            if rng.random() < 0.7:
                await conn.ws.close()
            else:  # vanish without a closing handshake
                conn.ws.conn.transport.abort()
                await asyncio.wait_for(conn.ws.closed.wait(), config.FRAME_WAIT)
            await asyncio.sleep(rng.uniform(0, 0.05))

    # ------------------------------------------------------------------ checks
    def seqs_of(self, sid: str) -> list[int]:
        return sorted(s for (x, s) in self.sent if x == sid)

    def check_view(self, conn: Conn, sid: str) -> list[int]:
        """Contiguous from the first frame counting own acks, no duplicate; the only holes allowed are the
        user's own messages sent from another connection before this one's first live message (never replayed)."""
        ws, me = conn.ws, conn.user.id
        frames = view(ws, sid)
        deliveries = [s for k, s in frames if k != "ack"]
        assert len(set(deliveries)) == len(deliveries), f"{ws.label}: duplicate deliveries in {sid}: {frames}"
        assert deliveries == sorted(deliveries), f"{ws.label}: deliveries out of seq order in {sid}: {frames}"
        seen = [s for _, s in frames]
        assert len(set(seen)) == len(seen), f"{ws.label}: a seq both acked and delivered in {sid}: {frames}"
        for kind, seq in frames:
            rec = self.sent.get((sid, seq))
            assert rec is not None, f"{ws.label}: seq {seq} of {sid} was never acked to anyone ({kind})"
            if kind == "ack":
                assert rec.label == ws.label, f"{ws.label} got the ack of {rec.label}'s message {seq}"
        for f in ws.frames:
            if f.get("type") in ("message", "offline_message") and f["message"]["sessionId"] == sid:
                m, rec = f["message"], self.sent[(sid, f["message"]["seq"])]
                assert (m["id"], m["text"], m["from"]["id"]) == (rec.message_id, rec.text, rec.sender), (m, rec)
                assert not (m["from"]["id"] == me and rec.label == ws.label), f"{ws.label} got its own message {m}"
                assert not (f["type"] == "offline_message" and m["from"]["id"] == me), f"{ws.label}: own replayed {m}"
        if not seen:
            return []
        live = [f["message"]["seq"] for f in ws.frames
                if f.get("type") == "message" and f["message"]["sessionId"] == sid]
        first_live = live[0] if live else float("inf")
        for hole in sorted(set(range(min(seen), max(seen) + 1)) - set(seen)):
            rec = self.sent[(sid, hole)]
            assert rec.sender == me and hole < first_live, (
                f"{ws.label}: gap at seq {hole} of {sid} (sent by {rec.label}); view {frames}")
        if conn.flapping and deliveries:
            # the first delivery lies above the cursor, and everything between is the user's own (never replayed)
            cursor, first = conn.cursor[sid], deliveries[0]
            skipped = [s for s in range(cursor + 1, first) if self.sent[(sid, s)].sender != me]
            assert first > cursor and not skipped, (
                f"{ws.label}: first delivery {first} with cursor {cursor}: skipped {skipped}: {frames}")
        return seen


def replay_of(ws: Client) -> tuple[list[int], dict]:
    done = next(i for i, f in enumerate(ws.frames) if f.get("type") == "offline_messages_complete")
    return [f["message"]["seq"] for f in ws.frames[:done] if f.get("type") == "offline_message"], ws.frames[done]


# ------------------------------------------------------------------ the scenario
async def run_round(title: str, placement: Placement, load: Load, base: int, round_no: int) -> None:
    """Run the scenario with seed base + round_no; a failure names the seed and how to repeat it."""
    seed = base + round_no
    print(f"{title}: seed {seed} (repeat with CHAT_RANDOM_SEED={base}, round {round_no})")
    try:
        await scenario(placement, load, seed)
    except AssertionError as exc:
        raise AssertionError(f"[seed {seed}; CHAT_RANDOM_SEED={base} round {round_no}] {exc}") from None


async def scenario(placement: Placement, load: Load, seed: int) -> None:
    run = Run(placement, load, seed)
    rng = run.rng("plan")
    agent = await new_agent_user(placement.nodes[0], "Rand Agent")
    customers = [await new_customer(placement.pick(rng), f"Rand C{k}") for k in range(2)]
    sids = [c.session_id for c in customers]
    for c in customers:
        body_of(await session_action(placement.pick(rng), agent.token, c.session_id, "claim"), 200)

    agent_conns = [await run.connect(node, agent, f"agent-{i}") for i, node in enumerate(placement.agent_nodes)]
    stable = [await run.connect(node, c, f"{c.name}-stable") for c, node in zip(customers, placement.stable_nodes)]
    run.conns += agent_conns + stable

    senders = [run.sender(conn.ws, agent, sids, rng.randint(*bounds))
               for conn, bounds in zip(agent_conns, load.agent_sends)]
    for conn in stable:
        senders.append(run.sender(conn.ws, conn.user, [conn.user.session_id], rng.randint(*load.customer_sends)))

    async def all_senders() -> None:
        await asyncio.gather(*senders)
        run.senders_done.set()

    await asyncio.gather(all_senders(), *(run.flapper(c) for c in customers))
    total = len(run.sent)
    print(f"seed {seed}: {total} messages, {run.reconnects} reconnects")
    assert total >= load.min_total and run.reconnects >= 2 * load.min_reconnects

    for conn in agent_conns + stable:  # connected throughout: catches up with every other connection's message
        mine = sids if conn.user is agent else [conn.user.session_id]
        want = sum(1 for (x, _), r in run.sent.items() if x in mine and r.label != conn.ws.label)
        await conn.ws.wait_n(lambda f: f.get("type") == "message", want, timeout=config.FRAME_WAIT * 2,
                             desc="every message of the other connections")
    await asyncio.sleep(config.QUIET)

    for conn in run.conns:
        for sid in (sids if conn.user is agent else [conn.user.session_id]):
            seen = run.check_view(conn, sid)
            if not conn.flapping:
                # a set: an own ack may overtake the delivery of an earlier seq (only deliveries are ordered)
                assert sorted(seen) == run.seqs_of(sid), f"{conn.ws.label} (connected throughout) missed some of {sid}"
        offline, done = replay_of(conn.ws)
        assert done["count"] == len(offline) and done["truncated"] is False, done
    replayed = [len(replay_of(c.ws)[0]) for c in run.conns if c.flapping]
    print(f"seed {seed}: reconnect replays {replayed}")
    assert sum(replayed) > 0, "no reconnect replayed anything: the scenario did not exercise replay"

    # every acked message reached every participant; a final reconnect replays exactly what lies above the cursor
    for c in customers:
        sid = c.session_id
        node = placement.pick(rng)
        final = await connect(node, c, placement.label(f"{c.name}-final", node))
        offline, _ = replay_of(final)
        cursor = run.cursor.get(sid, 0)
        expect = [s for s in run.seqs_of(sid) if s > cursor and run.sent[(sid, s)].sender != c.id]
        assert offline == expect, f"{c.name}: final replay {offline} on {node.node_id}, expected {expect} (cursor {cursor})"
        seen_by_customer = set(offline)
        for conn in run.conns:
            if conn.user is c:
                seen_by_customer |= {s for _, s in view(conn.ws, sid)}
        never = set(run.seqs_of(sid)) - seen_by_customer
        assert not never, f"{c.name}: acked messages {sorted(never)} neither delivered nor replayed"
        want = [(s, run.sent[(sid, s)].message_id, run.sent[(sid, s)].text) for s in run.seqs_of(sid)]
        for hist_node in placement.nodes:
            stored = (await history(hist_node, agent.token, sid, limit=200))["messages"]
            assert [(m["seq"], m["id"], m["text"]) for m in stored] == want, \
                f"history of {sid} on {hist_node.node_id} differs from the acked messages"
        assert run.seqs_of(sid) == list(range(1, len(run.seqs_of(sid)) + 1)), f"acked seqs of {sid} have gaps"
