//! What every [`Presence`] must do: each function is run against each implementation.

use crate::{Presence, RoomMember, Transition};

/// Expands `$m!(case, ...)` with every shared case: each implementation's test module
/// defines `$m` (how to run one case) and lists no case itself.
macro_rules! each_case {
    ($m:ident) => {
        $m!(
            first_and_last_connection_are_transitions,
            repeated_connection_ids_change_nothing,
            room_membership_counts_connections_per_user,
            rooms_are_independent_and_vanish_when_empty,
            away_agents_are_not_available,
            away_survives_reconnects,
            agent_flag_ends_with_the_last_connection,
        );
    };
}
pub(crate) use each_case;

fn member(u: &str) -> RoomMember {
    RoomMember { user_id: u.into(), role: "device".into(), name: u.into() }
}

pub(crate) async fn first_and_last_connection_are_transitions(p: &dyn Presence) {
    assert_eq!(p.connected("u", false, "n1:1").await.unwrap(), Transition::CameOnline);
    assert_eq!(p.connected("u", false, "n2:1").await.unwrap(), Transition::Unchanged);
    assert!(p.is_online("u").await.unwrap());
    assert_eq!(p.disconnected("u", "n1:1").await.unwrap(), Transition::Unchanged);
    assert_eq!(p.disconnected("u", "n1:1").await.unwrap(), Transition::Unchanged, "closing twice changes nothing");
    assert_eq!(p.disconnected("u", "n2:1").await.unwrap(), Transition::WentOffline);
    assert!(!p.is_online("u").await.unwrap());
    assert_eq!(p.disconnected("nobody", "x").await.unwrap(), Transition::Unchanged);
}

pub(crate) async fn repeated_connection_ids_change_nothing(p: &dyn Presence) {
    assert_eq!(p.connected("u", false, "c1").await.unwrap(), Transition::CameOnline);
    assert_eq!(p.connected("u", false, "c1").await.unwrap(), Transition::Unchanged);
    assert_eq!(p.disconnected("u", "c1").await.unwrap(), Transition::WentOffline, "one connection, counted once");
    assert_eq!(p.connected("u", false, "c1").await.unwrap(), Transition::CameOnline, "back online");
    assert_eq!(p.disconnected("u", "c1").await.unwrap(), Transition::WentOffline);
}

pub(crate) async fn room_membership_counts_connections_per_user(p: &dyn Presence) {
    let m = member;
    assert_eq!(p.room_join("r", "c1", &m("u1")).await.unwrap(), Transition::CameOnline);
    assert_eq!(p.room_join("r", "c1", &m("u1")).await.unwrap(), Transition::Unchanged);
    assert_eq!(p.room_join("r", "c2", &m("u1")).await.unwrap(), Transition::Unchanged);
    assert_eq!(p.room_join("r", "c3", &m("u2")).await.unwrap(), Transition::CameOnline);
    let members = p.room_members("r").await.unwrap();
    assert_eq!(members.iter().map(|m| (m.user_id.as_str(), m.connections)).collect::<Vec<_>>(), [("u1", 2), ("u2", 1)]);
    assert_eq!(p.room_leave("r", "c1", "u1").await.unwrap(), Transition::Unchanged);
    assert_eq!(p.room_leave("r", "c2", "u1").await.unwrap(), Transition::WentOffline);
    assert!(!p.is_room_member("r", "u1").await.unwrap());
    assert!(p.is_room_member("r", "u2").await.unwrap());
}

pub(crate) async fn rooms_are_independent_and_vanish_when_empty(p: &dyn Presence) {
    let agent = RoomMember { user_id: "a".into(), role: "agent".into(), name: "Ann".into() };
    assert_eq!(p.room_leave("nowhere", "c1", "a").await.unwrap(), Transition::Unchanged);
    assert!(p.room_members("nowhere").await.unwrap().is_empty());
    assert!(!p.is_room_member("nowhere", "a").await.unwrap());
    assert_eq!(p.room_join("r1", "c1", &agent).await.unwrap(), Transition::CameOnline);
    assert_eq!(p.room_join("r2", "c1", &agent).await.unwrap(), Transition::CameOnline, "another room");
    assert_eq!(p.room_join("r2", "c2", &member("b")).await.unwrap(), Transition::CameOnline);
    assert_eq!(p.room_leave("r1", "c2", "b").await.unwrap(), Transition::Unchanged, "not in r1");
    let r1 = p.room_members("r1").await.unwrap();
    assert_eq!(r1.len(), 1);
    assert_eq!(
        (r1[0].user_id.as_str(), r1[0].role.as_str(), r1[0].name.as_str(), r1[0].connections),
        ("a", "agent", "Ann", 1)
    );
    let r2: Vec<_> = p.room_members("r2").await.unwrap().into_iter().map(|m| m.user_id).collect();
    assert_eq!(r2, ["a", "b"]);
    assert_eq!(p.room_leave("r1", "c1", "a").await.unwrap(), Transition::WentOffline);
    assert!(p.room_members("r1").await.unwrap().is_empty());
    assert!(p.is_room_member("r2", "a").await.unwrap(), "r2 is untouched");
    assert_eq!(p.room_leave("r2", "c1", "a").await.unwrap(), Transition::WentOffline);
    assert_eq!(p.room_leave("r2", "c2", "b").await.unwrap(), Transition::WentOffline);
    assert!(p.room_members("r2").await.unwrap().is_empty());
    assert_eq!(p.room_join("r2", "c1", &agent).await.unwrap(), Transition::CameOnline, "a new first");
    assert_eq!(p.room_leave("r2", "c1", "a").await.unwrap(), Transition::WentOffline);
}

pub(crate) async fn away_agents_are_not_available(p: &dyn Presence) {
    p.connected("a1", true, "c1").await.unwrap();
    p.connected("a2", true, "c2").await.unwrap();
    p.connected("cust", false, "c3").await.unwrap();
    let mut avail = p.available_agents().await.unwrap();
    avail.sort();
    assert_eq!(avail, vec!["a1", "a2"]);
    p.set_away("a1", true).await.unwrap();
    assert_eq!(p.available_agents().await.unwrap(), vec!["a2"]);
    p.disconnected("a2", "c2").await.unwrap();
    assert!(p.available_agents().await.unwrap().is_empty());
}

pub(crate) async fn away_survives_reconnects(p: &dyn Presence) {
    p.connected("a", true, "c1").await.unwrap();
    p.set_away("a", true).await.unwrap();
    assert_eq!(p.disconnected("a", "c1").await.unwrap(), Transition::WentOffline);
    assert_eq!(p.connected("a", true, "c2").await.unwrap(), Transition::CameOnline);
    assert!(p.available_agents().await.unwrap().is_empty(), "still away");
    p.set_away("a", false).await.unwrap();
    assert_eq!(p.available_agents().await.unwrap(), vec!["a"]);
    p.set_away("a", false).await.unwrap();
    assert_eq!(p.available_agents().await.unwrap(), vec!["a"], "not away twice is still available");
    p.disconnected("a", "c2").await.unwrap();
    assert!(p.available_agents().await.unwrap().is_empty());
}

pub(crate) async fn agent_flag_ends_with_the_last_connection(p: &dyn Presence) {
    p.connected("a", true, "c1").await.unwrap();
    p.connected("a", false, "c2").await.unwrap();
    assert_eq!(p.available_agents().await.unwrap(), vec!["a"]);
    p.disconnected("a", "c1").await.unwrap();
    assert_eq!(p.available_agents().await.unwrap(), vec!["a"], "an agent while online");
    p.disconnected("a", "c2").await.unwrap();
    p.connected("a", false, "c3").await.unwrap();
    assert!(p.available_agents().await.unwrap().is_empty(), "back online, but not as an agent");
    p.disconnected("a", "c3").await.unwrap();
}
