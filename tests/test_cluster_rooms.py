"""Rooms across a cluster of three nodes over one Redis (PROTOCOL.md §2 publish and
presence routes, §4 subscribe/publish/notice/presence frames, §5.5 `since`
recovery): notices published on any node, by HTTP or by frame, reach `/ws` and
`/ws/chat` subscribers on every node with one seq sequence; `since` recovery on a
node other than the publisher's; the presence route agrees on every node; presence
frames cross nodes and count a user's connections on all nodes."""

from __future__ import annotations

import time

import pytest

from harness import config
from harness.cluster import clusters
from harness.http import body_of, presence, publish
from harness.tokens import uid
from harness.ws import Client, bounded_poll, chat, push, typed

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(tmp_path, track):
    """cluster(n=3, env=None, *, aof=False, prefix=None) -> a started Cluster (see harness.cluster)."""
    yield from clusters(tmp_path, track)


CROSS_NODE = config.scaled(1.0) + 0.5


async def subscribe(ws: Client, room: str, **extra) -> dict:
    answer = await ws.request({"type": "subscribe", "room": room, **extra})
    assert answer["type"] == "subscribed" and answer["room"] == room, f"subscribe {room}: {answer}\n{ws.dump()}"
    return answer


async def members_everywhere(nodes, room: str, want: dict[str, int], desc: str) -> dict[str, dict]:
    """Poll the presence route of every node until each lists exactly ``want`` (userId -> connections);
    returns the members (by userId) of the last node asked."""
    last: dict[str, object] = {}

    async def agree():
        got = None
        for node in nodes:
            body = body_of(await presence(node, room), 200)
            assert body["room"] == room, body
            got = {m["userId"]: m for m in body["members"]}
            last[node.node_id] = {u: m.get("connections") for u, m in got.items()}
            if last[node.node_id] != want:
                return None
        return got

    try:
        return await bounded_poll(agree, desc=desc)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; wanted {want} on every node, last seen {last}") from None


# ------------------------------------------------------------------ notices and seq
@pytest.mark.deadline(45)
async def test_notices_from_any_node_reach_both_endpoints_on_every_node_in_one_seq(cluster, tokens):
    nodes = cluster(3, prefix=f"rooms{uid('p')[-6:]}")
    room = uid("bcast")
    listeners: list[Client] = []
    publishers: list[Client] = []
    want: dict[str, int] = {}
    for node in nodes:
        dev = uid(f"dev-{node.node_id}")
        listeners.append(await push(node, tokens.mint("device", dev, rooms=["*"]), room, label=f"push@{node.node_id}"))
        watcher = uid(f"watch-{node.node_id}")
        ws = await chat(node, tokens.mint("agent", watcher, rooms=["*"]), label=f"chat@{node.node_id}")
        first = await subscribe(ws, room)
        assert first["seq"] == 0, f"a fresh room's latest seq is 0: {first}"
        listeners.append(ws)
        publishers.append(await chat(node, tokens.mint("agent", pub=[room]), label=f"pub@{node.node_id}"))
        want.update({dev: 1, watcher: 1})
    await members_everywhere(nodes, room, want, "every subscriber in the presence route of every node")

    n = 12
    sent = []
    for i in range(n):
        node, pub = nodes[i % 3], publishers[i % 3]
        if (i // 3) % 2 == 0:
            seq = body_of(await publish(node, room, {"i": i, "via": f"http@{node.node_id}"}, event="e"), 202)["seq"]
        else:
            ok = await pub.request({"type": "publish", "room": room, "event": "e",
                                    "data": {"i": i, "via": f"frame@{node.node_id}"}})
            assert ok["type"] == "ok" and ok["room"] == room, ok
            seq = ok["seq"]
        sent.append((seq, i))
    assert [s for s, _ in sent] == list(range(1, n + 1)), f"room seq is one counter across the cluster: {sent}"
    for ws in listeners:
        got = await ws.wait_n(typed("notice", room=room), n, desc=f"{n} notices")
        assert [(f["seq"], f["data"]["i"]) for f in got] == sent, f"{ws.label}: notices {got}"
        assert all(f["event"] == "e" for f in got), got
        await ws.quiet(typed("notice"), within=0.2, desc="a duplicate notice")
        assert len(ws.of("notice")) == n, ws.dump()

    # one more, timed: it reaches the other nodes within 1 s
    marks = [ws.mark() for ws in listeners]
    start = time.monotonic()
    last = body_of(await publish(nodes[0], room, {"i": n}), 202)["seq"]
    assert last == n + 1
    for ws, mark in zip(listeners, marks):
        await ws.wait(typed("notice", room=room, seq=last), after=mark)
    took = time.monotonic() - start
    assert took <= CROSS_NODE, f"a notice took {took:.2f}s to reach every node (contract: within 1 s)"


@pytest.mark.deadline(45)
async def test_since_recovery_on_another_node(cluster, tokens):
    n1, n2, n3 = cluster(3, {"CHAT__ROOMS__HISTORY_SIZE": "5"})
    room = uid("since")
    for i in range(4):  # seqs 1..4 published on node 1
        assert body_of(await publish(n1, room, {"i": i + 1}), 202)["seq"] == i + 1

    # since=2 on node 2: recovered, notices 3 and 4 after `subscribed`, then live ones from node 3
    ws = await chat(n2, tokens.mint("agent", rooms=["*"]), label="since@node2")
    mark = ws.mark()
    got = await subscribe(ws, room, since=2)
    assert (got["seq"], got["recovered"], got["missed"]) == (4, True, 0), got
    notices = await ws.wait_n(typed("notice", room=room), 2, after=mark)
    assert [(f["seq"], f["data"]) for f in notices] == [(3, {"i": 3}), (4, {"i": 4})], notices
    frames = ws.frames[mark:]
    assert frames.index(got) < frames.index(notices[0]), "the recovered notices come after `subscribed`"
    seq = body_of(await publish(n3, room, {"i": 5}), 202)["seq"]
    assert seq == 5
    assert (await ws.wait(typed("notice", room=room, seq=5), after=mark))["data"] == {"i": 5}

    # history keeps 5 notices: after 8, since=1 on node 3 misses 2 and 3, gets 4..8
    for i in range(6, 9):
        assert body_of(await publish(n1 if i % 2 else n2, room, {"i": i}), 202)["seq"] == i
    late = await chat(n3, tokens.mint("agent", rooms=["*"]), label="late@node3")
    mark = late.mark()
    got = await subscribe(late, room, since=1)
    assert (got["seq"], got["recovered"], got["missed"]) == (8, False, 2), got
    notices = await late.wait_n(typed("notice", room=room), 5, after=mark)
    assert [f["seq"] for f in notices] == [4, 5, 6, 7, 8], notices
    await late.quiet(typed("notice"), within=0.3, desc="more recovered notices")
    # ...and since = the latest recovers nothing and misses nothing
    up = await chat(n1, tokens.mint("agent", rooms=["*"]), label="uptodate@node1")
    got = await subscribe(up, room, since=8)
    assert (got["recovered"], got["missed"]) == (True, 0), got
    await up.quiet(typed("notice"), within=0.3, desc="a notice at or below since")


# ------------------------------------------------------------------ presence
@pytest.mark.deadline(45)
async def test_presence_route_and_frames_agree_across_nodes(cluster, tokens):
    n1, n2, n3 = nodes = cluster(3)
    room = uid("pres")
    watcher_id = uid("watcher")
    watcher = await chat(n1, tokens.mint("agent", watcher_id, "Watcher", rooms=["*"]), label="watcher@node1")
    await subscribe(watcher, room)

    # a device with a /ws connection on node 1 and another on node 2
    dev = uid("kiosk")
    dev_token = tokens.mint("device", dev, "Kiosk", rooms=["*"])
    mark = watcher.mark()
    d1 = await push(n2, dev_token, room, label="kiosk@node2")
    online = await watcher.wait(typed("presence", userId=dev), after=mark, desc="the kiosk online (node 2)")
    assert (online["room"], online["status"]) == (room, "online"), online
    d2 = await push(n3, dev_token, room, label="kiosk@node3")
    got = await members_everywhere(nodes, room, {watcher_id: 1, dev: 2}, "presence route with the kiosk twice")
    assert got[dev] == {"userId": dev, "role": "device", "name": "Kiosk", "connections": 2}, got
    assert got[watcher_id] == {"userId": watcher_id, "role": "agent", "name": "Watcher", "connections": 1}, got

    # a /ws/chat user on node 2, then node 3: online once; closing one of the two is no presence change
    bob = uid("bob")
    bob_token = tokens.mint("customer", bob, "Bob", channel="web", rooms=["*"])
    mark = watcher.mark()
    b2 = await chat(n2, bob_token, label="bob@node2")
    await subscribe(b2, room)
    online = await watcher.wait(typed("presence", userId=bob), after=mark, desc="bob online (node 2)")
    assert (online["room"], online["status"]) == (room, "online"), online
    b3 = await chat(n3, bob_token, label="bob@node3")
    await subscribe(b3, room)
    await members_everywhere(nodes, room, {watcher_id: 1, dev: 2, bob: 2}, "bob's two connections everywhere")
    await b2.close()
    await members_everywhere(nodes, room, {watcher_id: 1, dev: 2, bob: 1}, "bob's remaining connection")
    await watcher.quiet(typed("presence", userId=bob, status="offline"), after=mark, within=config.QUIET,
                        desc="presence for bob while he keeps a connection on node 3")
    await b3.close()
    offline = await watcher.wait(typed("presence", userId=bob, status="offline"), after=mark,
                                 desc="bob offline (last connection, node 3)")
    assert offline["room"] == room, offline
    assert [f["status"] for f in watcher.frames[mark:] if f.get("type") == "presence" and f["userId"] == bob] == \
        ["online", "offline"], watcher.dump()

    # the kiosk: one connection closed -> still online; both -> offline, everywhere
    mark = watcher.mark()
    await d1.close()
    await members_everywhere(nodes, room, {watcher_id: 1, dev: 1}, "the kiosk's remaining connection")
    await d2.close()
    offline = await watcher.wait(typed("presence", userId=dev), after=mark, desc="the kiosk offline")
    assert offline["status"] == "offline", watcher.dump()
    await members_everywhere(nodes, room, {watcher_id: 1}, "only the watcher left")

    # a subscriber on another node may read the room's presence; its own view matches the service's
    for node in nodes:
        body = body_of(await presence(node, room, token=tokens.mint("agent", watcher_id, rooms=["*"])), 200)
        assert [m["userId"] for m in body["members"]] == [watcher_id], (node.node_id, body)
