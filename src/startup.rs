//! The Application: the route table (each route with its access rule) and
//! the server's wiring, start and graceful stop. State lives in `state`,
//! start-up work in `bootstrap`, HTTP plumbing in `http`.

use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::http::Method;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer, Route};
use anyhow::{Context, Result};
use sqlx::PgPool;

use crate::api;
use crate::auth::access::{self, RouteTable, Rule};
use crate::auth::password::Hasher;
use crate::auth::tokens::Keys;
use crate::bootstrap::bootstrap;
use crate::config::Settings;
use crate::domain::Permission::{Admin, ScimProvisioning, UserAdd, UserManagement, UserSearch};
use crate::http::{form_error, json_config, method_not_allowed, not_found, path_error, query_error};
use crate::mlte;
use crate::op;
use crate::scim;
use crate::state::{AppState, InFlight};
use crate::tracker;
use crate::web as page;
use crate::xnat;

/// One route: method, path pattern, who may call it, handler.
pub type RouteDef = (Method, &'static str, Rule, Route);

fn r(method: Method, path: &'static str, rule: Rule, route: Route) -> RouteDef {
    (method, path, rule, route)
}

/// Every route of the server and its access rule. The rule is enforced by
/// `auth::access::enforce`; the handlers add target-specific checks.
#[rustfmt::skip]
pub fn routes() -> Vec<RouteDef> {
    use Method as M;
    use Rule::*;
    vec![
        // operations
        r(M::GET, "/healthz", Public, web::get().to(api::health::healthz)),
        r(M::GET, "/readyz", Public, web::get().to(api::health::readyz)),
        r(M::GET, "/metrics", MetricsToken, web::get().to(api::health::metrics)),
        r(M::GET, "/api/v1/openapi.json", Public, web::get().to(api::docs::openapi_json)),
        r(M::GET, "/api/v1/docs", Public, web::get().to(api::docs::viewer)),
        r(M::GET, "/api/v1/docs/{asset}", Public, web::get().to(api::docs::asset)),
        // authentication
        r(M::POST, "/api/v1/auth/login", Public, web::post().to(api::auth::login)),
        r(M::POST, "/api/v1/auth/mfa", Public, web::post().to(api::auth::mfa)),
        r(M::POST, "/api/v1/auth/mfa/step-up", Authenticated, web::post().to(api::auth::step_up)),
        r(M::POST, "/api/v1/auth/mfa/step-up/options", Authenticated, web::post().to(api::auth::step_up_options)),
        r(M::POST, "/api/v1/auth/mfa/passkey/options", Public, web::post().to(api::auth::mfa_passkey_options)),
        r(M::POST, "/api/v1/auth/passkey/options", Public, web::post().to(api::auth::passkey_options)),
        r(M::POST, "/api/v1/auth/passkey", Public, web::post().to(api::auth::passkey_login)),
        r(M::POST, "/api/v1/auth/refresh", Public, web::post().to(api::auth::refresh)),
        r(M::POST, "/api/v1/auth/logout", Authenticated, web::post().to(api::auth::logout)),
        r(M::GET, "/api/v1/auth/oidc/providers", Public, web::get().to(api::oidc::providers)),
        r(M::GET, "/api/v1/auth/oidc/{name}/login", Public, web::get().to(api::oidc::login)),
        r(M::GET, "/api/v1/auth/oidc/{name}/callback", Public, web::get().to(api::oidc::callback)),
        r(M::GET, "/api/v1/users/{username}/identities", SelfOr(UserManagement), web::get().to(api::oidc::list_identities)),
        r(M::DELETE, "/api/v1/users/{username}/identities/{provider}", SelfOr(UserManagement), web::delete().to(api::oidc::unlink)),
        // users
        r(M::GET, "/api/v1/users", Permission(UserManagement), web::get().to(api::users::list)),
        r(M::POST, "/api/v1/users", Permission(UserManagement), web::post().to(api::users::create)),
        r(M::GET, "/api/v1/usernames", Permission(UserManagement), web::get().to(api::users::usernames)),
        r(M::POST, "/api/v1/import/users", Permission(UserManagement), web::post().to(api::users::import)),
        r(M::GET, "/api/v1/users/{username}", SelfOr(UserManagement), web::get().to(api::users::read)),
        r(M::PATCH, "/api/v1/users/{username}", SelfOr(UserManagement), web::patch().to(api::users::update)),
        r(M::DELETE, "/api/v1/users/{username}", Permission(UserManagement), web::delete().to(api::users::delete)),
        r(M::PUT, "/api/v1/users/{username}/password", SelfOr(UserManagement), web::put().to(api::users::set_password)),
        r(M::POST, "/api/v1/users/{username}/unlock", Permission(UserManagement), web::post().to(api::users::unlock)),
        r(M::GET, "/api/v1/users/{username}/roles", SelfOr(UserManagement), web::get().to(api::users::roles)),
        r(M::PUT, "/api/v1/users/{username}/roles", Permission(UserManagement), web::put().to(api::users::add_roles)),
        r(M::DELETE, "/api/v1/users/{username}/roles", Permission(UserManagement), web::delete().to(api::users::remove_roles)),
        r(M::PUT, "/api/v1/users/{username}/roles/{role}", Permission(UserManagement), web::put().to(api::users::add_role)),
        r(M::DELETE, "/api/v1/users/{username}/roles/{role}", Permission(UserManagement), web::delete().to(api::users::remove_role)),
        r(M::GET, "/api/v1/users/{username}/sessions", SelfOr(UserManagement), web::get().to(api::sessions::list)),
        r(M::DELETE, "/api/v1/users/{username}/sessions", SelfOr(UserManagement), web::delete().to(api::sessions::revoke_all)),
        r(M::DELETE, "/api/v1/sessions/{id}", Authenticated, web::delete().to(api::sessions::revoke_one)),
        r(M::GET, "/api/v1/users/{username}/mfa", SelfOr(UserManagement), web::get().to(api::mfa::status)),
        r(M::DELETE, "/api/v1/users/{username}/mfa", Permission(UserManagement), web::delete().to(api::mfa::reset)),
        r(M::POST, "/api/v1/users/{username}/mfa/totp", SelfOnly, web::post().to(api::mfa::begin_totp)),
        r(M::DELETE, "/api/v1/users/{username}/mfa/totp", SelfOnly, web::delete().to(api::mfa::remove_totp)),
        r(M::POST, "/api/v1/users/{username}/mfa/totp/confirm", SelfOnly, web::post().to(api::mfa::confirm_totp)),
        r(M::POST, "/api/v1/users/{username}/mfa/recovery-codes", SelfOnly, web::post().to(api::mfa::regenerate_codes)),
        r(M::POST, "/api/v1/users/{username}/mfa/passkeys/options", SelfOnly, web::post().to(api::mfa::passkey_options)),
        r(M::POST, "/api/v1/users/{username}/mfa/passkeys", SelfOnly, web::post().to(api::mfa::register_passkey)),
        r(M::PATCH, "/api/v1/users/{username}/mfa/passkeys/{id}", SelfOnly, web::patch().to(api::mfa::rename_passkey)),
        r(M::DELETE, "/api/v1/users/{username}/mfa/passkeys/{id}", SelfOnly, web::delete().to(api::mfa::remove_passkey)),
        r(M::GET, "/api/v1/users/{username}/api-keys", SelfOr(UserManagement), web::get().to(api::api_keys::list)),
        r(M::POST, "/api/v1/users/{username}/api-keys", SelfOr(UserManagement), web::post().to(api::api_keys::create)),
        r(M::DELETE, "/api/v1/users/{username}/api-keys/{id}", SelfOr(UserManagement), web::delete().to(api::api_keys::revoke)),
        r(M::GET, "/api/v1/users/{username}/log", SelfOr(UserManagement), web::get().to(api::change_log::about)),
        r(M::GET, "/api/v1/users/{username}/actions", SelfOr(UserManagement), web::get().to(api::change_log::actions)),
        r(M::GET, "/api/v1/permissions", Authenticated, web::get().to(api::meta::permissions)),
        r(M::GET, "/api/v1/roles", Authenticated, web::get().to(api::meta::roles)),
        r(M::POST, "/api/v1/roles", Permission(Admin), web::post().to(api::meta::create_role)),
        r(M::PATCH, "/api/v1/roles/{role}", Permission(Admin), web::patch().to(api::meta::update_role)),
        r(M::DELETE, "/api/v1/roles/{role}", Permission(Admin), web::delete().to(api::meta::delete_role)),
        r(M::GET, "/api/v1/password-policy", Public, web::get().to(api::meta::password_policy)),
        r(M::GET, "/api/v1/admin/change-log", Permission(Admin), web::get().to(api::change_log::all)),
        // the OpenID Provider's clients and users' consents
        r(M::GET, "/api/v1/oauth/clients", Permission(Admin), web::get().to(api::oauth_clients::list)),
        r(M::POST, "/api/v1/oauth/clients", Permission(Admin), web::post().to(api::oauth_clients::create)),
        r(M::GET, "/api/v1/oauth/clients/{client_id}", Permission(Admin), web::get().to(api::oauth_clients::read)),
        r(M::DELETE, "/api/v1/oauth/clients/{client_id}", Permission(Admin), web::delete().to(api::oauth_clients::delete)),
        r(M::GET, "/api/v1/users/{username}/consents", SelfOr(UserManagement), web::get().to(api::oauth_clients::consents)),
        r(M::DELETE, "/api/v1/users/{username}/consents/{client_id}", SelfOr(UserManagement), web::delete().to(api::oauth_clients::revoke_consent)),
        // groups
        r(M::GET, "/api/v1/groups", Permission(UserManagement), web::get().to(api::groups::list)),
        r(M::POST, "/api/v1/groups", Permission(UserManagement), web::post().to(api::groups::create)),
        r(M::GET, "/api/v1/groups/{group}", Permission(UserManagement), web::get().to(api::groups::read)),
        r(M::PATCH, "/api/v1/groups/{group}", Permission(UserManagement), web::patch().to(api::groups::update)),
        r(M::DELETE, "/api/v1/groups/{group}", Permission(UserManagement), web::delete().to(api::groups::delete)),
        r(M::GET, "/api/v1/groups/{group}/members", Permission(UserManagement), web::get().to(api::groups::members)),
        r(M::GET, "/api/v1/groups/{group}/permissions", Permission(UserManagement), web::get().to(api::groups::permissions)),
        r(M::PUT, "/api/v1/groups/{group}/permissions", Permission(UserManagement), web::put().to(api::groups::set_permissions)),
        r(M::GET, "/api/v1/resource-permissions", Permission(UserManagement), web::get().to(api::groups::resource_permissions)),
        r(M::GET, "/api/v1/users/{username}/groups", SelfOr(UserManagement), web::get().to(api::groups::of_user)),
        r(M::PUT, "/api/v1/users/{username}/groups", Permission(UserManagement), web::put().to(api::groups::add_many)),
        r(M::DELETE, "/api/v1/users/{username}/groups", Permission(UserManagement), web::delete().to(api::groups::remove_many)),
        r(M::PUT, "/api/v1/users/{username}/groups/{group}", Permission(UserManagement), web::put().to(api::groups::add_one)),
        r(M::DELETE, "/api/v1/users/{username}/groups/{group}", Permission(UserManagement), web::delete().to(api::groups::remove_one)),
        // projects
        r(M::GET, "/api/v1/projects", Authenticated, web::get().to(api::projects::list)),
        r(M::POST, "/api/v1/projects", Authenticated, web::post().to(api::projects::create)),
        r(M::GET, "/api/v1/projects/{project}", ProjectReaderOr(UserManagement), web::get().to(api::projects::read)),
        r(M::PATCH, "/api/v1/projects/{project}", ProjectOwnerOr(UserManagement), web::patch().to(api::projects::update)),
        r(M::DELETE, "/api/v1/projects/{project}", ProjectOwnerOr(UserManagement), web::delete().to(api::projects::delete)),
        r(M::GET, "/api/v1/projects/{project}/members", ProjectReaderOr(UserManagement), web::get().to(api::projects::members)),
        r(M::PUT, "/api/v1/projects/{project}/members/{username}", ProjectOwnerOr(UserManagement), web::put().to(api::projects::set_member)),
        r(M::DELETE, "/api/v1/projects/{project}/members/{username}", ProjectOwnerOr(UserManagement), web::delete().to(api::projects::remove_member)),
        r(M::GET, "/api/v1/users/{username}/projects", SelfOr(UserManagement), web::get().to(api::projects::of_user)),
        // project access requests
        r(M::POST, "/api/v1/projects/{project}/access-requests", Authenticated, web::post().to(api::projects::create_request)),
        r(M::GET, "/api/v1/projects/{project}/access-requests", ProjectOwnerOr(UserManagement), web::get().to(api::projects::project_requests)),
        r(M::GET, "/api/v1/access-requests", Authenticated, web::get().to(api::projects::mine)),
        r(M::GET, "/api/v1/discoverable-projects", Authenticated, web::get().to(api::projects::discoverable)),
        r(M::PUT, "/api/v1/access-requests/{par_id}", Authenticated, web::put().to(api::projects::answer)),
        r(M::DELETE, "/api/v1/access-requests/{par_id}", Authenticated, web::delete().to(api::projects::withdraw)),
        // The web console (`web::*`): pages with their rules, like the API.
        r(M::GET, "/", Public, web::get().to(page::public::home)),
        r(M::GET, "/assets/{name}", Public, web::get().to(page::assets::asset)),
        r(M::GET, "/login", Public, web::get().to(page::public::login_form)),
        r(M::POST, "/login", Public, web::post().to(page::public::login)),
        r(M::POST, "/login/mfa", Public, web::post().to(page::public::login_mfa)),
        r(M::POST, "/login/mfa/passkey-options", Public, web::post().to(page::mfa::second_step_options)),
        r(M::POST, "/login/passkey/options", Public, web::post().to(page::mfa::login_options)),
        r(M::POST, "/login/passkey", Public, web::post().to(page::mfa::login)),
        r(M::POST, "/logout", Authenticated, web::post().to(page::public::logout)),
        r(M::GET, "/forgot-password", Public, web::get().to(page::public::forgot_form)),
        r(M::POST, "/forgot-password", Public, web::post().to(page::public::forgot)),
        r(M::GET, "/reset-password", Public, web::get().to(page::public::reset_form)),
        r(M::POST, "/reset-password", Public, web::post().to(page::public::reset)),
        r(M::GET, "/verify-email", Public, web::get().to(page::public::verify_form)),
        r(M::POST, "/verify-email", Public, web::post().to(page::public::verify)),
        // SCIM 2.0 (RFC 7644): provisioning credentials only.
        r(M::GET, "/scim/v2/ServiceProviderConfig", Permission(ScimProvisioning), web::get().to(scim::service_provider_config)),
        r(M::GET, "/scim/v2/ResourceTypes", Permission(ScimProvisioning), web::get().to(scim::resource_types)),
        r(M::GET, "/scim/v2/ResourceTypes/{name}", Permission(ScimProvisioning), web::get().to(scim::resource_type)),
        r(M::GET, "/scim/v2/Schemas", Permission(ScimProvisioning), web::get().to(scim::schemas)),
        r(M::GET, "/scim/v2/Schemas/{name}", Permission(ScimProvisioning), web::get().to(scim::schema_by_id)),
        r(M::GET, "/scim/v2/Users", Permission(ScimProvisioning), web::get().to(scim::list_users)),
        r(M::POST, "/scim/v2/Users", Permission(ScimProvisioning), web::post().to(scim::create_user)),
        r(M::POST, "/scim/v2/Users/.search", Permission(ScimProvisioning), web::post().to(scim::search_users)),
        r(M::GET, "/scim/v2/Users/{id}", Permission(ScimProvisioning), web::get().to(scim::get_user)),
        r(M::PUT, "/scim/v2/Users/{id}", Permission(ScimProvisioning), web::put().to(scim::replace_user)),
        r(M::PATCH, "/scim/v2/Users/{id}", Permission(ScimProvisioning), web::patch().to(scim::patch_user)),
        r(M::DELETE, "/scim/v2/Users/{id}", Permission(ScimProvisioning), web::delete().to(scim::delete_user)),
        r(M::POST, "/scim/v2/.search", Permission(ScimProvisioning), web::post().to(scim::search_all)),
        r(M::GET, "/scim/v2/Groups", Permission(ScimProvisioning), web::get().to(scim::list_groups)),
        r(M::POST, "/scim/v2/Groups", Permission(ScimProvisioning), web::post().to(scim::create_group)),
        r(M::POST, "/scim/v2/Groups/.search", Permission(ScimProvisioning), web::post().to(scim::search_groups)),
        r(M::GET, "/scim/v2/Groups/{id}", Permission(ScimProvisioning), web::get().to(scim::get_group)),
        r(M::PUT, "/scim/v2/Groups/{id}", Permission(ScimProvisioning), web::put().to(scim::replace_group)),
        r(M::PATCH, "/scim/v2/Groups/{id}", Permission(ScimProvisioning), web::patch().to(scim::patch_group)),
        r(M::DELETE, "/scim/v2/Groups/{id}", Permission(ScimProvisioning), web::delete().to(scim::delete_group)),
        r(M::POST, "/api/v1/scim/credentials", Permission(Admin), web::post().to(api::scim_credentials::create)),
        r(M::GET, "/account", Authenticated, web::get().to(page::account::profile)),
        r(M::POST, "/account/profile", Authenticated, web::post().to(page::account::save_profile)),
        r(M::POST, "/account/verify-email", Authenticated, web::post().to(page::account::resend_verification)),
        r(M::GET, "/account/password", Authenticated, web::get().to(page::account::password_form)),
        r(M::POST, "/account/password", Authenticated, web::post().to(page::account::change_password)),
        r(M::GET, "/account/sessions", Authenticated, web::get().to(page::account::sessions_page)),
        r(M::POST, "/account/sessions/revoke-others", Authenticated, web::post().to(page::account::revoke_other_sessions)),
        r(M::POST, "/account/sessions/{id}/revoke", Authenticated, web::post().to(page::account::revoke_session)),
        r(M::GET, "/account/api-keys", Authenticated, web::get().to(page::account::api_keys_page)),
        r(M::POST, "/account/api-keys", Authenticated, web::post().to(page::account::create_api_key)),
        r(M::POST, "/account/api-keys/{id}/revoke", Authenticated, web::post().to(page::account::revoke_api_key)),
        r(M::GET, "/account/identities", Authenticated, web::get().to(page::account::identities_list)),
        r(M::POST, "/account/identities/{provider}/unlink", Authenticated, web::post().to(page::account::unlink_identity)),
        r(M::GET, "/account/projects", Authenticated, web::get().to(page::account::projects_page)),
        r(M::POST, "/account/invitations/{par_id}", Authenticated, web::post().to(page::account::answer_invitation)),
        r(M::GET, "/account/log", Authenticated, web::get().to(page::account::log_page)),
        r(M::GET, "/account/mfa", Authenticated, web::get().to(page::mfa::mfa_page)),
        r(M::POST, "/account/mfa/totp", Authenticated, web::post().to(page::mfa::begin_totp)),
        r(M::POST, "/account/mfa/totp/confirm", Authenticated, web::post().to(page::mfa::confirm_totp)),
        r(M::POST, "/account/mfa/totp/remove", Authenticated, web::post().to(page::mfa::remove_totp)),
        r(M::POST, "/account/mfa/recovery-codes", Authenticated, web::post().to(page::mfa::regenerate_codes)),
        r(M::POST, "/account/mfa/passkeys/options", Authenticated, web::post().to(page::mfa::passkey_options)),
        r(M::POST, "/account/mfa/passkeys", Authenticated, web::post().to(page::mfa::register_passkey)),
        r(M::POST, "/account/mfa/passkeys/{id}/remove", Authenticated, web::post().to(page::mfa::remove_passkey)),
        r(M::POST, "/account/mfa/step-up", Authenticated, web::post().to(page::mfa::step_up)),
        r(M::POST, "/account/mfa/step-up/options", Authenticated, web::post().to(page::mfa::step_up_options)),
        r(M::GET, "/admin/users", Permission(UserManagement), web::get().to(page::admin::users_page)),
        r(M::POST, "/admin/users/bulk", Permission(UserManagement), web::post().to(page::admin::bulk_preview)),
        r(M::POST, "/admin/users/bulk/apply", Permission(UserManagement), web::post().to(page::admin::bulk_apply)),
        r(M::GET, "/admin/users/new", Permission(UserManagement), web::get().to(page::admin::new_user_form)),
        r(M::POST, "/admin/users/new", Permission(UserManagement), web::post().to(page::admin::create_user)),
        r(M::GET, "/admin/users/{username}", Permission(UserManagement), web::get().to(page::admin::user_detail)),
        r(M::POST, "/admin/users/{username}", Permission(UserManagement), web::post().to(page::admin::edit_user)),
        r(M::POST, "/admin/users/{username}/enabled", Permission(UserManagement), web::post().to(page::admin::set_enabled)),
        r(M::POST, "/admin/users/{username}/verify", Permission(UserManagement), web::post().to(page::admin::verify)),
        r(M::POST, "/admin/users/{username}/unlock", Permission(UserManagement), web::post().to(page::admin::unlock)),
        r(M::POST, "/admin/users/{username}/password", Permission(UserManagement), web::post().to(page::admin::reset_password)),
        r(M::POST, "/admin/users/{username}/send-reset", Permission(UserManagement), web::post().to(page::admin::send_reset)),
        r(M::POST, "/admin/users/{username}/revoke-sessions", Permission(UserManagement), web::post().to(page::admin::revoke_sessions)),
        r(M::POST, "/admin/users/{username}/roles", Permission(UserManagement), web::post().to(page::admin::set_roles)),
        r(M::POST, "/admin/users/{username}/groups", Permission(UserManagement), web::post().to(page::admin::add_group)),
        r(M::POST, "/admin/users/{username}/groups/{group}/remove", Permission(UserManagement), web::post().to(page::admin::remove_group)),
        r(M::GET, "/admin/users/{username}/delete", Permission(UserManagement), web::get().to(page::admin::delete_form)),
        r(M::POST, "/admin/users/{username}/delete", Permission(UserManagement), web::post().to(page::admin::delete_user)),
        r(M::GET, "/admin/groups", Permission(UserManagement), web::get().to(page::admin::groups_list)),
        r(M::POST, "/admin/groups", Permission(UserManagement), web::post().to(page::admin::create_group)),
        r(M::GET, "/admin/groups/{group}", Permission(UserManagement), web::get().to(page::admin::group_detail)),
        r(M::POST, "/admin/groups/{group}/delete", Permission(UserManagement), web::post().to(page::admin::delete_group)),
        r(M::GET, "/admin/projects", Permission(UserManagement), web::get().to(page::admin::projects_list)),
        r(M::GET, "/admin/projects/{project}", Permission(UserManagement), web::get().to(page::admin::project_detail)),
        r(M::POST, "/admin/projects/{project}/members", Permission(UserManagement), web::post().to(page::admin::set_member)),
        r(M::POST, "/admin/projects/{project}/members/{username}/remove", Permission(UserManagement), web::post().to(page::admin::remove_member)),
        r(M::POST, "/admin/projects/{project}/requests/{par_id}", Permission(UserManagement), web::post().to(page::admin::answer_request)),
        r(M::GET, "/admin/change-log", Permission(Admin), web::get().to(page::admin::change_log_page)),
        r(M::GET, "/admin/scim", Permission(Admin), web::get().to(page::admin::scim)),
        r(M::POST, "/admin/scim", Permission(Admin), web::post().to(page::admin::create_scim)),
        r(M::POST, "/admin/scim/{id}/revoke", Permission(Admin), web::post().to(page::admin::revoke_scim)),
        r(M::GET, "/admin/clients", Permission(Admin), web::get().to(page::admin::clients)),
        r(M::POST, "/admin/clients", Permission(Admin), web::post().to(page::admin::create_client)),
        r(M::POST, "/admin/clients/{client_id}/delete", Permission(Admin), web::post().to(page::admin::delete_client)),
        r(M::GET, "/account/applications", Authenticated, web::get().to(page::account::applications)),
        r(M::POST, "/account/applications/{client_id}/revoke", Authenticated, web::post().to(page::account::revoke_application)),
        // registrar as an OpenID Provider (`op::*`): protocol endpoints; the
        // clients authenticate at the token, revocation and introspection
        // endpoints, the authorization endpoint reads the browser's session.
        r(M::GET, "/.well-known/openid-configuration", Public, web::get().to(op::discovery)),
        r(M::GET, "/oauth2/jwks", Public, web::get().to(op::jwks)),
        r(M::GET, "/oauth2/authorize", Public, web::get().to(op::authorize)),
        r(M::POST, "/oauth2/consent", Authenticated, web::post().to(op::consent)),
        r(M::POST, "/oauth2/token", Public, web::post().to(op::token)),
        r(M::GET, "/oauth2/userinfo", Public, web::get().to(op::userinfo)),
        r(M::POST, "/oauth2/userinfo", Public, web::post().to(op::userinfo)),
        r(M::POST, "/oauth2/introspect", Public, web::post().to(op::introspect)),
        r(M::POST, "/oauth2/revoke", Public, web::post().to(op::revoke)),
        r(M::GET, "/oauth2/logout", Public, web::get().to(op::logout)),
        r(M::POST, "/oauth2/logout", Public, web::post().to(op::logout)),
        // XNAT compatibility: login handshake and version
        r(M::GET, "/data/version", Public, web::get().to(xnat::version)),
        r(M::GET, "/xapi/siteConfig/buildInfo", Public, web::get().to(xnat::build_info)),
        r(M::GET, "/data/buildInfo", Public, web::get().to(xnat::data_build_info)),
        // MLTE's user API (`mlte::*`). `PUT /api/user` and `PUT /api/group`
        // name their target in the body: their handlers check the resource
        // permission (`service::permissions::authorize`) themselves.
        r(M::POST, "/api/token", Public, web::post().to(mlte::token)),
        r(M::GET, "/api/user", ResourceOr("user", UserManagement), web::get().to(mlte::list_users)),
        r(M::POST, "/api/user", ResourceOr("user", UserManagement), web::post().to(mlte::create_user)),
        r(M::PUT, "/api/user", Authenticated, web::put().to(mlte::edit_user)),
        r(M::GET, "/api/users/details", ResourceOr("user", UserManagement), web::get().to(mlte::users_details)),
        r(M::GET, "/api/user/me", Authenticated, web::get().to(mlte::read_me)),
        r(M::GET, "/api/user/me/models", Authenticated, web::get().to(mlte::my_models)),
        r(M::GET, "/api/user/{username}", ResourceOr("user", UserManagement), web::get().to(mlte::read_user)),
        r(M::DELETE, "/api/user/{username}", ResourceOr("user", UserManagement), web::delete().to(mlte::delete_user)),
        r(M::GET, "/api/user/{username}/models", ResourceOr("user", UserManagement), web::get().to(mlte::user_models)),
        r(M::GET, "/api/group", ResourceOr("group", UserManagement), web::get().to(mlte::list_groups)),
        r(M::POST, "/api/group", ResourceOr("group", UserManagement), web::post().to(mlte::create_group)),
        r(M::PUT, "/api/group", Authenticated, web::put().to(mlte::edit_group)),
        r(M::GET, "/api/groups/details", ResourceOr("group", UserManagement), web::get().to(mlte::groups_details)),
        r(M::GET, "/api/group/{name}", ResourceOr("group", UserManagement), web::get().to(mlte::read_group)),
        r(M::DELETE, "/api/group/{name}", ResourceOr("group", UserManagement), web::delete().to(mlte::delete_group)),
        r(M::GET, "/api/groups/permissions", ResourceOr("group", UserManagement), web::get().to(mlte::list_permissions)),
        r(M::GET, "/api/groups/permissions/details", ResourceOr("group", UserManagement), web::get().to(mlte::permissions_details)),
        r(M::GET, "/api/groups/permissions/{alias}", ResourceOr("group", UserManagement), web::get().to(mlte::permissions_alias)),
        r(M::GET, "/api/groups/permission/{permission}", ResourceOr("group", UserManagement), web::get().to(mlte::read_permission)),
        // The data tracker's user module (`tracker::*`). Users are addressed
        // by id in `{username}`; static paths before it.
        r(M::GET, "/api/v1/login", Public, web::get().to(tracker::login_types)),
        r(M::GET, "/api/v1/login/oidc", Public, web::get().to(tracker::oidc_types)),
        r(M::GET, "/api/v1/login/oidc/{name}", Public, web::get().to(tracker::oidc_login)),
        r(M::POST, "/api/v1/login/apikey", Public, web::post().to(tracker::key_login)),
        r(M::GET, "/api/v1/logout", Public, web::get().to(tracker::logout)),
        r(M::GET, "/api/v1/user/permissions", Public, web::get().to(tracker::permission_types)),
        r(M::GET, "/api/v1/user", Permission(UserSearch), web::get().to(tracker::list)),
        r(M::POST, "/api/v1/user", Permission(UserAdd), web::post().to(tracker::add)),
        r(M::GET, "/api/v1/user/me", Public, web::get().to(tracker::me)),
        r(M::PATCH, "/api/v1/user/me", Authenticated, web::patch().to(tracker::update_me)),
        r(M::GET, "/api/v1/user/{username}", Permission(UserManagement), web::get().to(tracker::read)),
        r(M::PATCH, "/api/v1/user/{username}", Permission(UserManagement), web::patch().to(tracker::update)),
        r(M::DELETE, "/api/v1/user/{username}", Permission(UserManagement), web::delete().to(tracker::delete)),
        r(M::POST, "/api/v1/user/{username}/apikey", SelfOr(UserManagement), web::post().to(tracker::new_key)),
        r(M::GET, "/api/v1/user/{username}/log", SelfOr(UserManagement), web::get().to(tracker::log)),
        r(M::GET, "/api/v1/user/{username}/actions", SelfOr(UserManagement), web::get().to(tracker::actions)),
        r(M::GET, "/xapi/schemas", Authenticated, web::get().to(xnat::schemas::list)),
        r(M::GET, "/xapi/schemas/{schema}", Authenticated, web::get().to(xnat::schemas::document)),
        r(M::GET, "/data/search/elements", Authenticated, web::get().to(xnat::schemas::search_elements)),
        r(M::PUT, "/data/services/auth", Public, web::put().to(xnat::services_auth)),
        r(M::GET, "/data/JSESSION", Authenticated, web::get().to(xnat::jsession)),
        r(M::DELETE, "/data/JSESSION", Authenticated, web::delete().to(xnat::jsession_delete)),
        r(M::GET, "/data/auth", Authenticated, web::get().to(xnat::auth_status)),
        // XNAT user API (static paths before `{username}`)
        r(M::GET, "/xapi/users", Permission(UserManagement), web::get().to(xnat::users::usernames)),
        r(M::POST, "/xapi/users", Permission(UserManagement), web::post().to(xnat::users::create)),
        r(M::GET, "/xapi/users/profiles", Permission(UserManagement), web::get().to(xnat::users::profiles)),
        r(M::GET, "/xapi/users/current", Permission(UserManagement), web::get().to(xnat::users::current)),
        r(M::GET, "/xapi/users/active", Permission(UserManagement), web::get().to(xnat::users::active)),
        r(M::GET, "/xapi/users/active/{username}", SelfOr(UserManagement), web::get().to(xnat::users::active_of)),
        r(M::DELETE, "/xapi/users/active/{username}", SelfOr(UserManagement), web::delete().to(xnat::users::invalidate)),
        r(M::GET, "/xapi/users/profile/{username}", SelfOr(UserManagement), web::get().to(xnat::users::profile)),
        r(M::GET, "/xapi/users/{username}", SelfOr(UserManagement), web::get().to(xnat::users::read)),
        r(M::PUT, "/xapi/users/{username}", SelfOr(UserManagement), web::put().to(xnat::users::update)),
        r(M::GET, "/xapi/users/{username}/enabled", SelfOr(UserManagement), web::get().to(xnat::users::enabled)),
        r(M::PUT, "/xapi/users/{username}/enabled/{flag}", Permission(UserManagement), web::put().to(xnat::users::set_enabled)),
        r(M::GET, "/xapi/users/{username}/verified", SelfOr(UserManagement), web::get().to(xnat::users::verified)),
        r(M::PUT, "/xapi/users/{username}/verified/{flag}", Permission(UserManagement), web::put().to(xnat::users::set_verified)),
        r(M::GET, "/xapi/users/{username}/groups", SelfOr(UserManagement), web::get().to(xnat::users::groups_of)),
        r(M::PUT, "/xapi/users/{username}/groups", Permission(UserManagement), web::put().to(xnat::users::add_groups)),
        r(M::DELETE, "/xapi/users/{username}/groups", Permission(UserManagement), web::delete().to(xnat::users::remove_groups)),
        r(M::PUT, "/xapi/users/{username}/groups/{group}", Permission(UserManagement), web::put().to(xnat::users::add_group)),
        r(M::DELETE, "/xapi/users/{username}/groups/{group}", Permission(UserManagement), web::delete().to(xnat::users::remove_group)),
        r(M::GET, "/xapi/users/{username}/roles", SelfOr(UserManagement), web::get().to(xnat::users::roles_of)),
        r(M::PUT, "/xapi/users/{username}/roles", Permission(UserManagement), web::put().to(xnat::users::add_roles)),
        r(M::DELETE, "/xapi/users/{username}/roles", Permission(UserManagement), web::delete().to(xnat::users::remove_roles)),
        r(M::PUT, "/xapi/users/{username}/roles/{role}", Permission(UserManagement), web::put().to(xnat::users::add_role)),
        r(M::DELETE, "/xapi/users/{username}/roles/{role}", Permission(UserManagement), web::delete().to(xnat::users::remove_role)),
        // XNAT projects, members and access requests
        r(M::GET, "/xapi/access/projects", Authenticated, web::get().to(xnat::data::access_projects)),
        r(M::GET, "/data/users", Authenticated, web::get().to(xnat::data::data_users)),
        r(M::GET, "/data/projects", Authenticated, web::get().to(xnat::data::projects_list)),
        r(M::GET, "/data/archive/projects", Authenticated, web::get().to(xnat::data::archive_projects)),
        r(M::GET, "/data/projects/{project}/users", ProjectReaderOr(UserManagement), web::get().to(xnat::data::project_users)),
        r(M::PUT, "/data/projects/{project}/users/{group}/{user}", ProjectOwnerOr(UserManagement), web::put().to(xnat::data::add_project_user)),
        r(M::DELETE, "/data/projects/{project}/users/{group}/{user}", ProjectOwnerOr(UserManagement), web::delete().to(xnat::data::remove_project_user)),
        r(M::GET, "/data/pars", Authenticated, web::get().to(xnat::data::my_pars)),
        r(M::PUT, "/data/pars/{par_id}", Authenticated, web::put().to(xnat::data::answer)),
        r(M::GET, "/data/projects/{project}/pars", ProjectOwnerOr(UserManagement), web::get().to(xnat::data::project_pars)),
    ]
}

/// The (method, pattern, rule) table, without handlers.
pub fn route_table() -> RouteTable {
    let mut table = RouteTable::default();
    for (m, p, rule, _) in routes() {
        table.insert(m, p, rule);
    }
    table
}

/// The routes grouped by path pattern (one actix resource each), in table
/// order, with each pattern's rules by method.
fn resources() -> Vec<(&'static str, Arc<access::MethodRules>, Vec<Route>)> {
    let mut out: Vec<(&'static str, access::MethodRules, Vec<Route>)> = Vec::new();
    for (method, path, rule, route) in routes() {
        match out.iter_mut().find(|(p, _, _)| *p == path) {
            Some((_, rules, list)) => {
                rules.insert(method, rule);
                list.push(route);
            }
            None => out.push((path, access::MethodRules::from_iter([(method, rule)]), vec![route])),
        }
    }
    out.into_iter().map(|(p, rules, list)| (p, Arc::new(rules), list)).collect()
}

pub struct Application {
    port: u16,
    server: Server,
    in_flight: InFlight,
    background: Vec<tokio::task::JoinHandle<()>>,
    auth_cache: crate::auth::cache::AuthCache,
    pool: PgPool,
    kept: Arc<crate::store::db::Kept>,
}

/// Every resource of the route table, each wrapped in its own guard: the
/// resource's rules, enforced after routing selected it; on XNAT paths,
/// inside the guard, Basic logins become sessions.
///
/// The resources are registered in scopes by their path segments (`/api` →
/// `/v1` → `/users` → `/{username}` …), so the router compares a few
/// prefixes and then only the patterns under the request's own prefix,
/// instead of every pattern of the table in turn (each dynamic one a regular
/// expression). See `RouteTree` for why the first match is still the one
/// the flat table would give.
fn register_routes(cfg: &mut web::ServiceConfig) {
    let mut tree = RouteTree::default();
    for (pattern, rules, list) in resources() {
        tree.insert(pattern, segments(pattern), (rules, list));
    }
    tree.register(cfg, "", register_resource);
}

type ResourceRoutes = (Arc<access::MethodRules>, Vec<Route>);

/// The segments of a pattern (`{param}` ones included).
fn segments(pattern: &'static str) -> Vec<&'static str> {
    pattern.split('/').filter(|s| !s.is_empty()).collect()
}

/// The route table as a tree of path segments. Routing by first match in
/// table order is kept exactly: a scope, once entered, is never left, so a
/// node's children become scopes only when a path can enter one child only
/// and every pattern that could match it is in that child: when all the
/// next segments are static (distinct names never match the same segment),
/// or when there is a single next segment (a `{param}` that all patterns
/// share). Otherwise (a `{param}` next to other segments: `/profiles` and
/// `/{username}/enabled` both match `/profiles/enabled`) every route under
/// the node stays in one flat list, in table order.
struct RouteTree<T> {
    /// Resources under this node, in table order: (full pattern, the rest
    /// of its segments, what `leaf` registers).
    entries: Vec<(&'static str, Vec<&'static str>, T)>,
}

impl<T> Default for RouteTree<T> {
    fn default() -> Self {
        RouteTree { entries: Vec::new() }
    }
}

/// Registers one resource: (config, full pattern, pattern relative to its
/// scope, what the tree holds for it).
type Leaf<T> = fn(&mut web::ServiceConfig, &'static str, &str, T);

impl<T: 'static> RouteTree<T> {
    fn insert(&mut self, pattern: &'static str, rest: Vec<&'static str>, routes: T) {
        self.entries.push((pattern, rest, routes));
    }

    /// The static segment every route under this node goes through next,
    /// if there is one and no route ends at this node.
    fn only_static_next(&self) -> Option<&'static str> {
        let first = self.entries.first()?.1.first().copied()?;
        let all = self.entries.iter().all(|(_, rest, _)| rest.len() > 1 && rest[0] == first);
        (all && !first.contains('{')).then_some(first)
    }

    /// Registers this node's routes, `prefix` being the path of the node.
    fn register(self, cfg: &mut web::ServiceConfig, prefix: &str, leaf: Leaf<T>) {
        let mut next: Vec<&str> = Vec::new();
        for segment in self.entries.iter().filter_map(|(_, rest, _)| rest.first()) {
            if !next.contains(segment) {
                next.push(segment);
            }
        }
        let nest = next.len() == 1 || next.iter().all(|s| !s.contains('{'));
        if !nest {
            for (pattern, _, routes) in self.entries {
                leaf(cfg, pattern, &pattern[prefix.len()..], routes);
            }
            return;
        }
        // Children by next segment, in the order each first appears.
        let mut children: Vec<(&'static str, RouteTree<T>)> = Vec::new();
        for (pattern, mut rest, routes) in self.entries {
            if rest.is_empty() {
                // This node's own path, exactly.
                leaf(cfg, pattern, &pattern[prefix.len()..], routes);
                continue;
            }
            let next = rest.remove(0);
            match children.iter_mut().find(|(s, _)| *s == next) {
                Some((_, child)) => child.insert(pattern, rest, routes),
                None => {
                    let mut child = RouteTree::default();
                    child.insert(pattern, rest, routes);
                    children.push((next, child));
                }
            }
        }
        for (segment, mut child) in children {
            let mut scope_path = format!("/{segment}");
            // A chain of static segments with nothing of its own on the way
            // (`/scim` → `/v2`) is one scope (`/scim/v2`): one match, one
            // boxed call, instead of one per segment.
            while let Some(next) = child.only_static_next() {
                scope_path.push('/');
                scope_path.push_str(next);
                for (_, rest, _) in &mut child.entries {
                    rest.remove(0);
                }
            }
            let path = format!("{prefix}{scope_path}");
            cfg.service(web::scope(&scope_path).configure(move |cfg| child.register(cfg, &path, leaf)));
        }
    }
}

/// One resource: its routes, 405 for other methods, and its guard.
fn register_resource(cfg: &mut web::ServiceConfig, pattern: &'static str, relative: &str, routes: ResourceRoutes) {
    let (rules, list) = routes;
    let mut resource = web::resource(relative).default_service(web::to(method_not_allowed));
    for route in list {
        resource = resource.route(route);
    }
    let guard = access::Guard(access::ResourceRules { pattern, by_method: rules });
    if xnat::is_xnat_path(pattern) {
        cfg.service(resource.wrap(from_fn(xnat::basic_session)).wrap(guard));
    } else {
        cfg.service(resource.wrap(guard));
    }
}

/// Body limits and the JSON error answers of the extractors.
fn extractor_limits(cfg: &mut web::ServiceConfig, body_limit: usize) {
    cfg.app_data(json_config(body_limit))
        .app_data(web::PayloadConfig::new(body_limit))
        .app_data(web::FormConfig::default().limit(body_limit).error_handler(|err, _req| form_error(err).into()))
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .app_data(web::PathConfig::default().error_handler(path_error));
}

/// The auth cache `auth.cache*` asks for (or one that keeps nothing).
fn auth_cache_for(settings: &Settings, metrics: &Arc<crate::metrics::Metrics>) -> crate::auth::cache::AuthCache {
    if settings.auth.cache {
        crate::auth::cache::PrincipalCache::new(
            settings.auth.cache_entries,
            std::time::Duration::from_secs(settings.auth.cache_max_age_secs),
            metrics.clone(),
        )
    } else {
        crate::auth::cache::PrincipalCache::disabled()
    }
}

impl Application {
    /// Migrates, bootstraps, and binds the HTTP server on `settings.bind`
    /// (port 0 picks a free port, as the tests do).
    pub async fn build(settings: Settings, pool: PgPool) -> Result<Application> {
        crate::db::migrate(&pool).await?;
        let keys = bootstrap(&settings, &pool).await?;
        let hasher = Hasher::new(&settings.password, settings.hash_workers())?;
        let roles = crate::auth::principal::RolePermissions::load(&pool).await?;
        Self::build_with(settings, pool, hasher, keys, roles)
    }

    pub fn build_with(
        settings: Settings,
        pool: PgPool,
        hasher: Hasher,
        keys: Keys,
        role_permissions: crate::auth::principal::RolePermissions,
    ) -> Result<Application> {
        let in_flight = InFlight::default();
        let in_flight_data = web::Data::new(in_flight.clone());
        let metrics = Arc::new(crate::metrics::Metrics::new());
        hasher.report_to(&metrics);
        let auth_cache = auth_cache_for(&settings, &metrics);
        let mut background = auth_cache.start(pool.clone());
        background.push(crate::auth::limits::RateLimits::purge_every_minute(pool.clone()));
        background.push(role_permissions.follow(&pool));
        background.push(crate::bootstrap::follow_secrets(keys.clone(), &pool));
        let op_keys = crate::op::keys::ProviderKeys::default();
        background.push(op_keys.follow(&pool));
        let app_pool = pool.clone();
        let kept = Arc::new(crate::store::db::Kept::for_pool(settings.database.max_connections));
        background.push(crate::store::db::Kept::expire_when_idle(kept.clone(), pool.clone()));
        let limits = crate::auth::limits::RateLimits::new(
            &pool,
            &metrics,
            &settings.rate_limits,
            settings.email.forgot_per_minute,
        );
        let state = web::Data::new(AppState {
            auth_cache: auth_cache.clone(),
            pool,
            kept: kept.clone(),
            settings: Arc::new(settings.clone()),
            hasher,
            keys,
            oidc: crate::auth::oidc::Oidc::new()?,
            role_permissions,
            limits,
            metrics,
            mailer: crate::mail::Mailer::new(&settings)?,
            op_keys,
            op_verified: Default::default(),
        });
        let listener =
            std::net::TcpListener::bind(settings.bind).with_context(|| format!("binding {}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let body_limit = settings.limits.body_bytes;
        let proxies = web::Data::new(crate::audit::TrustedProxies(settings.trusted_proxy_nets()));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(in_flight_data.clone())
                .app_data(proxies.clone())
                .configure(|cfg| extractor_limits(cfg, body_limit))
                .configure(register_routes)
                .wrap(crate::front::Front)
                .default_service(web::to(not_found))
        })
        .workers(settings.http_workers())
        .client_request_timeout(std::time::Duration::from_secs(settings.limits.client_request_timeout_secs))
        .shutdown_timeout(30)
        // SIGTERM/SIGINT are handled in `run_until_stopped`, which drains requests first.
        .disable_signals()
        .listen(listener)?
        .run();
        Ok(Application { port, server, in_flight, background, auth_cache, pool: app_pool, kept })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The auth cache and the pool it syncs through (tests that change the
    /// database behind the server's back wait with `cache.sync(&pool)`).
    pub fn auth_cache(&self) -> (crate::auth::cache::AuthCache, PgPool) {
        (self.auth_cache.clone(), self.pool.clone())
    }

    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT (graceful: in-flight requests finish).
    ///
    /// On a signal the server first stops accepting connections and waits
    /// (up to 30 s) for the requests in flight, and only then stops its
    /// workers. The order matters: a pooled database connection belongs to
    /// the worker runtime that opened it, so a worker that stopped early
    /// would break the connections other workers' requests are still using.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Application { server, in_flight, background, kept, .. } = self;
        let handle = server.handle();
        // Polled on its own task: the server future processes the pause and
        // stop commands below.
        let mut server = tokio::spawn(server);
        let joined = |r: Result<std::io::Result<()>, tokio::task::JoinError>| {
            r.unwrap_or_else(|e| Err(std::io::Error::other(e)))
        };
        let result = tokio::select! {
            result = &mut server => joined(result),
            () = shutdown_signal() => {
                tracing::info!("shutting down: finishing the requests in flight");
                handle.pause().await;
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                while in_flight.count() > 0 && std::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                handle.stop(true).await;
                joined(server.await)
            }
        };
        for task in &background {
            task.abort();
        }
        // The workers are stopped: give the pool back what reads kept, so
        // that closing it does not wait for them.
        kept.clear();
        result
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test;

    /// A resource that answers with its own pattern.
    fn echo(cfg: &mut web::ServiceConfig, pattern: &'static str, relative: &str, _: ()) {
        cfg.service(web::resource(relative).to(move || async move { pattern }));
    }

    /// Every pattern with its `{param}`s filled in with every segment name
    /// of the table (and a few other values), one at a time and all at
    /// once, as is, with a trailing slash and with a doubled slash.
    fn sample_paths(patterns: &[&'static str]) -> Vec<String> {
        let mut words: Vec<&str> = patterns.iter().flat_map(|p| segments(p)).filter(|s| !s.contains('{')).collect();
        words.extend(["x", "me", "%2F", "a%20b", ""]);
        words.sort_unstable();
        words.dedup();
        let mut paths = Vec::new();
        for pattern in patterns {
            let segs = segments(pattern);
            let params: Vec<usize> = (0..segs.len()).filter(|i| segs[*i].contains('{')).collect();
            let fill = |at: Option<usize>, word: &str| -> String {
                let filled: Vec<&str> = (0..segs.len())
                    .map(|i| match (segs[i].contains('{'), at) {
                        (false, _) => segs[i],
                        (true, Some(a)) if a != i => "x",
                        (true, _) => word,
                    })
                    .collect();
                format!("/{}", filled.join("/"))
            };
            let mut mine = vec![fill(None, "x")];
            for word in &words {
                mine.push(fill(None, word));
                for i in &params {
                    mine.push(fill(Some(*i), word));
                }
            }
            for path in mine {
                paths.push(format!("{path}/"));
                paths.push(format!("/{path}"));
                paths.push(path);
            }
        }
        paths.sort_unstable();
        paths.dedup();
        paths
    }

    /// The scopes of `RouteTree` route every path to the resource the flat
    /// table (every pattern in turn, first match wins) routes it to.
    #[actix_web::test]
    async fn scoped_routing_picks_what_the_flat_table_picks() {
        let patterns: Vec<&'static str> = resources().into_iter().map(|(p, _, _)| p).collect();
        let none = || web::to(|| async { "no route" });
        let flat_patterns = patterns.clone();
        let flat = test::init_service(
            App::new()
                .configure(move |cfg| {
                    for p in flat_patterns {
                        echo(cfg, p, p, ());
                    }
                })
                .default_service(none()),
        )
        .await;
        let mut tree = RouteTree::default();
        for p in &patterns {
            tree.insert(p, segments(p), ());
        }
        let scoped =
            test::init_service(App::new().configure(move |cfg| tree.register(cfg, "", echo)).default_service(none()))
                .await;
        let paths = sample_paths(&patterns);
        assert!(paths.len() > 10_000, "{} paths", paths.len());
        for path in paths {
            let want = test::call_and_read_body(&flat, test::TestRequest::get().uri(&path).to_request()).await;
            let got = test::call_and_read_body(&scoped, test::TestRequest::get().uri(&path).to_request()).await;
            assert_eq!(got, want, "{path}");
        }
    }
}
