"""Slow consumers (PROTOCOL.md §3 close 4011, §5.6): a /ws/chat client that stops
reading (small SO_RCVBUF, reading paused) must be closed within a bounded time --
4011 SLOW_CONSUMER when its byte budget overflows while the socket still has room,
else cut at the TCP level -- while other participants keep receiving promptly, the
gateway's memory stays bounded, and the chat messages it missed are replayed when
it reconnects.

Closing is observed from the client's kernel (TCP_INFO state leaves ESTABLISHED:
a FIN or a RST arrived), because a client that is not reading cannot see a close
frame; once the flood is over the client resumes reading to learn how it ended.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from harness import config
from harness.chat import (MANUAL, connect, connect_slow, msgs, new_agent_user, new_customer, pause_reading,
                          resume_reading, send, session_action, tcp_state)
from harness.http import body_of, presence
from harness.tokens import uid
from harness.ws import Client, bounded_poll, push, typed

pytestmark = pytest.mark.slow

QUEUE_BYTES = 256 * 1024
# a long heartbeat timeout, so that the heartbeat (a paused client answers no ping) is not what closes it
SLOW_ENV = {**MANUAL, "CHAT__LIMITS__OUTBOUND_QUEUE_BYTES": str(QUEUE_BYTES), "CHAT__HEARTBEAT__TIMEOUT_SECS": "300"}
CLOSE_WITHIN = config.scaled(30.0)
RSS_LIMIT_MB = 300
PROMPT = config.scaled(3.0)  # the most a fast participant may wait for one message during the flood
TCP_ESTABLISHED = 1


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.path = Path(f"/proc/{pid}/status")
        self.max_kb = 0
        self._task: asyncio.Task | None = None

    def sample(self) -> None:
        try:
            for line in self.path.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.max_kb = max(self.max_kb, int(line.split()[1]))
        except OSError:
            pass

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.2)

    def __enter__(self) -> "RssSampler":
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc) -> None:
        self.sample()
        if self._task:
            self._task.cancel()

    @property
    def max_mb(self) -> float:
        return self.max_kb / 1024


async def closed_at(ws: Client, started: float, within: float) -> tuple[float, str]:
    """Seconds from ``started`` until the client sees that the server ended the connection.

    The client does not read, so it learns of the end from its kernel: TCP_INFO leaves ESTABLISHED when a FIN
    or a RST arrives.  A server that just drops its socket (TCP_USER_TIMEOUT) sends neither; the client then
    learns of it on its next write, so it keeps writing a frame that has no answer (``hello`` without id)
    about once a second, as a client that stopped reading may well do.
    """
    deadline = started + within
    next_write = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        state = tcp_state(ws)
        if ws.closed.is_set() or state is None or state != TCP_ESTABLISHED:
            return time.monotonic() - started, f"tcp state {state}"
        if time.monotonic() >= next_write:
            next_write += 1.0
            try:
                await asyncio.wait_for(ws.send({"type": "hello", "protocolVersion": 1}), 0.5)
            except Exception as exc:  # the write failed: the connection is gone
                return time.monotonic() - started, f"write failed: {exc!r}"
        await asyncio.sleep(0.1)
    raise AssertionError(f"{ws.label}: a client that stopped reading was not closed within {within:.0f}s "
                         f"(client TCP state {tcp_state(ws)}; frames recorded before pausing: {len(ws.frames)})")


async def how_it_ended(ws: Client) -> tuple[int | None, str | None]:
    resume_reading(ws)
    try:
        await asyncio.wait_for(ws.closed.wait(), config.scaled(15.0))
    except asyncio.TimeoutError:
        raise AssertionError(f"{ws.label}: the server ended the TCP connection but the client never saw the end "
                             f"after resuming\n{ws.dump(3)}") from None
    return ws.close_code, ws.close_reason


def assert_slow_close(code, reason) -> None:
    assert (code, reason) == (4011, "SLOW_CONSUMER") or code == 1006, (
        f"expected close 4011 SLOW_CONSUMER or a cut connection (1006), got {code} {reason!r}")


async def chat_setup(node, room: str | None):
    """Agent A (claimed C's session) and customer C with a fast connection and a slow one (subscribed to room)."""
    agent, customer = await new_agent_user(node, "Flood Agent"), await new_customer(node, "Slow Customer")
    sid = customer.session_id
    body_of(await session_action(node, agent.token, sid, "claim"), 200)
    aws = await connect(node, agent, "agent")
    fast = await connect(node, customer, "customer-fast")
    # the same customer, with a room grant for the slow connection
    slow_token = node.tokens.mint("customer", customer.id, customer.name, channel="web", sid=sid,
                                  rooms=[room] if room else None)
    slow = await connect_slow(node, slow_token, rcvbuf=4096, label="customer-slow")
    await slow.wait(typed("offline_messages_complete"))
    if room:
        sub = await slow.request({"type": "subscribe", "room": room})
        assert sub["type"] == "subscribed", sub
    # a few messages before the flood, delivered: the cursor sits at 3
    for i in range(3):
        await send(aws, sid, f"before {i}")
    await fast.wait_n(typed("message"), 3)
    await slow.wait_n(typed("message"), 3)
    assert (await fast.request({"type": "delivered", "sessionId": sid, "upToSeq": 3}))["type"] == "ok"
    return agent, customer, aws, fast, slow


async def chat_to_fast(aws: Client, fast: Client, sid: str, n: int, text_len: int, latencies: list[float],
                       pause: float = 0.02) -> list[int]:
    """The agent sends n messages; each must reach the customer's fast connection within PROMPT."""
    seqs = []
    for i in range(n):
        t0 = time.monotonic()
        ack = await send(aws, sid, f"flood {i} " + "c" * text_len, timeout=PROMPT * 2)
        await fast.wait(lambda f: f.get("type") == "message" and f["message"]["seq"] == ack["seq"], PROMPT * 2,
                        desc=f"message {ack['seq']} on the fast connection")
        latencies.append(time.monotonic() - t0)
        seqs.append(ack["seq"])
        await asyncio.sleep(pause)
    return seqs


async def check_replay(node, customer, sid: str, expect: list[int]) -> None:
    back = await connect(node, customer, "customer-back")
    done = next(f for f in back.frames if f.get("type") == "offline_messages_complete")
    offline = [f["message"]["seq"] for f in back.frames if f.get("type") == "offline_message"]
    assert offline == expect, f"missed messages replayed above the cursor: got {offline[:5]}..{offline[-5:]} " \
                              f"({len(offline)}), expected {expect[:3]}..{expect[-3:]} ({len(expect)})"
    assert done["count"] == len(expect) and done["truncated"] is False, done


@pytest.mark.deadline(120)
async def test_slow_consumer_flooded_with_room_notices(start_node, tokens):
    node = start_node(SLOW_ENV)
    room = uid("flood")
    agent, customer, aws, fast, slow = await chat_setup(node, room)
    sid = customer.session_id
    listener = await push(node, tokens.mint("device", rooms=[room]), room, label="room-listener")
    pause_reading(slow)

    notices, size = 2000, 8 * 1024
    published: list[int] = []
    latencies: list[float] = []
    started = time.monotonic()

    async def publisher(worker: int, client: httpx.AsyncClient) -> None:
        for i in range(worker, notices, 4):
            resp = await client.post(f"/api/v1/rooms/{room}/publish", json={"data": {"i": i, "pad": "n" * size}})
            assert resp.status_code == 202, resp.text
            published.append(resp.json()["seq"])

    async def flood() -> None:
        async with httpx.AsyncClient(base_url=node.base_url, trust_env=False, timeout=config.HTTP_TIMEOUT,
                                     headers={"Authorization": f"Bearer {node.service_token}"}) as client:
            await asyncio.gather(*(publisher(w, client) for w in range(4)))

    with RssSampler(node.proc.pid) as rss:
        flood_task = asyncio.create_task(flood())
        chat_task = asyncio.create_task(chat_to_fast(aws, fast, sid, 60, 1000, latencies, pause=0.05))
        took, how = await closed_at(slow, started, CLOSE_WITHIN)
        flood_seqs = await chat_task
        await flood_task
        flood_done = time.monotonic()
        got = await listener.wait_n(typed("notice", room=room), notices, timeout=config.scaled(20.0),
                                    desc="every notice on the listener")
        lag = time.monotonic() - flood_done
    code, reason = await how_it_ended(slow)
    print(f"slow consumer closed ({code} {reason!r}) after {took:.1f}s ({how}); "
          f"chat latency max {max(latencies):.2f}s; "
          f"listener lag {lag:.2f}s; gateway RSS max {rss.max_mb:.0f} MB")

    assert sorted(n["seq"] for n in got) == sorted(published), "the listener got every notice"
    assert lag < config.scaled(10.0), f"the listener lagged {lag:.1f}s behind the flood"
    assert max(latencies) < PROMPT, f"a fast participant waited {max(latencies):.2f}s for a message"
    assert rss.max_mb < RSS_LIMIT_MB, f"gateway RSS reached {rss.max_mb:.0f} MB"
    assert_slow_close(code, reason)

    # the slow connection is gone from the room; the others still work
    async def gone():
        body = body_of(await presence(node, room), 200)
        return customer.id not in [m["userId"] for m in body["members"]]
    await bounded_poll(gone, timeout=config.scaled(10.0), desc="the slow connection left the room")
    await fast.assert_alive()
    assert listener.is_open, listener.dump(3)
    # what the slow connection missed is replayed (the cursor is at 3)
    await check_replay(node, customer, sid, flood_seqs)


@pytest.mark.deadline(120)
async def test_slow_consumer_flooded_with_chat_messages(start_node):
    node = start_node(SLOW_ENV)
    agent, customer, aws, fast, slow = await chat_setup(node, None)
    sid = customer.session_id
    pause_reading(slow)
    started = time.monotonic()
    total, window = 600, 50
    seqs: list[int] = []
    latencies: list[float] = []

    async def flood() -> None:
        # pipelined: a window of messages, then their acks; each must reach the fast connection promptly
        for start in range(0, total, window):
            t0 = time.monotonic()
            ids = [uid("fl") for _ in range(min(window, total - start))]
            mark = aws.mark()
            for k, msg_id in enumerate(ids):
                await aws.send({"type": "message", "id": msg_id, "sessionId": sid,
                                "text": f"flood {start + k} " + "m" * 3900})
            acks = await aws.wait_n(lambda f: f.get("type") == "ack" and f.get("ref") in ids, len(ids),
                                    timeout=PROMPT * 3, after=mark, desc="acks of the window")
            top = max(a["seq"] for a in acks)
            await fast.wait(lambda f: f.get("type") == "message" and f["message"]["seq"] == top, PROMPT * 3,
                            desc=f"message {top} on the fast connection")
            latencies.append(time.monotonic() - t0)
            seqs.extend(sorted(a["seq"] for a in acks))

    with RssSampler(node.proc.pid) as rss:
        flood_task = asyncio.create_task(flood())
        took, how = await closed_at(slow, started, CLOSE_WITHIN)
        await flood_task
    code, reason = await how_it_ended(slow)
    print(f"slow consumer closed ({code} {reason!r}) after {took:.1f}s ({how}); "
          f"window latency max {max(latencies):.2f}s; "
          f"gateway RSS max {rss.max_mb:.0f} MB")
    assert seqs == list(range(4, total + 4)), "every message acked in seq order"
    got = [m["seq"] for m in msgs(fast, sid)]
    assert got == list(range(1, total + 4)), "the fast connection got every message once, in order"
    assert max(latencies) < PROMPT * 2, f"a window of {window} took {max(latencies):.2f}s to reach the fast connection"
    assert rss.max_mb < RSS_LIMIT_MB, f"gateway RSS reached {rss.max_mb:.0f} MB"
    assert_slow_close(code, reason)
    await fast.assert_alive()
    await check_replay(node, customer, sid, seqs)
