"""Token REST routes (PROTOCOL.md §1, §2): customer-token and its per-IP limit,
validate-token, refresh rotation and token families, agent login and lock-out,
logout, and the admin agents route."""

from __future__ import annotations

import asyncio
import socket
import time

import jwt
import pytest

from harness import config
from harness.http import (
    SERVICE, body_of, call, create_agent, customer_token, epoch, error_of, login, new_agent, validate,
)
from harness.tokens import BAD_KINDS, Minter, assert_lifetime, uid
from harness.ws import chat

CUSTOMER_TOKEN = "/api/v1/public/customer-token"


# ------------------------------------------------------------------ customer-token
async def test_customer_token_answers_201_with_a_24h_customer_token(gw):
    t0 = time.time()
    body = body_of(await call(gw, "POST", CUSTOMER_TOKEN, json={
        "name": "Ann Lee", "channel": "web", "email": "ann@example.test", "phone": "+100", "channelUserId": "u1"}), 201)
    t1 = time.time()
    for key in ("customerId", "token", "refreshToken", "sessionId", "expiresAt"):
        assert isinstance(body.get(key), str) and body[key], f"{key} missing: {body}"
    assert body["refreshToken"] != body["token"]
    claims = gw.tokens.verify(body["token"])
    assert claims["role"] == "customer"
    assert claims["sub"] == body["customerId"]
    assert claims["sid"] == body["sessionId"]
    assert claims["name"] == "Ann Lee"
    assert claims["channel"] == "web"
    assert_lifetime(claims, config.CUSTOMER_TTL, (t0, t1), "customer token")
    assert abs(epoch(body["expiresAt"]) - claims["exp"]) <= 1


async def test_each_customer_token_call_is_a_new_customer_and_session(gw):
    a = await customer_token(gw, "Same Name")
    b = await customer_token(gw, "Same Name")
    assert a["customerId"] != b["customerId"] and a["sessionId"] != b["sessionId"]


@pytest.mark.parametrize("payload", [
    {}, {"channel": "web"}, {"name": "No Channel"}, {"name": "", "channel": "web"}, {"name": 7, "channel": "web"},
    {"name": "Bob", "channel": ["web"]}, ["name", "channel"], "{not json",
], ids=["empty", "no-name", "no-channel", "empty-name", "name-number", "channel-list", "array", "bad-json"])
async def test_customer_token_rejects_invalid_requests(gw, payload):
    if isinstance(payload, str):
        resp = await call(gw, "POST", CUSTOMER_TOKEN, content=payload, headers={"Content-Type": "application/json"})
    else:
        resp = await call(gw, "POST", CUSTOMER_TOKEN, json=payload)
    error_of(resp, 400, "INVALID_REQUEST")


def _other_loopback() -> str | None:
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
        return "127.0.0.2"
    except OSError:
        return None


async def test_customer_token_is_rate_limited_per_client_ip(start_node):
    """limits.token_requests_per_min = 3: from one IP the first 3 pass; within 2N+1 calls
    (a window boundary may fall inside the burst) at least one is 429 RATE_LIMITED."""
    node = start_node({"CHAT__LIMITS__TOKEN_REQUESTS_PER_MIN": "3"})
    statuses = []
    for i in range(7):
        resp = await call(node, "POST", CUSTOMER_TOKEN, json={"name": f"Burst {i}", "channel": "web"})
        if resp.status_code == 429:
            error_of(resp, 429, "RATE_LIMITED")
        statuses.append(resp.status_code)
    assert statuses[:3] == [201] * 3, statuses
    assert 429 in statuses and set(statuses) <= {201, 429} and statuses.count(201) <= 6, statuses
    # Other routes are not limited by it, and the limit is per IP.
    assert (await call(node, "GET", "/healthz")).status_code == 200
    if (other := _other_loopback()) is not None:
        resp = await call(node, "POST", CUSTOMER_TOKEN, json={"name": "Elsewhere", "channel": "web"},
                          local_address=other)
        assert resp.status_code == 201, f"a second client IP must have its own budget: {resp.text}"


# ------------------------------------------------------------------ validate-token
async def test_validate_customer_token_from_query(gw):
    issued = await customer_token(gw, "Val Kim", "whatsapp")
    body = await validate(gw, issued["token"])
    assert body["valid"] is True, body
    assert body["type"] == "customer"
    assert body["customerId"] == issued["customerId"]
    assert body["name"] == "Val Kim"
    assert body["channel"] == "whatsapp"
    assert abs(epoch(body["expiresAt"]) - epoch(issued["expiresAt"])) <= 1


async def test_validate_agent_token_from_authorization_header(gw, tokens):
    agent_id = uid("agent")
    token = tokens.mint("agent", agent_id, "Agent Smith")
    body = body_of(await call(gw, "GET", "/api/v1/public/validate-token", token=token), 200)
    assert body["valid"] is True, body
    assert (body["type"], body["agentId"], body["name"]) == ("agent", agent_id, "Agent Smith"), body
    assert abs(epoch(body["expiresAt"]) - tokens.verify(token)["exp"]) <= 1


@pytest.mark.parametrize("role", ["device", "service"])
async def test_validate_other_roles_report_user_id(gw, tokens, role):
    sub = uid(role)
    token = tokens.mint(role, sub, f"The {role}")
    body = await validate(gw, token)
    assert body["valid"] is True, body
    assert (body["type"], body["userId"], body["name"]) == (role, sub, f"The {role}"), body
    assert abs(epoch(body["expiresAt"]) - tokens.verify(token)["exp"]) <= 1


@pytest.mark.parametrize("kind", sorted(BAD_KINDS))
@pytest.mark.parametrize("source", ["query", "header"])
async def test_validate_reports_each_token_error(gw, tokens, kind, source):
    token = tokens.bad(kind, role="customer")
    if source == "query":
        resp = await call(gw, "GET", "/api/v1/public/validate-token", params={"token": token})
    else:
        resp = await call(gw, "GET", "/api/v1/public/validate-token", token=token)
    body = body_of(resp, 200)
    assert body["valid"] is False and body["error"] == BAD_KINDS[kind], body
    assert isinstance(body.get("message"), str) and body["message"].strip(), body
    if kind == "malformed":
        text = body["message"].lower()
        assert "header.payload.signature" in text, f"TOKEN_MALFORMED must name the JWT shape: {body}"


async def test_validate_without_token_is_missing_token(gw):
    body = body_of(await call(gw, "GET", "/api/v1/public/validate-token"), 200)
    assert body["valid"] is False and body["error"] == "MISSING_TOKEN", body


async def test_leeway_covers_recent_expiry_and_is_configurable(gw, start_node, tokens):
    recently_expired = tokens.mint("agent", exp=time.time() - 10)
    assert (await validate(gw, recently_expired))["valid"] is True, "default auth.leeway_secs is 30"
    strict = start_node({"CHAT__AUTH__LEEWAY_SECS": "0"})
    body = await validate(strict, recently_expired)
    assert body["valid"] is False and body["error"] == "TOKEN_EXPIRED", body


async def test_every_configured_key_verifies(start_node):
    """Key rotation: tokens signed with any configured key are valid; new ones use signing_kid."""
    keys = {config.KID: config.SECRET, config.OTHER_KID: config.OTHER_SECRET}
    node = start_node(keys=keys)
    old = Minter(keys, kid=config.OTHER_KID).mint("agent", "rotated-agent")
    body = await validate(node, old)
    assert body["valid"] is True and body["agentId"] == "rotated-agent", body
    issued = await customer_token(node)
    assert Minter(keys).verify(issued["token"])["sub"] == issued["customerId"]
    assert jwt.get_unverified_header(issued["token"]).get("kid") == config.KID


# ------------------------------------------------------------------ refresh: customers
async def test_customer_refresh_rotates_tokens(gw):
    issued = await customer_token(gw, "Rita")
    route = f"/api/v1/customers/{issued['customerId']}/token"
    body = body_of(await call(gw, "POST", route, json={"refreshToken": issued["refreshToken"]}), 200)
    for key in ("customerId", "token", "refreshToken", "expiresAt"):
        assert isinstance(body.get(key), str) and body[key], f"{key} missing: {body}"
    assert body["customerId"] == issued["customerId"]
    assert body["refreshToken"] != issued["refreshToken"], "refresh tokens rotate on every use"
    claims = gw.tokens.verify(body["token"])
    assert (claims["role"], claims["sub"]) == ("customer", issued["customerId"])
    assert claims.get("sid") == issued["sessionId"] and claims.get("name") == "Rita", claims
    assert abs(epoch(body["expiresAt"]) - claims["exp"]) <= 1
    assert (await validate(gw, body["token"]))["valid"] is True
    # The rotated refresh token works in turn.
    again = body_of(await call(gw, "POST", route, json={"refreshToken": body["refreshToken"]}), 200)
    assert again["refreshToken"] not in (body["refreshToken"], issued["refreshToken"])


async def test_refresh_token_reuse_revokes_the_whole_family(gw):
    issued = await customer_token(gw)
    route = f"/api/v1/customers/{issued['customerId']}/token"
    rotated = body_of(await call(gw, "POST", route, json={"refreshToken": issued["refreshToken"]}), 200)
    live = await chat(gw, rotated["token"], label="family-member")
    bystander = await chat(gw, (await customer_token(gw))["token"], label="bystander")

    error_of(await call(gw, "POST", route, json={"refreshToken": issued["refreshToken"]}), 401, "TOKEN_REVOKED")

    await live.closed_with(4005, "TOKEN_REVOKED")
    for token in (issued["token"], rotated["token"]):
        body = await validate(gw, token)
        assert body["valid"] is False and body["error"] == "TOKEN_REVOKED", body
    # The newest refresh token of the family is dead too.
    resp = await call(gw, "POST", route, json={"refreshToken": rotated["refreshToken"]})
    error_of(resp, 401, ("TOKEN_REVOKED", "INVALID_REFRESH_TOKEN"))
    await bystander.assert_alive()


async def test_customer_refresh_refuses_unknown_and_foreign_tokens(gw):
    a = await customer_token(gw)
    b = await customer_token(gw)
    route_b = f"/api/v1/customers/{b['customerId']}/token"
    error_of(await call(gw, "POST", route_b, json={"refreshToken": "rt-" + uid("unknown")}), 401,
             "INVALID_REFRESH_TOKEN")
    error_of(await call(gw, "POST", route_b, json={"refreshToken": a["refreshToken"]}), 401, "INVALID_REFRESH_TOKEN")
    # A's refresh token was not spent (nor its family revoked) by that attempt.
    route_a = f"/api/v1/customers/{a['customerId']}/token"
    body = body_of(await call(gw, "POST", route_a, json={"refreshToken": a["refreshToken"]}), 200)
    assert body["customerId"] == a["customerId"]


# ------------------------------------------------------------------ refresh: generic
async def test_generic_refresh_rotates_agent_tokens(gw):
    agent = await new_agent(gw)
    first = body_of(await login(gw, agent["username"], agent["password"]), 200)
    body = body_of(await call(gw, "POST", "/api/v1/auth/refresh", json={"refreshToken": first["refreshToken"]}), 200)
    for key in ("token", "refreshToken", "expiresAt"):
        assert isinstance(body.get(key), str) and body[key], f"{key} missing: {body}"
    assert body["refreshToken"] != first["refreshToken"]
    claims = gw.tokens.verify(body["token"])
    assert (claims["role"], claims["sub"]) == ("agent", agent["id"]), claims
    assert abs(epoch(body["expiresAt"]) - claims["exp"]) <= 1
    # re-use of the spent one revokes the family
    live = await chat(gw, body["token"], label="agent")
    error_of(await call(gw, "POST", "/api/v1/auth/refresh", json={"refreshToken": first["refreshToken"]}), 401,
             "TOKEN_REVOKED")
    await live.closed_with(4005, "TOKEN_REVOKED")
    assert (await validate(gw, first["token"]))["error"] == "TOKEN_REVOKED"


async def test_generic_refresh_accepts_customer_tokens_and_refuses_unknown(gw):
    issued = await customer_token(gw)
    body = body_of(await call(gw, "POST", "/api/v1/auth/refresh", json={"refreshToken": issued["refreshToken"]}), 200)
    assert gw.tokens.verify(body["token"])["sub"] == issued["customerId"]
    error_of(await call(gw, "POST", "/api/v1/auth/refresh", json={"refreshToken": "nope-" + uid("x")}), 401,
             "INVALID_REFRESH_TOKEN")


# ------------------------------------------------------------------ login
async def test_login_answers_an_8h_agent_token(gw):
    agent = await new_agent(gw, "Agent Lin")
    t0 = time.time()
    body = body_of(await login(gw, agent["username"], agent["password"]), 200)
    t1 = time.time()
    assert body["agentId"] == agent["id"] and body["name"] == "Agent Lin", body
    assert isinstance(body.get("refreshToken"), str) and body["refreshToken"], body
    claims = gw.tokens.verify(body["token"])
    assert (claims["role"], claims["sub"], claims["name"]) == ("agent", agent["id"], "Agent Lin"), claims
    assert_lifetime(claims, config.AGENT_TTL, (t0, t1), "agent token")
    assert abs(epoch(body["expiresAt"]) - claims["exp"]) <= 1


async def test_login_refuses_bad_credentials(gw):
    agent = await new_agent(gw)
    error_of(await login(gw, agent["username"], agent["password"] + "x"), 401, "INVALID_CREDENTIALS")
    error_of(await login(gw, "nobody_" + uid("u"), "whatever"), 401, "INVALID_CREDENTIALS")
    # one failure does not lock anyone out
    body_of(await login(gw, agent["username"], agent["password"]), 200)


@pytest.mark.slow
async def test_login_lockout_after_failures_until_the_window_passes(start_node):
    node = start_node({"CHAT__AUTH__LOCKOUT_AFTER_FAILURES": "3", "CHAT__AUTH__LOCKOUT_SECS": "2"})
    agent = await new_agent(node)
    other = await new_agent(node)
    for _ in range(3):
        error_of(await login(node, agent["username"], "wrong"), 401, "INVALID_CREDENTIALS")
    error_of(await login(node, agent["username"], agent["password"]), 429, "RATE_LIMITED")
    body_of(await login(node, other["username"], other["password"]), 200)  # per username
    deadline = time.monotonic() + 2 + config.SLACK * 2
    while True:
        resp = await login(node, agent["username"], agent["password"])
        if resp.status_code == 200 or time.monotonic() > deadline:
            break
        error_of(resp, 429, "RATE_LIMITED")
        await asyncio.sleep(0.25)
    body_of(resp, 200)


# ------------------------------------------------------------------ logout
async def test_logout_revokes_the_family_and_closes_its_connections(gw, tokens):
    agent = await new_agent(gw)
    session = body_of(await login(gw, agent["username"], agent["password"]), 200)
    chat_ws = await chat(gw, session["token"], label="agent-chat")
    customer = await customer_token(gw)
    cust_ws = await chat(gw, customer["token"], label="customer-chat")
    bystander = await chat(gw, tokens.mint("agent"), label="bystander")

    assert (await call(gw, "POST", "/api/v1/auth/logout", token=customer["token"])).status_code == 204
    await cust_ws.closed_with(4005, "TOKEN_REVOKED")
    assert (await call(gw, "POST", "/api/v1/auth/logout", token=session["token"])).status_code == 204
    await chat_ws.closed_with(4005, "TOKEN_REVOKED")

    for token in (customer["token"], session["token"]):
        assert (await validate(gw, token))["error"] == "TOKEN_REVOKED"
    resp = await call(gw, "POST", "/api/v1/auth/refresh", json={"refreshToken": session["refreshToken"]})
    error_of(resp, 401, ("TOKEN_REVOKED", "INVALID_REFRESH_TOKEN"))
    await bystander.assert_alive()


@pytest.mark.parametrize("token", [None, "bad"])
async def test_logout_needs_a_valid_token(gw, tokens, token):
    bearer = tokens.bad("bad-signature") if token == "bad" else None
    resp = await call(gw, "POST", "/api/v1/auth/logout", token=bearer)
    assert resp.status_code == 401, resp.text


# ------------------------------------------------------------------ admin agents
async def test_admin_creates_agents_that_can_log_in(gw):
    username = f"agent_{uid('adm')}"
    agent_id = await create_agent(gw, username, "s3cret-pass", "Admin Made")
    body = body_of(await login(gw, username, "s3cret-pass"), 200)
    assert body["agentId"] == agent_id
    resp = await call(gw, "POST", "/api/v1/admin/agents", token=SERVICE,
                      json={"username": username, "password": "another-pass", "name": "Twin"})
    error_of(resp, 409, "ALREADY_EXISTS")


@pytest.mark.parametrize("payload", [
    {}, {"password": "long-enough-1", "name": "n"}, {"username": "u_x", "name": "n"},
    {"username": "u_y", "password": "long-enough-1"}, {"username": 5, "password": "long-enough-1", "name": "n"},
], ids=["empty", "no-username", "no-password", "no-name", "username-number"])
async def test_admin_agents_rejects_invalid_requests(gw, payload):
    payload = {k: (f"{v}_{uid('u')}" if k == "username" and isinstance(v, str) else v) for k, v in payload.items()}
    error_of(await call(gw, "POST", "/api/v1/admin/agents", token=SERVICE, json=payload), 400, "INVALID_REQUEST")


async def test_admin_agents_needs_the_service_token(gw, tokens):
    payload = {"username": f"agent_{uid('n')}", "password": "long-enough-1", "name": "n"}
    assert (await call(gw, "POST", "/api/v1/admin/agents", json=payload)).status_code == 401
    assert (await call(gw, "POST", "/api/v1/admin/agents", json=payload, token="svc-wrong")).status_code == 401
    resp = await call(gw, "POST", "/api/v1/admin/agents", json=payload, token=tokens.mint("agent"))
    assert resp.status_code in (401, 403), resp.text
    # none of these created the agent
    body_of(await call(gw, "POST", "/api/v1/admin/agents", json=payload, token=SERVICE), 201)
