//! The OpenAPI document and its viewer.

use std::sync::OnceLock;

use actix_web::{web, HttpResponse};
use serde_json::Value;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;
use crate::error::ApiError;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT or API key").build(),
            ),
        );
        c.add_security_scheme("basic", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()));
        c.add_security_scheme("cookie", SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("registrar_session"))));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "registrar", description = "User management: users, roles, sessions, API keys, change log."),
    paths(
        api::health::healthz, api::health::readyz, api::health::metrics, openapi_json, viewer, asset,
        api::auth::login, api::auth::mfa, api::auth::step_up, api::auth::refresh, api::auth::logout,
        api::mfa::status, api::mfa::begin_totp, api::mfa::confirm_totp, api::mfa::remove_totp, api::mfa::regenerate_codes,
        api::mfa::reset, api::mfa::passkey_options, api::mfa::register_passkey, api::mfa::rename_passkey,
        api::mfa::remove_passkey, api::auth::mfa_passkey_options, api::auth::passkey_options, api::auth::passkey_login,
        api::auth::step_up_options, api::scim_credentials::create,
        api::oidc::providers, api::oidc::login, api::oidc::callback, api::oidc::list_identities, api::oidc::unlink,
        api::users::list, api::users::create, api::users::usernames, api::users::import, api::users::read, api::users::update,
        api::users::delete, api::users::set_password, api::users::unlock, api::users::roles,
        api::users::add_roles, api::users::remove_roles, api::users::add_role, api::users::remove_role,
        api::sessions::list, api::sessions::revoke_all, api::sessions::revoke_one,
        api::api_keys::list, api::api_keys::create, api::api_keys::revoke,
        api::change_log::about, api::change_log::actions, api::change_log::all,
        api::meta::permissions, api::meta::roles, api::meta::password_policy,
        api::meta::create_role, api::meta::update_role, api::meta::delete_role,
        api::groups::list, api::groups::create, api::groups::read, api::groups::update, api::groups::delete, api::groups::members,
        api::groups::permissions, api::groups::set_permissions, api::groups::resource_permissions,
        api::groups::of_user, api::groups::add_many, api::groups::remove_many, api::groups::add_one, api::groups::remove_one,
        api::projects::list, api::projects::create, api::projects::read, api::projects::update, api::projects::delete,
        api::projects::members, api::projects::set_member, api::projects::remove_member, api::projects::of_user,
        api::projects::create_request, api::projects::project_requests, api::projects::mine, api::projects::discoverable, api::projects::answer, api::projects::withdraw,
        crate::xnat::root, crate::xnat::version, crate::xnat::build_info, crate::xnat::data_build_info, crate::xnat::services_auth,
        crate::xnat::schemas::list, crate::xnat::schemas::document, crate::xnat::schemas::search_elements,
        crate::mlte::token, crate::mlte::list_users, crate::mlte::create_user, crate::mlte::edit_user,
        crate::mlte::users_details, crate::mlte::read_me, crate::mlte::my_models, crate::mlte::read_user,
        crate::mlte::delete_user, crate::mlte::user_models, crate::mlte::list_groups, crate::mlte::create_group,
        crate::mlte::edit_group, crate::mlte::groups_details, crate::mlte::read_group, crate::mlte::delete_group,
        crate::mlte::list_permissions, crate::mlte::permissions_details, crate::mlte::permissions_alias,
        crate::mlte::read_permission,
        crate::tracker::login_types, crate::tracker::oidc_types, crate::tracker::oidc_login, crate::tracker::key_login,
        crate::tracker::logout, crate::tracker::permission_types, crate::tracker::list, crate::tracker::add,
        crate::tracker::me, crate::tracker::update_me, crate::tracker::read, crate::tracker::update, crate::tracker::delete,
        crate::tracker::new_key, crate::tracker::log, crate::tracker::actions,
        crate::xnat::jsession, crate::xnat::jsession_delete, crate::xnat::auth_status,
        crate::xnat::users::usernames, crate::xnat::users::create, crate::xnat::users::profiles, crate::xnat::users::current,
        crate::xnat::users::active, crate::xnat::users::active_of, crate::xnat::users::invalidate, crate::xnat::users::profile,
        crate::xnat::users::read, crate::xnat::users::update, crate::xnat::users::enabled, crate::xnat::users::set_enabled,
        crate::xnat::users::verified, crate::xnat::users::set_verified, crate::xnat::users::groups_of,
        crate::xnat::users::add_groups, crate::xnat::users::remove_groups, crate::xnat::users::add_group,
        crate::xnat::users::remove_group, crate::xnat::users::roles_of, crate::xnat::users::add_roles,
        crate::xnat::users::remove_roles, crate::xnat::users::add_role, crate::xnat::users::remove_role,
        crate::xnat::data::access_projects, crate::xnat::data::data_users, crate::xnat::data::projects_list,
        crate::xnat::data::archive_projects, crate::xnat::data::project_users, crate::xnat::data::add_project_user,
        crate::xnat::data::remove_project_user, crate::xnat::data::my_pars, crate::xnat::data::answer,
        crate::xnat::data::project_pars,
        api::oauth_clients::create, api::oauth_clients::list, api::oauth_clients::read, api::oauth_clients::delete,
        api::oauth_clients::consents, api::oauth_clients::revoke_consent,
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&Security),
)]
pub struct ApiDoc;

/// The document as JSON, with each operation's access rule (`x-access`)
/// taken from the route table, so the document cannot disagree with it.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
        for (method, path, rule) in crate::startup::route_table().entries {
            if let Some(op) = doc.pointer_mut(&format!(
                "/paths/{}/{}",
                path.replace('~', "~0").replace('/', "~1"),
                method.as_str().to_lowercase()
            )) {
                if let Some(obj) = op.as_object_mut() {
                    obj.insert("x-access".into(), Value::String(rule.describe()));
                    document_errors(obj, &method, &path, rule);
                }
            }
        }
        doc
    })
}

/// Adds the error answers every operation can give (by its access rule and
/// method) to the ones its handler documents, so clients (and schemathesis'
/// status-code check) know them all. Errors are `ErrorBody` JSON, except
/// XNAT's plain-text 401 under `/data` and MLTE's shapes under `/api/`.
fn document_errors(
    op: &mut serde_json::Map<String, Value>,
    method: &actix_web::http::Method,
    path: &str,
    rule: crate::auth::access::Rule,
) {
    use crate::auth::access::Rule;
    use actix_web::http::Method;
    let mut codes: Vec<(&str, &str)> = vec![
        ("400", "invalid input (path, query or body)"),
        ("404", "no such resource"),
        ("503", "the database is unavailable or busy; retry after Retry-After"),
    ];
    if rule != Rule::Public {
        codes.push(("401", "authentication required, or the credentials are invalid or expired"));
        codes.push(("403", "the caller may not do this (or a cross-site request with a session cookie)"));
        codes.push(("429", "the account is locked or a rate limit was hit; retry after Retry-After"));
    }
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        codes.push(("409", "conflicts with the current state"));
        codes.push(("413", "request body too large"));
        codes.push(("415", "unsupported content type"));
        codes.push(("422", "well-formed but refused by a rule"));
    }
    if path.ends_with("/login")
        || path.ends_with("/refresh")
        || path.ends_with("/callback")
        || path.contains("services/auth")
    {
        codes.push(("401", "invalid credentials"));
        codes.push(("429", "rate limited or account locked; retry after Retry-After"));
        codes.push(("502", "the identity provider failed"));
    }
    codes.push(("431", "request headers too large"));
    let responses = op.entry("responses").or_insert_with(|| Value::Object(Default::default()));
    let Some(responses) = responses.as_object_mut() else { return };
    for (code, description) in codes {
        if responses.contains_key(code) {
            continue;
        }
        let content = if code == "401" && path.starts_with("/data") {
            serde_json::json!({"text/plain": {"schema": {"type": "string"}}})
        } else if path.starts_with("/api/") && !path.starts_with("/api/v1/") {
            // MLTE's API: its handlers answer MLTE's `{"detail"}` (the token
            // endpoint OAuth's `{"error", "error_description"}`); the guard,
            // the extractors and the limits answer registrar's `ErrorBody`.
            serde_json::json!({"application/json": {"schema": {"anyOf": [
                {"$ref": "#/components/schemas/ErrorBody"},
                {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}},
                {"type": "object", "required": ["error"],
                 "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}}}
            ]}}})
        } else {
            serde_json::json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}})
        };
        responses.insert(code.into(), serde_json::json!({"description": description, "content": content}));
    }
}

/// The OpenAPI 3.1 document of this server. Public.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI document", body = Object)))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

/// Interactive API viewer (Swagger UI, vendored: `src/api/assets/swagger-ui`).
/// Every script and style comes from this server; the page's
/// Content-Security-Policy allows nothing else. Public.
#[utoipa::path(get, path = "/api/v1/docs", tag = "operations", responses((status = 200, description = "HTML page", body = String, content_type = "text/html")))]
pub async fn viewer() -> HttpResponse {
    const HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>registrar API</title>
<link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/init.js"></script>
</body>
</html>
"#;
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", VIEWER_CSP))
        .body(HTML)
}

/// What the viewer page may load: its own scripts and styles (Swagger UI
/// sets inline styles), images as data URLs, and the OpenAPI document.
pub const VIEWER_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The viewer's files: `swagger-ui-bundle.js`, `swagger-ui.css`, `init.js`.
/// Public.
#[utoipa::path(get, path = "/api/v1/docs/{asset}", tag = "operations", params(("asset" = String, Path)),
    responses((status = 200, description = "script or style sheet", content((String = "application/javascript"), (String = "text/css"))), (status = 404, body = crate::error::ErrorBody)))]
pub async fn asset(path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    const BUNDLE: &[u8] = include_bytes!("assets/swagger-ui/swagger-ui-bundle.js");
    const CSS: &[u8] = include_bytes!("assets/swagger-ui/swagger-ui.css");
    const INIT: &str = "window.addEventListener('load', function () {\n  window.ui = SwaggerUIBundle({\n    \
        url: 'openapi.json',\n    dom_id: '#swagger-ui',\n    deepLinking: true,\n    validatorUrl: null\n  });\n});\n";
    let (body, content_type): (&'static [u8], &str) = match path.as_str() {
        "swagger-ui-bundle.js" => (BUNDLE, "text/javascript; charset=utf-8"),
        "swagger-ui.css" => (CSS, "text/css; charset=utf-8"),
        "init.js" => (INIT.as_bytes(), "text/javascript; charset=utf-8"),
        _ => return Err(ApiError::not_found("not_found", "no such file")),
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Cache-Control", "public, max-age=86400"))
        .body(body))
}
