"""A live connection (PROTOCOL.md §3, §4): `hello`, in-band `auth` and `login`,
the auth timeout, token refresh and expiry, heartbeats, the per-connection frame
rate, and what the server does with invalid input."""

from __future__ import annotations

import asyncio
import time

import pytest

from harness import config
from harness.http import body_of, epoch, new_agent, publish
from harness.tokens import uid
from harness.ws import Client, chat, fid, open_ws, push, typed

HEARTBEAT = {"CHAT__HEARTBEAT__INTERVAL_SECS": "1", "CHAT__HEARTBEAT__TIMEOUT_SECS": "2"}
EXPIRY = {"CHAT__AUTH__LEEWAY_SECS": "0"}
SMALL_FRAMES = {"CHAT__LIMITS__MAX_FRAME_BYTES": "1024"}


# ------------------------------------------------------------------ hello
async def test_hello_describes_an_authenticated_connection(gw, tokens):
    sub = uid("agent")
    token = tokens.mint("agent", sub, "Hello Agent")
    ws = await chat(gw, token)
    hello = ws.frames[0]
    assert hello["type"] == "hello", f"hello must be the first frame: {ws.dump()}"
    assert isinstance(hello.get("connectionId"), str) and hello["connectionId"], hello
    assert hello["node"] == gw.node_id, hello
    assert hello["authenticated"] is True, hello
    assert hello["user"] == {"id": sub, "role": "agent", "name": "Hello Agent"}, hello
    assert abs(epoch(hello["expiresAt"]) - tokens.verify(token)["exp"]) <= 1, hello
    assert hello["heartbeatIntervalMs"] == 10_000, "heartbeat.interval_secs defaults to 10"
    assert hello["protocolVersion"] == config.PROTOCOL_VERSION, hello
    other = await chat(gw, token)
    assert other.frames[0]["connectionId"] != hello["connectionId"]


async def test_hello_echoes_handshake_headers(gw, tokens):
    ws = await chat(gw, tokens.mint("customer", channel="web"),
                    headers={"Device-Id": "dev-42", "Client-Id": "cli-7", "Protocol-Version": "1"})
    hello = ws.frames[0]
    assert (hello.get("deviceId"), hello.get("clientId")) == ("dev-42", "cli-7"), hello
    assert hello["protocolVersion"] == 1


async def test_push_connection_starts_with_hello(gw, tokens):
    sub = uid("device")
    ws = await open_ws(gw.ws_url("/ws", f"token={tokens.mint('device', sub, rooms=['*'])}&roomIds={uid('r')}"))
    first = await ws.wait(lambda f: True, desc="first frame")
    assert first["type"] == "hello" and first["authenticated"] is True, first
    assert first["user"]["id"] == sub and first["user"]["role"] == "device", first
    assert first["node"] == gw.node_id and first["protocolVersion"] == 1, first


# ------------------------------------------------------------------ in-band auth
async def test_inband_auth_on_a_tokenless_connection(gw, tokens):
    ws = await chat(gw, None)
    hello = ws.frames[0]
    assert hello["authenticated"] is False and not hello.get("user"), hello
    refused = await ws.request({"type": "subscribe", "room": uid("room")})
    assert refused["type"] == "error" and refused["code"] == "MISSING_TOKEN", refused

    sub = uid("customer")
    token = tokens.mint("customer", sub, "Late Auth", channel="web")
    mark = ws.mark()
    answer = await ws.request({"type": "auth", "token": token})
    assert answer["type"] == "authenticated", answer
    assert answer["user"] == {"id": sub, "role": "customer", "name": "Late Auth"}, answer
    assert abs(epoch(answer["expiresAt"]) - tokens.verify(token)["exp"]) <= 1
    done = await ws.wait(typed("offline_messages_complete"), after=mark)
    assert done["count"] == 0 and done.get("truncated") is False, done
    assert ws.frames.index(answer) < ws.frames.index(done), "replay follows authentication"
    await ws.assert_alive()


@pytest.mark.parametrize("kind,code", [("expired", "TOKEN_EXPIRED"), ("bad-signature", "TOKEN_INVALID"),
                                       ("malformed", "TOKEN_MALFORMED")])
async def test_inband_auth_with_a_bad_token_is_an_error_frame(gw, tokens, kind, code):
    ws = await chat(gw, None)
    answer = await ws.request({"type": "auth", "token": tokens.bad(kind, "agent")})
    assert answer["type"] == "error" and answer["code"] == code, answer
    await ws.assert_alive()
    good = await ws.request({"type": "auth", "token": tokens.mint("agent")})
    assert good["type"] == "authenticated", good


async def test_inband_login(gw):
    agent = await new_agent(gw, "Login Frame")
    ws = await chat(gw, None)
    wrong = await ws.request({"type": "login", "username": agent["username"], "password": "wrong"})
    assert wrong["type"] == "error" and wrong["code"] == "INVALID_CREDENTIALS", wrong
    await ws.assert_alive()
    mark = ws.mark()
    answer = await ws.request({"type": "login", "username": agent["username"], "password": agent["password"]})
    assert answer["type"] == "authenticated", answer
    assert answer["user"] == {"id": agent["id"], "role": "agent", "name": "Login Frame"}, answer
    assert isinstance(answer.get("expiresAt"), str), answer
    done = await ws.wait(typed("offline_messages_complete"), after=mark)
    assert done["count"] == 0, done


@pytest.mark.slow
async def test_auth_timeout_closes_4001(pool, tokens):
    node = pool({"CHAT__AUTH__TIMEOUT_SECS": "1"})
    silent = await chat(node, None, label="silent")
    authed = await chat(node, None, label="authenticated-in-time")
    assert (await authed.request({"type": "auth", "token": tokens.mint("agent")}))["type"] == "authenticated"
    with_token = await chat(node, tokens.mint("agent"), label="token-at-handshake")
    await silent.closed_with(4001, "AUTH_TIMEOUT", timeout=1 + config.SLACK)
    assert not silent.of("error"), silent.dump()
    await asyncio.sleep(0.5)  # past the auth timeout of the other two as well
    await authed.assert_alive()
    await with_token.assert_alive()


# ------------------------------------------------------------------ expiry and refresh
@pytest.mark.slow
async def test_token_expiring_then_close_4002_at_exp(pool, tokens):
    node = pool(EXPIRY)
    exp = int(time.time()) + 3
    sub = uid("agent")
    ws = await chat(node, tokens.mint("agent", sub, exp=exp), label="expiring-chat")
    device = await push(node, tokens.mint("device", exp=exp, rooms=["*"]), uid("r"), label="expiring-push")
    warning = await ws.wait(typed("token_expiring"), timeout=1.5,
                            desc="token_expiring at once (inside the 60 s warning window)")
    assert 0 < warning["expiresInMs"] <= 3_500, warning
    await ws.closed_with(4002, "TOKEN_EXPIRED", timeout=exp - time.time() + config.SLACK)
    await device.closed_with(4002, "TOKEN_EXPIRED", timeout=exp - time.time() + config.SLACK)
    assert time.time() >= exp - 0.5, "closed before exp"


@pytest.mark.slow
async def test_token_expiring_is_sent_expiry_warning_secs_before_exp(pool, tokens):
    node = pool({**EXPIRY, "CHAT__AUTH__EXPIRY_WARNING_SECS": "2"})
    exp = int(time.time()) + 5
    ws = await chat(node, tokens.mint("agent", exp=exp))
    await ws.quiet(typed("token_expiring"), within=max(0.0, exp - 2 - time.time() - 1.0))
    warning = await ws.wait(typed("token_expiring"), timeout=exp - time.time())
    assert 0 < warning["expiresInMs"] <= 2_500, warning
    await ws.closed_with(4002, "TOKEN_EXPIRED", timeout=exp - time.time() + config.SLACK)


@pytest.mark.slow
async def test_auth_with_a_fresh_token_of_the_same_user_keeps_the_connection(pool, tokens):
    node = pool(EXPIRY)
    sub = uid("agent")
    exp = int(time.time()) + 3
    ws = await chat(node, tokens.mint("agent", sub, "Renewing", exp=exp))
    await ws.wait(typed("token_expiring"), timeout=1.5)
    fresh = tokens.mint("agent", sub, "Renewing", ttl=3600)
    answer = await ws.request({"type": "auth", "token": fresh})
    assert answer["type"] == "authenticated" and answer["user"]["id"] == sub, answer
    assert abs(epoch(answer["expiresAt"]) - tokens.verify(fresh)["exp"]) <= 1, answer
    await asyncio.sleep(max(0.0, exp - time.time()) + 1.5)
    await ws.assert_alive()


@pytest.mark.slow
async def test_auth_with_another_users_token_is_refused_and_does_not_extend(pool, tokens):
    node = pool(EXPIRY)
    exp = int(time.time()) + 3
    ws = await chat(node, tokens.mint("agent", uid("agent"), exp=exp))
    answer = await ws.request({"type": "auth", "token": tokens.mint("agent", uid("someone-else"))})
    assert answer["type"] == "error", answer
    await ws.assert_alive()
    await ws.closed_with(4002, "TOKEN_EXPIRED", timeout=exp - time.time() + config.SLACK)


# ------------------------------------------------------------------ heartbeats
async def _keep_sending(ws: Client, stop: asyncio.Event, frame: str, every: float = 0.4) -> None:
    while not stop.is_set() and ws.is_open:
        await ws.send_raw(frame)
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            pass


@pytest.mark.slow
async def test_heartbeat_timeout_on_chat(pool, tokens):
    node = pool(HEARTBEAT)
    answering = await chat(node, tokens.mint("agent"), label="answers-pings")
    assert answering.frames[0]["heartbeatIntervalMs"] == 1000
    silent = await chat(node, tokens.mint("agent"), label="silent")
    silent.suppress_pongs = True
    talking = await chat(node, tokens.mint("agent"), label="app-frames-only")
    talking.suppress_pongs = True
    stop = asyncio.Event()
    sender = asyncio.create_task(_keep_sending(talking, stop, '{"type":"ping"}'))

    await silent.closed_with(4010, "HEARTBEAT_TIMEOUT", timeout=2 + 1 + config.SLACK)
    await asyncio.sleep(3.0)  # more than one full timeout for the others
    assert answering.pongs > 0, "the server pings every heartbeat.interval_secs"
    await answering.assert_alive()
    assert talking.is_open, f"app-level frames count as liveness: {talking.dump()}"
    stop.set()
    await sender
    await talking.closed_with(4010, "HEARTBEAT_TIMEOUT", timeout=2 + 1 + config.SLACK)


@pytest.mark.slow
async def test_heartbeat_timeout_on_push_and_client_frames_count_as_liveness(pool, tokens):
    node = pool(HEARTBEAT)
    silent = await push(node, tokens.mint("device", rooms=["*"]), uid("r"), label="silent-push")
    silent.suppress_pongs = True
    talking = await push(node, tokens.mint("device", rooms=["*"]), uid("r"), label="talking-push")
    talking.suppress_pongs = True
    stop = asyncio.Event()
    sender = asyncio.create_task(_keep_sending(talking, stop, '{"type":"ping","id":"p1"}'))
    await silent.closed_with(4010, "HEARTBEAT_TIMEOUT", timeout=2 + 1 + config.SLACK)
    await asyncio.sleep(3.0)
    assert talking.is_open, f"client frames on /ws count as liveness: {talking.dump()}"
    assert [f["type"] for f in talking.frames] == ["hello"], f"/ws answers no client frame: {talking.dump()}"
    stop.set()
    await sender
    await talking.closed_with(4010, "HEARTBEAT_TIMEOUT", timeout=2 + 1 + config.SLACK)


# ------------------------------------------------------------------ frame rate
RATE = {"CHAT__LIMITS__MESSAGES_PER_SEC": "1", "CHAT__LIMITS__MESSAGES_BURST": "3"}


async def test_frames_over_the_rate_get_rate_limited_and_are_not_processed(pool, tokens):
    node = pool(RATE)
    ws = await chat(node, tokens.mint("agent", rooms=["*"]))
    room = uid("rate")
    ids = [fid("burst") for _ in range(4)]
    frames = [{"type": "ping", "id": i} for i in ids[:3]] + [{"type": "subscribe", "id": ids[3], "room": room}]
    mark = ws.mark()
    for frame in frames:
        await ws.send(frame)
    answers = await ws.wait_n(lambda f: f.get("ref") in ids, 4, after=mark, desc="one answer per frame")
    assert [a["type"] for a in answers[:3]] == ["pong"] * 3, ws.dump()
    refused = answers[3]
    assert refused["type"] == "error" and refused["code"] == "RATE_LIMITED" and refused["ref"] == ids[3], refused
    await ws.quiet(lambda f: f.get("ref") in ids, after=len(ws.frames), within=0.3)
    assert sorted(f["ref"] for f in ws.frames[mark:] if f.get("ref") in ids) == sorted(ids), "exactly one answer each"
    # the refused subscribe was not processed: a notice to that room does not arrive
    body_of(await publish(node, room, {"n": 1}), 202)
    await ws.quiet(typed("notice"), within=config.QUIET)
    assert ws.is_open, "one refusal (<= burst) does not close the connection"


async def test_more_refusals_than_burst_within_10s_close_4008(pool, tokens):
    node = pool(RATE)
    bystander = await chat(node, tokens.mint("agent"), label="bystander")
    ws = await chat(node, tokens.mint("agent"), label="flooder")
    mark = ws.mark()
    for i in range(12):
        if not ws.is_open:
            break
        try:
            await ws.send({"type": "ping", "id": f"flood-{i}"})
        except Exception:
            break
    await ws.closed_with(4008, "RATE_LIMITED")
    errors = [f for f in ws.frames[mark:] if f.get("type") == "error"]
    assert all(e["code"] == "RATE_LIMITED" for e in errors), ws.dump()
    assert len(errors) >= 3, f"up to burst (3) refusals are answered before the close: {ws.dump()}"
    await bystander.assert_alive()


# ------------------------------------------------------------------ invalid input
async def _pair(pool, tokens) -> tuple[Client, Client]:
    node = pool(SMALL_FRAMES)
    bystander = await chat(node, tokens.mint("agent"), label="bystander")
    ws = await chat(node, tokens.mint("agent", rooms=["*"]), label="offender")
    return ws, bystander


async def test_invalid_json_is_an_error_and_the_connection_stays_open(pool, tokens):
    ws, bystander = await _pair(pool, tokens)
    for raw in ("{not json", "[1, 2]", '"just a string"', "{}", '{"type": 5}'):
        mark = ws.mark()
        await ws.send_raw(raw)
        err = await ws.wait(typed("error"), after=mark, desc=f"error for {raw!r}")
        assert err["code"] == "INVALID_REQUEST" and "ref" not in err, (raw, err)
        await ws.assert_alive()
    await bystander.assert_alive()


async def test_unknown_type_and_missing_fields_are_invalid_request(pool, tokens):
    ws, _ = await _pair(pool, tokens)
    for frame in ({"type": "no-such-frame"}, {"type": "subscribe"}, {"type": "unsubscribe"},
                  {"type": "subscribe", "room": 42}, {"type": "publish", "data": {"x": 1}}):
        answer = await ws.request(frame)
        assert answer["type"] == "error" and answer["code"] == "INVALID_REQUEST", (frame, answer)
    mark = ws.mark()
    await ws.send({"type": "no-such-frame"})
    err = await ws.wait(typed("error"), after=mark)
    assert err["code"] == "INVALID_REQUEST" and "ref" not in err, err
    # publish requires an id
    mark = ws.mark()
    await ws.send({"type": "publish", "room": uid("r"), "data": {}})
    err = await ws.wait(typed("error"), after=mark)
    assert err["code"] == "INVALID_REQUEST" and "ref" not in err, err
    await ws.assert_alive()


async def test_hello_frame_is_answered_ok_or_unsupported_protocol(pool, tokens):
    ws, _ = await _pair(pool, tokens)
    ok = await ws.request({"type": "hello", "protocolVersion": 1, "deviceId": "d1", "clientId": "c1"})
    assert ok["type"] == "ok", ok
    bad = await ws.request({"type": "hello", "protocolVersion": 2})
    assert bad["type"] == "error" and bad["code"] == "UNSUPPORTED_PROTOCOL", bad
    mark = ws.mark()
    await ws.send({"type": "hello", "protocolVersion": 1})
    await ws.quiet(typed("ok"), after=mark, desc="ok for a frame without id")
    await ws.assert_alive()


async def test_every_frame_with_an_id_gets_exactly_one_answer(pool, tokens):
    ws, _ = await _pair(pool, tokens)
    room = uid("one")
    frames = [
        {"type": "ping"}, {"type": "hello", "protocolVersion": 1}, {"type": "subscribe", "room": room},
        {"type": "unsubscribe", "room": room}, {"type": "no-such-frame"}, {"type": "subscribe"},
        {"type": "publish", "room": room, "data": {"x": 1}}, {"type": "hello", "protocolVersion": 9},
        {"type": "auth", "token": tokens.bad("malformed")},
    ]
    ids = []
    mark = ws.mark()
    for frame in frames:
        frame["id"] = fid(frame["type"])
        ids.append(frame["id"])
        await ws.send(frame)
    await ws.wait_n(lambda f: f.get("ref") in ids, len(ids), after=mark, desc="answers")
    await ws.quiet(lambda f: False, within=config.QUIET)
    refs = [f["ref"] for f in ws.frames[mark:] if f.get("ref") in ids]
    assert sorted(refs) == sorted(ids), f"each id answered exactly once: {refs}"


async def test_frame_over_max_frame_bytes_closes_1009(pool, tokens):
    ws, bystander = await _pair(pool, tokens)
    await ws.send({"type": "ping", "id": "big", "pad": "x" * 2048})
    await ws.closed_with(1009, "MESSAGE_TOO_BIG")
    await bystander.assert_alive()
    # just under the limit is fine
    fine = await chat(pool(SMALL_FRAMES), tokens.mint("agent"))
    answer = await fine.request({"type": "ping", "pad": "x" * 800})
    assert answer["type"] == "pong"


@pytest.mark.parametrize("how", ["binary", "text"])
async def test_invalid_utf8_closes_1007(pool, tokens, how):
    ws, bystander = await _pair(pool, tokens)
    payload = b'{"type":"ping","id":"u","x":"\xff\xfe\xc3"}'
    await ws.send_raw(payload, text=(how == "text"))
    await ws.closed_with(1007, "INVALID_UTF8")
    await bystander.assert_alive()
