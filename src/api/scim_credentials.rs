//! Provisioning credentials for SCIM (`/scim/v2`): API keys of scope
//! `scim`, made by an administrator (`service::scim::create_credential`).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::audit::Audit;
use crate::auth::principal::Caller;
use crate::error::ApiResult;
use crate::http::Json;
use crate::state::AppState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCredential {
    /// The provisioning client's name (its external ids are kept under it).
    pub name: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Credential {
    pub id: uuid::Uuid,
    pub name: String,
    pub prefix: String,
    /// The bearer token for `/scim/v2` (an API key), shown only in this answer.
    pub key: String,
}

/// Makes a SCIM provisioning credential owned by the caller: it holds
/// SCIM_PROVISIONING and nothing else, and is refused outside `/scim/v2`.
/// ADMIN; a recent login (and a step-up for a user with a second factor).
/// Revoke it as the owner's API key.
#[utoipa::path(post, path = "/api/v1/scim/credentials", tag = "scim", request_body = NewCredential,
    responses((status = 201, body = Credential), (status = 409, body = crate::error::ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    body: Json<NewCredential>,
) -> ApiResult<HttpResponse> {
    if !crate::auth::reauth::is_recent(&state, &caller.0) {
        return Err(crate::auth::reauth::required().into());
    }
    crate::auth::reauth::require_factor(&caller.0)?;
    let (view, token) =
        crate::service::scim::create_credential(&state.pool, &state.keys, &audit, caller.0.user_id, &body.name).await?;
    Ok(HttpResponse::Created().insert_header(("Cache-Control", "no-store")).json(Credential {
        id: view.id,
        name: view.name,
        prefix: view.prefix,
        key: token,
    }))
}
