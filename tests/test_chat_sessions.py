"""Support sessions (PROTOCOL.md §2 sessions routes, §4 session frames): the queue,
claiming over HTTP and by frame, auto assignment (least-loaded, capacity, away),
transfer, close, listing, and an agent switching among its sessions (history,
unread, read receipts, typing)."""

from __future__ import annotations

import asyncio
import time

from harness import config
from harness.chat import (FAST, MANUAL, assert_message, assert_session, assigned_to, connect, find_session, history,
                          msgs, new_agent_user, new_customer, refused, send, session_action, sessions,
                          wait_session_event)
from harness.http import body_of, call, epoch, error_of
from harness.ws import typed

AUTO_MAX_1 = {**FAST, "CHAT__ASSIGNMENT__MODE": "auto", "CHAT__ASSIGNMENT__MAX_SESSIONS_PER_AGENT": "1"}
AUTO = {**FAST, "CHAT__ASSIGNMENT__MODE": "auto"}


async def claimed(node, agent, customer) -> dict:
    s = body_of(await session_action(node, agent.token, customer.session_id, "claim"), 200)
    return assert_session(s, session_id=customer.session_id, status="assigned", agent_id=agent.id, customer=customer)


# ------------------------------------------------------------------ queue and listing
async def test_customer_token_opens_a_queued_session_seen_by_agents(pool):
    node = pool(MANUAL)
    agent, other = await new_agent_user(node), await new_agent_user(node)
    aws, ows = await connect(node, agent, "agent"), await connect(node, other, "other-agent")
    mark, omark = aws.mark(), ows.mark()
    before = time.time()
    first = await new_customer(node, "Queued One", channel="web")
    second = await new_customer(node, "Queued Two", channel="whatsapp")

    ev = await wait_session_event(aws, "session.queued", first.session_id, after=mark)
    assert_session(ev["session"], session_id=first.session_id, status="queued", agent_id=None, customer=first)
    await wait_session_event(aws, "session.queued", second.session_id, after=mark)
    for sid in (first.session_id, second.session_id):  # every connected agent
        await wait_session_event(ows, "session.queued", sid, after=omark)

    listed = await sessions(node, agent.token, status="queued")
    ids = [s["id"] for s in listed]
    assert first.session_id in ids and second.session_id in ids, listed
    assert ids.index(second.session_id) < ids.index(first.session_id), f"newest first: {ids}"
    for s in listed:
        assert_session(s, status="queued", agent_id=None)
    one = next(s for s in listed if s["id"] == first.session_id)
    assert one["customer"] == {"id": first.id, "name": "Queued One", "channel": "web"}, one
    assert one["lastMessage"] is None and one["unread"] == 0, one
    assert before - 5 <= epoch(one["createdAt"]) <= time.time() + 5, one
    two = next(s for s in listed if s["id"] == second.session_id)
    assert two["customer"]["channel"] == "whatsapp", two
    assert all(s["status"] == "assigned" for s in await sessions(node, agent.token, status="assigned"))


async def test_listing_sessions_is_for_agents_only(pool, tokens):
    node = pool(MANUAL)
    customer = await new_customer(node)
    error_of(await call(node, "GET", "/api/v1/sessions", token=customer.token), 403, "FORBIDDEN")
    error_of(await call(node, "GET", "/api/v1/sessions", token=tokens.mint("device")), 403, "FORBIDDEN")
    error_of(await call(node, "GET", "/api/v1/sessions", params={"mine": "true"},
                        token=tokens.mint("customer", channel="web")), 403, "FORBIDDEN")
    resp = await call(node, "GET", "/api/v1/sessions")
    assert resp.status_code == 401, resp.text


async def test_mine_and_status_filters(pool):
    node = pool(MANUAL)
    a, b = await new_agent_user(node, "Mine A"), await new_agent_user(node, "Mine B")
    c1, c2, c3 = await new_customer(node), await new_customer(node), await new_customer(node)
    await claimed(node, a, c1)
    await claimed(node, b, c2)
    await claimed(node, a, c3)
    body_of(await session_action(node, c3.token, c3.session_id, "close"), 200)

    mine = {s["id"]: s for s in await sessions(node, a.token, mine="true")}
    assert c1.session_id in mine and c3.session_id in mine and c2.session_id not in mine, list(mine)
    assert all(s["agentId"] == a.id for s in mine.values()), mine
    mine_assigned = [s["id"] for s in await sessions(node, a.token, mine="true", status="assigned")]
    assert mine_assigned == [c1.session_id], mine_assigned
    closed = [s["id"] for s in await sessions(node, a.token, status="closed")]
    assert c3.session_id in closed and c1.session_id not in closed, closed
    theirs = [s["id"] for s in await sessions(node, b.token, mine="true")]
    assert theirs == [c2.session_id], theirs


# ------------------------------------------------------------------ claim
async def test_claim_over_http(pool):
    node = pool(MANUAL)
    a, b = await new_agent_user(node), await new_agent_user(node)
    customer = await new_customer(node, "Claim Http")
    aws, cws = await connect(node, a, "agent-a"), await connect(node, customer, "customer")
    am, cm = aws.mark(), cws.mark()

    s = await claimed(node, a, customer)
    for ws, mark in ((aws, am), (cws, cm)):
        ev = await wait_session_event(ws, "session.assigned", customer.session_id, after=mark)
        assert_session(ev["session"], status="assigned", agent_id=a.id, customer=customer)
    assert s["agentId"] == a.id

    error_of(await session_action(node, b.token, customer.session_id, "claim"), 409, "ALREADY_ASSIGNED")
    error_of(await session_action(node, customer.token, customer.session_id, "claim"), 403, "FORBIDDEN")
    error_of(await session_action(node, a.token, "sess-does-not-exist", "claim"), 404, "NOT_FOUND")
    resp = await session_action(node, None, customer.session_id, "claim")
    assert resp.status_code == 401, resp.text
    still = await find_session(node, b.token, customer.session_id)
    assert_session(still, status="assigned", agent_id=a.id)


async def test_claim_by_frame(pool):
    node = pool(MANUAL)
    a, b = await new_agent_user(node), await new_agent_user(node)
    customer = await new_customer(node, "Claim Frame")
    aws, bws, cws = (await connect(node, a, "agent-a"), await connect(node, b, "agent-b"),
                     await connect(node, customer, "customer"))
    cm = cws.mark()

    ok = await aws.request({"type": "session.claim", "sessionId": customer.session_id})
    assert ok["type"] == "ok", ok
    assert_session(ok.get("session"), session_id=customer.session_id, status="assigned", agent_id=a.id)
    await wait_session_event(cws, "session.assigned", customer.session_id, after=cm)

    await refused(bws, {"type": "session.claim", "sessionId": customer.session_id}, "ALREADY_ASSIGNED")
    await refused(bws, {"type": "session.claim", "sessionId": "sess-unknown"}, "NOT_FOUND")
    await refused(cws, {"type": "session.claim", "sessionId": customer.session_id}, "FORBIDDEN")

    mark = bws.mark()
    await bws.send({"type": "session.claim", "sessionId": customer.session_id})  # no id
    err = await bws.wait(typed("error"), after=mark)
    assert err["code"] == "INVALID_REQUEST" and "ref" not in err, err
    await bws.assert_alive()


# ------------------------------------------------------------------ auto assignment
async def test_auto_assignment_picks_the_least_loaded_available_agent(start_node):
    node = start_node(AUTO)
    a, b = await new_agent_user(node, "Auto A"), await new_agent_user(node, "Auto B")
    aws = await connect(node, a, "agent-a")
    c1, c2 = await new_customer(node), await new_customer(node)
    await assigned_to(node, a.token, c1.session_id, [a.id])
    await assigned_to(node, a.token, c2.session_id, [a.id])

    bws = await connect(node, b, "agent-b")
    bm = bws.mark()
    c3 = await new_customer(node)
    await assigned_to(node, a.token, c3.session_id, [b.id])
    ev = await wait_session_event(bws, "session.assigned", c3.session_id, after=bm)
    assert_session(ev["session"], status="assigned", agent_id=b.id, customer=c3)
    c4 = await new_customer(node)
    await assigned_to(node, a.token, c4.session_id, [b.id])
    # 2 and 2 now: either agent; then the other one must get the next.
    c5 = await new_customer(node)
    got = (await assigned_to(node, a.token, c5.session_id))["agentId"]
    c6 = await new_customer(node)
    other = b.id if got == a.id else a.id
    await assigned_to(node, a.token, c6.session_id, [other])
    assert len(await sessions(node, a.token, mine="true", status="assigned")) == 3
    assert len(await sessions(node, b.token, mine="true", status="assigned")) == 3
    await aws.assert_alive()


async def test_auto_assignment_respects_max_sessions_per_agent(start_node):
    node = start_node(AUTO_MAX_1)
    a, b = await new_agent_user(node, "Cap A"), await new_agent_user(node, "Cap B")
    aws, bws = await connect(node, a, "agent-a"), await connect(node, b, "agent-b")
    c1, c2, c3 = await new_customer(node), await new_customer(node), await new_customer(node)
    s1 = await assigned_to(node, a.token, c1.session_id, [a.id, b.id])
    s2 = await assigned_to(node, a.token, c2.session_id, [a.id, b.id])
    assert {s1["agentId"], s2["agentId"]} == {a.id, b.id}, (s1, s2)

    await asyncio.sleep(config.QUIET)
    third = await find_session(node, a.token, c3.session_id)
    assert_session(third, status="queued", agent_id=None)
    assert c3.session_id in [s["id"] for s in await sessions(node, a.token, status="queued")]

    # c1's agent frees capacity: the queued session goes to it (and the waiting customer hears of it).
    c3ws = await connect(node, c3, "customer-3")
    freed = s1["agentId"]
    freed_ws = aws if freed == a.id else bws
    mark, cmark = freed_ws.mark(), c3ws.mark()
    body_of(await session_action(node, c1.token, c1.session_id, "close"), 200)
    ev = await wait_session_event(freed_ws, "session.assigned", c3.session_id, after=mark)
    assert_session(ev["session"], status="assigned", agent_id=freed, customer=c3)
    ev = await wait_session_event(c3ws, "session.assigned", c3.session_id, after=cmark)
    assert ev["session"]["agentId"] == freed, ev
    await assigned_to(node, a.token, c3.session_id, [freed])


async def test_an_away_agent_gets_nothing(start_node):
    node = start_node(AUTO)
    away, busy = await new_agent_user(node, "Away"), await new_agent_user(node, "Busy")
    away_ws = await connect(node, away, "away")
    ok = await away_ws.request({"type": "status", "status": "away"})
    assert ok["type"] == "ok", ok

    alone = await new_customer(node)  # only an away agent is connected: stays queued
    await asyncio.sleep(config.QUIET)
    assert_session(await find_session(node, away.token, alone.session_id), status="queued", agent_id=None)

    busy_ws = await connect(node, busy, "available")
    await assigned_to(node, busy.token, alone.session_id, [busy.id])  # assigned when an agent becomes available
    more = [await new_customer(node) for _ in range(3)]
    for c in more:
        await assigned_to(node, busy.token, c.session_id, [busy.id])
    assert not away_ws.of("session.assigned"), away_ws.dump()

    # back to available: new sessions reach it again (it has 0 against 4).
    mark = away_ws.mark()
    assert (await away_ws.request({"type": "status", "status": "available"}))["type"] == "ok"
    late = await new_customer(node)
    await wait_session_event(away_ws, "session.assigned", late.session_id, after=mark)
    await busy_ws.assert_alive()


async def test_a_disconnected_agent_is_not_available(start_node):
    node = start_node(AUTO)
    agent = await new_agent_user(node)
    ws = await connect(node, agent, "agent")
    await ws.close()
    await asyncio.sleep(0.3)
    customer = await new_customer(node)
    await asyncio.sleep(config.QUIET)
    assert_session(await find_session(node, agent.token, customer.session_id), status="queued", agent_id=None)
    again = await connect(node, agent, "agent-again")
    await wait_session_event(again, "session.assigned", customer.session_id)


async def test_an_agent_logging_out_puts_its_sessions_back_for_the_others(start_node):
    node = start_node(AUTO)
    leaving, staying = await new_agent_user(node, "Leaving"), await new_agent_user(node, "Staying")
    # log in for real: logout revokes a login's family
    login = body_of(await call(node, "POST", "/api/v1/public/login",
                               json={"username": leaving.username, "password": leaving.password}), 200)
    leaving_ws = await connect(node, login["token"], "leaving")
    customer = await new_customer(node)
    await assigned_to(node, staying.token, customer.session_id, [leaving.id])

    staying_ws = await connect(node, staying, "staying")
    mark = staying_ws.mark()
    assert (await call(node, "POST", "/api/v1/auth/logout", token=login["token"])).status_code == 204
    await leaving_ws.closed_with(4005, "TOKEN_REVOKED")
    # put back (session.queued to the agents), then assigned to the one still here
    await wait_session_event(staying_ws, "session.queued", customer.session_id, after=mark)
    ev = await wait_session_event(staying_ws, "session.assigned", customer.session_id, after=mark)
    assert_session(ev["session"], status="assigned", agent_id=staying.id, customer=customer)
    await assigned_to(node, staying.token, customer.session_id, [staying.id])


# ------------------------------------------------------------------ transfer
async def test_transfer_over_http_moves_live_messages_and_history(pool):
    node = pool(MANUAL)
    a, b = await new_agent_user(node, "From A"), await new_agent_user(node, "To B")
    customer = await new_customer(node, "Transferred")
    await claimed(node, a, customer)
    aws, bws, cws = (await connect(node, a, "agent-a"), await connect(node, b, "agent-b"),
                     await connect(node, customer, "customer"))
    sid = customer.session_id
    await send(cws, sid, "before 1")
    await send(aws, sid, "before 2")
    await aws.wait(lambda f: f.get("type") == "message" and f["message"]["seq"] == 1)
    assert not msgs(bws, sid), f"B holds nothing yet: {bws.dump()}"

    error_of(await session_action(node, b.token, sid, "transfer", toAgentId=b.id), 403, "FORBIDDEN")
    error_of(await session_action(node, customer.token, sid, "transfer", toAgentId=b.id), 403, "FORBIDDEN")
    error_of(await session_action(node, a.token, sid, "transfer", toAgentId="agent-nobody"), 404, "NOT_FOUND")
    error_of(await session_action(node, a.token, "sess-unknown", "transfer", toAgentId=b.id), 404, "NOT_FOUND")

    marks = {ws.label: ws.mark() for ws in (aws, bws, cws)}
    s = body_of(await session_action(node, a.token, sid, "transfer", toAgentId=b.id), 200)
    assert_session(s, session_id=sid, status="assigned", agent_id=b.id, customer=customer)
    for ws in (aws, bws, cws):
        ev = await wait_session_event(ws, "session.transferred", sid, after=marks[ws.label])
        assert ev.get("fromAgentId") == a.id, ev
        assert_session(ev["session"], status="assigned", agent_id=b.id)

    am, bm = aws.mark(), bws.mark()
    ack = await send(cws, sid, "after transfer")
    got = await bws.wait(lambda f: f.get("type") == "message" and f["message"]["seq"] == ack["seq"], after=bm)
    assert_message(got["message"], sid, customer)
    await aws.quiet(lambda f: f.get("type") == "message", after=am, desc="message to the previous agent")
    b_ack = await send(bws, sid, "new agent speaks")
    await cws.wait(lambda f: f.get("type") == "message" and f["message"]["seq"] == b_ack["seq"])
    await refused(aws, {"type": "message", "sessionId": sid, "text": "still mine?"}, "FORBIDDEN")

    full = await history(node, b.token, sid)
    assert [m["seq"] for m in full["messages"]] == [1, 2, 3, 4], full
    assert [m["text"] for m in full["messages"]] == ["before 1", "before 2", "after transfer", "new agent speaks"]
    switch = await bws.request({"type": "session.switch", "sessionId": sid})
    assert switch["type"] == "session.history" and [m["seq"] for m in switch["messages"]] == [1, 2, 3, 4], switch
    # an agent who held it before is still a participant of the history route
    assert [m["seq"] for m in (await history(node, a.token, sid))["messages"]] == [1, 2, 3, 4]


async def test_transfer_by_frame_and_its_errors(pool):
    node = pool(MANUAL)
    a, b, c = await new_agent_user(node), await new_agent_user(node), await new_agent_user(node)
    customer = await new_customer(node)
    sid = customer.session_id
    await claimed(node, a, customer)
    aws, bws, cws = (await connect(node, a, "agent-a"), await connect(node, b, "agent-b"),
                     await connect(node, customer, "customer"))
    await refused(aws, {"type": "session.transfer", "sessionId": sid, "toAgentId": "agent-nobody"}, "NOT_FOUND")
    await refused(bws, {"type": "session.transfer", "sessionId": sid, "toAgentId": c.id}, "FORBIDDEN")
    await refused(cws, {"type": "session.transfer", "sessionId": sid, "toAgentId": c.id}, "FORBIDDEN")

    bm, cm = bws.mark(), cws.mark()
    ok = await aws.request({"type": "session.transfer", "sessionId": sid, "toAgentId": b.id})
    assert ok["type"] == "ok", ok
    assert_session(ok.get("session"), session_id=sid, status="assigned", agent_id=b.id)
    for ws, mark in ((bws, bm), (cws, cm)):
        ev = await wait_session_event(ws, "session.transferred", sid, after=mark)
        assert ev["fromAgentId"] == a.id, ev
    await wait_session_event(aws, "session.transferred", sid)
    # the previous agent is no longer the assigned one
    await refused(aws, {"type": "session.transfer", "sessionId": sid, "toAgentId": c.id}, "FORBIDDEN")
    # a closed session cannot be transferred
    assert (await bws.request({"type": "session.close", "sessionId": sid}))["type"] == "ok"
    error_of(await session_action(node, b.token, sid, "transfer", toAgentId=c.id), 409, "SESSION_CLOSED")


# ------------------------------------------------------------------ close
async def test_close_by_customer_over_http(pool):
    node = pool(MANUAL)
    agent = await new_agent_user(node)
    customer = await new_customer(node, "Closer")
    sid = customer.session_id
    await claimed(node, agent, customer)
    aws, cws = await connect(node, agent, "agent"), await connect(node, customer, "customer")
    await send(cws, sid, "bye")
    am, cm = aws.mark(), cws.mark()

    first = body_of(await session_action(node, customer.token, sid, "close"), 200)
    assert_session(first, session_id=sid, status="closed", agent_id=agent.id, customer=customer)
    for ws, mark in ((aws, am), (cws, cm)):
        ev = await wait_session_event(ws, "session.closed", sid, after=mark)
        assert_session(ev["session"], status="closed")
    again = body_of(await session_action(node, customer.token, sid, "close"), 200)
    assert {k: again[k] for k in ("id", "status", "agentId", "customer", "createdAt")} == \
        {k: first[k] for k in ("id", "status", "agentId", "customer", "createdAt")}, (first, again)

    await refused(cws, {"type": "message", "sessionId": sid, "text": "hello?"}, "SESSION_CLOSED")
    await refused(aws, {"type": "message", "sessionId": sid, "text": "hello?"}, "SESSION_CLOSED")
    error_of(await session_action(node, agent.token, sid, "claim"), 409, "SESSION_CLOSED")
    assert [m["text"] for m in (await history(node, customer.token, sid))["messages"]] == ["bye"]


async def test_close_by_agent_by_frame_and_close_errors(pool):
    node = pool(MANUAL)
    agent, stranger = await new_agent_user(node), await new_agent_user(node)
    customer, other = await new_customer(node), await new_customer(node)
    sid = customer.session_id
    await claimed(node, agent, customer)
    aws, cws = await connect(node, agent, "agent"), await connect(node, customer, "customer")

    error_of(await session_action(node, stranger.token, sid, "close"), 403, "FORBIDDEN")
    error_of(await session_action(node, other.token, sid, "close"), 403, "FORBIDDEN")
    error_of(await session_action(node, agent.token, "sess-unknown", "close"), 404, "NOT_FOUND")

    cm = cws.mark()
    ok = await aws.request({"type": "session.close", "sessionId": sid})
    assert ok["type"] == "ok", ok
    assert_session(ok.get("session"), session_id=sid, status="closed", agent_id=agent.id)
    await wait_session_event(cws, "session.closed", sid, after=cm)
    await wait_session_event(aws, "session.closed", sid)
    twice = await aws.request({"type": "session.close", "sessionId": sid})
    assert twice["type"] == "ok" and twice["session"]["status"] == "closed", twice
    await refused(cws, {"type": "message", "sessionId": sid, "text": "late"}, "SESSION_CLOSED")
    assert_session(await find_session(node, agent.token, sid, status="closed"), status="closed")


async def test_customer_closes_a_queued_session(pool):
    node = pool(MANUAL)
    agent = await new_agent_user(node)
    customer = await new_customer(node)
    cws = await connect(node, customer, "customer")
    s = body_of(await session_action(node, customer.token, customer.session_id, "close"), 200)
    assert_session(s, session_id=customer.session_id, status="closed", agent_id=None, customer=customer)
    await wait_session_event(cws, "session.closed", customer.session_id)
    assert customer.session_id not in [x["id"] for x in await sessions(node, agent.token, status="queued")]
    error_of(await session_action(node, agent.token, customer.session_id, "claim"), 409, "SESSION_CLOSED")


# ------------------------------------------------------------------ switching, unread, read, typing
async def test_agent_switches_among_three_sessions(pool):
    node = pool(MANUAL)
    agent = await new_agent_user(node, "Switcher")
    customers = [await new_customer(node, f"Switch {i}") for i in range(3)]
    for c in customers:
        await claimed(node, agent, c)
    aws = await connect(node, agent, "agent")
    cwss = [await connect(node, c, f"customer-{i}") for i, c in enumerate(customers)]

    # session 0: 55 customer messages (more than one page); 1: 3 + 1 from the agent; 2: 4.
    counts = [55, 3, 4]
    for c, ws, n in zip(customers, cwss, counts):
        for i in range(n):
            await send(ws, c.session_id, f"{c.name} #{i + 1}")
    await send(aws, customers[1].session_id, "agent answer")
    await aws.wait_n(typed("message"), sum(counts), timeout=config.FRAME_WAIT * 2)

    async def switch(i: int) -> dict:
        sid = customers[i].session_id
        h = await aws.request({"type": "session.switch", "sessionId": sid})
        assert h["type"] == "session.history" and h["sessionId"] == sid, h
        assert isinstance(h["hasMore"], bool) and isinstance(h["unread"], int), h
        return h

    h0 = await switch(0)
    assert [m["seq"] for m in h0["messages"]] == list(range(6, 56)) and h0["hasMore"] is True, \
        [m["seq"] for m in h0["messages"]]
    assert h0["unread"] == 55, h0["unread"]
    h1 = await switch(1)
    assert [m["text"] for m in h1["messages"]] == ["Switch 1 #1", "Switch 1 #2", "Switch 1 #3", "agent answer"]
    assert h1["unread"] == 3 and h1["hasMore"] is False, h1  # the agent's own message is not unread
    for m in h1["messages"]:
        assert_message(m, customers[1].session_id)
    h2 = await switch(2)
    assert [m["seq"] for m in h2["messages"]] == [1, 2, 3, 4] and h2["unread"] == 4, h2
    assert (await switch(0))["unread"] == 55, "switching marks nothing read"

    # read up to 2 in session 2: unread drops, the customer gets the receipt.
    cm = cwss[2].mark()
    ok = await aws.request({"type": "read", "sessionId": customers[2].session_id, "upToSeq": 2})
    assert ok["type"] == "ok", ok
    receipt = await cwss[2].wait(typed("read", sessionId=customers[2].session_id), after=cm)
    assert receipt["userId"] == agent.id and receipt["upToSeq"] == 2, receipt
    assert (await switch(2))["unread"] == 2
    listed = {s["id"]: s for s in await sessions(node, agent.token, mine="true")}
    assert [listed[c.session_id]["unread"] for c in customers] == [55, 3, 2], listed
    assert listed[customers[2].session_id]["lastMessage"]["seq"] == 4, listed[customers[2].session_id]
    # never backwards
    assert (await aws.request({"type": "read", "sessionId": customers[2].session_id, "upToSeq": 1}))["type"] == "ok"
    assert (await switch(2))["unread"] == 2
    # read everything in session 0
    assert (await aws.request({"type": "read", "sessionId": customers[0].session_id, "upToSeq": 55}))["type"] == "ok"
    assert (await switch(0))["unread"] == 0
    # the customer's read reaches the agent
    am = aws.mark()
    assert (await cwss[1].request({"type": "read", "sessionId": customers[1].session_id, "upToSeq": 4}))["type"] == "ok"
    r = await aws.wait(typed("read", sessionId=customers[1].session_id), after=am)
    assert r["userId"] == customers[1].id and r["upToSeq"] == 4, r
    await cwss[0].quiet(typed("read"), desc="read receipt of another session")

    # typing: relayed both ways, never stored (takes no seq)
    am = aws.mark()
    typing = {"type": "typing", "sessionId": customers[2].session_id}
    assert (await cwss[2].request({**typing, "active": True}))["type"] == "ok"
    t = await aws.wait(typed("typing", sessionId=customers[2].session_id), after=am)
    assert t["userId"] == customers[2].id and t["active"] is True, t
    cm = cwss[2].mark()
    assert (await aws.request({**typing, "active": False}))["type"] == "ok"
    t = await cwss[2].wait(typed("typing", sessionId=customers[2].session_id), after=cm)
    assert t["userId"] == agent.id and t["active"] is False, t
    assert not [f for f in cwss[2].frames[cm:] if f.get("type") == "typing" and f.get("userId") == customers[2].id]
    h2 = await switch(2)
    assert [m["seq"] for m in h2["messages"]] == [1, 2, 3, 4], "typing is not stored"
    assert (await send(cwss[2], customers[2].session_id, "after typing"))["seq"] == 5

    mark = aws.mark()
    await aws.send({"type": "session.switch", "sessionId": customers[0].session_id})  # no id
    err = await aws.wait(typed("error"), after=mark)
    assert err["code"] == "INVALID_REQUEST", err
