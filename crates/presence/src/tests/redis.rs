//! Tests of `redis.rs`.

use super::*;
use testkit::{unique_prefix, RedisServer};

async fn manager(server: &RedisServer) -> ConnectionManager {
    let client = redis::Client::open(server.url()).expect("redis url");
    client.get_connection_manager().await.expect("redis connection")
}

/// A node of the cluster `prefix`, heartbeated once.
async fn node(server: &RedisServer, prefix: &str, id: &str, ttl: Duration) -> RedisPresence {
    let p = RedisPresence::new(manager(server).await, prefix, id, ttl);
    p.heartbeat().await.expect("heartbeat");
    p
}

fn member(u: &str) -> RoomMember {
    RoomMember { user_id: u.into(), role: "device".into(), name: format!("name of {u}") }
}

fn members(list: &[RoomMemberCount]) -> Vec<(&str, usize)> {
    list.iter().map(|m| (m.user_id.as_str(), m.connections)).collect()
}

async fn keys(server: &RedisServer, prefix: &str) -> Vec<String> {
    let mut c = manager(server).await;
    let mut keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut c).await.expect("KEYS");
    keys.sort();
    keys
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let server = RedisServer::start();
            let prefix = unique_prefix(stringify!($name));
            let p = node(&server, &prefix, "n1", Duration::from_secs(30)).await;
            crate::conformance::$name(&p).await;
        }
    )*};
}

crate::conformance::each_case!(conformance);

#[test]
fn encodings_round_trip_any_id() {
    let m = RoomMember { user_id: "u:{x}%1".into(), role: "12:ab".into(), name: "é:ü".into() };
    let rec = encode_record(&m, "n:{1}");
    let r = decode_record(&rec).expect("record decodes");
    assert_eq!((r.user, r.node, r.role, r.name), ("u:{x}%1", "n:{1}", "12:ab", "é:ü"));
    assert_eq!(ns_split(&room_conn_field("r:1", "c:2")), Some(("r:1", "c:2")));
    assert_eq!(decode_counts("2:n11:32:n21:0"), vec!["n1"]);
    let keys = Keys { prefix: "p".into() };
    assert_eq!(keys.conns("a}:b{%"), "p:{u:a%7D%3Ab%7B%25}:c");
    assert_ne!(keys.room_users("a"), keys.room_users("a:u"));
}

#[tokio::test]
async fn odd_ids_are_kept_apart() {
    let server = RedisServer::start();
    let p = node(&server, &unique_prefix("odd_ids"), "n:{1}", Duration::from_secs(30)).await;
    assert_eq!(p.connected("a}:c", false, "x:1").await.unwrap(), Transition::CameOnline);
    assert!(!p.is_online("a").await.unwrap());
    assert_eq!(p.room_join("r}:m", "x:1", &member("u:{1}")).await.unwrap(), Transition::CameOnline);
    assert_eq!(p.room_join("r", "x:2", &member("u")).await.unwrap(), Transition::CameOnline);
    assert_eq!(members(&p.room_members("r}:m").await.unwrap()), [("u:{1}", 1)]);
    assert_eq!(members(&p.room_members("r").await.unwrap()), [("u", 1)]);
    assert_eq!(p.room_leave("r}:m", "x:1", "u:{1}").await.unwrap(), Transition::WentOffline);
    assert_eq!(p.disconnected("a}:c", "x:1").await.unwrap(), Transition::WentOffline);
}

#[tokio::test]
async fn two_nodes_share_users_and_rooms() {
    let server = RedisServer::start();
    let prefix = unique_prefix("two_nodes");
    let n1 = node(&server, &prefix, "n1", Duration::from_secs(30)).await;
    let n2 = node(&server, &prefix, "n2", Duration::from_secs(30)).await;

    assert_eq!(n1.connected("u", true, "n1:1").await.unwrap(), Transition::CameOnline);
    assert_eq!(n2.connected("u", true, "n2:1").await.unwrap(), Transition::Unchanged);
    assert!(n2.is_online("u").await.unwrap());
    assert_eq!(n2.available_agents().await.unwrap(), ["u"]);
    n2.set_away("u", true).await.unwrap();
    assert!(n1.available_agents().await.unwrap().is_empty());
    n1.set_away("u", false).await.unwrap();

    assert_eq!(n1.room_join("r", "n1:1", &member("u")).await.unwrap(), Transition::CameOnline);
    assert_eq!(n2.room_join("r", "n2:1", &member("u")).await.unwrap(), Transition::Unchanged);
    assert_eq!(n2.room_join("r", "n2:2", &member("v")).await.unwrap(), Transition::CameOnline);
    assert_eq!(members(&n1.room_members("r").await.unwrap()), [("u", 2), ("v", 1)]);
    assert_eq!(n1.room_leave("r", "n1:1", "u").await.unwrap(), Transition::Unchanged);
    assert!(n1.is_room_member("r", "u").await.unwrap());
    assert_eq!(n2.room_leave("r", "n2:1", "u").await.unwrap(), Transition::WentOffline);
    assert!(!n1.is_room_member("r", "u").await.unwrap());
    assert_eq!(n2.room_leave("r", "n2:2", "v").await.unwrap(), Transition::WentOffline);

    assert_eq!(n1.disconnected("u", "n1:1").await.unwrap(), Transition::Unchanged);
    assert!(n1.is_online("u").await.unwrap());
    assert_eq!(n2.disconnected("u", "n2:1").await.unwrap(), Transition::WentOffline);
    assert!(!n1.is_online("u").await.unwrap());
    assert!(n1.available_agents().await.unwrap().is_empty());

    // Nothing is left of users and rooms: only the liveness keys and the registry.
    let left = keys(&server, &prefix).await;
    let expected: Vec<String> =
        vec![format!("{prefix}:{{idx}}:nodes"), format!("{prefix}:{{n:n1}}:alive"), format!("{prefix}:{{n:n2}}:alive")];
    assert_eq!(left, expected);
}

#[tokio::test]
async fn a_connection_closed_on_another_node_leaves_no_index_behind() {
    let server = RedisServer::start();
    let prefix = unique_prefix("cross_close");
    let n1 = node(&server, &prefix, "n1", Duration::from_secs(30)).await;
    let n2 = node(&server, &prefix, "n2", Duration::from_secs(30)).await;
    n1.connected("u", false, "c1").await.unwrap();
    n1.room_join("r", "c1", &member("u")).await.unwrap();
    assert_eq!(n2.room_leave("r", "c1", "u").await.unwrap(), Transition::WentOffline);
    assert_eq!(n2.disconnected("u", "c1").await.unwrap(), Transition::WentOffline);
    assert_eq!(keys(&server, &prefix).await.len(), 3, "only the registry and two liveness keys");
}

#[tokio::test]
async fn a_dead_node_is_reaped_once() {
    let server = RedisServer::start();
    let prefix = unique_prefix("reap");
    let n1 = node(&server, &prefix, "n1", Duration::from_secs(30)).await;
    let n2 = node(&server, &prefix, "n2", Duration::from_secs(1)).await;
    let n3 = node(&server, &prefix, "n3", Duration::from_secs(30)).await;

    n2.connected("agent", true, "n2:1").await.unwrap();
    n2.connected("both", false, "n2:2").await.unwrap();
    n1.connected("both", false, "n1:1").await.unwrap();
    n2.connected("cust", false, "n2:3").await.unwrap();
    n2.room_join("r", "n2:1", &member("agent")).await.unwrap();
    n2.room_join("r", "n2:2", &member("both")).await.unwrap();
    n1.room_join("r", "n1:1", &member("both")).await.unwrap();
    n1.room_join("r", "n1:9", &member("solo")).await.unwrap();
    assert_eq!(members(&n1.room_members("r").await.unwrap()), [("agent", 1), ("both", 2), ("solo", 1)]);
    assert_eq!(n1.available_agents().await.unwrap(), ["agent"]);
    assert_eq!(n1.reap_dead_nodes().await.unwrap(), Reaped::default(), "every node is alive");

    // n2 stops heartbeating: once its key expires its connections are no longer listed.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(members(&n1.room_members("r").await.unwrap()), [("both", 1), ("solo", 1)]);
    assert!(!n1.is_room_member("r", "agent").await.unwrap());
    assert!(!n1.is_online("agent").await.unwrap());
    assert!(n1.is_online("both").await.unwrap());
    assert!(n1.available_agents().await.unwrap().is_empty());

    // Two survivors reap at once: each change is reported by exactly one of them.
    let (a, b) = tokio::join!(n1.reap_dead_nodes(), n3.reap_dead_nodes());
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut users: Vec<_> = a.users.iter().chain(&b.users).cloned().collect();
    users.sort_by(|x, y| x.user.cmp(&y.user));
    let mut rooms: Vec<_> = a.rooms.iter().chain(&b.rooms).cloned().collect();
    rooms.sort();
    assert_eq!(users, [GoneUser { user: "agent".into(), agent: true }, GoneUser { user: "cust".into(), agent: false }]);
    assert_eq!(rooms, [("r".to_string(), "agent".to_string())]);
    assert_eq!(n1.reap_dead_nodes().await.unwrap(), Reaped::default(), "reported once");
    assert_eq!(n3.reap_dead_nodes().await.unwrap(), Reaped::default(), "reported once");

    assert_eq!(members(&n1.room_members("r").await.unwrap()), [("both", 1), ("solo", 1)]);
    assert_eq!(n1.room_leave("r", "n1:1", "both").await.unwrap(), Transition::WentOffline);
    assert_eq!(n1.disconnected("both", "n1:1").await.unwrap(), Transition::WentOffline);
    assert_eq!(n1.connected("agent", true, "n1:2").await.unwrap(), Transition::CameOnline);
    assert_eq!(n1.available_agents().await.unwrap(), ["agent"]);
    assert!(!keys(&server, &prefix).await.iter().any(|k| k.contains("{n:n2}")), "n2's indexes are gone");
    let mut c = manager(&server).await;
    let registry: Vec<String> =
        redis::cmd("SMEMBERS").arg(format!("{prefix}:{{idx}}:nodes")).query_async(&mut c).await.unwrap();
    assert!(!registry.contains(&"n2".to_string()), "n2 left the registry: {registry:?}");

    // n2 comes back with the same id: it is a live node again.
    n2.heartbeat().await.unwrap();
    assert_eq!(n2.connected("cust", false, "n2:4").await.unwrap(), Transition::CameOnline);
    assert!(n1.is_online("cust").await.unwrap());
}

#[tokio::test]
async fn clear_node_removes_only_this_nodes_connections() {
    let server = RedisServer::start();
    let prefix = unique_prefix("clear");
    let n1 = node(&server, &prefix, "n1", Duration::from_secs(30)).await;
    let n2 = node(&server, &prefix, "n2", Duration::from_secs(30)).await;
    n1.connected("a", true, "n1:1").await.unwrap();
    n1.connected("shared", false, "n1:2").await.unwrap();
    n2.connected("shared", false, "n2:1").await.unwrap();
    n2.connected("b", false, "n2:2").await.unwrap();
    n1.room_join("r", "n1:1", &member("a")).await.unwrap();
    n1.room_join("r", "n1:2", &member("shared")).await.unwrap();
    n2.room_join("r", "n2:1", &member("shared")).await.unwrap();

    let cleared = n1.clear_node().await.unwrap();
    assert_eq!(cleared.users, [GoneUser { user: "a".into(), agent: true }]);
    assert_eq!(cleared.rooms, [("r".to_string(), "a".to_string())]);
    assert_eq!(n1.clear_node().await.unwrap(), Reaped::default(), "nothing left to clear");
    assert!(n1.is_online("shared").await.unwrap());
    assert!(n2.is_online("b").await.unwrap());
    assert!(n1.available_agents().await.unwrap().is_empty());
    assert_eq!(members(&n1.room_members("r").await.unwrap()), [("shared", 1)]);
    assert_eq!(n1.disconnected("shared", "n1:2").await.unwrap(), Transition::Unchanged, "already removed");
    assert_eq!(n2.disconnected("shared", "n2:1").await.unwrap(), Transition::WentOffline);
    assert_eq!(n2.reap_dead_nodes().await.unwrap(), Reaped::default(), "n1 is alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_connections_alternate_transitions() {
    let server = RedisServer::start();
    let prefix = unique_prefix("concurrent");
    let n1 = std::sync::Arc::new(node(&server, &prefix, "n1", Duration::from_secs(30)).await);
    let n2 = std::sync::Arc::new(node(&server, &prefix, "n2", Duration::from_secs(30)).await);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let p = if t % 2 == 0 { n1.clone() } else { n2.clone() };
        tasks.push(tokio::spawn(async move {
            let (mut online, mut offline, mut joined, mut left) = (0, 0, 0, 0);
            for i in 0..40 {
                let conn = format!("{}:{t}:{i}", p.node());
                online += (p.connected("u", true, &conn).await.unwrap() == Transition::CameOnline) as usize;
                joined += (p.room_join("r", &conn, &member("u")).await.unwrap() == Transition::CameOnline) as usize;
                tokio::task::yield_now().await;
                left += (p.room_leave("r", &conn, "u").await.unwrap() == Transition::WentOffline) as usize;
                offline += (p.disconnected("u", &conn).await.unwrap() == Transition::WentOffline) as usize;
            }
            (online, offline, joined, left)
        }));
    }
    let (mut online, mut offline, mut joined, mut left) = (0, 0, 0, 0);
    for task in tasks {
        let (a, b, c, d) = task.await.unwrap();
        (online, offline, joined, left) = (online + a, offline + b, joined + c, left + d);
    }
    assert!(online >= 1 && joined >= 1);
    assert_eq!(online, offline, "every CameOnline has its WentOffline");
    assert_eq!(joined, left);
    assert!(!n1.is_online("u").await.unwrap());
    assert!(n1.available_agents().await.unwrap().is_empty());
    assert!(n1.room_members("r").await.unwrap().is_empty());
    assert_eq!(keys(&server, &prefix).await.len(), 3, "only the registry and two liveness keys");
}

#[tokio::test]
async fn redis_errors_are_presence_errors() {
    let mut server = RedisServer::start();
    let client = redis::Client::open(server.url()).expect("redis url");
    let config = redis::aio::ConnectionManagerConfig::new().set_number_of_retries(1);
    let conn = client.get_connection_manager_with_config(config).await.expect("redis connection");
    let p = RedisPresence::new(conn, &unique_prefix("errors"), "n1", Duration::from_secs(30));
    p.heartbeat().await.unwrap();
    server.stop();
    let deadline = Duration::from_secs(20);
    assert!(tokio::time::timeout(deadline, p.connected("u", false, "c")).await.unwrap().is_err());
    assert!(tokio::time::timeout(deadline, p.room_members("r")).await.unwrap().is_err());
    assert!(tokio::time::timeout(deadline, p.heartbeat()).await.unwrap().is_err());
    assert!(tokio::time::timeout(deadline, p.reap_dead_nodes()).await.unwrap().is_err());
}

#[tokio::test]
async fn scripts_are_reloaded_after_a_flush() {
    let server = RedisServer::start();
    let p = node(&server, &unique_prefix("flush"), "n1", Duration::from_secs(30)).await;
    assert_eq!(p.connected("u", false, "c1").await.unwrap(), Transition::CameOnline);
    let mut c = manager(&server).await;
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut c).await.unwrap();
    assert_eq!(p.disconnected("u", "c1").await.unwrap(), Transition::WentOffline);
}
