//! The HTTP API (§2): routes, the caller's identity, and the one place where errors
//! become responses.
//!
//! - [`tokens`]: customer-token, validate-token, refresh, login, logout.
//! - [`push`]: the push-service compatibility routes `/get/token` and `/heartbeat`.
//! - [`rooms`]: room publish and presence.
//! - [`sessions`]: support sessions and their history.
//! - [`admin`]: agent accounts.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`.

pub mod admin;
pub mod ops;
pub mod push;
pub mod rooms;
pub mod sessions;
pub mod tokens;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use auth::{AuthError, Claims, Role};
use protocol::ErrorCode;
use serde::Serialize;

use crate::state::Gateway;
use crate::ws;

/// An error answer: `{"error": CODE, "message": text}` with the code's status.
/// Handshake failures use it too, adding the `X-WebSocket-Error-*` headers.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub status: StatusCode,
    headers: Vec<(HeaderName, &'static str)>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError { code, message: message.into(), status, headers: Vec::new() }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Forbidden, message)
    }

    pub fn unavailable() -> ApiError {
        ApiError::new(ErrorCode::Unavailable, "the store is unavailable; retry shortly")
    }

    /// The response, with the WebSocket error headers (harmless on plain routes).
    pub fn response(&self) -> HttpResponse {
        #[derive(Serialize)]
        struct Body<'a> {
            error: ErrorCode,
            message: &'a str,
        }
        let mut res = HttpResponse::build(self.status);
        res.insert_header(("X-WebSocket-Error-Code", self.code.as_str()));
        if let Ok(v) = HeaderValue::from_str(&self.message.replace(['\r', '\n'], " ")) {
            res.insert_header((HeaderName::from_static("x-websocket-error-message"), v));
        }
        for (name, value) in &self.headers {
            res.insert_header((name.clone(), *value));
        }
        res.json(Body { error: self.code, message: &self.message })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        self.response()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::new(e.code(), e.message())
    }
}

/// The authenticated caller of a route.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Claims,
    /// Authenticated with the static `auth.service_token`.
    pub static_service: bool,
}

impl Caller {
    pub fn is_service(&self) -> bool {
        self.claims.role == Role::Service
    }
}

/// The caller named by `Authorization: Bearer`: the static service token, or a verified JWT.
pub async fn caller(req: &HttpRequest, gw: &Gateway) -> Result<Caller, ApiError> {
    let Some(token) = ws::handshake::bearer(req.headers()).filter(|t| !t.is_empty()) else {
        return Err(ApiError::new(ErrorCode::MissingToken, "this route needs `Authorization: Bearer <token>`"));
    };
    caller_from_token(&token, gw).await
}

pub async fn caller_from_token(token: &str, gw: &Gateway) -> Result<Caller, ApiError> {
    if let Some(service) = gw.settings.auth.service_token.as_deref() {
        if constant_time_eq(service.as_bytes(), token.as_bytes()) {
            return Ok(Caller { claims: service_claims(gw), static_service: true });
        }
    }
    let claims = gw.auth.verify(token).await?;
    Ok(Caller { claims, static_service: false })
}

fn service_claims(gw: &Gateway) -> Claims {
    Claims {
        sub: "service".into(),
        role: Role::Service,
        name: Some("service token".into()),
        channel: None,
        sid: None,
        rooms: None,
        publish: None,
        fam: None,
        iat: None,
        nbf: None,
        exp: i64::MAX / 1000,
        jti: None,
        iss: gw.auth.keyring().issuer().to_string(),
        aud: gw.auth.keyring().audience().into(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// JSON bodies that fail to parse answer 400 INVALID_REQUEST in the standard shape.
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(64 * 1024)
        .error_handler(|err, _| ApiError::invalid(format!("invalid JSON body: {err}")).into())
}

/// Query strings that fail to parse answer 400 INVALID_REQUEST.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _| ApiError::invalid(format!("invalid query: {err}")).into())
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _| ApiError::invalid(format!("invalid path: {err}")).into())
}

/// Every route of the node.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(query_config())
        .app_data(path_config())
        .route("/ws/chat", web::get().to(ws::handshake::chat))
        .route("/ws/chat", web::route().to(ws::handshake::chat))
        .route("/ws", web::get().to(ws::handshake::push))
        .route("/ws", web::route().to(ws::handshake::push))
        .route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/metrics", web::get().to(ops::metrics))
        .route("/get/token", web::get().to(push::get_token))
        .route("/heartbeat", web::get().to(push::heartbeat))
        .service(
            web::scope("/api/v1")
                .route("/public/customer-token", web::post().to(tokens::customer_token))
                .route("/public/validate-token", web::get().to(tokens::validate_token))
                .route("/public/login", web::post().to(tokens::login_route))
                .route("/customers/{customer_id}/token", web::post().to(tokens::customer_refresh))
                .route("/auth/refresh", web::post().to(tokens::refresh))
                .route("/auth/logout", web::post().to(tokens::logout))
                .route("/rooms/{room}/publish", web::post().to(rooms::publish))
                .route("/rooms/{room}/presence", web::get().to(rooms::presence))
                .route("/admin/agents", web::post().to(admin::create_agent))
                .configure(sessions::routes),
        )
        .default_service(web::to(|| async { ApiError::new(ErrorCode::NotFound, "no such route").response() }));
}
