"""Support-chat helpers (PROTOCOL.md §2 sessions routes, §4 frames, §5 delivery).

* ``new_agent_user`` / ``new_customer``: an agent created through the admin API
  with the service token (its token minted with the test key, sub = agentId) and a
  customer from ``customer-token`` (which also opens a queued session);
* ``connect``: /ws/chat, waiting for ``hello`` and ``offline_messages_complete``;
  ``connect_slow`` opens it on a socket with a small SO_RCVBUF so that a client
  that pauses reading fills its buffers quickly;
* ``send``: a ``message`` frame, waiting for its ``ack``;
* ``view`` / ``assert_contiguous``: the seqs a connection saw for a session
  (its acks, ``message`` and ``offline_message`` frames) and the contiguity rule
  of §5.2/§5.3;
* thin wrappers around the sessions routes and a SESSION shape check.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

from websockets.asyncio.client import connect as ws_connect

from . import config
from . import ws as ws_module
from .http import SERVICE, body_of, call, customer_token, epoch, new_agent, show
from .ws import Client, Frame, fid, typed

# Tests that send many frames lift the per-connection rate limit.
FAST = {"CHAT__LIMITS__MESSAGES_PER_SEC": "10000", "CHAT__LIMITS__MESSAGES_BURST": "10000"}
MANUAL = {**FAST, "CHAT__ASSIGNMENT__MODE": "manual"}

SESSION_FIELDS = {"id", "customer", "status", "agentId", "createdAt", "lastMessage", "unread"}
MESSAGE_FIELDS = {"id", "sessionId", "seq", "from", "text", "ts", "clientMsgId"}


@dataclass
class User:
    id: str
    name: str
    role: str
    token: str
    session_id: str | None = None  # a customer's session from customer-token
    username: str | None = None
    password: str | None = None


async def new_agent_user(node: Any, name: str | None = None) -> User:
    account = await new_agent(node, name)
    token = node.tokens.mint("agent", account["id"], account["name"], ttl=3 * 3600)
    return User(account["id"], account["name"], "agent", token, username=account["username"],
                password=account["password"])


async def new_customer(node: Any, name: str | None = None, channel: str = "web") -> User:
    name = name or f"Cust {uuid.uuid4().hex[:6]}"
    body = await customer_token(node, name, channel)
    for key in ("customerId", "token", "sessionId"):
        assert isinstance(body.get(key), str) and body[key], f"customer-token answer lacks {key}: {body}"
    return User(body["customerId"], name, "customer", body["token"], session_id=body["sessionId"])


async def connect(node: Any, user: User | str, label: str | None = None) -> Client:
    """/ws/chat with the user's token; returns after ``hello`` and ``offline_messages_complete``."""
    from .ws import chat
    token = user if isinstance(user, str) else user.token
    return await chat(node, token, label=label or (user.name if isinstance(user, User) else "chat"))


async def connect_slow(node: Any, token: str, *, rcvbuf: int = 4096, label: str = "slow") -> Client:
    """/ws/chat (token in the header) on a socket whose SO_RCVBUF is ``rcvbuf``; waits for ``hello``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", node.port)),
                               config.OPEN_TIMEOUT)
        # the same connection class as harness.ws.open_ws uses, whichever that is
        recording = getattr(ws_module, "RecordingConnection", None)
        extra = {"create_connection": recording} if recording is not None else {}
        conn = await ws_connect(node.ws_url("/ws/chat"), additional_headers={"Authorization": f"Bearer {token}"},
                                compression=None, proxy=None, ping_interval=None, ping_timeout=None,
                                open_timeout=config.OPEN_TIMEOUT, close_timeout=2, max_size=16 * 1024 * 1024,
                                max_queue=None, sock=sock, **extra)
    except BaseException:
        sock.close()
        raise
    ws = Client(conn, label)
    await ws.wait(typed("hello"), desc="hello")
    return ws


def pause_reading(ws: Client) -> None:
    """Stop reading from the socket: the kernel buffers fill, then the server's queue."""
    ws.conn.transport.pause_reading()


def tcp_state(ws: Client) -> int | None:
    """The kernel's TCP state of the client socket (1 ESTABLISHED, 7 CLOSE, 8 CLOSE_WAIT), None once gone.

    Read with TCP_INFO, so that a server-side close (FIN or RST) is seen even while reading is paused."""
    transport = ws.conn.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return None
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    except OSError:
        return None


def resume_reading(ws: Client) -> None:
    ws.conn.transport.resume_reading()


# ------------------------------------------------------------------ messages
async def send(ws: Client, session_id: str, text: str, msg_id: str | None = None,
               timeout: float = config.FRAME_WAIT) -> Frame:
    """A ``message`` frame; returns its ``ack`` (AssertionError on any other answer)."""
    answer = await ws.request({"type": "message", "id": msg_id or fid("m"), "sessionId": session_id, "text": text},
                              timeout)
    assert answer.get("type") == "ack", f"{ws.label}: message to {session_id} answered {answer}\n{ws.dump()}"
    return answer


async def refused(ws: Client, frame: Frame, code: str) -> Frame:
    answer = await ws.request(frame)
    assert answer.get("type") == "error" and answer.get("code") == code, (
        f"{ws.label}: {frame.get('type')} expected error {code}, got {answer}")
    assert isinstance(answer.get("message"), str), answer
    return answer


def msgs(ws: Client, session_id: str | None = None, kinds: Iterable[str] = ("message",),
         after: int = 0) -> list[dict]:
    """MESSAGE objects of the given frame kinds, in arrival order."""
    kinds = tuple(kinds)
    return [f["message"] for f in ws.frames[after:]
            if f.get("type") in kinds and isinstance(f.get("message"), dict)
            and (session_id is None or f["message"].get("sessionId") == session_id)]


def view(ws: Client, session_id: str) -> list[tuple[str, int]]:
    """The connection's view of a session: (kind, seq) for its acks, messages and offline messages."""
    out: list[tuple[str, int]] = []
    for f in ws.frames:
        kind = f.get("type")
        if kind == "ack" and f.get("sessionId") == session_id:
            out.append(("ack", f["seq"]))
        elif kind in ("message", "offline_message") and f.get("message", {}).get("sessionId") == session_id:
            out.append((kind, f["message"]["seq"]))
    return out


def assert_contiguous(ws: Client, session_id: str) -> list[int]:
    """The union of the seqs of the connection's acks, messages and offline messages is contiguous from the
    first one seen, with no duplicate; deliveries (message/offline_message) come in ascending seq order.

    An own ack may overtake the delivery of an earlier seq, so acks are not ordered against deliveries.
    Returns the seqs seen, sorted."""
    seen = view(ws, session_id)
    delivered = [s for k, s in seen if k != "ack"]
    dups = sorted({s for s in delivered if delivered.count(s) > 1})
    assert not dups, f"{ws.label}: duplicate deliveries of seqs {dups} in session {session_id}: {seen}"
    assert delivered == sorted(delivered), f"{ws.label}: deliveries out of seq order in {session_id}: {seen}"
    seqs = sorted(s for _, s in seen)
    assert len(set(seqs)) == len(seqs), f"{ws.label}: a seq both acked and delivered in {session_id}: {seen}"
    if seqs:
        holes = sorted(set(range(seqs[0], seqs[-1] + 1)) - set(seqs))
        assert not holes, f"{ws.label}: view of {session_id} has gaps at {holes}: {seen}"
    return seqs


def assert_message(m: Any, session_id: str, sender: User | None = None) -> None:
    assert isinstance(m, dict) and MESSAGE_FIELDS <= set(m), f"MESSAGE lacks {MESSAGE_FIELDS - set(m or {})}: {m}"
    assert m["sessionId"] == session_id, m
    assert isinstance(m["seq"], int) and m["seq"] >= 1, m
    epoch(m["ts"], "message ts")
    if sender is not None:
        assert m["from"]["id"] == sender.id and m["from"]["role"] == sender.role, m
        assert m["from"]["name"] == sender.name, m


# ------------------------------------------------------------------ routes
async def sessions(node: Any, token: str, **params: Any) -> list[dict]:
    body = body_of(await call(node, "GET", "/api/v1/sessions", token=token, params=params or None), 200)
    assert isinstance(body, dict) and isinstance(body.get("sessions"), list), body
    return body["sessions"]


async def history(node: Any, token: str, session_id: str, **params: Any) -> dict:
    resp = await call(node, "GET", f"/api/v1/sessions/{session_id}/messages", token=token,
                      params={k: v for k, v in params.items() if v is not None} or None)
    body = body_of(resp, 200)
    assert body.get("sessionId") == session_id and isinstance(body.get("messages"), list), show(resp)
    assert isinstance(body.get("hasMore"), bool), show(resp)
    return body


async def session_action(node: Any, token: Any, session_id: str, action: str, **payload: Any) -> Any:
    return await call(node, "POST", f"/api/v1/sessions/{session_id}/{action}", token=token, json=payload or None)


def assert_session(s: Any, *, session_id: str | None = None, status: str | None = None,
                   agent_id: Any = ..., customer: User | None = None) -> dict:
    assert isinstance(s, dict) and SESSION_FIELDS <= set(s), f"SESSION lacks {SESSION_FIELDS - set(s or {})}: {s}"
    assert isinstance(s["customer"], dict) and {"id", "name", "channel"} <= set(s["customer"]), s
    assert s["status"] in ("queued", "assigned", "closed"), s
    epoch(s["createdAt"], "session createdAt")
    assert isinstance(s["unread"], int) and not isinstance(s["unread"], bool) and s["unread"] >= 0, s
    assert s["lastMessage"] is None or isinstance(s["lastMessage"], dict), s
    if session_id is not None:
        assert s["id"] == session_id, s
    if status is not None:
        assert s["status"] == status, f"expected status {status}: {s}"
    if agent_id is not ...:
        assert s["agentId"] == agent_id, f"expected agentId {agent_id}: {s}"
    if customer is not None:
        assert s["customer"]["id"] == customer.id and s["customer"]["name"] == customer.name, s
    return s


async def wait_session_event(ws: Client, kind: str, session_id: str, *, after: int = 0,
                             timeout: float = config.FRAME_WAIT) -> Frame:
    return await ws.wait(lambda f: f.get("type") == kind and isinstance(f.get("session"), dict)
                         and f["session"].get("id") == session_id, timeout, after=after,
                         desc=f"{kind} for {session_id}")


async def assigned_to(node: Any, token: str, session_id: str, agent_ids: Iterable[str] | None = None,
                      timeout: float = config.FRAME_WAIT) -> dict:
    """Poll GET /sessions?status=assigned (as ``token``'s agent) until the session shows up assigned."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = None
    while loop.time() < deadline:
        for s in await sessions(node, token):
            if s["id"] == session_id:
                last = s
                if s["status"] == "assigned" and (agent_ids is None or s["agentId"] in set(agent_ids)):
                    return s
        await asyncio.sleep(0.1)
    raise AssertionError(f"session {session_id} not assigned within {timeout:.1f}s: {last}")


async def find_session(node: Any, token: str, session_id: str, **params: Any) -> dict | None:
    return next((s for s in await sessions(node, token, **params) if s["id"] == session_id), None)


__all__ = [
    "FAST", "MANUAL", "SERVICE", "User", "new_agent_user", "new_customer", "connect", "connect_slow",
    "pause_reading", "resume_reading", "tcp_state", "send", "refused", "msgs", "view", "assert_contiguous",
    "assert_message",
    "sessions", "history", "session_action", "assert_session", "wait_session_event", "assigned_to",
    "find_session",
]
