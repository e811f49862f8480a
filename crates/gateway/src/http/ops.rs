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
    match gw.chat.ping().await {
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
