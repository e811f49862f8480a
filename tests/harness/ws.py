"""WebSocket client wrapper around the ``websockets`` asyncio client.

* no compression, no proxy, no client keepalive pings (a client ping would count
  as liveness and blur the heartbeat tests);
* every frame is recorded as the protocol parses it (parsed JSON; anything else
  goes to ``raw``), and so is the close code and reason of the server's close frame;
* answers to the server's pings can be suppressed (``suppress_pongs = True``) to
  provoke a heartbeat timeout; ``pongs`` counts the pongs the client answered;
* every client is registered so that the test runner closes it when a test ends.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, Callable, Iterable, Mapping

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close, Frame as WsFrame, Opcode

from . import config

Frame = dict[str, Any]
Pred = Callable[[Frame], bool]
_OPEN: list["Client"] = []


def fid(prefix: str = "f") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def typed(kind: str, **fields: Any) -> Pred:
    """Predicate: ``type`` is ``kind`` and every given field is equal."""
    return lambda f: f.get("type") == kind and all(f.get(k) == v for k, v in fields.items())


class Rejected(Exception):
    """The server refused the upgrade with an HTTP response."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class RecordingConnection(ClientConnection):
    """A client connection that records, synchronously and in arrival order, every
    data frame (JSON-decoded) and the close frame, as the protocol parses them.

    Recording at the protocol level, from the very first frame, means that a frame
    sent right after the handshake is never missed and that a close is seen when
    its close frame arrives, not when the TCP connection ends later.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rec_frames: list[Frame] = []
        self.rec_raw: list[Any] = []
        self.rec_close_code: int | None = None
        self.rec_close_reason: str | None = None
        self.ended = asyncio.Event()
        self.rec_suppress_pongs = False
        self.rec_pongs = 0
        self._parts: list[bytes] = []
        self._tick = asyncio.Event()
        send_frame = self.protocol.send_frame

        def hooked(frame: Any) -> None:
            if frame.opcode is Opcode.PONG:
                if self.rec_suppress_pongs:
                    return
                self.rec_pongs += 1
            send_frame(frame)

        self.protocol.send_frame = hooked  # type: ignore[method-assign]

    def changed(self) -> asyncio.Event:
        return self._tick

    def _bump(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    def _end(self, code: int, reason: str) -> None:
        if not self.ended.is_set():
            self.rec_close_code, self.rec_close_reason = code, reason
            self.ended.set()
            self._bump()

    def process_event(self, event: Any) -> None:
        if isinstance(event, WsFrame):
            if event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                self._parts.append(bytes(event.data))
                if event.fin:
                    data = b"".join(self._parts)
                    self._parts = []
                    try:
                        frame = json.loads(data)
                    except ValueError:
                        frame = None
                    (self.rec_frames if isinstance(frame, dict) else self.rec_raw).append(
                        frame if isinstance(frame, dict) else data)
                    self._bump()
            elif event.opcode is Opcode.CLOSE:
                close = Close.parse(event.data) if event.data else Close(1005, "")
                self._end(close.code, close.reason)
        super().process_event(event)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._end(1006, "")


class Client:
    def __init__(self, conn: RecordingConnection, label: str) -> None:
        self.conn = conn
        self.label = label
        self.frames = conn.rec_frames
        self.raw = conn.rec_raw
        self.closed = conn.ended
        # Keeps the library's own message queue drained; the frames are recorded above.
        self._drain = asyncio.create_task(self._drain_messages())
        _OPEN.append(self)

    async def _drain_messages(self) -> None:
        try:
            async for _ in self.conn:
                pass
        except ConnectionClosed:
            pass

    @property
    def close_code(self) -> int | None:
        return self.conn.rec_close_code

    @property
    def close_reason(self) -> str | None:
        return self.conn.rec_close_reason

    @property
    def suppress_pongs(self) -> bool:
        return self.conn.rec_suppress_pongs

    @suppress_pongs.setter
    def suppress_pongs(self, value: bool) -> None:
        self.conn.rec_suppress_pongs = value

    @property
    def pongs(self) -> int:
        return self.conn.rec_pongs

    async def _until(self, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self.conn.changed().wait(), remaining)
            except asyncio.TimeoutError:
                return

    # ------------------------------------------------------------------ state
    @property
    def is_open(self) -> bool:
        return not self.closed.is_set()

    @property
    def subprotocol(self) -> str | None:
        return self.conn.subprotocol

    def mark(self) -> int:
        return len(self.frames)

    def of(self, kind: str, after: int = 0) -> list[Frame]:
        return [f for f in self.frames[after:] if f.get("type") == kind]

    def dump(self, last: int = 20) -> str:
        state = "open" if self.is_open else f"closed {self.close_code} {self.close_reason!r}"
        lines = "\n  ".join(json.dumps(f)[:300] for f in self.frames[-last:])
        return f"[{self.label}: {state}; {len(self.frames)} frames; raw={self.raw[:3]!r}]\n  {lines}"

    # ---------------------------------------------------------------- sending
    async def send(self, obj: Any) -> None:
        await self.conn.send(json.dumps(obj))

    async def send_raw(self, data: str | bytes, *, text: bool | None = None) -> None:
        await self.conn.send(data, text=text)

    async def request(self, frame: Frame, timeout: float = config.FRAME_WAIT) -> Frame:
        """Send ``frame`` with an ``id`` (added when missing); return the first answer whose ``ref`` is it."""
        frame = {**frame}
        frame.setdefault("id", fid(frame.get("type", "req")))
        mark = self.mark()
        await self.send(frame)
        return await self.wait(lambda f: f.get("ref") == frame["id"], timeout, after=mark,
                               desc=f"answer to {frame.get('type')} {frame['id']}")

    async def ping(self) -> None:
        """Application-level round trip: ``ping`` -> ``pong`` with ``ref``."""
        answer = await self.request({"type": "ping"})
        assert answer.get("type") == "pong", f"{self.label}: ping answered with {answer}"

    async def assert_alive(self) -> None:
        assert self.is_open, f"{self.label} is closed: {self.close_code} {self.close_reason!r}"
        await self.ping()

    # ---------------------------------------------------------------- waiting
    async def wait(self, pred: Pred, timeout: float = config.FRAME_WAIT, *, after: int = 0, desc: str = "") -> Frame:
        """The first frame from index ``after`` on that matches; AssertionError on timeout or close."""
        def found() -> list[Frame]:
            return [f for f in self.frames[after:] if pred(f)][:1]

        await self._until(lambda: bool(found()) or self.closed.is_set(), timeout)
        if got := found():
            return got[0]
        why = "closed" if self.closed.is_set() else f"nothing within {timeout:.1f}s"
        raise AssertionError(f"{self.label}: waiting for {desc or 'a frame'}: {why}\n{self.dump()}")

    async def wait_n(self, pred: Pred, n: int, timeout: float = config.FRAME_WAIT, *, after: int = 0,
                     desc: str = "") -> list[Frame]:
        """At least ``n`` matching frames from index ``after``; returns all that matched."""
        def matching() -> list[Frame]:
            return [f for f in self.frames[after:] if pred(f)]

        await self._until(lambda: len(matching()) >= n or self.closed.is_set(), timeout)
        got = matching()
        assert len(got) >= n, f"{self.label}: expected {n} {desc or 'frames'}, got {len(got)}\n{self.dump()}"
        return got

    async def quiet(self, pred: Pred = lambda f: True, within: float = config.QUIET, *, after: int | None = None,
                    desc: str = "frame") -> None:
        """Fail if a matching frame arrives (from ``after``, default now) within ``within`` seconds."""
        start = self.mark() if after is None else after
        await asyncio.sleep(within)
        bad = [f for f in self.frames[start:] if pred(f)]
        assert not bad, f"{self.label}: unexpected {desc}: {bad[:3]}\n{self.dump()}"

    async def closed_with(self, code: int, reason: str | None, timeout: float = config.FRAME_WAIT) -> None:
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.label}: still open after {timeout:.1f}s, expected close {code} "
                                 f"{reason}\n{self.dump()}") from None
        assert (self.close_code, self.close_reason if reason is not None else None) == (code, reason), (
            f"{self.label}: closed with {self.close_code} {self.close_reason!r}, expected {code} {reason!r}\n"
            f"{self.dump()}")

    async def close(self, timeout: float = 2.0) -> None:
        """Closing handshake: send a close frame and wait for the server's; then drop the TCP connection
        (without waiting for the server to end it, which some servers delay)."""
        closing = asyncio.create_task(self.conn.close()) if self.is_open else None
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        if self.conn.transport is not None:
            self.conn.transport.abort()
        for task in (closing, self._drain):
            if task is None:
                continue
            try:
                await asyncio.wait_for(task, timeout)
            except (asyncio.TimeoutError, asyncio.CancelledError, ConnectionClosed, OSError):
                task.cancel()


async def open_ws(url: str, *, headers: Mapping[str, str] | None = None, subprotocols: Iterable[str] | None = None,
                  label: str = "ws", max_size: int | None = 16 * 1024 * 1024) -> Client:
    """Open a WebSocket to 127.0.0.1; raise Rejected when the server refuses the upgrade."""
    assert url.startswith("ws://127.0.0.1:"), url
    try:
        conn = await connect(
            url, additional_headers=dict(headers or {}), subprotocols=list(subprotocols) if subprotocols else None,
            compression=None, proxy=None, ping_interval=None, ping_timeout=None,
            open_timeout=config.OPEN_TIMEOUT, close_timeout=2, max_size=max_size, max_queue=None,
            create_connection=RecordingConnection,
        )
    except InvalidStatus as exc:
        resp = exc.response
        raise Rejected(resp.status_code, dict(resp.headers.raw_items()), bytes(resp.body or b"")) from None
    return Client(conn, label)


async def close_all() -> None:
    clients = list(_OPEN)
    _OPEN.clear()
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def placement(token: str | None, via: str) -> tuple[dict[str, str], list[str] | None, str | None]:
    """(headers, subprotocols, query) that carry ``token`` by one of the three sources of §3."""
    if token is None:
        return {}, None, None
    if via == "header":
        return {"Authorization": f"Bearer {token}"}, None, None
    if via == "subprotocol":
        return {}, ["chat.v1", f"bearer.{token}"], None
    if via == "query":
        return {}, None, f"token={token}"
    raise ValueError(via)


async def chat(node: Any, token: str | None = None, *, via: str = "header", headers: Mapping[str, str] | None = None,
               label: str = "chat", replay: bool = True) -> Client:
    """Open /ws/chat; wait for ``hello`` and, when a token was given, ``offline_messages_complete``."""
    hdrs, protos, query = placement(token, via)
    hdrs.update(headers or {})
    ws = await open_ws(node.ws_url("/ws/chat", query), headers=hdrs, subprotocols=protos, label=label)
    await ws.wait(typed("hello"), desc="hello")
    if token is not None and replay:
        await ws.wait(typed("offline_messages_complete"), desc="offline_messages_complete")
    return ws


async def push(node: Any, token: str, rooms: str, *, label: str = "push") -> Client:
    """Open /ws?token=T&roomIds=ROOMS and wait for ``hello``."""
    ws = await open_ws(node.ws_url("/ws", f"token={token}&roomIds={rooms}"), label=label)
    await ws.wait(typed("hello"), desc="hello")
    return ws


async def bounded_poll(fn: Callable[[], Any], timeout: float = config.FRAME_WAIT, interval: float = 0.1,
                       desc: str = "condition") -> Any:
    """Call async ``fn`` until it returns something truthy, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await fn()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{desc} not reached within {timeout:.1f}s (last: {last!r})")
