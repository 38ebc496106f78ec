//! SCIM 2.0 at `/scim/v2` (RFC 7643/7644): discovery and Users. Thin
//! handlers over `service::scim`; every failure is a SCIM error body
//! (`urn:ietf:params:scim:api:messages:2.0:Error` with `scimType`), and
//! every answer is `application/scim+json`. The routes take a provisioning
//! credential only (`Rule::Permission(SCIM_PROVISIONING)`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::audit::Audit;
use crate::auth::principal::Caller;
use crate::domain::Error;
use crate::service::scim::{self as service, Client, ListQuery, MAX_RESULTS};
use crate::state::AppState;
use crate::store::scim::Resource;

pub mod schema;

pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const CONTENT_TYPE: &str = "application/scim+json";
/// The deepest filter accepted (`scim_v2` refuses deeper ones too).
pub const MAX_FILTER_LEN: usize = 4096;

/// Whether a route pattern is SCIM's.
pub fn is_scim(pattern: &str) -> bool {
    pattern == "/scim/v2" || pattern.starts_with("/scim/v2/")
}

const SCIM_TYPES: [&str; 10] = [
    "invalidFilter",
    "tooMany",
    "uniqueness",
    "mutability",
    "invalidSyntax",
    "invalidPath",
    "noTarget",
    "invalidValue",
    "invalidVers",
    "sensitive",
];

/// A SCIM error answer.
pub fn error_response(status: StatusCode, scim_type: Option<&str>, detail: &str) -> HttpResponse {
    let mut body = json!({"schemas": [ERROR_SCHEMA], "status": status.as_u16().to_string(), "detail": detail});
    if let Some(t) = scim_type {
        body["scimType"] = json!(t);
    }
    HttpResponse::build(status).content_type(CONTENT_TYPE).body(body.to_string())
}

/// A refusal of the access guard on a SCIM path, in SCIM's shape.
pub fn denied(err: &crate::error::ApiError) -> HttpResponse {
    let mut res = error_response(err.status, None, &err.message);
    if err.status == StatusCode::UNAUTHORIZED {
        // RFC 9110 §11.6.1: a 401 names the scheme to use (SCIM clients send
        // their provisioning token as a bearer token, RFC 7644 §2).
        res.headers_mut().insert(
            actix_web::http::header::WWW_AUTHENTICATE,
            actix_web::http::header::HeaderValue::from_static("Bearer realm=\"registrar\""),
        );
    }
    res
}

/// The SCIM answer of a domain error: its status, `scimType` where SCIM
/// names one, the message (never an internal detail).
fn failure(e: Error) -> HttpResponse {
    if let Error::Internal(cause) = &e {
        tracing::error!(error = %format!("{cause:#}"), "SCIM request failed");
    }
    let code = e.code();
    if code == "precondition_failed" {
        return error_response(StatusCode::PRECONDITION_FAILED, None, &e.to_string());
    }
    let api = crate::error::ApiError::from(e);
    let scim_type = SCIM_TYPES.iter().find(|t| **t == code).copied().or(match api.status {
        StatusCode::CONFLICT if code.ends_with("_exists") || code.ends_with("_taken") => Some("uniqueness"),
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Some("invalidValue"),
        _ => None,
    });
    // SCIM reports every bad request as 400.
    let status = if api.status == StatusCode::UNPROCESSABLE_ENTITY { StatusCode::BAD_REQUEST } else { api.status };
    error_response(status, scim_type, &api.message)
}

fn answer(status: StatusCode, body: &Value) -> HttpResponse {
    let mut res = HttpResponse::build(status);
    res.content_type(CONTENT_TYPE);
    if let Some(v) = body["meta"]["version"].as_str() {
        res.insert_header(("ETag", v.to_string()));
    }
    if status == StatusCode::CREATED {
        if let Some(l) = body["meta"]["location"].as_str() {
            res.insert_header(("Location", l.to_string()));
        }
    }
    res.body(body.to_string())
}

type Scim = Result<HttpResponse, actix_web::Error>;

fn respond(r: Result<(StatusCode, Value), Error>) -> Scim {
    Ok(match r {
        Ok((status, body)) => answer(status, &body),
        Err(e) => failure(e),
    })
}

fn client(state: &AppState, caller: &Caller) -> Result<Client, Error> {
    let name = caller.0.scim_client.clone().ok_or_else(|| Error::forbidden("SCIM takes a provisioning credential"))?;
    Ok(Client::new(state, &caller.0, name))
}

/// A JSON body (`application/scim+json` or `application/json`).
fn body_of(bytes: &web::Bytes) -> Result<Value, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::invalid("invalidSyntax", format!("the body is not JSON: {e}")))
}

fn id_of(raw: &str) -> Result<Uuid, Error> {
    raw.parse().map_err(|_| Error::not_found("scim_not_found", "no such resource"))
}

fn if_match(req: &HttpRequest) -> Option<String> {
    req.headers().get("if-match").and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// `attributes` / `excludedAttributes` of a request.
struct Projection {
    attributes: Vec<String>,
    excluded: Vec<String>,
}

impl Projection {
    fn from_lists(attributes: Option<&str>, excluded: Option<&str>) -> Projection {
        let split = |s: Option<&str>| -> Vec<String> {
            s.map(|s| s.split(',').map(|a| a.trim().to_ascii_lowercase()).filter(|a| !a.is_empty()).collect())
                .unwrap_or_default()
        };
        Projection { attributes: split(attributes), excluded: split(excluded) }
    }

    /// Applies the projection to one resource (`id`, `schemas` and `meta`
    /// always stay, as RFC 7643's `returned: always` says).
    fn apply(&self, mut v: Value) -> Value {
        let Some(o) = v.as_object_mut() else { return v };
        let always = ["id", "schemas", "meta"];
        let short = |a: &str| -> String {
            let a = a.strip_prefix(&format!("{}:", crate::store::scim::USER_SCHEMA).to_ascii_lowercase()).unwrap_or(a);
            a.to_string()
        };
        if !self.attributes.is_empty() {
            let wanted: Vec<String> = self.attributes.iter().map(|a| short(a)).collect();
            let keys: Vec<String> = o.keys().cloned().collect();
            for k in keys {
                let lk = k.to_ascii_lowercase();
                if always.contains(&lk.as_str()) {
                    continue;
                }
                let whole = wanted.iter().any(|w| *w == lk || w.starts_with(&format!("{lk}:")));
                let subs: Vec<&str> = wanted.iter().filter_map(|w| w.strip_prefix(&format!("{lk}."))).collect();
                if whole {
                    continue;
                }
                if subs.is_empty() {
                    o.remove(&k);
                } else if let Some(Value::Object(inner)) = o.get_mut(&k) {
                    inner.retain(|ik, _| subs.contains(&ik.to_ascii_lowercase().as_str()));
                } else if let Some(Value::Array(items)) = o.get_mut(&k) {
                    for item in items.iter_mut() {
                        if let Value::Object(inner) = item {
                            inner.retain(|ik, _| subs.contains(&ik.to_ascii_lowercase().as_str()));
                        }
                    }
                }
            }
        }
        for x in &self.excluded {
            let x = short(x);
            if always.contains(&x.as_str()) {
                continue;
            }
            match x.split_once('.') {
                None => {
                    if let Some(k) = o.keys().find(|k| k.eq_ignore_ascii_case(&x)).cloned() {
                        o.remove(&k);
                    }
                }
                Some((a, sub)) => {
                    if let Some(k) = o.keys().find(|k| k.eq_ignore_ascii_case(a)).cloned() {
                        match o.get_mut(&k) {
                            Some(Value::Object(inner)) => inner.retain(|ik, _| !ik.eq_ignore_ascii_case(sub)),
                            Some(Value::Array(items)) => {
                                for item in items.iter_mut() {
                                    if let Value::Object(inner) = item {
                                        inner.retain(|ik, _| !ik.eq_ignore_ascii_case(sub));
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        v
    }
}

#[derive(Deserialize)]
pub struct ListParams {
    filter: Option<String>,
    #[serde(rename = "startIndex")]
    start_index: Option<String>,
    count: Option<String>,
    attributes: Option<String>,
    #[serde(rename = "excludedAttributes")]
    excluded_attributes: Option<String>,
    #[serde(rename = "sortBy")]
    sort_by: Option<String>,
    #[serde(rename = "sortOrder")]
    sort_order: Option<String>,
}

fn list_query(
    resource: crate::store::scim::Resource,
    filter: Option<&str>,
    start: Option<i64>,
    count: Option<i64>,
) -> Result<ListQuery, Error> {
    let filter = match filter.map(str::trim).filter(|f| !f.is_empty()) {
        None => None,
        Some(f) if f.len() > MAX_FILTER_LEN => {
            return Err(Error::invalid("invalidFilter", format!("a filter is at most {MAX_FILTER_LEN} bytes")))
        }
        Some(f) => {
            let parsed: scim_v2::filter::Filter =
                f.parse().map_err(|e| Error::invalid("invalidFilter", format!("the filter does not parse: {e}")))?;
            crate::store::scim::check_filter(resource, &parsed)?;
            Some(parsed)
        }
    };
    // RFC 7644 section 3.4.2.4: below 1 means 1; a negative count means 0.
    let start_index = start.unwrap_or(1).max(1);
    let count = count.unwrap_or(MAX_RESULTS).clamp(0, MAX_RESULTS);
    Ok(ListQuery { filter, start_index, count })
}

fn number(raw: Option<&str>, what: &str) -> Result<Option<i64>, Error> {
    raw.map(|s| {
        s.trim().parse::<i64>().map_err(|_| Error::invalid("invalidValue", format!("{what} must be an integer")))
    })
    .transpose()
}

async fn list(
    state: &AppState,
    caller: &Caller,
    resource: Resource,
    q: ListQuery,
    projection: &Projection,
) -> Result<(StatusCode, Value), Error> {
    let c = client(state, caller)?;
    let mut page = match resource {
        Resource::User => service::list_users(state, &c, &q).await?,
        Resource::Group => service::list_groups(state, &c, &q).await?,
    };
    if let Some(items) = page["Resources"].as_array_mut() {
        for item in items.iter_mut() {
            *item = projection.apply(item.take());
        }
    }
    Ok((StatusCode::OK, page))
}

fn list_from_params(resource: Resource, p: &ListParams) -> Result<(ListQuery, Projection), Error> {
    // sortBy/sortOrder: ServiceProviderConfig says sort is not supported;
    // the order is the creation order.
    let _ = (&p.sort_by, &p.sort_order);
    let q = list_query(
        resource,
        p.filter.as_deref(),
        number(p.start_index.as_deref(), "startIndex")?,
        number(p.count.as_deref(), "count")?,
    )?;
    Ok((q, Projection::from_lists(p.attributes.as_deref(), p.excluded_attributes.as_deref())))
}

/// What a `/.search` body asks for.
struct SearchRequest {
    filter: Option<String>,
    start: Option<i64>,
    count: Option<i64>,
    projection: Projection,
}

fn search_request(body: &web::Bytes) -> Result<SearchRequest, Error> {
    let b = body_of(body)?;
    if !b.is_object() {
        return Err(Error::invalid("invalidSyntax", "a search request is a JSON object (a SearchRequest)"));
    }
    let text = |k: &str| -> Result<Option<String>, Error> {
        match b.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Array(a)) => Ok(Some(a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))),
            Some(_) => Err(Error::invalid("invalidValue", format!("{k} must be a string"))),
        }
    };
    let int = |k: &str| -> Result<Option<i64>, Error> {
        match b.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                v.as_i64().map(Some).ok_or_else(|| Error::invalid("invalidValue", format!("{k} must be an integer")))
            }
        }
    };
    Ok(SearchRequest {
        filter: text("filter")?,
        start: int("startIndex")?,
        count: int("count")?,
        projection: Projection::from_lists(text("attributes")?.as_deref(), text("excludedAttributes")?.as_deref()),
    })
}

fn search_from_body(resource: Resource, body: &web::Bytes) -> Result<(ListQuery, Projection), Error> {
    let r = search_request(body)?;
    Ok((list_query(resource, r.filter.as_deref(), r.start, r.count)?, r.projection))
}

/// `GET /scim/v2/Users`.
pub async fn list_users(state: web::Data<AppState>, caller: Caller, q: web::Query<ListParams>) -> Scim {
    let r = async {
        let (q, projection) = list_from_params(Resource::User, &q)?;
        list(&state, &caller, Resource::User, q, &projection).await
    }
    .await;
    respond(r)
}

/// `POST /scim/v2/Users/.search`.
pub async fn search_users(state: web::Data<AppState>, caller: Caller, body: web::Bytes) -> Scim {
    let r = async {
        let (q, projection) = search_from_body(Resource::User, &body)?;
        list(&state, &caller, Resource::User, q, &projection).await
    }
    .await;
    respond(r)
}

/// `GET /scim/v2/Groups`.
pub async fn list_groups(state: web::Data<AppState>, caller: Caller, q: web::Query<ListParams>) -> Scim {
    let r = async {
        let (q, projection) = list_from_params(Resource::Group, &q)?;
        list(&state, &caller, Resource::Group, q, &projection).await
    }
    .await;
    respond(r)
}

/// `POST /scim/v2/Groups/.search`.
pub async fn search_groups(state: web::Data<AppState>, caller: Caller, body: web::Bytes) -> Scim {
    let r = async {
        let (q, projection) = search_from_body(Resource::Group, &body)?;
        list(&state, &caller, Resource::Group, q, &projection).await
    }
    .await;
    respond(r)
}

#[derive(Deserialize)]
pub struct OneParams {
    attributes: Option<String>,
    #[serde(rename = "excludedAttributes")]
    excluded_attributes: Option<String>,
}

/// One resource's answer with the request's projection.
async fn get_one(state: &AppState, caller: &Caller, r: Resource, raw_id: &str, q: &OneParams) -> Scim {
    let got = async {
        let c = client(state, caller)?;
        let id = id_of(raw_id)?;
        let v = match r {
            Resource::User => service::get_user(state, &c, id).await?,
            Resource::Group => service::get_group(state, &c, id).await?,
        };
        let projection = Projection::from_lists(q.attributes.as_deref(), q.excluded_attributes.as_deref());
        Ok((StatusCode::OK, projection.apply(v)))
    }
    .await;
    respond(got)
}

/// What a write does.
#[derive(Clone, Copy)]
enum Write {
    Create,
    Replace,
    Patch,
}

/// `POST`, `PUT` or `PATCH` of one resource type.
async fn write(
    state: &AppState,
    req: &HttpRequest,
    caller: &Caller,
    audit: &Audit,
    (r, w): (Resource, Write),
    raw_id: Option<&str>,
    body: &web::Bytes,
) -> Scim {
    let done = async {
        let c = client(state, caller)?;
        let b = body_of(body)?;
        let m = if_match(req);
        let m = m.as_deref();
        let id = raw_id.map(id_of).transpose()?;
        let v = match (r, w, id) {
            (Resource::User, Write::Create, _) => {
                return Ok((StatusCode::CREATED, service::create_user(state, &c, audit, &b).await?))
            }
            (Resource::Group, Write::Create, _) => {
                return Ok((StatusCode::CREATED, service::create_group(state, &c, audit, &b).await?))
            }
            (Resource::User, Write::Replace, Some(id)) => service::replace_user(state, &c, audit, id, &b, m).await?,
            (Resource::User, Write::Patch, Some(id)) => service::patch_user(state, &c, audit, id, &b, m).await?,
            (Resource::Group, Write::Replace, Some(id)) => service::replace_group(state, &c, audit, id, &b, m).await?,
            (Resource::Group, Write::Patch, Some(id)) => service::patch_group(state, &c, audit, id, &b, m).await?,
            (_, _, None) => return Err(Error::not_found("scim_not_found", "no such resource")),
        };
        Ok((StatusCode::OK, v))
    }
    .await;
    respond(done)
}

/// `DELETE` of one resource: 204 and no body.
async fn remove(
    state: &AppState,
    req: &HttpRequest,
    caller: &Caller,
    audit: &Audit,
    r: Resource,
    raw_id: &str,
) -> Scim {
    let done = async {
        let c = client(state, caller)?;
        let id = id_of(raw_id)?;
        let m = if_match(req);
        match r {
            Resource::User => service::delete_user(state, &c, audit, id, m.as_deref()).await,
            Resource::Group => service::delete_group(state, &c, audit, id, m.as_deref()).await,
        }
    }
    .await;
    Ok(match done {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) => failure(e),
    })
}

/// `GET /scim/v2/Users/{id}`.
pub async fn get_user(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    q: web::Query<OneParams>,
) -> Scim {
    get_one(&state, &caller, Resource::User, &path, &q).await
}

/// `POST /scim/v2/Users`.
pub async fn create_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    body: web::Bytes,
) -> Scim {
    write(&state, &req, &caller, &audit, (Resource::User, Write::Create), None, &body).await
}

/// `PUT /scim/v2/Users/{id}`.
pub async fn replace_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: web::Bytes,
) -> Scim {
    write(&state, &req, &caller, &audit, (Resource::User, Write::Replace), Some(&path), &body).await
}

/// `PATCH /scim/v2/Users/{id}`.
pub async fn patch_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: web::Bytes,
) -> Scim {
    write(&state, &req, &caller, &audit, (Resource::User, Write::Patch), Some(&path), &body).await
}

/// `DELETE /scim/v2/Users/{id}`.
pub async fn delete_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
) -> Scim {
    remove(&state, &req, &caller, &audit, Resource::User, &path).await
}

/// `GET /scim/v2/Groups/{id}`.
pub async fn get_group(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    q: web::Query<OneParams>,
) -> Scim {
    get_one(&state, &caller, Resource::Group, &path, &q).await
}

/// `POST /scim/v2/Groups`.
pub async fn create_group(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    body: web::Bytes,
) -> Scim {
    write(&state, &req, &caller, &audit, (Resource::Group, Write::Create), None, &body).await
}

/// `PUT /scim/v2/Groups/{id}`.
pub async fn replace_group(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: web::Bytes,
) -> Scim {
    write(&state, &req, &caller, &audit, (Resource::Group, Write::Replace), Some(&path), &body).await
}

/// `PATCH /scim/v2/Groups/{id}`.
pub async fn patch_group(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: web::Bytes,
) -> Scim {
    write(&state, &req, &caller, &audit, (Resource::Group, Write::Patch), Some(&path), &body).await
}

/// `DELETE /scim/v2/Groups/{id}`.
pub async fn delete_group(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
) -> Scim {
    remove(&state, &req, &caller, &audit, Resource::Group, &path).await
}

/// `POST /scim/v2/.search`: Users, then Groups, as one list. A filter
/// that names attributes one type does not have matches none of that type.
pub async fn search_all(state: web::Data<AppState>, caller: Caller, body: web::Bytes) -> Scim {
    let r = async {
        let req = search_request(&body)?;
        let users = list_query(Resource::User, req.filter.as_deref(), req.start, req.count);
        let groups = list_query(Resource::Group, req.filter.as_deref(), req.start, req.count);
        let (start, count) = match (&users, &groups) {
            (Ok(q), _) | (_, Ok(q)) => (q.start_index, q.count),
            (Err(e), Err(_)) => return Err(Error::invalid("invalidFilter", e.to_string())),
        };
        let c = client(&state, &caller)?;
        let mut resources = Vec::new();
        let mut total = 0i64;
        // Each type's part of the window [start, start + count).
        let (mut skip, mut left) = (start - 1, count);
        for (resource, parsed) in [(Resource::User, users), (Resource::Group, groups)] {
            let Ok(mut q) = parsed else { continue };
            let run = |q: ListQuery| {
                let (state, c) = (&state, &c);
                async move {
                    match resource {
                        Resource::User => service::list_users(state, c, &q).await,
                        Resource::Group => service::list_groups(state, c, &q).await,
                    }
                }
            };
            let n = run(ListQuery { filter: q.filter.clone(), start_index: 1, count: 0 }).await?["totalResults"]
                .as_i64()
                .unwrap_or(0);
            total += n;
            if left > 0 && skip < n {
                q.start_index = skip + 1;
                q.count = left.min(n - skip);
                left -= q.count;
                skip = 0;
                let page = run(q).await?;
                for item in page["Resources"].as_array().cloned().unwrap_or_default() {
                    resources.push(req.projection.apply(item));
                }
            } else {
                skip -= skip.min(n);
            }
        }
        Ok((
            StatusCode::OK,
            json!({"schemas": [service::LIST_SCHEMA], "totalResults": total, "startIndex": start,
                   "itemsPerPage": resources.len(), "Resources": resources}),
        ))
    }
    .await;
    respond(r)
}

/// `GET /scim/v2/ServiceProviderConfig`.
pub async fn service_provider_config(state: web::Data<AppState>, _caller: Caller) -> Scim {
    Ok(answer(StatusCode::OK, &schema::service_provider_config(&base(&state))))
}

/// `GET /scim/v2/ResourceTypes`.
pub async fn resource_types(state: web::Data<AppState>, _caller: Caller) -> Scim {
    Ok(answer(StatusCode::OK, &schema::list(schema::resource_types(&base(&state)))))
}

/// `GET /scim/v2/ResourceTypes/{name}`.
pub async fn resource_type(state: web::Data<AppState>, _caller: Caller, path: web::Path<String>) -> Scim {
    let found = schema::resource_types(&base(&state)).into_iter().find(|r| r["id"] == path.as_str());
    Ok(match found {
        Some(r) => answer(StatusCode::OK, &r),
        None => failure(Error::not_found("scim_not_found", "no such resource type")),
    })
}

/// `GET /scim/v2/Schemas`.
pub async fn schemas(state: web::Data<AppState>, _caller: Caller) -> Scim {
    Ok(answer(StatusCode::OK, &schema::list(schema::schemas(&base(&state)))))
}

/// `GET /scim/v2/Schemas/{id}`.
pub async fn schema_by_id(state: web::Data<AppState>, _caller: Caller, path: web::Path<String>) -> Scim {
    let found = schema::schemas(&base(&state)).into_iter().find(|s| s["id"] == path.as_str());
    Ok(match found {
        Some(s) => answer(StatusCode::OK, &s),
        None => failure(Error::not_found("scim_not_found", "no such schema")),
    })
}

fn base(state: &AppState) -> String {
    format!("{}/scim/v2", state.settings.public_url.trim_end_matches('/'))
}
