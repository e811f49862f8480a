"""Support chat across a cluster of three nodes over one Redis (PROTOCOL.md §2, §4,
§5.2-5.4, §6 "Cluster timing"): auto-assignment to an agent connected on another
node, session events and messages crossing nodes, the history route answered by
any node, exactly-once delivery to every connection whichever node it is on, and
the randomized delivery check with participants spread over the nodes.

The randomized test prints its seed; CHAT_RANDOM_SEED repeats a run.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field

import pytest

from harness import config
from harness.chat import (User, assert_contiguous, assert_message, assert_session, connect, history, msgs,
                          new_agent_user, new_customer, send, session_action, sessions, view, wait_session_event)
from harness.cluster import clusters
from harness.http import body_of
from harness.ws import Client, typed

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(tmp_path, track):
    """cluster(n=3, env=None, *, aof=False, prefix=None) -> a started Cluster (see harness.cluster)."""
    yield from clusters(tmp_path, track)


MANUAL = {"CHAT__ASSIGNMENT__MODE": "manual"}
# "a message reaches the other nodes within 1 s" (§6), with room for a loaded 2-core machine
CROSS_NODE = config.scaled(1.0) + 0.5


async def timed_wait(ws: Client, pred, *, after: int, desc: str) -> tuple[dict, float]:
    start = time.monotonic()
    frame = await ws.wait(pred, after=after, desc=desc)
    return frame, time.monotonic() - start


# ------------------------------------------------------------------ 1. assignment and chat across nodes
@pytest.mark.deadline(45)
async def test_auto_assignment_and_chat_across_three_nodes(cluster):
    n1, n2, n3 = cluster(3, prefix=f"t{os.getpid()}")
    agent = await new_agent_user(n1, "Remote Agent")
    a = await connect(n3, agent, "agent@node3")  # the agent's only connection is on node 3

    # (a) a session created through node 2 is assigned at once to the agent connected on node 3
    mark = a.mark()
    ann = await new_customer(n2, "Ann Cross")
    got = await wait_session_event(a, "session.assigned", ann.session_id, after=mark)
    assert_session(got["session"], session_id=ann.session_id, status="assigned", agent_id=agent.id, customer=ann)
    mine = await sessions(n1, agent.token, status="assigned", mine="true")
    assert ann.session_id in [s["id"] for s in mine], f"node 1 does not list the assignment made for node 3: {mine}"

    c = await connect(n1, ann, "ann@node1")
    sid = ann.session_id
    mark_a, mark_c = a.mark(), c.mark()
    ack1 = await send(c, sid, "hello from node 1")
    assert ack1["seq"] == 1, ack1
    frame, took = await timed_wait(a, typed("message"), after=mark_a, desc="the customer's message on node 3")
    assert_message(frame["message"], sid, ann)
    assert (frame["message"]["seq"], frame["message"]["id"], frame["message"]["text"]) == \
        (1, ack1["messageId"], "hello from node 1"), frame
    assert took <= CROSS_NODE, f"node 1 -> node 3 took {took:.2f}s (contract: within 1 s)"
    ack2 = await send(a, sid, "hello from node 3")
    assert ack2["seq"] == 2, ack2
    frame, took = await timed_wait(c, typed("message"), after=mark_c, desc="the agent's reply on node 1")
    assert_message(frame["message"], sid, agent)
    assert (frame["message"]["seq"], frame["message"]["id"]) == (2, ack2["messageId"]), frame
    assert took <= CROSS_NODE, f"node 3 -> node 1 took {took:.2f}s (contract: within 1 s)"
    await c.quiet(typed("message"), after=c.mark(), desc="a second copy on the customer")
    assert len(msgs(a, sid)) == 1 and len(msgs(c, sid)) == 1, (a.dump(), c.dump())

    # the history route, asked of every node, by either participant, gives the same two messages
    want = [(1, ack1["messageId"], "hello from node 1"), (2, ack2["messageId"], "hello from node 3")]
    for node in (n1, n2, n3):
        for who in (ann, agent):
            body = await history(node, who.token, sid)
            got_hist = [(m["seq"], m["id"], m["text"]) for m in body["messages"]]
            assert got_hist == want, f"history of {sid} on {node.node_id} as {who.role}: {body}"

    # (b) session.assigned reaches both the customer (node 1) and the agent (node 3) when the agent
    # becomes available after the session was queued through node 2
    assert (await a.request({"type": "status", "status": "away"}))["type"] == "ok"
    bob = await new_customer(n2, "Bob Cross")
    cb = await connect(n1, bob, "bob@node1")
    mark_a, mark_b = a.mark(), cb.mark()
    await a.quiet(lambda f: f.get("type") == "session.assigned", within=config.QUIET,
                  desc="an assignment while the agent is away")
    assert (await a.request({"type": "status", "status": "available"}))["type"] == "ok"
    for ws in (a, cb):
        got = await wait_session_event(ws, "session.assigned", bob.session_id,
                                       after=mark_a if ws is a else mark_b)
        assert_session(got["session"], session_id=bob.session_id, status="assigned", agent_id=agent.id, customer=bob)
    ack = await send(cb, bob.session_id, "bob via node 1")
    got = await a.wait(lambda f: f.get("type") == "message" and f["message"]["sessionId"] == bob.session_id,
                       desc="bob's message on node 3")
    assert got["message"]["id"] == ack["messageId"] and got["message"]["seq"] == 1, got


@pytest.mark.deadline(45)
async def test_every_connection_on_every_node_gets_each_message_once(cluster):
    n1, n2, n3 = cluster(3, MANUAL)
    agent = await new_agent_user(n3, "Two-Node Agent")
    cust = await new_customer(n1, "Two-Node Customer")
    sid = cust.session_id
    assert_session(body_of(await session_action(n2, agent.token, sid, "claim"), 200), status="assigned",
                   agent_id=agent.id)
    conns = [await connect(n1, cust, "customer@node1"), await connect(n2, cust, "customer@node2"),
             await connect(n2, agent, "agent@node2"), await connect(n3, agent, "agent@node3")]
    who = {conns[0].label: cust, conns[1].label: cust, conns[2].label: agent, conns[3].label: agent}
    acks: dict[str, list[dict]] = {ws.label: [] for ws in conns}
    per_conn = 8

    async def sender(ws: Client, seed: int) -> None:
        rng = random.Random(seed)
        for i in range(per_conn):
            await asyncio.sleep(rng.uniform(0, 0.04))
            acks[ws.label].append(await send(ws, sid, f"{ws.label} #{i}"))

    await asyncio.gather(*(sender(ws, k) for k, ws in enumerate(conns)))
    total = per_conn * len(conns)
    by_seq = {a["seq"]: (label, a) for label, lst in acks.items() for a in lst}
    assert sorted(by_seq) == list(range(1, total + 1)), f"acked seqs are not 1..{total}: {sorted(by_seq)}"

    for ws in conns:
        await ws.wait_n(lambda f: f.get("type") == "message", total - per_conn, timeout=config.FRAME_WAIT * 2,
                        desc="every message of the other three connections")
    await asyncio.sleep(config.QUIET)
    for ws in conns:
        seqs = assert_contiguous(ws, sid)
        assert seqs == list(range(1, total + 1)), f"{ws.label} saw {seqs}"
        assert sorted(s for k, s in view(ws, sid) if k == "ack") == sorted(a["seq"] for a in acks[ws.label])
        for m in msgs(ws, sid):
            label, ack = by_seq[m["seq"]]
            assert label != ws.label, f"{ws.label} got its own message as a delivery: {m}"
            assert m["id"] == ack["messageId"], (m, ack)
            assert_message(m, sid, who[label])
        assert not ws.of("offline_message"), f"{ws.label}: replay although it connected before any message"
    for node in (n1, n2, n3):
        stored = (await history(node, cust.token, sid, limit=200))["messages"]
        assert [m["seq"] for m in stored] == list(range(1, total + 1)), f"history on {node.node_id}: {stored[:3]}.."


# ------------------------------------------------------------------ 3. randomized, spread over nodes
BASE_SEED = int(os.environ.get("CHAT_RANDOM_SEED") or random.SystemRandom().randrange(1, 2**31))
ROUNDS = int(os.environ.get("CHAT_CLUSTER_RANDOM_ROUNDS", "3"))
MIN_RECONNECTS = 8  # per customer


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
    def __init__(self, nodes, seed: int) -> None:
        self.nodes, self.seed = list(nodes), seed
        self.sent: dict[tuple[str, int], Sent] = {}
        self.conns: list[Conn] = []
        self.cursor: dict[str, int] = {}
        self.senders_done = asyncio.Event()
        self.reconnects = 0

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}:{name}")

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

    async def flapper(self, customer: User, quota: int) -> None:
        rng = self.rng(f"flap-{customer.id}")
        sid = customer.session_id
        sent = n = 0
        while not (self.senders_done.is_set() and n >= MIN_RECONNECTS):
            node = rng.choice(self.nodes)  # every reconnect goes to a random node
            label = f"{customer.name}-flap-{n}@{node.node_id}"
            n += 1
            self.reconnects += 1
            conn = Conn(await connect(node, customer, label), customer, node.node_id,
                        {sid: self.cursor.get(sid, 0)}, flapping=True)
            self.conns.append(conn)
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(rng.uniform(0, 0.08))
                if sent < quota and rng.random() < 0.6:
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
            cursor, first = conn.cursor[sid], deliveries[0]
            skipped = [s for s in range(cursor + 1, first) if self.sent[(sid, s)].sender != me]
            assert first > cursor and not skipped, (
                f"{ws.label}: first delivery {first} with cursor {cursor}: skipped {skipped}: {frames}")
        return seen


def replay_of(ws: Client) -> tuple[list[int], dict]:
    done = next(i for i, f in enumerate(ws.frames) if f.get("type") == "offline_messages_complete")
    return [f["message"]["seq"] for f in ws.frames[:done] if f.get("type") == "offline_message"], ws.frames[done]


@pytest.mark.slow
@pytest.mark.deadline(90)
@pytest.mark.parametrize("round_no", range(ROUNDS))
async def test_randomized_delivery_spread_over_nodes(cluster, round_no):
    seed = BASE_SEED + round_no
    print(f"cluster randomized chat: seed {seed} (repeat with CHAT_RANDOM_SEED={BASE_SEED}, round {round_no})")
    nodes = cluster(3, MANUAL)
    try:
        await randomized(nodes, seed)
    except AssertionError as exc:
        raise AssertionError(f"[seed {seed}; CHAT_RANDOM_SEED={BASE_SEED} round {round_no}] {exc}") from None


async def randomized(nodes, seed: int) -> None:
    n1, n2, n3 = nodes
    run = Run(nodes, seed)
    rng = run.rng("plan")
    agent = await new_agent_user(n1, "Rand Agent")
    customers = [await new_customer(rng.choice(run.nodes), f"Rand C{k}") for k in range(2)]
    sids = [c.session_id for c in customers]
    for c in customers:
        body_of(await session_action(rng.choice(run.nodes), agent.token, c.session_id, "claim"), 200)

    agent_conns = [Conn(await connect(n1, agent, "agent-0@node1"), agent, "node1"),
                   Conn(await connect(n3, agent, "agent-1@node3"), agent, "node3")]
    stable = [Conn(await connect(node, c, f"{c.name}-stable@{node.node_id}"), c, node.node_id)
              for c, node in zip(customers, (n2, n1))]
    run.conns += agent_conns + stable

    senders = [run.sender(agent_conns[0].ws, agent, sids, rng.randint(28, 34)),
               run.sender(agent_conns[1].ws, agent, sids, rng.randint(20, 26))]
    for conn in stable:
        senders.append(run.sender(conn.ws, conn.user, [conn.user.session_id], rng.randint(12, 16)))

    async def all_senders() -> None:
        await asyncio.gather(*senders)
        run.senders_done.set()

    await asyncio.gather(all_senders(), *(run.flapper(c, 10) for c in customers))
    total = len(run.sent)
    print(f"seed {seed}: {total} messages, {run.reconnects} reconnects")
    assert total >= 80 and run.reconnects >= 2 * MIN_RECONNECTS

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
                assert sorted(seen) == run.seqs_of(sid), f"{conn.ws.label} (connected throughout) missed some of {sid}"
        offline, done = replay_of(conn.ws)
        assert done["count"] == len(offline) and done["truncated"] is False, done
    replayed = [len(replay_of(c.ws)[0]) for c in run.conns if c.flapping]
    print(f"seed {seed}: reconnect replays {replayed}")
    assert sum(replayed) > 0, "no reconnect replayed anything: the scenario did not exercise replay"

    for c in customers:
        sid = c.session_id
        node = rng.choice(run.nodes)
        final = await connect(node, c, f"{c.name}-final@{node.node_id}")
        offline, _ = replay_of(final)
        cursor = run.cursor.get(sid, 0)
        expect = [s for s in run.seqs_of(sid) if s > cursor and run.sent[(sid, s)].sender != c.id]
        assert offline == expect, f"{c.name}: final replay {offline} on {node.node_id}, expected {expect} (cursor {cursor})"
        seen_by_customer = set(offline)
        for conn in run.conns:
            if conn.user is c:
                seen_by_customer |= {s for _, s in view(conn.ws, sid)}
        stored = {}
        for hist_node in run.nodes:
            body = await history(hist_node, agent.token, sid, limit=200)
            got = [(m["seq"], m["id"], m["text"]) for m in body["messages"]]
            assert got == [(s, run.sent[(sid, s)].message_id, run.sent[(sid, s)].text) for s in run.seqs_of(sid)], \
                f"history of {sid} on {hist_node.node_id} differs from the acked messages"
            stored = {m["seq"] for m in body["messages"]}
        never = set(run.seqs_of(sid)) - seen_by_customer - stored
        assert not never, f"{c.name} never saw {sorted(never)} (live, replay or history)"
        missed_live = set(run.seqs_of(sid)) - seen_by_customer
        assert not missed_live, f"{c.name}: acked messages {sorted(missed_live)} neither delivered nor replayed"
        assert run.seqs_of(sid) == list(range(1, len(run.seqs_of(sid)) + 1)), f"acked seqs of {sid} have gaps"
