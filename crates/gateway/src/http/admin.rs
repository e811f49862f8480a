//! Administration: agent accounts.

use actix_web::{web, HttpRequest, HttpResponse};
use auth::{AgentRecord, AgentStoreError};
use protocol::ErrorCode;
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use super::{caller, ApiError};
use crate::state::Gateway;

#[derive(Deserialize)]
pub struct NewAgent {
    username: Option<String>,
    password: Option<String>,
    name: Option<String>,
}

const MIN_PASSWORD: usize = 8;

/// `POST /api/v1/admin/agents` (service token) → 201 `{agentId}`
pub async fn create_agent(
    req: HttpRequest,
    body: web::Json<NewAgent>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller(&req, &gw).await?;
    if !caller.is_service() {
        return Err(ApiError::forbidden("creating agents needs a service token"));
    }
    let body = body.into_inner();
    let (Some(username), Some(password), Some(name)) = (body.username, body.password, body.name) else {
        return Err(ApiError::invalid("`username`, `password` and `name` are required"));
    };
    let username = username.trim().to_string();
    if username.is_empty() || username.len() > 100 || username.chars().any(char::is_whitespace) {
        return Err(ApiError::invalid("`username` must be 1..100 characters without spaces"));
    }
    if password.chars().count() < MIN_PASSWORD || password.len() > 1024 {
        return Err(ApiError::invalid(format!("`password` must be {MIN_PASSWORD}..1024 characters")));
    }
    let name = name.trim().to_string();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::invalid("`name` must be 1..200 characters"));
    }
    let hash = web::block(move || auth::hash_password(&password))
        .await
        .map_err(|_| ApiError::new(ErrorCode::Internal, "password hashing failed"))?
        .map_err(|_| ApiError::new(ErrorCode::Internal, "password hashing failed"))?;
    let id = format!("agent-{}", uuid::Uuid::new_v4().simple());
    let record = AgentRecord { id: id.clone(), username: username.clone(), name, password_hash: hash, disabled: false };
    match gw.agents.create(record).await {
        Ok(()) => {
            info!(agent_id = %id, username = %username, "agent created");
            Ok(HttpResponse::Created().json(json!({ "agentId": id })))
        }
        Err(AgentStoreError::AlreadyExists) => {
            Err(ApiError::new(ErrorCode::AlreadyExists, format!("username `{username}` is taken")))
        }
        Err(_) => Err(ApiError::unavailable()),
    }
}
