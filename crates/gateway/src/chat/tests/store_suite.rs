//! The behaviour every [`ChatStore`](super::ChatStore) must have; run against each implementation.

use std::sync::Arc;

use protocol::UserRef;

use super::*;

fn user(id: &str, role: &str) -> UserRef {
    UserRef { id: id.into(), role: role.into(), name: format!("Name {id}") }
}

async fn new_session(store: &dyn ChatStore, tag: &str, created: i64) -> Session {
    let customer = Customer {
        id: format!("cust-{tag}"),
        name: format!("Customer {tag}"),
        channel: "web".into(),
        contact: Contact::default(),
        created_at_ms: created,
    };
    let session = Session {
        id: format!("sess-{tag}"),
        customer: CustomerRef { id: customer.id.clone(), name: customer.name.clone(), channel: "web".into() },
        status: SessionStatus::Queued,
        agent_id: None,
        created_at_ms: created,
        past_agents: vec![],
        last_seq: 0,
    };
    store.create_session(&customer, &session).await.expect("create");
    session
}

async fn send(store: &dyn ChatStore, session: &str, from: &UserRef, id: &str) -> Appended {
    let msg = NewMessage {
        session_id: session.into(),
        from: from.clone(),
        client_msg_id: id.into(),
        text: format!("text {id}"),
    };
    store.append(msg).await.expect("append")
}

pub async fn sessions_lifecycle(store: Arc<dyn ChatStore>) {
    let s1 = new_session(&*store, "a", 1_000).await;
    let s2 = new_session(&*store, "b", 2_000).await;
    let got = store.session(&s1.id).await.unwrap().expect("stored");
    assert_eq!(
        (got.status, got.agent_id.clone(), got.customer.clone()),
        (SessionStatus::Queued, None, s1.customer.clone())
    );
    assert!(store.session("nope").await.unwrap().is_none());
    let queued: Vec<String> = store.queued(10).await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(queued, vec![s1.id.clone(), s2.id.clone()], "oldest first");
    let listed: Vec<String> = store.list_sessions(None, None).await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(listed, vec![s2.id.clone(), s1.id.clone()], "newest first");

    let claimed = store.update_session(&s1.id, SessionChange::Claim { agent: "ag1".into() }).await.unwrap();
    assert_eq!((claimed.status, claimed.agent_id.as_deref()), (SessionStatus::Assigned, Some("ag1")));
    assert!(matches!(
        store.update_session(&s1.id, SessionChange::Claim { agent: "ag2".into() }).await,
        Err(SessionError::AlreadyAssigned)
    ));
    assert!(matches!(store.update_session("nope", SessionChange::Close).await, Err(SessionError::NotFound)));
    assert_eq!(store.agent_load("ag1").await.unwrap(), 1);
    assert!(matches!(
        store.update_session(&s2.id, SessionChange::Assign { agent: "ag1".into(), max_load: 1 }).await,
        Err(SessionError::AgentFull)
    ));
    let mine: Vec<String> = store.list_sessions(None, Some("ag1")).await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(mine, vec![s1.id.clone()]);
    let queued: Vec<String> =
        store.list_sessions(Some(SessionStatus::Queued), None).await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(queued, vec![s2.id.clone()]);

    // transfer: only the holder, history readers remember
    assert!(matches!(
        store.update_session(&s1.id, SessionChange::Transfer { from: "ag9".into(), to: "ag2".into() }).await,
        Err(SessionError::NotAssignedToYou)
    ));
    let moved =
        store.update_session(&s1.id, SessionChange::Transfer { from: "ag1".into(), to: "ag2".into() }).await.unwrap();
    assert_eq!(moved.agent_id.as_deref(), Some("ag2"));
    assert_eq!(moved.past_agents, vec!["ag1".to_string()]);
    assert!(moved.may_read("ag1") && !moved.is_participant("ag1"));
    assert_eq!(store.agent_load("ag1").await.unwrap(), 0);
    let of_ag2: Vec<String> = store.sessions_of("ag2", true).await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(of_ag2, vec![s1.id.clone()]);
    let of_cust: Vec<String> =
        store.sessions_of(&s1.customer.id, false).await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(of_cust, vec![s1.id.clone()]);

    // close twice is the same; a closed session cannot be claimed or transferred
    let closed = store.update_session(&s1.id, SessionChange::Close).await.unwrap();
    assert_eq!(closed.status, SessionStatus::Closed);
    assert_eq!(store.update_session(&s1.id, SessionChange::Close).await.unwrap().status, SessionStatus::Closed);
    assert!(matches!(
        store.update_session(&s1.id, SessionChange::Claim { agent: "ag3".into() }).await,
        Err(SessionError::Closed)
    ));
    assert_eq!(store.agent_load("ag2").await.unwrap(), 0);
    let closed_mine: Vec<String> = store
        .list_sessions(Some(SessionStatus::Closed), Some("ag2"))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(closed_mine, vec![s1.id.clone()]);
}

pub async fn messages_and_cursors(store: Arc<dyn ChatStore>) {
    let s = new_session(&*store, "m", 1).await;
    let cust = user(&s.customer.id, "customer");
    let agent = user("ag", "agent");
    let a1 = send(&*store, &s.id, &cust, "c1").await;
    assert_eq!((a1.message.seq, a1.duplicate), (1, false));
    assert_eq!(a1.message.client_msg_id, "c1");
    assert_eq!(a1.message.ts.len(), 24);
    let again = send(&*store, &s.id, &cust, "c1").await;
    assert!(again.duplicate, "a resend is recognised");
    assert_eq!((again.message.seq, again.message.id.clone()), (1, a1.message.id.clone()));
    // the same client id from another sender is another message
    assert_eq!(send(&*store, &s.id, &agent, "c1").await.message.seq, 2);
    for i in 3..=12 {
        let from = if i % 2 == 0 { &agent } else { &cust };
        assert_eq!(send(&*store, &s.id, from, &format!("x{i}")).await.message.seq, i);
    }
    assert_eq!(store.session(&s.id).await.unwrap().unwrap().last_seq, 12);
    assert_eq!(store.last_message(&s.id).await.unwrap().unwrap().seq, 12);

    let seqs = |p: &Page| p.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    let q = |after, before, limit| HistoryQuery { after, before, limit };
    let latest = store.history(&s.id, q(None, None, 5)).await.unwrap();
    assert_eq!((seqs(&latest), latest.has_more), (vec![8, 9, 10, 11, 12], true));
    let after = store.history(&s.id, q(Some(2), None, 3)).await.unwrap();
    assert_eq!((seqs(&after), after.has_more), (vec![3, 4, 5], true));
    let tail = store.history(&s.id, q(Some(10), None, 5)).await.unwrap();
    assert_eq!((seqs(&tail), tail.has_more), (vec![11, 12], false));
    let before = store.history(&s.id, q(None, Some(4), 5)).await.unwrap();
    assert_eq!((seqs(&before), before.has_more), (vec![1, 2, 3], false));
    let between = store.history(&s.id, q(Some(3), Some(9), 3)).await.unwrap();
    assert_eq!((seqs(&between), between.has_more), (vec![4, 5, 6], true));
    assert!(store.history(&s.id, q(Some(12), None, 5)).await.unwrap().messages.is_empty());
    let range = store.range(&s.id, 4, 6, 10).await.unwrap();
    assert_eq!(range.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![4, 5, 6]);
    assert_eq!(store.range(&s.id, 11, 99, 10).await.unwrap().len(), 2);

    // cursors only move forward, and never past the last message
    let c = store.advance(&agent.id, &s.id, 5, false).await.unwrap();
    assert_eq!((c.delivered, c.read), (5, 0));
    let c = store.advance(&agent.id, &s.id, 3, true).await.unwrap();
    assert_eq!((c.delivered, c.read), (5, 3));
    let c = store.advance(&agent.id, &s.id, 99, false).await.unwrap();
    assert_eq!(c.delivered, 12);
    assert_eq!(store.cursor(&agent.id, &s.id).await.unwrap(), Cursor { delivered: 12, read: 3 });
    // unread: not sent by the reader, above its read position (customer sent 1,3,5,7,9,11)
    assert_eq!(store.unread(&agent.id, &s.id).await.unwrap(), 4);
    assert_eq!(store.unread(&cust.id, &s.id).await.unwrap(), 6);

    // replay: newest `max` messages of others above the delivery cursor
    let plan = store.replay_plan(&cust.id, &s.id, 100).await.unwrap();
    assert_eq!(plan, ReplayPlan { from_seq: 2, last_seq: 12, truncated: None });
    let plan = store.replay_plan(&cust.id, &s.id, 2).await.unwrap();
    assert_eq!(plan, ReplayPlan { from_seq: 10, last_seq: 12, truncated: Some((1, 9)) });
    store.advance(&cust.id, &s.id, 10, false).await.unwrap();
    let plan = store.replay_plan(&cust.id, &s.id, 100).await.unwrap();
    assert_eq!(plan, ReplayPlan { from_seq: 12, last_seq: 12, truncated: None });
    let plan = store.replay_plan(&agent.id, &s.id, 100).await.unwrap();
    assert_eq!(plan.from_seq, 0, "nothing above the agent's cursor");
}

pub async fn concurrent_appends(store: Arc<dyn ChatStore>) {
    let s = new_session(&*store, "c", 1).await;
    let mut tasks = Vec::new();
    for sender in 0..8 {
        let store = store.clone();
        let sid = s.id.clone();
        tasks.push(tokio::spawn(async move {
            let from = user(&format!("u{sender}"), "customer");
            let mut seqs = Vec::new();
            for i in 0..25 {
                let id = format!("m{i}");
                let msg =
                    NewMessage { session_id: sid.clone(), from: from.clone(), client_msg_id: id, text: "t".into() };
                seqs.push(store.append(msg).await.expect("append").message.seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<u64>>(), "no gap, no repeat");
}

pub async fn assignment_capacity_under_contention(store: Arc<dyn ChatStore>) {
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(new_session(&*store, &format!("cap{i}"), i).await.id);
    }
    let mut tasks = Vec::new();
    for id in ids {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.update_session(&id, SessionChange::Assign { agent: "busy".into(), max_load: 3 }).await.is_ok()
        }));
    }
    let mut assigned = 0;
    for t in tasks {
        assigned += usize::from(t.await.expect("task"));
    }
    assert_eq!(assigned, 3);
    assert_eq!(store.agent_load("busy").await.unwrap(), 3);
}
