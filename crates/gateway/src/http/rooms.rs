//! Room routes: publish a notice, list who is in a room.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::{caller, ApiError};
use crate::state::Gateway;
use crate::ws::validate_room;

#[derive(Deserialize)]
pub struct PublishRequest {
    data: Box<RawValue>,
    event: Option<String>,
}

/// `POST /api/v1/rooms/{room}/publish` → 202 `{room, seq}`
pub async fn publish(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<PublishRequest>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller(&req, &gw).await?;
    let room = path.into_inner();
    validate_room(&room).map_err(ApiError::invalid)?;
    if !caller.claims.may_publish(&room) {
        return Err(ApiError::forbidden(format!("your token may not publish to room `{room}`")));
    }
    let body = body.into_inner();
    let room: Arc<str> = room.into();
    gw.metrics.notices_published.inc();
    let seq = gw.rooms.publish(room.clone(), body.event, body.data).await.map_err(|_| ApiError::unavailable())?;
    Ok(HttpResponse::Accepted().json(json!({ "room": &*room, "seq": seq })))
}

/// `GET /api/v1/rooms/{room}/presence` → `{room, members}`
pub async fn presence(
    req: HttpRequest,
    path: web::Path<String>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller(&req, &gw).await?;
    let room = path.into_inner();
    validate_room(&room).map_err(ApiError::invalid)?;
    let room: Arc<str> = room.into();
    if !caller.is_service() {
        let member = gw.rooms.is_member(&room, &caller.claims.sub).await.map_err(|_| ApiError::unavailable())?;
        if !member {
            return Err(ApiError::forbidden(
                "only a service token or a current subscriber of the room may list its members",
            ));
        }
    }
    let members = gw.rooms.members(&room).await.map_err(|_| ApiError::unavailable())?;
    Ok(HttpResponse::Ok().json(json!({ "room": &*room, "members": members })))
}
