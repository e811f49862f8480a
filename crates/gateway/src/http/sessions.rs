//! Support-session routes (§2): list, history, claim, transfer, close.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{caller, ApiError, Caller};
use crate::chat::model::{HistoryQuery, SessionStatus};
use crate::chat::service::{Actor, DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT};
use crate::chat::ChatError;
use crate::state::Gateway;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/sessions", web::get().to(list))
        .route("/sessions/{id}/messages", web::get().to(messages))
        .route("/sessions/{id}/claim", web::post().to(claim))
        .route("/sessions/{id}/transfer", web::post().to(transfer))
        .route("/sessions/{id}/close", web::post().to(close));
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        ApiError::new(e.code, e.message)
    }
}

fn actor(caller: &Caller) -> Actor {
    Actor { id: caller.claims.sub.clone(), role: caller.claims.role, name: caller.claims.display_name().to_string() }
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    mine: Option<String>,
}

/// `GET /api/v1/sessions?status=&mine=true`
pub async fn list(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, ApiError> {
    let caller = caller(&req, &gw).await?;
    let q = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::invalid(format!("invalid query: {e}")))?;
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            Some(SessionStatus::parse(s).ok_or_else(|| ApiError::invalid("`status` is queued, assigned or closed"))?)
        }
    };
    let mine = match q.mine.as_deref() {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid("`mine` is true or false")),
    };
    let sessions = gw.chat.list(&actor(&caller), status, mine).await?;
    Ok(HttpResponse::Ok().json(json!({ "sessions": sessions })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessagesQuery {
    after_seq: Option<u64>,
    before_seq: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/v1/sessions/{id}/messages?afterSeq=&beforeSeq=&limit=`
pub async fn messages(
    req: HttpRequest,
    path: web::Path<String>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller(&req, &gw).await?;
    let q = web::Query::<MessagesQuery>::from_query(req.query_string()).map_err(|e| {
        ApiError::invalid(format!("invalid query: afterSeq, beforeSeq and limit are non-negative integers ({e})"))
    })?;
    let limit = q.limit.unwrap_or(DEFAULT_HISTORY_LIMIT).clamp(1, MAX_HISTORY_LIMIT);
    let session_id = path.into_inner();
    let query = HistoryQuery { after: q.after_seq, before: q.before_seq, limit };
    let page = gw.chat.history(&actor(&caller), &session_id, query).await?;
    Ok(HttpResponse::Ok().json(json!({ "sessionId": session_id, "messages": page.messages, "hasMore": page.has_more })))
}

/// `POST /api/v1/sessions/{id}/claim`
pub async fn claim(
    req: HttpRequest,
    path: web::Path<String>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller(&req, &gw).await?;
    Ok(HttpResponse::Ok().json(gw.chat.claim(&actor(&caller), &path.into_inner()).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferRequest {
    to_agent_id: String,
}

/// `POST /api/v1/sessions/{id}/transfer` `{toAgentId}`
pub async fn transfer(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<TransferRequest>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller(&req, &gw).await?;
    Ok(HttpResponse::Ok().json(gw.chat.transfer(&actor(&caller), &path.into_inner(), &body.to_agent_id).await?))
}

/// `POST /api/v1/sessions/{id}/close`
pub async fn close(
    req: HttpRequest,
    path: web::Path<String>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller(&req, &gw).await?;
    Ok(HttpResponse::Ok().json(gw.chat.close(&actor(&caller), &path.into_inner()).await?))
}
