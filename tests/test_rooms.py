"""Rooms (PROTOCOL.md §2, §3, §4, §5.5): subscribe / unsubscribe / publish frames,
grants from the token's `rooms` and `pub` claims, rooms.max_per_connection,
bounded history with `since` recovery, notice fields and seq, presence frames,
and the publish and presence HTTP routes."""

from __future__ import annotations

import time

import pytest

from harness.http import body_of, epoch, error_of, presence, publish
from harness.tokens import uid
from harness.ws import Client, bounded_poll, chat, push, typed

HISTORY = {"CHAT__ROOMS__HISTORY_SIZE": "5"}


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


async def subscribe(ws: Client, room: str, **extra) -> dict:
    answer = await ws.request({"type": "subscribe", "room": room, **extra})
    assert answer["type"] == "subscribed", f"subscribe {room}: {answer}\n{ws.dump()}"
    assert answer["room"] == room and is_int(answer["seq"]), answer
    assert isinstance(answer["recovered"], bool) and is_int(answer["missed"]), answer
    return answer


async def publish_seqs(node, room: str, n: int) -> list[int]:
    seqs = [body_of(await publish(node, room, {"i": i}), 202)["seq"] for i in range(n)]
    assert seqs == list(range(seqs[0], seqs[0] + n)), f"room seq rises by exactly 1: {seqs}"
    return seqs


# ------------------------------------------------------------------ frames
async def test_subscribe_publish_notice_unsubscribe(gw, tokens):
    room = f"lobby.{uid('r')}"
    publisher = await chat(gw, tokens.mint("agent", rooms=["lobby.*"], pub=["lobby.*"]), label="publisher")
    listener = await chat(gw, tokens.mint("customer", channel="web", rooms=["lobby.*"]), label="listener")
    await subscribe(listener, room)

    ok = await publisher.request({"type": "publish", "room": room, "event": "greet", "data": {"hello": "room"}})
    assert ok["type"] == "ok" and ok["room"] == room and is_int(ok["seq"]), ok
    notice = await listener.wait(typed("notice", room=room))
    assert notice["seq"] == ok["seq"] and notice["event"] == "greet" and notice["data"] == {"hello": "room"}, notice
    epoch(notice["ts"], "notice ts")
    assert abs(epoch(notice["ts"]) - time.time()) < 60

    gone = await listener.request({"type": "unsubscribe", "room": room})
    assert gone["type"] == "unsubscribed" and gone["room"] == room, gone
    mark = listener.mark()
    assert (await publisher.request({"type": "publish", "room": room, "data": 2}))["type"] == "ok"
    await listener.quiet(typed("notice"), after=mark, desc="notice after unsubscribe")


async def test_notice_fields_and_seq_across_http_and_frames(gw, tokens):
    room = uid("seq")
    listener = await chat(gw, tokens.mint("agent", rooms=["*"], pub=["*"]))
    first = await subscribe(listener, room)
    seqs = await publish_seqs(gw, room, 3)
    assert seqs[0] == first["seq"] + 1, f"subscribed.seq is the room's latest: {first} then {seqs}"
    ok = await listener.request({"type": "publish", "room": room, "data": [1, 2]})
    assert ok["seq"] == seqs[-1] + 1, ok
    notices = await listener.wait_n(typed("notice", room=room), 4)
    assert [n["seq"] for n in notices] == seqs + [ok["seq"]], notices
    assert notices[0]["data"] == {"i": 0} and notices[0].get("event") is None, notices[0]
    for n in notices:
        assert set(n) <= {"type", "room", "seq", "event", "data", "ts"}, n
        epoch(n["ts"], "notice ts")
    again = await subscribe(await chat(gw, tokens.mint("agent", rooms=["*"])), room)
    assert again["seq"] == ok["seq"], again


@pytest.mark.parametrize("grant,room,allowed", [
    (["news.*"], "news.sport", True), (["news.*"], "weather.today", False), (["alerts"], "alerts", True),
    (["alerts"], "alerts.extra", False), (["*"], "anything-at-all", True), ([], "anything", False),
])
async def test_subscribe_follows_the_rooms_claim(gw, tokens, grant, room, allowed):
    ws = await chat(gw, tokens.mint("agent", rooms=grant))
    answer = await ws.request({"type": "subscribe", "room": room})
    if allowed:
        assert answer["type"] == "subscribed", answer
    else:
        assert answer["type"] == "error" and answer["code"] == "FORBIDDEN", answer
        await ws.assert_alive()


async def test_publish_frame_needs_a_pub_grant(gw, tokens):
    room = f"news.{uid('pub')}"
    no_pub = await chat(gw, tokens.mint("agent", rooms=["*"]))
    answer = await no_pub.request({"type": "publish", "room": room, "data": 1})
    assert answer["type"] == "error" and answer["code"] == "FORBIDDEN", answer
    narrow = await chat(gw, tokens.mint("agent", pub=["news.*"]))
    assert (await narrow.request({"type": "publish", "room": room, "data": 1}))["type"] == "ok"
    other = await narrow.request({"type": "publish", "room": uid("weather"), "data": 1})
    assert other["type"] == "error" and other["code"] == "FORBIDDEN", other


async def test_max_per_connection_on_chat(gw, tokens):
    ws = await chat(gw, tokens.mint("agent", rooms=["*"]))
    a, b, c = uid("a"), uid("b"), uid("c")
    await subscribe(ws, a)
    await subscribe(ws, b)
    third = await ws.request({"type": "subscribe", "room": c})
    assert third["type"] == "error", f"rooms.max_per_connection defaults to 2: {third}"
    await ws.assert_alive()
    mark = ws.mark()
    body_of(await publish(gw, c, {"x": 1}), 202)
    await ws.quiet(typed("notice", room=c), after=mark, desc="notice of a refused room")
    assert (await ws.request({"type": "unsubscribe", "room": a}))["type"] == "unsubscribed"
    await subscribe(ws, c)


async def test_push_rooms_beyond_the_limit_are_dropped_first(gw, tokens):
    a, b = uid("granted"), uid("granted")
    device = tokens.mint("device", rooms=[a, b])
    ws = await push(gw, device, f"{a},{b},notgranted-{uid('x')}")
    for room in (a, b):
        seq = body_of(await publish(gw, room, {"room": room}), 202)["seq"]
        notice = await ws.wait(typed("notice", room=room))
        assert notice["seq"] == seq and notice["data"] == {"room": room}
    # a third granted room is dropped as well
    c = uid("third")
    ws3 = await push(gw, tokens.mint("device", rooms=["*"]), f"{a},{b},{c}")
    body_of(await publish(gw, c, {"dropped": True}), 202)
    await ws3.quiet(typed("notice", room=c), desc="notice of a dropped room")
    members = body_of(await presence(gw, c), 200)["members"]
    assert members == [], f"nobody subscribed {c}: {members}"


async def test_push_delivers_notices_and_sends_nothing_else(gw, tokens):
    room = uid("push")
    ws = await push(gw, tokens.mint("device", rooms=["*"]), room)
    await ws.send({"type": "ping", "id": "ignored"})
    await ws.send({"type": "subscribe", "id": "ignored-2", "room": uid("other")})
    await ws.send_raw("not json")
    body_of(await publish(gw, room, {"n": 1}, event="tick"), 202)
    notice = await ws.wait(typed("notice", room=room))
    assert notice["event"] == "tick" and notice["data"] == {"n": 1}, notice
    await ws.quiet(lambda f: f.get("type") not in ("hello", "notice"), within=0.3, after=0,
                   desc="answer to a /ws client frame")
    assert [f["type"] for f in ws.frames] == ["hello", "notice"], ws.dump()
    assert ws.is_open


# ------------------------------------------------------------------ history
async def test_since_within_history_recovers(pool, tokens):
    node = pool(HISTORY)
    room = uid("hist")
    s = await publish_seqs(node, room, 3)
    ws = await chat(node, tokens.mint("agent", rooms=["*"]))
    mark = ws.mark()
    sub = await subscribe(ws, room, since=s[0])
    assert (sub["seq"], sub["recovered"], sub["missed"]) == (s[2], True, 0), sub
    notices = await ws.wait_n(typed("notice", room=room), 2, after=mark)
    assert [n["seq"] for n in notices] == s[1:], notices
    assert ws.frames.index(sub) < ws.frames.index(notices[0]), "kept notices follow `subscribed`"
    assert notices[0]["data"] == {"i": 1}
    # since = latest: nothing missed, nothing resent
    other = await chat(node, tokens.mint("agent", rooms=["*"]))
    mark = other.mark()
    sub = await subscribe(other, room, since=s[2])
    assert (sub["recovered"], sub["missed"]) == (True, 0), sub
    await other.quiet(typed("notice"), after=mark)


async def test_since_too_old_reports_missed(pool, tokens):
    node = pool(HISTORY)
    room = uid("old")
    s = await publish_seqs(node, room, 11)  # history keeps the last 5: s[6]..s[10]
    ws = await chat(node, tokens.mint("agent", rooms=["*"]))
    mark = ws.mark()
    sub = await subscribe(ws, room, since=s[0])
    assert (sub["seq"], sub["recovered"], sub["missed"]) == (s[10], False, 5), sub  # s[1]..s[5] are gone
    notices = await ws.wait_n(typed("notice", room=room), 5, after=mark)
    assert [n["seq"] for n in notices] == s[6:], notices
    assert ws.frames.index(sub) < ws.frames.index(notices[0])
    live = body_of(await publish(node, room, {"live": True}), 202)["seq"]
    assert (await ws.wait(typed("notice", room=room, seq=live)))["data"] == {"live": True}


# ------------------------------------------------------------------ presence frames
async def test_presence_frames_for_first_and_last_connection(gw, tokens):
    room = uid("pres")
    watcher = await chat(gw, tokens.mint("agent", rooms=["*"]), label="watcher")
    await subscribe(watcher, room)

    sub_b = uid("bob")
    token_b = tokens.mint("customer", sub_b, channel="web", rooms=["*"])
    b1 = await chat(gw, token_b, label="bob-1")
    mark = watcher.mark()
    await subscribe(b1, room)
    online = await watcher.wait(typed("presence", userId=sub_b), after=mark)
    assert (online["room"], online["status"]) == (room, "online"), online
    b2 = await chat(gw, token_b, label="bob-2")
    mark = watcher.mark()
    await subscribe(b2, room)
    await b1.close()
    await watcher.quiet(typed("presence", userId=sub_b), after=mark, desc="presence while bob keeps a connection")
    await b2.close()
    offline = await watcher.wait(typed("presence", userId=sub_b), after=mark)
    assert (offline["room"], offline["status"]) == (room, "offline"), offline

    device = uid("dev")
    mark = watcher.mark()
    pusher = await push(gw, tokens.mint("device", device, rooms=["*"]), room)
    assert (await watcher.wait(typed("presence", userId=device), after=mark))["status"] == "online"
    mark = watcher.mark()
    await pusher.close()
    assert (await watcher.wait(typed("presence", userId=device), after=mark))["status"] == "offline"


# ------------------------------------------------------------------ HTTP routes
async def test_http_publish_answers_202_with_room_and_seq(gw, tokens):
    room = uid("http")
    ws = await push(gw, tokens.mint("device", rooms=["*"]), room)
    body = body_of(await publish(gw, room, {"k": "v"}, event="ev"), 202)
    assert body["room"] == room and is_int(body["seq"]), body
    notice = await ws.wait(typed("notice", room=room))
    assert (notice["seq"], notice["event"], notice["data"]) == (body["seq"], "ev", {"k": "v"}), notice
    svc_jwt = tokens.mint("service", "svc-backend")
    assert body_of(await publish(gw, room, 1, token=svc_jwt), 202)["seq"] == body["seq"] + 1
    granted = tokens.mint("agent", pub=[room])
    assert body_of(await publish(gw, room, 2, token=granted), 202)["seq"] == body["seq"] + 2


async def test_http_publish_refusals(gw, tokens):
    room = uid("deny")
    for token in (None, "not-the-service-token", tokens.bad("expired", "service")):
        assert (await publish(gw, room, 1, token=token)).status_code == 401, token
    error_of(await publish(gw, room, 1, token=tokens.mint("agent", rooms=["*"])), 403, "FORBIDDEN")
    error_of(await publish(gw, room, 1, token=tokens.mint("agent", pub=["elsewhere.*"])), 403, "FORBIDDEN")
    fresh = uid("fresh")
    first = body_of(await publish(gw, fresh, 1), 202)["seq"]
    await publish(gw, fresh, 1, token=None)
    assert body_of(await publish(gw, fresh, 1), 202)["seq"] == first + 1, "a refused publish takes no seq"


async def test_http_presence_counts_connections_across_endpoints(gw, tokens):
    room = uid("who")
    dev, agent = uid("dev"), uid("agent")
    dev_token = tokens.mint("device", dev, "Kiosk", rooms=["*"])
    await push(gw, dev_token, room)
    await push(gw, dev_token, room)
    agent_token = tokens.mint("agent", agent, "Watcher", rooms=["*"])
    ws = await chat(gw, agent_token)
    await subscribe(ws, room)
    await chat(gw, agent_token)  # connected but not subscribed: not counted

    async def members():
        body = body_of(await presence(gw, room), 200)
        assert body["room"] == room, body
        got = {m["userId"]: m for m in body["members"]}
        return got if len(got) == 2 and got.get(dev, {}).get("connections") == 2 else None

    got = await bounded_poll(members, desc="two members in the presence route")
    assert got[dev] == {"userId": dev, "role": "device", "name": "Kiosk", "connections": 2}, got
    assert got[agent] == {"userId": agent, "role": "agent", "name": "Watcher", "connections": 1}, got
    # a current subscriber may ask; a non-subscriber may not; no token is 401
    body_of(await presence(gw, room, token=agent_token), 200)
    error_of(await presence(gw, room, token=tokens.mint("agent", rooms=["*"])), 403, "FORBIDDEN")
    assert (await presence(gw, room, token=None)).status_code == 401
