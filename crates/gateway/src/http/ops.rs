//! Operations routes: liveness, readiness, metrics.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::Gateway;

/// `GET /healthz`: 200 while the process serves.
pub async fn healthz(gw: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok", "node": &*gw.node_id }))
}

/// `GET /readyz`: 200 when the broker and store answer and the node is not draining.
pub async fn readyz(gw: web::Data<Gateway>) -> HttpResponse {
    if gw.lifecycle.is_draining() {
        return HttpResponse::ServiceUnavailable().json(json!({ "status": "draining", "node": &*gw.node_id }));
    }
    if gw.cluster.as_ref().is_some_and(|c| !c.bus_up.load(std::sync::atomic::Ordering::Acquire)) {
        return HttpResponse::ServiceUnavailable().json(json!({ "status": "unavailable", "node": &*gw.node_id, "reason": "the message bus (Redis pub/sub) is down" }));
    }
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), gw.chat.ping())
        .await
        .unwrap_or_else(|_| Err("the store did not answer in time".into()));
    match ping {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "ready", "node": &*gw.node_id })),
        Err(why) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "unavailable", "node": &*gw.node_id, "reason": why })),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(gw: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(gw.metrics.render())
}
