"""Randomized delivery check (PROTOCOL.md §5.2-5.4): one agent and two customers,
every participant on two connections, concurrent senders with random small delays,
while each customer's second connection disconnects and reconnects over and over
(sending `delivered` for what it saw before leaving, or not).

The seed is printed; set CHAT_RANDOM_SEED to repeat a run (each task draws from its
own generator, so the choices do not depend on how the tasks interleave).

Checked for every connection and session: its view (acks, `message` and
`offline_message` seqs) is ascending and contiguous from its first frame, with no
duplicate; the only holes allowed are the user's own messages sent from another
connection before this one was authenticated (own messages are never replayed);
a reconnect's first delivery is the first message above the delivery cursor not
sent by the user. At the end every acked message was seen by every participant,
a final reconnect replays exactly what lies above the cursor, and the history
route holds exactly the acked messages.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass, field

import pytest

from harness import config
from harness.chat import MANUAL, User, connect, history, new_agent_user, new_customer, send, session_action, view
from harness.http import body_of
from harness.ws import Client

BASE_SEED = int(os.environ.get("CHAT_RANDOM_SEED") or random.SystemRandom().randrange(1, 2**31))
ROUNDS = int(os.environ.get("CHAT_RANDOM_ROUNDS", "3"))
MIN_RECONNECTS = 10  # per customer


@dataclass
class Conn:
    ws: Client
    user: User
    cursor: dict[str, int] = field(default_factory=dict)  # delivery cursor per session when it authenticated
    flapping: bool = False


@dataclass
class Sent:
    message_id: str
    text: str
    sender: str
    label: str


class Run:
    def __init__(self, node, seed: int) -> None:
        self.node, self.seed = node, seed
        self.sent: dict[tuple[str, int], Sent] = {}
        self.conns: list[Conn] = []
        self.cursor: dict[str, int] = {}  # the customer's delivery cursor (only flappers move it)
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
            label = f"{customer.name}-flap-{n}"
            n += 1
            self.reconnects += 1
            conn = Conn(await connect(self.node, customer, label), customer, {sid: self.cursor.get(sid, 0)},
                        flapping=True)
            self.conns.append(conn)
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(rng.uniform(0, 0.08))
                if sent < quota and rng.random() < 0.6:
                    await self.send(conn.ws, customer, sid, f"{label} {rng.randrange(10**6)}")
                    sent += 1
            await asyncio.sleep(rng.uniform(0.0, 0.1))
            seen = [s for _, s in view(conn.ws, sid)]
            how = rng.random()
            if seen and how < 0.45:
                ok = await conn.ws.request({"type": "delivered", "sessionId": sid, "upToSeq": max(seen)})
                assert ok["type"] == "ok", ok
                self.cursor[sid] = max(self.cursor.get(sid, 0), max(seen))
            elif seen and how < 0.6:
                ok = await conn.ws.request({"type": "read", "sessionId": sid, "upToSeq": max(seen)})
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
        holes = sorted(set(range(min(seen), max(seen) + 1)) - set(seen))
        for hole in holes:
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
    offline = [f["message"]["seq"] for f in ws.frames[:done] if f.get("type") == "offline_message"]
    return offline, ws.frames[done]


@pytest.mark.deadline(75)
@pytest.mark.parametrize("round_no", range(ROUNDS))
async def test_randomized_concurrent_senders_and_reconnects(pool, round_no):
    seed = BASE_SEED + round_no
    print(f"randomized chat: seed {seed} (repeat with CHAT_RANDOM_SEED={BASE_SEED}, round {round_no})")
    try:
        await scenario(pool(MANUAL), seed)
    except AssertionError as exc:
        raise AssertionError(f"[seed {seed}; CHAT_RANDOM_SEED={BASE_SEED} round {round_no}] {exc}") from None


async def scenario(node, seed: int) -> None:
    run = Run(node, seed)
    rng = run.rng("plan")
    agent = await new_agent_user(node, "Rand Agent")
    customers = [await new_customer(node, f"Rand C{k}") for k in range(2)]
    sids = [c.session_id for c in customers]
    for c in customers:
        body_of(await session_action(node, agent.token, c.session_id, "claim"), 200)

    agent_conns = [Conn(await connect(node, agent, f"agent-{i}"), agent) for i in range(2)]
    stable = [Conn(await connect(node, c, f"{c.name}-stable"), c) for c in customers]
    run.conns += agent_conns + stable

    plan = {"agent-0": rng.randint(40, 50), "agent-1": rng.randint(30, 40)}
    senders = [run.sender(agent_conns[0].ws, agent, sids, plan["agent-0"]),
               run.sender(agent_conns[1].ws, agent, sids, plan["agent-1"])]
    for conn in stable:
        senders.append(run.sender(conn.ws, conn.user, [conn.user.session_id], rng.randint(20, 28)))

    async def all_senders() -> None:
        await asyncio.gather(*senders)
        run.senders_done.set()

    await asyncio.gather(all_senders(), *(run.flapper(c, 15) for c in customers))
    total = len(run.sent)
    print(f"seed {seed}: {total} messages, {run.reconnects} reconnects")
    assert total >= 120 and run.reconnects >= 2 * MIN_RECONNECTS

    # every connection still open catches up with everything of its sessions
    for conn in agent_conns + stable:
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
        final = await connect(node, c, f"{c.name}-final")
        offline, done = replay_of(final)
        cursor = run.cursor.get(sid, 0)
        expect = [s for s in run.seqs_of(sid) if s > cursor and run.sent[(sid, s)].sender != c.id]
        assert offline == expect, f"{c.name}: final replay {offline}, expected {expect} (cursor {cursor})"
        seen_by_customer = set(offline)
        for conn in run.conns:
            if conn.user is c:
                seen_by_customer |= {s for _, s in view(conn.ws, sid)}
        never = set(run.seqs_of(sid)) - seen_by_customer
        assert not never, f"{c.name} never saw {sorted(never)}"
        stored = (await history(node, agent.token, sid, limit=200))["messages"]
        assert [(m["seq"], m["id"], m["text"]) for m in stored] == \
            [(s, run.sent[(sid, s)].message_id, run.sent[(sid, s)].text) for s in run.seqs_of(sid)], \
            f"history of {sid} differs from the acked messages"
        assert run.seqs_of(sid) == list(range(1, len(run.seqs_of(sid)) + 1)), f"acked seqs of {sid} have gaps"
