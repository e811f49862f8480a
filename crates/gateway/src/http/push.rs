//! Routes of the push service this gateway replaces: `/get/token` and `/heartbeat`.
//! Their bodies keep that service's `{"data": ...}` shape.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use auth::{Role, TokenSpec};
use serde::Deserialize;
use serde_json::json;

use super::caller;
use crate::hub::users::Touch;
use crate::state::Gateway;

fn bad_request() -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "data": "Invalid request parameters" }))
}

fn token_error() -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({ "data": "token error" }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetTokenQuery {
    is_login: Option<String>,
    device_id: Option<String>,
    user_id: Option<String>,
}

/// `GET /get/token?isLogin=false&deviceId=D` or `?isLogin=true&userId=U` (with a Bearer token).
pub async fn get_token(req: HttpRequest, gw: web::Data<Gateway>) -> HttpResponse {
    let Ok(query) = web::Query::<GetTokenQuery>::from_query(req.query_string()) else { return bad_request() };
    let non_empty = |v: &Option<String>| {
        v.as_deref().map(str::trim).filter(|v| !v.is_empty() && v.len() <= 200).map(str::to_string)
    };
    let sub = match query.is_login.as_deref() {
        Some("false") => match non_empty(&query.device_id) {
            Some(device) => device,
            None => return bad_request(),
        },
        Some("true") => {
            let Some(user) = non_empty(&query.user_id) else { return bad_request() };
            match caller(&req, &gw).await {
                Ok(c) if c.is_service() || c.claims.sub == user => user,
                _ => return token_error(),
            }
        }
        _ => return bad_request(),
    };
    let mut spec = TokenSpec::new(sub, Role::Device);
    spec.subject.rooms = Some(gw.settings.rooms.device_grants.clone());
    match gw.auth.issue(spec) {
        Ok(issued) => HttpResponse::Ok().json(json!({ "data": issued.token })),
        Err(_) => HttpResponse::InternalServerError().json(json!({ "data": "token error" })),
    }
}

#[derive(Deserialize)]
pub struct HeartbeatQuery {
    token: Option<String>,
}

/// `GET /heartbeat?token=T`: liveness for T's push connections.
pub async fn heartbeat(req: HttpRequest, gw: web::Data<Gateway>) -> HttpResponse {
    let token = web::Query::<HeartbeatQuery>::from_query(req.query_string()).ok().and_then(|q| q.into_inner().token);
    let Some(token) = token.filter(|t| !t.is_empty()) else { return token_error() };
    let Ok(claims) = gw.auth.verify(&token).await else { return token_error() };
    let user: Arc<str> = claims.sub.as_str().into();
    let jti = claims.jti.as_deref().map(Arc::from);
    gw.touch(user, jti).await;
    HttpResponse::Ok().json(json!({}))
}

impl Gateway {
    /// Liveness for a user's push connections on this node (and, in a cluster, every node).
    pub async fn touch(&self, user: Arc<str>, jti: Option<Arc<str>>) {
        match &self.cluster {
            Some(cluster) => cluster.relay.touch(&user, jti.as_deref()).await,
            None => {
                let _ = self.users.shard(&user).send(Touch { user, jti }).await;
            }
        }
    }
}
