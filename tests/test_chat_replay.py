"""Offline replay (PROTOCOL.md §5.3-5.4): backlog as `offline_message` in seq order
then `offline_messages_complete`; the delivery cursor moved only by `delivered` and
`read`; own messages never replayed; `offline.max_replay` truncation; live messages
held until the replay ends; in-band `auth` replays too."""

from __future__ import annotations

import asyncio

from harness import config
from harness.chat import (MANUAL, assert_contiguous, assert_message, connect, connect_slow, history, msgs,
                          new_agent_user, new_customer, pause_reading, resume_reading, send, session_action)
from harness.http import body_of
from harness.ws import chat, open_ws, typed

MAX5 = {**MANUAL, "CHAT__OFFLINE__MAX_REPLAY": "5"}


async def claimed_pair(node):
    agent, customer = await new_agent_user(node), await new_customer(node)
    body_of(await session_action(node, agent.token, customer.session_id, "claim"), 200)
    return agent, customer


async def backlog_from_agent(node, texts):
    """A claimed pair whose agent is connected (label "agent") and has sent `texts` to the session:
    (agent, customer, the agent's connection, the acks)."""
    agent, customer = await claimed_pair(node)
    aws = await connect(node, agent, "agent")
    acks = [await send(aws, customer.session_id, text) for text in texts]
    return agent, customer, aws, acks


def replay_of(ws) -> tuple[list[dict], dict]:
    """(offline MESSAGEs in arrival order, the complete frame); checks that nothing else interleaves."""
    done_at = next(i for i, f in enumerate(ws.frames) if f.get("type") == "offline_messages_complete")
    offline = [f["message"] for f in ws.frames[:done_at] if f.get("type") == "offline_message"]
    late = [f for f in ws.frames[done_at:] if f.get("type") == "offline_message"]
    assert not late, f"{ws.label}: offline_message after complete: {late[:2]}"
    early = [f for f in ws.frames[:done_at] if f.get("type") == "message"]
    assert not early, f"{ws.label}: live message before complete: {early[:2]}"
    done = ws.frames[done_at]
    assert done["count"] == len(offline), f"count = number of offline_message frames: {done} vs {len(offline)}"
    assert isinstance(done["truncated"], bool) and isinstance(done["sessions"], list), done
    return offline, done


async def test_backlog_is_replayed_in_order_and_delivered_moves_the_cursor(pool):
    node = pool(MANUAL)
    agent, customer, aws, acks = await backlog_from_agent(node, [f"while away {i}" for i in range(6)])
    sid = customer.session_id

    cws = await connect(node, customer, "customer")
    offline, done = replay_of(cws)
    assert [m["seq"] for m in offline] == [1, 2, 3, 4, 5, 6], offline
    assert [m["id"] for m in offline] == [a["messageId"] for a in acks]
    for m in offline:
        assert_message(m, sid, agent)
    assert done["count"] == 6 and done["truncated"] is False and done["sessions"] == [], done

    # connecting again without delivered/read: the cursor did not move
    again = await connect(node, customer, "customer-again")
    assert [m["seq"] for m in replay_of(again)[0]] == [1, 2, 3, 4, 5, 6]
    ok = await again.request({"type": "delivered", "sessionId": sid, "upToSeq": 4})
    assert ok["type"] == "ok", ok
    await again.close()
    third = await connect(node, customer, "customer-3")
    assert [m["seq"] for m in replay_of(third)[0]] == [5, 6], "only above the delivery cursor"

    # read also moves it; delivered never moves it backwards
    assert (await third.request({"type": "read", "sessionId": sid, "upToSeq": 6}))["type"] == "ok"
    assert (await third.request({"type": "delivered", "sessionId": sid, "upToSeq": 2}))["type"] == "ok"
    fourth = await connect(node, customer, "customer-4")
    offline, done = replay_of(fourth)
    assert offline == [] and done["count"] == 0 and done["truncated"] is False, done
    await send(aws, sid, "new one")
    fifth = await connect(node, customer, "customer-5")
    assert [m["seq"] for m in replay_of(fifth)[0]] == [7]


async def test_own_messages_are_never_replayed_and_sending_does_not_move_the_cursor(pool):
    node = pool(MANUAL)
    agent, customer, aws, _ = await backlog_from_agent(node, ["agent 1"])  # 1
    sid = customer.session_id
    cws = await connect(node, customer, "customer")
    assert [m["seq"] for m in replay_of(cws)[0]] == [1]
    for i in range(3):
        await send(cws, sid, f"customer {i}")            # 2, 3, 4
    await cws.close()
    await send(aws, sid, "agent 2")                      # 5
    await send(aws, sid, "agent 3")                      # 6

    back = await connect(node, customer, "customer-back")
    offline, done = replay_of(back)
    assert [m["seq"] for m in offline] == [1, 5, 6], "the cursor is still 0; own messages 2-4 are skipped"
    assert all(m["from"]["id"] == agent.id for m in offline), offline
    assert done["count"] == 3

    await aws.close()
    agent_back = await connect(node, agent, "agent-back")
    offline, done = replay_of(agent_back)
    assert [m["seq"] for m in offline] == [2, 3, 4] and done["count"] == 3, offline
    assert all(m["from"]["id"] == customer.id for m in offline)


async def test_backlog_over_max_replay_is_truncated_to_the_newest(pool):
    node = pool(MAX5)
    _, customer, _, _ = await backlog_from_agent(node, [f"backlog {i}" for i in range(1, 13)])
    sid = customer.session_id
    cws = await connect(node, customer, "customer")
    offline, done = replay_of(cws)
    assert [m["seq"] for m in offline] == [8, 9, 10, 11, 12], offline
    assert [m["text"] for m in offline] == [f"backlog {i}" for i in range(8, 13)]
    assert done["count"] == 5 and done["truncated"] is True, done
    assert done["sessions"] == [{"sessionId": sid, "fromSeq": 1, "toSeq": 7}], done
    # the older range is fetchable from the history route
    older = await history(node, customer.token, sid, afterSeq=0, beforeSeq=8)
    assert [m["seq"] for m in older["messages"]] == list(range(1, 8)), older


async def test_own_messages_do_not_count_toward_max_replay(pool):
    node = pool(MAX5)
    agent, customer = await claimed_pair(node)
    sid = customer.session_id
    aws = await connect(node, agent, "agent")
    cws = await connect(node, customer, "customer")
    for i in range(4):
        await send(aws, sid, f"agent {i}")       # 1-4
    for i in range(4):
        await send(cws, sid, f"customer {i}")    # 5-8
    await cws.close()
    back = await connect(node, customer, "customer-back")
    offline, done = replay_of(back)
    assert [m["seq"] for m in offline] == [1, 2, 3, 4] and done["truncated"] is False and done["sessions"] == [], \
        (offline, done)


async def test_replay_spans_every_session_of_the_user(pool):
    node = pool(MANUAL)
    agent = await new_agent_user(node)
    customers = [await new_customer(node) for _ in range(3)]
    for c in customers:
        body_of(await session_action(node, agent.token, c.session_id, "claim"), 200)
    for n, c in zip((2, 0, 3), customers):
        ws = await connect(node, c, c.name)
        for i in range(n):
            await send(ws, c.session_id, f"{c.name} {i}")
    aws = await connect(node, agent, "agent")
    offline, done = replay_of(aws)
    assert done["count"] == 5 and done["truncated"] is False, done
    for n, c in zip((2, 0, 3), customers):
        assert [m["seq"] for m in offline if m["sessionId"] == c.session_id] == list(range(1, n + 1))


async def test_a_live_message_during_replay_comes_after_complete_without_gap_or_duplicate(pool):
    """Live messages are sent as soon as the customer's `hello` arrives, while its replay of a 300-message
    backlog is under way.  Attempts 0-1 race the replay; in attempt 2 the customer's connection (small
    receive buffer) stops reading right after `hello` until the live messages are acked, so that they are
    stored while the replay is still undelivered."""
    node = pool(MANUAL)
    backlog, live = 300, 20
    overlapped: list[int] = []  # live messages acked before the customer had its complete frame
    for attempt in range(3):
        agent, customer = await claimed_pair(node)
        sid = customer.session_id
        aws = await connect(node, agent, f"agent-{attempt}")
        # pipeline the backlog: send every frame, then collect the acks
        ids = [f"b{attempt}-{i}" for i in range(backlog)]
        for i, msg_id in enumerate(ids):
            await aws.send({"type": "message", "id": msg_id, "sessionId": sid, "text": f"backlog {i} " + "z" * 200})
        await aws.wait_n(typed("ack"), backlog, timeout=config.FRAME_WAIT * 4)

        paused = attempt == 2
        if paused:
            cws = await connect_slow(node, customer.token, rcvbuf=4096, label=f"customer-{attempt}")
            pause_reading(cws)
        else:
            cws = await open_ws(node.ws_url("/ws/chat"), headers={"Authorization": f"Bearer {customer.token}"},
                                label=f"customer-{attempt}")

        async def live_sender():
            await cws.wait(typed("hello"))
            for i in range(live):
                await send(aws, sid, f"live {i}")
                if not cws.of("offline_messages_complete"):
                    overlapped.append(i)
            if paused:
                resume_reading(cws)

        await asyncio.gather(live_sender(), cws.wait(typed("offline_messages_complete"), timeout=config.FRAME_WAIT * 3))
        await cws.wait_n(lambda f: f.get("type") in ("message", "offline_message"), backlog + live,
                         timeout=config.FRAME_WAIT * 2, desc="every message")
        offline, done = replay_of(cws)
        live_seqs = [m["seq"] for m in msgs(cws, sid)]
        print(f"attempt {attempt}: {len(offline)} replayed, {len(live_seqs)} live after complete, "
              f"{len(overlapped)} acked before complete so far")
        assert [m["seq"] for m in offline] == list(range(1, len(offline) + 1)), "replay in seq order from 1"
        assert len(offline) >= backlog and done["count"] == len(offline), done
        assert live_seqs == list(range(len(offline) + 1, backlog + live + 1)), \
            f"live after complete continue the replay: replay 1..{len(offline)}, live {live_seqs}"
        assert assert_contiguous(cws, sid) == list(range(1, backlog + live + 1))
        await cws.quiet(lambda f: f.get("type") in ("message", "offline_message"), within=0.3)
    assert overlapped, "no live message was sent while a replay was under way"


async def test_inband_auth_on_a_tokenless_connection_replays(pool):
    node = pool(MANUAL)
    agent, customer, _, _ = await backlog_from_agent(node, [f"for later {i}" for i in range(3)])
    ws = await chat(node, None, label="tokenless")
    mark = ws.mark()
    answer = await ws.request({"type": "auth", "token": customer.token})
    assert answer["type"] == "authenticated" and answer["user"]["id"] == customer.id, answer
    done = await ws.wait(typed("offline_messages_complete"), after=mark)
    assert ws.frames.index(answer) < ws.frames.index(done)
    offline, done = replay_of(ws)
    assert [m["seq"] for m in offline] == [1, 2, 3] and done["count"] == 3, done
    assert all(ws.frames.index(answer) < i for i, f in enumerate(ws.frames) if f.get("type") == "offline_message")

    # in-band login of the agent too (its own messages: nothing to replay)
    lws = await chat(node, None, label="login")
    mark = lws.mark()
    assert (await lws.request({"type": "login", "username": agent.username, "password": agent.password}))["type"] == \
        "authenticated"
    done = await lws.wait(typed("offline_messages_complete"), after=mark)
    assert done["count"] == 0, done
