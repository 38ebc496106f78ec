//! The OpenID Provider's clients (ADMIN) and users' consents to them.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::api::{page_of, resolve_me, Order, Page, PageQuery};
use crate::audit::Audit;
use crate::auth::principal::Caller;
use crate::error::{ApiError, ApiResult};
use crate::http::{Json, Query};
use crate::service::oauth::{self as flows, ClientRequest};
use crate::state::AppState;
use crate::store::{oauth, users};

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedClient {
    #[serde(flatten)]
    pub client: oauth::Client,
    /// A confidential client's secret, shown only in this response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

fn client_not_found(id: &str) -> ApiError {
    ApiError::not_found("client_not_found", format!("no client '{id}'"))
}

/// Registers a client (relying party). ADMIN. The secret is in this answer only.
#[utoipa::path(post, path = "/api/v1/oauth/clients", tag = "openid-provider", request_body = ClientRequest,
    responses((status = 201, body = CreatedClient), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    body: Json<ClientRequest>,
) -> ApiResult<HttpResponse> {
    crate::auth::reauth::require_factor(&caller.0)?;
    let (client, client_secret) = flows::create_client(&state.pool, &state.keys, &audit, body.into_inner()).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(CreatedClient { client, client_secret }))
}

/// The registered clients. ADMIN.
#[utoipa::path(get, path = "/api/v1/oauth/clients", tag = "openid-provider", params(PageQuery),
    responses((status = 200, body = Page<oauth::Client>)))]
pub async fn list(state: web::Data<AppState>, _caller: Caller, q: Query<PageQuery>) -> ApiResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    let list = oauth::list_clients(&mut conn).await?;
    Ok(HttpResponse::Ok().json(page_of(list, &q, Order::Ascending, |c| c.client_id.clone())?))
}

/// One client. ADMIN.
#[utoipa::path(get, path = "/api/v1/oauth/clients/{client_id}", tag = "openid-provider", params(("client_id" = String, Path)),
    responses((status = 200, body = oauth::Client), (status = 404, body = crate::error::ErrorBody)))]
pub async fn read(state: web::Data<AppState>, _caller: Caller, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    let c = oauth::get_client(&mut conn, &path).await?.ok_or_else(|| client_not_found(&path))?;
    Ok(HttpResponse::Ok().json(c))
}

/// Deletes a client with every grant, token and consent it had. ADMIN.
#[utoipa::path(delete, path = "/api/v1/oauth/clients/{client_id}", tag = "openid-provider", params(("client_id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete(
    state: web::Data<AppState>,
    _caller: Caller,
    audit: Audit,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    flows::delete_client(&state.pool, &audit, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The clients a user allowed (third-party clients ask once). The user
/// themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/users/{username}/consents", tag = "openid-provider", params(("username" = String, Path), PageQuery),
    responses((status = 200, body = Page<oauth::Consent>)))]
pub async fn consents(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    q: Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, resolve_me(&caller.0, &path), false).await?;
    let list = oauth::consents(&mut conn, user.id).await?;
    Ok(HttpResponse::Ok().json(page_of(list, &q, Order::Ascending, |c| c.client_id.clone())?))
}

/// Withdraws a consent; the user's grants to that client end. The user
/// themself or USER_MANAGEMENT.
#[utoipa::path(delete, path = "/api/v1/users/{username}/consents/{client_id}", tag = "openid-provider",
    params(("username" = String, Path), ("client_id" = String, Path)),
    responses((status = 204, description = "withdrawn"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn revoke_consent(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (username, client_id) = path.into_inner();
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, resolve_me(&caller.0, &username), false).await?;
    drop(conn);
    flows::revoke_consent(&state.pool, &audit, user.id, &client_id).await?;
    Ok(HttpResponse::NoContent().finish())
}
