"""Push-service compatibility routes (PROTOCOL.md §2, §3): `GET /get/token`
(device tokens) and `GET /heartbeat?token=` (liveness for `/ws` connections)."""

from __future__ import annotations

import asyncio
import time

import pytest

from harness import config
from harness.http import SERVICE, body_of, call, publish
from harness.tokens import assert_lifetime, uid
from harness.ws import Rejected, open_ws, push, typed

HEARTBEAT = {"CHAT__HEARTBEAT__INTERVAL_SECS": "1", "CHAT__HEARTBEAT__TIMEOUT_SECS": "2"}
BAD_PARAMS = {"data": "Invalid request parameters"}
TOKEN_ERROR = {"data": "token error"}


async def get_token(node, params, token=None):
    return await call(node, "GET", "/get/token", params=params, token=token)


async def test_device_token_for_a_device_id(gw):
    device = uid("dev")
    t0 = time.time()
    body = body_of(await get_token(gw, {"isLogin": "false", "deviceId": device}), 200)
    t1 = time.time()
    assert set(body) == {"data"} and isinstance(body["data"], str), body
    claims = gw.tokens.verify(body["data"])
    assert (claims["role"], claims["sub"]) == ("device", device), claims
    assert claims.get("rooms") == ["*"], f"rooms.device_grants defaults to [\"*\"]: {claims}"
    assert_lifetime(claims, config.DEVICE_TTL, (t0, t1), "device token")
    room = uid("any")
    ws = await push(gw, body["data"], room)
    seq = body_of(await publish(gw, room, "hi"), 202)["seq"]
    assert (await ws.wait(typed("notice", room=room)))["seq"] == seq


async def test_device_token_rooms_follow_device_grants(pool):
    node = pool({"CHAT__ROOMS__DEVICE_GRANTS": "news.*,alerts"})
    token = body_of(await get_token(node, {"isLogin": "false", "deviceId": uid("dev")}), 200)["data"]
    assert node.tokens.verify(token)["rooms"] == ["news.*", "alerts"]
    await push(node, token, "news.today,alerts")
    with pytest.raises(Rejected) as refused:
        await open_ws(node.ws_url("/ws", f"token={token}&roomIds=sports"))
    assert refused.value.status == 403 and refused.value.headers.get("x-websocket-error-code") == "FORBIDDEN"


async def test_login_device_token_for_the_bearers_own_user(gw, tokens):
    user = uid("user")
    body = body_of(await get_token(gw, {"isLogin": "true", "userId": user}, token=tokens.mint("customer", user,
                                                                                                channel="web")), 200)
    claims = gw.tokens.verify(body["data"])
    assert (claims["role"], claims["sub"]) == ("device", user), claims
    other = uid("user")
    body = body_of(await get_token(gw, {"isLogin": "true", "userId": other}, token=SERVICE), 200)
    assert gw.tokens.verify(body["data"])["sub"] == other


@pytest.mark.parametrize("bearer", ["none", "other-user", "bad-signature", "expired"])
async def test_login_device_token_refusals(gw, tokens, bearer):
    user = uid("user")
    token = {"none": None, "other-user": tokens.mint("agent", uid("else")),
             "bad-signature": tokens.bad("bad-signature", "agent", sub=user),
             "expired": tokens.bad("expired", "agent", sub=user)}[bearer]
    resp = await get_token(gw, {"isLogin": "true", "userId": user}, token=token)
    assert resp.status_code == 401 and resp.json() == TOKEN_ERROR, resp.text


@pytest.mark.parametrize("params", [
    {}, {"isLogin": "false"}, {"isLogin": "false", "deviceId": ""}, {"deviceId": "d1"},
    {"isLogin": "maybe", "deviceId": "d1"}, {"isLogin": "true"},
], ids=["none", "no-device-id", "empty-device-id", "no-islogin", "bad-islogin", "no-user-id"])
async def test_get_token_bad_parameters(gw, params):
    resp = await get_token(gw, params, token=SERVICE if params.get("isLogin") == "true" else None)
    assert resp.status_code == 400 and resp.json() == BAD_PARAMS, resp.text


# ------------------------------------------------------------------ /heartbeat
async def test_heartbeat_route(gw, tokens):
    resp = await call(gw, "GET", "/heartbeat", params={"token": tokens.mint("device", rooms=["*"])})
    assert resp.status_code == 200 and resp.json() == {}, resp.text
    for kind in ("bad-signature", "expired", "malformed"):
        resp = await call(gw, "GET", "/heartbeat", params={"token": tokens.bad(kind)})
        assert resp.status_code == 401 and resp.json() == TOKEN_ERROR, (kind, resp.text)


@pytest.mark.slow
async def test_heartbeat_route_keeps_a_push_connection_alive(pool, tokens):
    node = pool(HEARTBEAT)
    token = tokens.mint("device", rooms=["*"])
    kept = await push(node, token, uid("hb"), label="kept-by-http")
    kept.suppress_pongs = True
    control = await push(node, tokens.mint("device", rooms=["*"]), uid("hb"), label="control")
    control.suppress_pongs = True

    async def beat() -> bool:
        resp = await call(node, "GET", "/heartbeat", params={"token": token})
        assert resp.status_code == 200, resp.text
        return not control.is_open

    deadline = time.monotonic() + 2 + 1 + config.SLACK
    while await beat() is False:
        assert time.monotonic() < deadline, f"control connection never timed out: {control.dump()}"
        await asyncio.sleep(0.4)
    await control.closed_with(4010, "HEARTBEAT_TIMEOUT", timeout=0.1)
    for _ in range(6):  # 2.4 s more: past another full timeout
        await beat()
        await asyncio.sleep(0.4)
    assert kept.is_open, f"GET /heartbeat counts as liveness for T's /ws connections: {kept.dump()}"
    await kept.closed_with(4010, "HEARTBEAT_TIMEOUT", timeout=2 + 1 + config.SLACK)
