"""Two nodes over a private redis-server (broker.kind = redis): what PROTOCOL.md
says holds "across the cluster" for the routes of this suite — room notices and
their seq, the presence route, and logout closing connections on every node."""

from __future__ import annotations

import secrets

import pytest

from harness.http import body_of, call, customer_token, presence, publish
from harness.tokens import uid
from harness.ws import bounded_poll, chat, push, typed

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(start_redis, start_node):
    redis = start_redis()
    service = f"svc-{secrets.token_urlsafe(18)}"
    env = {"CHAT__BROKER__KIND": "redis", "CHAT__REDIS__URL": redis.url}
    nodes = [start_node(env, node_id=f"cluster-{i}", service_token=service) for i in (1, 2)]
    for node in nodes:
        node.wait_ready()
    return nodes


async def test_notices_and_room_seq_span_the_cluster(cluster, tokens):
    a, b = cluster
    room = uid("cross")
    on_b = await push(b, tokens.mint("device", rooms=["*"]), room, label="push@b")
    on_a = await chat(a, tokens.mint("agent", rooms=["*"]), label="chat@a")
    assert (await on_a.request({"type": "subscribe", "room": room}))["type"] == "subscribed"

    async def member_seen():
        members = body_of(await presence(a, room), 200)["members"]
        return len(members) == 2

    await bounded_poll(member_seen, desc="both subscribers in the presence route of node a")
    s1 = body_of(await publish(a, room, {"from": "a"}), 202)["seq"]
    s2 = body_of(await publish(b, room, {"from": "b"}), 202)["seq"]
    assert s2 == s1 + 1, "room seq rises by 1 across the cluster"
    for ws in (on_a, on_b):
        got = await ws.wait_n(typed("notice", room=room), 2)
        assert [(n["seq"], n["data"]) for n in got] == [(s1, {"from": "a"}), (s2, {"from": "b"})], ws.dump()


async def test_logout_closes_connections_on_every_node(cluster):
    a, b = cluster
    issued = await customer_token(a)
    remote = await chat(b, issued["token"], label="customer@b")
    local = await chat(a, issued["token"], label="customer@a")
    assert (await call(a, "POST", "/api/v1/auth/logout", token=issued["token"])).status_code == 204
    await local.closed_with(4005, "TOKEN_REVOKED")
    await remote.closed_with(4005, "TOKEN_REVOKED")
    body = body_of(await call(b, "GET", "/api/v1/public/validate-token", params={"token": issued["token"]}), 200)
    assert body["valid"] is False and body["error"] == "TOKEN_REVOKED", body
