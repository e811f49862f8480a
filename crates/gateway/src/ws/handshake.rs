//! The opening handshake of both endpoints: the §3 failure table, in both
//! `auth.handshake_errors` modes, and the three token sources.

use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, HttpRequest, HttpResponse};
use protocol::{CloseReason, ErrorCode};
use serde::Deserialize;
use tracing::debug;

use super::connection::{self, Admission};
use super::{Endpoint, Identity};
use crate::config::HandshakeErrors;
use crate::http::ApiError;
use crate::state::{Gateway, SlotGuard};

/// Seconds a client is told to wait after `SERVER_BUSY`.
const RETRY_AFTER_SECS: &str = "5";

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
    #[serde(rename = "roomIds")]
    room_ids: Option<String>,
}

/// `GET /ws/chat`
pub async fn chat(req: HttpRequest, payload: web::Payload, gw: web::Data<Gateway>) -> actix_web::Result<HttpResponse> {
    open(req, payload, gw, Endpoint::Chat).await
}

/// `GET /ws?token=T&roomIds=a,b`
pub async fn push(req: HttpRequest, payload: web::Payload, gw: web::Data<Gateway>) -> actix_web::Result<HttpResponse> {
    open(req, payload, gw, Endpoint::Push).await
}

async fn open(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    endpoint: Endpoint,
) -> actix_web::Result<HttpResponse> {
    if !is_upgrade(&req) {
        return Ok(ApiError::new(
            ErrorCode::InvalidRequest,
            "this endpoint only accepts a WebSocket upgrade (GET with `Upgrade: websocket`)",
        )
        .response());
    }
    let headers = req.headers();
    let device_id = header_str(headers, "device-id");
    let client_id = header_str(headers, "client-id");
    let socket = req.conn_data::<std::rc::Rc<super::socket::SocketFd>>().cloned();
    let mut admission = Admission {
        endpoint,
        identity: None,
        push_rooms: Vec::new(),
        device_id,
        client_id,
        reject: None,
        slot: None,
        socket,
    };
    match admit(&req, &gw, endpoint).await {
        Ok((identity, rooms, slot)) => {
            admission.identity = identity;
            admission.push_rooms = rooms;
            admission.slot = Some(slot);
            connection::start(&req, payload, gw, admission)
        }
        Err(failure) => {
            debug!(code = failure.code.as_str(), endpoint = endpoint.as_str(), "handshake refused");
            match gw.settings.auth.handshake_errors {
                HandshakeErrors::Http => {
                    gw.metrics.handshake_rejections.get_or_create(&vec![("code", failure.code.as_str())]).inc();
                    Ok(failure.response())
                }
                HandshakeErrors::Close => {
                    admission.reject =
                        Some(CloseReason::from_error(failure.code).unwrap_or(CloseReason::InvalidRequest));
                    connection::start(&req, payload, gw, admission)
                }
            }
        }
    }
}

type Admitted = (Option<Identity>, Vec<String>, SlotGuard);

/// Everything the failure table checks, in its order.
async fn admit(req: &HttpRequest, gw: &Gateway, endpoint: Endpoint) -> Result<Admitted, ApiError> {
    if gw.lifecycle.is_draining() {
        return Err(busy("this node is shutting down; reconnect to another node"));
    }
    let slot = gw.slots.try_acquire().ok_or_else(|| busy("this node is at its connection limit; retry later"))?;
    let query = web::Query::<WsQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("bad query string: {e}")))?
        .into_inner();
    let token = token_from(req.headers(), query.token.as_deref());
    let mut rooms = Vec::new();
    if endpoint == Endpoint::Push {
        if token.is_none() {
            return Err(ApiError::new(ErrorCode::MissingToken, "a token is required: `token` query parameter, `Authorization: Bearer`, or the `bearer.<token>` subprotocol"));
        }
        let max = gw.settings.rooms.max_per_connection;
        rooms = query
            .room_ids
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .take(max)
            .map(str::to_string)
            .collect();
        if rooms.is_empty() {
            return Err(ApiError::new(
                ErrorCode::MissingRoom,
                "`roomIds` must name at least one room (comma-separated)",
            ));
        }
    }
    let identity = match token {
        None => None,
        Some(token) => {
            let claims = gw.auth.verify(&token).await.map_err(|e| {
                let failure = ApiError::new(e.code(), e.message());
                if e.code() == ErrorCode::Unavailable {
                    failure.with_header(header::RETRY_AFTER, RETRY_AFTER_SECS)
                } else {
                    failure
                }
            })?;
            Some(Identity::from_claims(claims))
        }
    };
    if let Some(identity) = &identity {
        for room in &rooms {
            super::validate_room(room).map_err(|why| ApiError::new(ErrorCode::InvalidRequest, why))?;
            if !identity.claims.may_subscribe(room) {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!("your token grants no access to room `{room}`"),
                ));
            }
        }
    }
    Ok((identity, rooms, slot))
}

fn busy(message: &str) -> ApiError {
    ApiError::new(ErrorCode::ServerBusy, message).with_header(header::RETRY_AFTER, RETRY_AFTER_SECS)
}

fn is_upgrade(req: &HttpRequest) -> bool {
    req.method() == actix_web::http::Method::GET
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)
}

/// The token, from the first source present: `Authorization: Bearer`, then the
/// `bearer.T` subprotocol offer, then the `token` query parameter. Never falls back.
pub fn token_from(headers: &HeaderMap, query_token: Option<&str>) -> Option<String> {
    if let Some(token) = bearer(headers) {
        return Some(token);
    }
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(value) = value.to_str() else { continue };
        if let Some(token) = value.split(',').map(str::trim).find_map(|p| p.strip_prefix("bearer.")) {
            return Some(token.to_string());
        }
    }
    query_token.map(str::trim).filter(|t| !t.is_empty()).map(str::to_string)
}

/// `Authorization: Bearer T`; a present header with an empty token counts as a bad token.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).unwrap_or(value);
    Some(token.trim().to_string())
}
