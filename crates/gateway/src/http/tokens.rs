//! Token routes (§1, §2): customer-token, validate-token, refresh, login, logout.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use auth::{AuthError, Claims, Role, Subject, TokenPair};
use protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{info, warn};

use super::{caller, ApiError};
use crate::hub::users::Revoked;
use crate::state::Gateway;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerTokenRequest {
    name: String,
    channel: String,
    email: Option<String>,
    phone: Option<String>,
    channel_user_id: Option<String>,
}

const MAX_FIELD: usize = 200;

fn required(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::invalid(format!("`{field}` must be a non-empty string")));
    }
    if value.len() > MAX_FIELD {
        return Err(ApiError::invalid(format!("`{field}` is longer than {MAX_FIELD} bytes")));
    }
    Ok(())
}

/// `POST /api/v1/public/customer-token`: a customer, a queued support session, and a token family.
pub async fn customer_token(
    req: HttpRequest,
    body: web::Json<CustomerTokenRequest>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let forwarded = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
    if let Some(ip) =
        crate::limits::client_ip(req.peer_addr().map(|a| a.ip()), forwarded, &gw.settings.server.trusted_proxies)
    {
        if gw.token_requests.check(ip).await == crate::limits::LimitOutcome::Limited {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "at most {} customer-token requests per minute from one address",
                    gw.settings.limits.token_requests_per_min
                ),
            ));
        }
    }
    let body = body.into_inner();
    required("name", &body.name)?;
    required("channel", &body.channel)?;
    for (field, value) in [("email", &body.email), ("phone", &body.phone), ("channelUserId", &body.channel_user_id)] {
        if let Some(v) = value {
            if v.len() > MAX_FIELD {
                return Err(ApiError::invalid(format!("`{field}` is longer than {MAX_FIELD} bytes")));
            }
        }
    }
    let contact = crate::chat::Contact { email: body.email, phone: body.phone, channel_user_id: body.channel_user_id };
    let (customer, session) =
        gw.chat.open_customer(&body.name, &body.channel, contact).await.map_err(ApiError::from)?;
    let subject = Subject {
        name: Some(customer.name.clone()),
        channel: Some(customer.channel.clone()),
        sid: Some(session.id.clone()),
        ..Subject::new(customer.id.clone(), Role::Customer)
    };
    let pair = gw.auth.open_family(subject).await?;
    info!(customer_id = %customer.id, session_id = %session.id, "customer token issued");
    Ok(HttpResponse::Created().json(json!({
        "customerId": customer.id,
        "token": pair.access.token,
        "refreshToken": pair.refresh_token,
        "sessionId": session.id,
        "expiresAt": protocol::time::from_unix_secs(pair.access.claims.exp),
    })))
}

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// `GET /api/v1/public/validate-token?token=T` (or Bearer): always 200, `valid` says.
pub async fn validate_token(req: HttpRequest, query: web::Query<TokenQuery>, gw: web::Data<Gateway>) -> HttpResponse {
    let token =
        query.into_inner().token.filter(|t| !t.is_empty()).or_else(|| crate::ws::handshake::bearer(req.headers()));
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return HttpResponse::Ok().json(json!({
            "valid": false,
            "error": ErrorCode::MissingToken,
            "message": "no token: pass `?token=` or `Authorization: Bearer <token>`",
        }));
    };
    match gw.auth.verify(&token).await {
        Ok(claims) => HttpResponse::Ok().json(valid_body(&claims)),
        Err(e) => HttpResponse::Ok().json(json!({ "valid": false, "error": e.code(), "message": e.message() })),
    }
}

fn valid_body(claims: &Claims) -> serde_json::Value {
    let id_key = match claims.role {
        Role::Customer => "customerId",
        Role::Agent => "agentId",
        Role::Device | Role::Service => "userId",
    };
    let mut body = json!({
        "valid": true,
        "type": claims.role,
        id_key: claims.sub,
        "name": claims.display_name(),
        "expiresAt": protocol::time::from_unix_secs(claims.exp),
    });
    if let Some(channel) = &claims.channel {
        body["channel"] = json!(channel);
    }
    body
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRequest {
    refresh_token: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Refreshed {
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_id: Option<String>,
    token: String,
    refresh_token: String,
    expires_at: String,
}

/// `POST /api/v1/customers/{customerId}/token`
pub async fn customer_refresh(
    path: web::Path<String>,
    body: web::Json<RefreshRequest>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let customer_id = path.into_inner();
    let pair = rotate(&gw, &body.refresh_token, Some(&customer_id)).await?;
    Ok(HttpResponse::Ok().json(Refreshed {
        customer_id: Some(customer_id),
        token: pair.access.token,
        refresh_token: pair.refresh_token,
        expires_at: protocol::time::from_unix_secs(pair.access.claims.exp),
    }))
}

/// `POST /api/v1/auth/refresh`
pub async fn refresh(body: web::Json<RefreshRequest>, gw: web::Data<Gateway>) -> Result<HttpResponse, ApiError> {
    let pair = rotate(&gw, &body.refresh_token, None).await?;
    Ok(HttpResponse::Ok().json(Refreshed {
        customer_id: None,
        token: pair.access.token,
        refresh_token: pair.refresh_token,
        expires_at: protocol::time::from_unix_secs(pair.access.claims.exp),
    }))
}

async fn rotate(gw: &Gateway, presented: &str, expected_sub: Option<&str>) -> Result<TokenPair, ApiError> {
    match gw.auth.refresh(presented, expected_sub).await {
        Ok(pair) => Ok(pair),
        Err(AuthError::FamilyRevoked(family)) => {
            warn!(user = %family.subject.sub, family = %family.id, "refresh token re-used: family revoked");
            gw.close_revoked(family.subject.sub.as_str().into(), Revoked::Family(family.id.as_str().into())).await;
            Err(ApiError::new(
                ErrorCode::TokenRevoked,
                "this refresh token was already used: the session is revoked; log in again",
            ))
        }
        Err(AuthError::InvalidRefreshToken) => {
            Err(ApiError::new(ErrorCode::InvalidRefreshToken, "unknown or expired refresh token"))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct LoginRequest {
    username: String,
    password: String,
}

/// `POST /api/v1/public/login`
pub async fn login_route(body: web::Json<LoginRequest>, gw: web::Data<Gateway>) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let pair = login(&gw, &body.username, &body.password).await?;
    Ok(HttpResponse::Ok().json(json!({
        "agentId": pair.access.claims.sub,
        "name": pair.access.claims.display_name(),
        "token": pair.access.token,
        "refreshToken": pair.refresh_token,
        "expiresAt": protocol::time::from_unix_secs(pair.access.claims.exp),
    })))
}

/// Agent login, shared by the HTTP route and the `login` frame: lock-out, password check, a new family.
pub async fn login(gw: &Gateway, username: &str, password: &str) -> Result<TokenPair, ApiError> {
    let locked = gw.login_throttle.is_locked(username).await.map_err(|_| ApiError::unavailable())?;
    if locked {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "too many failed logins for this username: wait {} s before trying again",
                gw.settings.auth.lockout_secs
            ),
        ));
    }
    let record = gw.agents.by_username(username).await.map_err(|_| ApiError::unavailable())?;
    let hash = record.as_ref().map_or_else(|| auth::dummy_hash().to_string(), |r| r.password_hash.clone());
    let password = password.to_string();
    // Password hashing is deliberately slow: keep it off the async workers.
    let ok = web::block(move || auth::verify_password(&password, &hash)).await.unwrap_or(false);
    let Some(record) = record.filter(|r| ok && !r.disabled) else {
        gw.login_throttle.record_failure(username).await.map_err(|_| ApiError::unavailable())?;
        return Err(ApiError::new(ErrorCode::InvalidCredentials, "wrong username or password"));
    };
    gw.login_throttle.clear(username).await.map_err(|_| ApiError::unavailable())?;
    let subject = Subject { name: Some(record.name.clone()), ..Subject::new(record.id.clone(), Role::Agent) };
    let pair = gw.auth.open_family(subject).await?;
    info!(agent_id = %record.id, "agent logged in");
    Ok(pair)
}

/// `POST /api/v1/auth/logout`: revoke the caller's family and close its connections.
pub async fn logout(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, ApiError> {
    let caller = caller(&req, &gw).await?;
    if caller.static_service {
        return Ok(HttpResponse::NoContent().finish());
    }
    gw.auth.revoke(&caller.claims).await?;
    let user: Arc<str> = caller.claims.sub.as_str().into();
    // A token with neither `fam` nor `jti` cannot be told apart from the user's
    // other tokens; it stays valid until it expires.
    let which = match (&caller.claims.fam, &caller.claims.jti) {
        (Some(fam), _) => Some(Revoked::Family(fam.as_str().into())),
        (None, Some(jti)) => Some(Revoked::Jti(jti.as_str().into())),
        (None, None) => None,
    };
    if let Some(which) = which {
        gw.close_revoked(user, which).await;
    }
    if caller.claims.role == Role::Agent {
        gw.chat.agent_logged_out(&caller.claims.sub).await;
    }
    info!(user = %caller.claims.sub, "logged out");
    Ok(HttpResponse::NoContent().finish())
}
