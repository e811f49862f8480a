"""WebSocket handshake (PROTOCOL.md §3): the failure table in both
`auth.handshake_errors` modes, non-upgrade requests, `limits.max_connections`,
and the three token sources with their precedence (no fallback)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest

from harness.http import body_of, call, customer_token, error_of, publish
from harness.node import Node
from harness.tokens import BAD_KINDS, Minter, uid
from harness.ws import Client, Rejected, bounded_poll, chat, open_ws, placement, push, typed

CLOSE_FOR = {"TOKEN_EXPIRED": 4002, "TOKEN_INVALID": 4003, "TOKEN_MALFORMED": 4003, "TOKEN_REVOKED": 4005}


@pytest.fixture(params=["http", "close"])
def mode(request, pool):
    """(mode, node) for both values of auth.handshake_errors."""
    return request.param, pool({"CHAT__AUTH__HANDSHAKE_ERRORS": request.param})


async def expect_refusal(mode: str, node: Node, path: str, *, query: str | None = None, headers=None,
                         subprotocols=None, status: int, code: str, close: int) -> None:
    """The handshake fails as the table says for ``mode``."""
    url = node.ws_url(path, query)
    try:
        ws = await open_ws(url, headers=headers, subprotocols=subprotocols, label=f"{mode}-refusal")
    except Rejected as rej:
        assert mode == "http", f'handshake_errors = "close" must accept the upgrade; got HTTP {rej.status} {rej.body!r}'
        assert rej.status == status, f"expected HTTP {status} {code}, got {rej.status} {rej.body!r}"
        assert rej.headers.get("x-websocket-error-code") == code, rej.headers
        assert (rej.headers.get("x-websocket-error-message") or "").strip(), rej.headers
        body = rej.json()
        assert isinstance(body, dict) and body.get("error") == code, rej.body
        assert isinstance(body.get("message"), str) and body["message"].strip(), rej.body
        return
    if mode == "http":
        await ws.close()
        pytest.fail(f"upgrade accepted; expected HTTP {status} {code}; frames {ws.frames[:2]}")
    await ws.closed_with(close, code)
    assert ws.frames == [] and ws.raw == [], f"nothing may be sent before the close: {ws.frames} {ws.raw}"


# ------------------------------------------------------------------ the table
@dataclass
class Row:
    name: str
    path: str
    token: Callable[[Minter], str | None]
    via: str  # token source: header | subprotocol | query
    rooms: str | None  # the roomIds query value on /ws (None: absent)
    status: int
    code: str
    close: int


def _device(t: Minter, rooms=("*",)) -> str:
    return t.mint("device", rooms=list(rooms))


ROWS = [
    Row("push-no-token", "/ws", lambda t: None, "query", "r1", 401, "MISSING_TOKEN", 4001),
    Row("push-no-roomids", "/ws", _device, "query", None, 401, "MISSING_ROOM", 4000),
    Row("push-empty-roomids", "/ws", _device, "query", "", 401, "MISSING_ROOM", 4000),
    Row("push-room-not-granted", "/ws", lambda t: _device(t, ["granted.*"]), "query", "other.x", 403, "FORBIDDEN",
        4004),
    Row("push-second-room-not-granted", "/ws", lambda t: _device(t, ["granted.*"]), "query", "granted.a,other.b",
        403, "FORBIDDEN", 4004),
]
_SOURCES = ["header", "subprotocol", "query"]
for i, (kind, code) in enumerate(BAD_KINDS.items()):
    ROWS.append(Row(f"push-{kind}", "/ws", lambda t, k=kind: t.bad(k, "device"), _SOURCES[(i + 1) % 3], "r1",
                    401, code, CLOSE_FOR[code]))
    ROWS.append(Row(f"chat-{kind}", "/ws/chat", lambda t, k=kind: t.bad(k, "agent"), _SOURCES[i % 3], None,
                    401, code, CLOSE_FOR[code]))


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.name}-via-{r.via}" for r in ROWS])
async def test_handshake_failure_table(mode, tokens, row):
    name, node = mode
    headers, protos, query = placement(row.token(tokens), row.via)
    if row.rooms is not None:
        query = "&".join(p for p in (query, f"roomIds={row.rooms}") if p)
    await expect_refusal(name, node, row.path, query=query, headers=headers, subprotocols=protos,
                         status=row.status, code=row.code, close=row.close)


async def test_revoked_token_fails_the_handshake(mode):
    name, node = mode
    issued = await customer_token(node)
    assert (await call(node, "POST", "/api/v1/auth/logout", token=issued["token"])).status_code == 204
    for via in ("header", "query"):
        headers, protos, query = placement(issued["token"], via)
        await expect_refusal(name, node, "/ws/chat", query=query, headers=headers, subprotocols=protos,
                             status=401, code="TOKEN_REVOKED", close=4005)


@pytest.mark.parametrize("path", ["/ws/chat", "/ws"])
async def test_plain_get_is_400_invalid_request(mode, tokens, path):
    _, node = mode
    params = {"token": _device(tokens), "roomIds": "r1"} if path == "/ws" else None
    error_of(await call(node, "GET", path, params=params), 400, "INVALID_REQUEST")


async def test_tokenless_chat_is_accepted_in_both_modes(mode):
    _, node = mode
    ws = await chat(node, None)
    hello = ws.of("hello")[0]
    assert hello["authenticated"] is False and not hello.get("user"), hello
    await ws.assert_alive()


# ------------------------------------------------------------------ max_connections
async def test_max_connections_http_503_server_busy(start_node, tokens):
    node = start_node({"CHAT__LIMITS__MAX_CONNECTIONS": "2"})
    first = await chat(node, None, label="first")
    await push(node, _device(tokens), "busy.a", label="second")
    for path, query in (("/ws/chat", None), ("/ws", f"token={_device(tokens)}&roomIds=busy.b")):
        try:
            ws = await open_ws(node.ws_url(path, query), label="third")
        except Rejected as rej:
            assert rej.status == 503 and rej.headers.get("x-websocket-error-code") == "SERVER_BUSY", rej
            assert (rej.headers.get("retry-after") or "").strip(), f"503 needs Retry-After: {rej.headers}"
            assert (rej.json() or {}).get("error") == "SERVER_BUSY", rej.body
        else:
            pytest.fail(f"a third connection to {path} was accepted over limits.max_connections = 2 ({ws.frames[:1]})")
    assert (await call(node, "GET", "/healthz")).status_code == 200, "HTTP requests are not connections"
    await first.assert_alive()
    await first.close()

    async def admitted() -> Client | None:
        try:
            return await open_ws(node.ws_url("/ws/chat"), label="after-a-slot-freed")
        except Rejected:
            return None

    ws = await bounded_poll(admitted, desc="admission once a connection closed")
    await ws.wait(typed("hello"))


async def test_max_connections_close_mode_1013(start_node, tokens):
    node = start_node({"CHAT__LIMITS__MAX_CONNECTIONS": "1", "CHAT__AUTH__HANDSHAKE_ERRORS": "close"})
    first = await push(node, _device(tokens), "busy.a", label="first")
    await expect_refusal("close", node, "/ws/chat", status=503, code="SERVER_BUSY", close=1013)
    assert first.is_open


# ------------------------------------------------------------------ token sources
@pytest.mark.parametrize("via", ["header", "subprotocol", "query"])
async def test_chat_token_sources(gw, tokens, via):
    sub = uid("agent")
    ws = await chat(gw, tokens.mint("agent", sub, "Source Agent"), via=via)
    if via == "subprotocol":
        assert ws.subprotocol == "chat.v1", "offered `chat.v1, bearer.T`: the server selects chat.v1"
    user = ws.of("hello")[0].get("user") or {}
    assert (user.get("id"), user.get("role"), user.get("name")) == (sub, "agent", "Source Agent"), ws.dump()


@pytest.mark.parametrize("via", ["header", "subprotocol", "query"])
async def test_push_token_sources(gw, tokens, via):
    room = f"src.{uid(via)}"
    headers, protos, query = placement(tokens.mint("device", rooms=["src.*"]), via)
    query = "&".join(p for p in (query, f"roomIds={room}") if p)
    ws = await open_ws(gw.ws_url("/ws", query), headers=headers, subprotocols=protos, label=f"push-{via}")
    if via == "subprotocol":
        assert ws.subprotocol == "chat.v1"
    await ws.wait(typed("hello"))
    seq = body_of(await publish(gw, room, {"via": via}), 202)["seq"]
    notice = await ws.wait(typed("notice", room=room))
    assert notice["seq"] == seq and notice["data"] == {"via": via}


async def test_header_beats_subprotocol_beats_query(gw, tokens):
    a, b, c = uid("first"), uid("second"), uid("third")
    ws = await open_ws(gw.ws_url("/ws/chat", f"token={tokens.mint('agent', c)}"),
                       headers={"Authorization": f"Bearer {tokens.mint('agent', a)}"},
                       subprotocols=["chat.v1", f"bearer.{tokens.mint('agent', b)}"], label="all-three")
    assert (await ws.wait(typed("hello")))["user"]["id"] == a
    ws = await open_ws(gw.ws_url("/ws/chat", f"token={tokens.mint('agent', c)}"),
                       subprotocols=["chat.v1", f"bearer.{tokens.mint('agent', b)}"], label="two")
    assert ws.subprotocol == "chat.v1"
    assert (await ws.wait(typed("hello")))["user"]["id"] == b


async def test_a_bad_first_source_never_falls_back(gw, tokens):
    good = tokens.mint("agent")
    bad = tokens.bad("bad-signature", "agent")
    await expect_refusal("http", gw, "/ws/chat", query=f"token={good}", headers={"Authorization": f"Bearer {bad}"},
                         status=401, code="TOKEN_INVALID", close=4003)
    await expect_refusal("http", gw, "/ws/chat", query=f"token={good}", subprotocols=["chat.v1", f"bearer.{bad}"],
                         status=401, code="TOKEN_INVALID", close=4003)
    await expect_refusal("http", gw, "/ws", query=f"token={good}&roomIds=r1",
                         headers={"Authorization": f"Bearer {tokens.bad('malformed')}"},
                         status=401, code="TOKEN_MALFORMED", close=4003)
