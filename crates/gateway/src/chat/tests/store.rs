//! The store suite against the in-memory implementation.

use std::sync::Arc;

use super::*;

fn memory() -> Arc<dyn ChatStore> {
    Arc::new(MemoryChatStore::new())
}

#[tokio::test]
async fn memory_sessions_lifecycle() {
    suite::sessions_lifecycle(memory()).await;
}

#[tokio::test]
async fn memory_messages_and_cursors() {
    suite::messages_and_cursors(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_concurrent_appends() {
    suite::concurrent_appends(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_assignment_capacity() {
    suite::assignment_capacity_under_contention(memory()).await;
}
