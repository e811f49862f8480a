"""Chat messages (PROTOCOL.md §4 `message`/`ack`, MESSAGE, §5.1-5.2, §2 history route):
ack fields, seq numbering, idempotent resend, validation and permission errors,
fan-out to every connection of both participants, and history paging."""

from __future__ import annotations

import time

from harness.chat import (MANUAL, assert_contiguous, assert_message, connect, history, msgs, new_agent_user,
                          new_customer, refused, send, session_action, view)
from harness.http import body_of, call, epoch, error_of
from harness.ws import fid, typed

ACK_FIELDS = {"type", "ref", "messageId", "sessionId", "seq", "ts"}
SMALL_TEXT = {**MANUAL, "CHAT__LIMITS__MAX_TEXT_CHARS": "100"}


async def pair(node, agent_name: str | None = None, customer_name: str | None = None):
    """An agent and a customer whose session the agent claimed, each with one connection."""
    agent = await new_agent_user(node, agent_name)
    customer = await new_customer(node, customer_name)
    body_of(await session_action(node, agent.token, customer.session_id, "claim"), 200)
    return agent, customer, await connect(node, agent, "agent"), await connect(node, customer, "customer")


def delivered_to(ws, seq: int, sid: str):
    return lambda f: f.get("type") == "message" and f["message"]["sessionId"] == sid and f["message"]["seq"] == seq


async def test_ack_fields_and_seq_numbering(pool):
    node = pool(MANUAL)
    agent, customer, aws, cws = await pair(node, "Acking Agent", "Acking Customer")
    sid = customer.session_id
    before = time.time()
    acks = []
    for i, (ws, who) in enumerate([(cws, customer), (cws, customer), (aws, agent), (cws, customer), (aws, agent)]):
        msg_id = fid(f"m{i}")
        ack = await send(ws, sid, f"text {i}", msg_id)
        assert set(ack) == ACK_FIELDS, f"ack fields: {ack}"
        assert ack["ref"] == msg_id and ack["sessionId"] == sid, ack
        assert isinstance(ack["messageId"], str) and ack["messageId"], ack
        assert before - 5 <= epoch(ack["ts"], "ack ts") <= time.time() + 5, ack
        acks.append((ack, who, msg_id, f"text {i}"))
    assert [a["seq"] for a, *_ in acks] == [1, 2, 3, 4, 5], "seq starts at 1 and rises by exactly 1"
    assert len({a["messageId"] for a, *_ in acks}) == 5

    # the other side got each as a MESSAGE carrying the same id, seq, ts and the sender's identity
    for ack, who, msg_id, text in acks:
        other = aws if who is customer else cws
        got = (await other.wait(delivered_to(other, ack["seq"], sid)))["message"]
        assert_message(got, sid, who)
        assert (got["id"], got["seq"], got["ts"], got["text"], got["clientMsgId"]) == \
            (ack["messageId"], ack["seq"], ack["ts"], text, msg_id), (got, ack)
    assert not [f for f in cws.of("message") if f["message"]["from"]["id"] == customer.id], "own messages come as ack"
    stored = (await history(node, agent.token, sid))["messages"]
    assert [(m["id"], m["seq"]) for m in stored] == [(a["messageId"], a["seq"]) for a, *_ in acks], stored


async def test_resend_with_the_same_id_is_idempotent(pool):
    node = pool(MANUAL)
    agent, customer, aws, cws = await pair(node)
    sid = customer.session_id
    first = await send(cws, sid, "once", "dup-1")
    await aws.wait(delivered_to(aws, first["seq"], sid))
    mark = aws.mark()
    again = await send(cws, sid, "once", "dup-1")
    assert (again["messageId"], again["seq"], again["ts"]) == (first["messageId"], first["seq"], first["ts"]), \
        (first, again)
    # even with another text and from another connection of the same user
    other_conn = await connect(node, customer, "customer-2")
    third = await send(other_conn, sid, "changed text", "dup-1")
    assert (third["messageId"], third["seq"]) == (first["messageId"], first["seq"]), third
    await aws.quiet(typed("message"), after=mark, desc="a second delivery of a resent message")
    stored = (await history(node, customer.token, sid))["messages"]
    assert [(m["seq"], m["text"]) for m in stored] == [(1, "once")], stored

    # the same id from the other participant is another message (idempotent per sender)
    theirs = await send(aws, sid, "agent reuses the id", "dup-1")
    assert theirs["seq"] == 2 and theirs["messageId"] != first["messageId"], theirs
    nxt = await send(cws, sid, "next", "dup-2")
    assert nxt["seq"] == 3, nxt


async def test_message_without_id_is_invalid_request(pool):
    node = pool(MANUAL)
    agent, customer, aws, cws = await pair(node)
    sid = customer.session_id
    mark = cws.mark()
    await cws.send({"type": "message", "sessionId": sid, "text": "no id"})
    err = await cws.wait(typed("error"), after=mark)
    assert err["code"] == "INVALID_REQUEST" and "ref" not in err, err
    await refused(cws, {"type": "message", "sessionId": sid}, "INVALID_REQUEST")  # no text
    await refused(cws, {"type": "message", "text": "no session"}, "INVALID_REQUEST")
    await aws.quiet(typed("message"), desc="message from an invalid frame")
    assert (await history(node, agent.token, sid))["messages"] == []
    assert (await send(cws, sid, "fine"))["seq"] == 1


async def test_text_over_max_text_chars_is_message_too_big(pool):
    node = pool(SMALL_TEXT)
    agent, customer, aws, cws = await pair(node)
    sid = customer.session_id
    await refused(cws, {"type": "message", "sessionId": sid, "text": "x" * 101}, "MESSAGE_TOO_BIG")
    await refused(aws, {"type": "message", "sessionId": sid, "text": "y" * 500}, "MESSAGE_TOO_BIG")
    await cws.assert_alive()
    assert (await send(cws, sid, "x" * 100))["seq"] == 1, "exactly max_text_chars is allowed"
    # characters, not bytes: 100 two-byte characters fit
    assert (await send(aws, sid, "é" * 100))["seq"] == 2
    assert [len(m["text"]) for m in (await history(node, agent.token, sid))["messages"]] == [100, 100]


async def test_messages_to_sessions_of_others_are_refused(pool):
    node = pool(MANUAL)
    agent, customer, aws, cws = await pair(node)
    stranger_customer = await new_customer(node)
    stranger_agent = await new_agent_user(node)
    queued = await new_customer(node)  # nobody claimed it
    scws = await connect(node, stranger_customer, "stranger-customer")
    saws = await connect(node, stranger_agent, "stranger-agent")
    sid = customer.session_id

    await refused(scws, {"type": "message", "sessionId": sid, "text": "not mine"}, "FORBIDDEN")
    await refused(saws, {"type": "message", "sessionId": sid, "text": "not assigned"}, "FORBIDDEN")
    await refused(aws, {"type": "message", "sessionId": queued.session_id, "text": "queued"}, "FORBIDDEN")
    await refused(aws, {"type": "message", "sessionId": "sess-unknown", "text": "?"}, "NOT_FOUND")
    await refused(cws, {"type": "message", "sessionId": "sess-unknown", "text": "?"}, "NOT_FOUND")
    await cws.quiet(typed("message"), desc="a refused message")
    assert (await history(node, agent.token, sid))["messages"] == []
    # strangers connected to the same node receive nothing of the session
    ack = await send(cws, sid, "private")
    await aws.wait(delivered_to(aws, ack["seq"], sid))
    await saws.quiet(typed("message"), desc="another session's message on a stranger agent")
    await scws.quiet(typed("message"), within=0.1, desc="another session's message on a stranger customer")


async def test_every_connection_of_both_participants_gets_each_message_once(pool):
    node = pool(MANUAL)
    agent, customer, a1, c1 = await pair(node, "Multi Agent", "Multi Customer")
    a2, c2 = await connect(node, agent, "agent-2"), await connect(node, customer, "customer-2")
    sid = customer.session_id
    conns = [a1, a2, c1, c2]
    sent: dict[int, object] = {}
    for rnd in range(3):
        for ws in conns:
            ack = await send(ws, sid, f"{ws.label} round {rnd}")
            sent[ack["seq"]] = ws
    n = len(sent)
    assert sorted(sent) == list(range(1, n + 1))
    for ws in conns:
        own = sorted(s for s, w in sent.items() if w is ws)
        others = sorted(s for s, w in sent.items() if w is not ws)
        await ws.wait_n(typed("message"), len(others), desc="messages of the other connections")
    for ws in conns:
        await ws.quiet(typed("message"), within=0.2)
        got = [m["seq"] for m in msgs(ws, sid)]
        own = sorted(s for s, w in sent.items() if w is ws)
        assert got == sorted(s for s in sent if s not in own), f"{ws.label}: got {got}, own {own}\n{ws.dump()}"
        assert [a["seq"] for a in ws.of("ack")] == own
        assert assert_contiguous(ws, sid) == list(range(1, n + 1)), view(ws, sid)


async def test_history_paging(pool):
    node = pool(MANUAL)
    agent, customer, aws, cws = await pair(node)
    sid = customer.session_id
    total = 210
    for i in range(total):
        await send(cws if i % 3 else aws, sid, f"m{i + 1}")

    async def page(**params):
        body = await history(node, agent.token, sid, **params)
        seqs = [m["seq"] for m in body["messages"]]
        assert seqs == sorted(seqs), f"ascending by seq: {seqs}"
        return seqs, body["hasMore"]

    assert await page(limit=10) == (list(range(201, 211)), True)
    assert await page() == (list(range(161, 211)), True), "default limit 50, the latest"
    assert await page(afterSeq=5, limit=10) == (list(range(6, 16)), True)
    assert await page(afterSeq=200, limit=10) == (list(range(201, 211)), False)
    assert await page(afterSeq=205, limit=10) == (list(range(206, 211)), False)
    assert await page(afterSeq=210) == ([], False)
    assert await page(beforeSeq=20, limit=5) == (list(range(15, 20)), True)
    assert await page(beforeSeq=6, limit=10) == (list(range(1, 6)), False)
    assert await page(beforeSeq=11, limit=10) == (list(range(1, 11)), False)
    assert await page(afterSeq=5, beforeSeq=12, limit=3) == ([6, 7, 8], True)
    between, _ = await page(afterSeq=5, beforeSeq=9, limit=10)
    assert between == [6, 7, 8], "both bounds: strictly between"
    capped, more = await page(limit=1000)
    assert capped == list(range(11, 211)) and more is True, "limit is capped at 200"
    assert await page(afterSeq=0, limit=500) == (list(range(1, 201)), True)
    body = await history(node, customer.token, sid, limit=1)
    assert_message(body["messages"][0], sid)
    assert body["messages"][0]["text"] == "m210"

    stranger_agent, stranger_customer = await new_agent_user(node), await new_customer(node)
    error_of(await call(node, "GET", f"/api/v1/sessions/{sid}/messages", token=stranger_agent.token), 403, "FORBIDDEN")
    error_of(await call(node, "GET", f"/api/v1/sessions/{sid}/messages", token=stranger_customer.token), 403,
             "FORBIDDEN")
    error_of(await call(node, "GET", "/api/v1/sessions/sess-unknown/messages", token=agent.token), 404, "NOT_FOUND")
    assert (await call(node, "GET", f"/api/v1/sessions/{sid}/messages")).status_code == 401
