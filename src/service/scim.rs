//! SCIM 2.0 Users (RFC 7643/7644) over registrar's users: the mapping both
//! ways, and the flows (create, replace, patch, delete, read, list), each
//! one transaction through the same service functions as the native API, so
//! the same rules hold: a provisioning client acts as a user manager (it
//! may not touch an administrator's account, nor grant roles), disabling
//! ends the user's sessions at once, deleting ends their sessions and keys.
//!
//! What registrar has no column for (nickName, title, phoneNumbers, the
//! enterprise extension, ...) is kept as sent in `users.scim_extra` and
//! shown back. `meta.version` is a hash of the representation, so any
//! change of what SCIM shows changes it.

use std::collections::HashSet;

use secrecy::SecretString;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::audit::Audit;
use crate::auth::principal::Principal;
use crate::domain::{Email, Error, Permission, Result};
use crate::state::AppState;
use crate::store::scim::{self as store, ScimUser, USER_SCHEMA};

pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// The most resources one list answer holds.
pub const MAX_RESULTS: i64 = 200;

/// Who provisions: the credential's owner acting as a user manager, and
/// the client name its external ids are kept under.
pub struct Client {
    pub acting: Principal,
    pub name: String,
    pub base: String,
}

impl Client {
    /// The client of a provisioning credential (`caller` holds
    /// SCIM_PROVISIONING only); `name` is the credential's name.
    pub fn new(state: &AppState, caller: &Principal, name: String) -> Client {
        // A user manager that is nobody: no "one's own account" exemption
        // applies (not even to the credential's owner), and no
        // administrator's account is its to change.
        let mut acting = caller.clone();
        acting.permissions = vec![Permission::UserManagement];
        acting.user_id = Uuid::nil();
        acting.roles = Vec::new();
        std::sync::Arc::make_mut(&mut acting.user).roles = Vec::new();
        let base = format!("{}/scim/v2", state.settings.public_url.trim_end_matches('/'));
        Client { acting, name, base }
    }
}

/// Accounts no provisioning client touches: any whose roles manage others
/// (an administrator, a user manager, a data manager, or a custom role
/// with those permissions). They are managed in registrar itself.
fn protected(state: &AppState, user: &crate::store::users::User) -> Result<()> {
    let held = state.role_permissions.of(&user.roles);
    if held.iter().any(|p| matches!(p, Permission::Admin | Permission::UserManagement | Permission::DataManagement)) {
        return Err(Error::forbidden(
            "a provisioning client does not manage accounts that manage others: change them in registrar",
        ));
    }
    Ok(())
}

fn invalid_value(detail: impl Into<String>) -> Error {
    Error::invalid("invalidValue", detail)
}

fn not_found() -> Error {
    Error::not_found("scim_not_found", "no such resource")
}

/// `W/"<hash>"` of a representation without its `meta`.
pub fn version_of(repr: &Value) -> String {
    let mut v = repr.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("meta");
    }
    let digest = Sha256::digest(serde_json::to_vec(&v).unwrap_or_default());
    format!("W/\"{}\"", &hex::encode(digest)[..20])
}

/// Attributes with a column of their own (or none kept): not copied into
/// `scim_extra`.
const CORE_KEYS: [&str; 8] = ["schemas", "id", "meta", "userName", "active", "externalId", "password", "groups"];

/// The attributes of the schemas kept as sent in `scim_extra`.
const KEPT: [&str; 11] = [
    "name",
    "displayName",
    "nickName",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
    "emails",
    "phoneNumbers",
    ENTERPRISE_SCHEMA,
];

/// `v` with only the sub-attributes the schema declares for `attribute`.
fn declared_only(attribute: &str, v: Value) -> Value {
    const NAME: &[&str] = &["formatted", "familyName", "givenName", "middleName", "honorificPrefix", "honorificSuffix"];
    const MULTI: &[&str] = &["value", "display", "type", "primary"];
    const ENTERPRISE: &[&str] = &["employeeNumber", "costCenter", "organization", "division", "department", "manager"];
    const MANAGER: &[&str] = &["value", "$ref", "displayName"];
    let keep = |o: Map<String, Value>, allowed: &[&str]| -> Map<String, Value> {
        o.into_iter().filter(|(k, _)| allowed.iter().any(|a| a.eq_ignore_ascii_case(k))).collect()
    };
    match (attribute, v) {
        ("name", Value::Object(o)) => Value::Object(keep(o, NAME)),
        ("emails" | "phoneNumbers", Value::Array(items)) => Value::Array(
            items
                .into_iter()
                .map(|i| if let Value::Object(o) = i { Value::Object(keep(o, MULTI)) } else { i })
                .collect(),
        ),
        (ENTERPRISE_SCHEMA, Value::Object(o)) => {
            let mut o = keep(o, ENTERPRISE);
            if let Some(k) = o.keys().find(|k| k.eq_ignore_ascii_case("manager")).cloned() {
                if let Some(Value::Object(m)) = o.remove(&k) {
                    o.insert(k, Value::Object(keep(m, MANAGER)));
                }
            }
            Value::Object(o)
        }
        (_, v) => v,
    }
}

/// Kept in `scim_extra` when a client left `active` out (a PATCH removed
/// it): the account keeps its state, and SCIM shows no `active`.
const ACTIVE_UNSET: &str = "__registrar_active_unset";

/// The domain of the address a user provisioned without a usable email gets
/// (RFC 2606: never delivered); SCIM never shows it.
const PLACEHOLDER_DOMAIN: &str = "provisioned.invalid";

fn placeholder_email(id: Uuid) -> String {
    format!("scim-{}@{PLACEHOLDER_DOMAIN}", id.simple())
}

/// The SCIM representation of a user: what the client sent, kept as sent
/// (`scim_extra`: name, emails, the enterprise extension, ...), over
/// registrar's own columns for users that were not provisioned.
pub fn user_json(u: &ScimUser, base: &str) -> Value {
    let extra = u.scim_extra.as_object().cloned().unwrap_or_default();
    let mut o = Map::new();
    let mut schemas = vec![json!(USER_SCHEMA)];
    if extra.contains_key(ENTERPRISE_SCHEMA) {
        schemas.push(json!(ENTERPRISE_SCHEMA));
    }
    o.insert("schemas".into(), Value::Array(schemas));
    o.insert("id".into(), json!(u.id.to_string()));
    if let Some(x) = &u.external_id {
        o.insert("externalId".into(), json!(x));
    }
    o.insert("userName".into(), json!(u.scim_user_name.as_deref().unwrap_or(&u.username)));
    if !extra.contains_key("name") {
        let mut name = Map::new();
        if !u.first_name.is_empty() {
            name.insert("givenName".into(), json!(u.first_name));
        }
        if !u.last_name.is_empty() {
            name.insert("familyName".into(), json!(u.last_name));
        }
        if !name.is_empty() {
            o.insert("name".into(), Value::Object(name));
        }
    }
    if !extra.contains_key("emails") && !u.email.to_ascii_lowercase().ends_with(PLACEHOLDER_DOMAIN) {
        o.insert("emails".into(), json!([{"value": u.email, "type": "work", "primary": true}]));
    }
    if !extra.contains_key(ACTIVE_UNSET) {
        o.insert("active".into(), json!(u.enabled));
    }
    for (k, v) in extra {
        // Registrar's own markers, and extension objects left empty, are not shown.
        if k.starts_with("__registrar") || v.as_object().is_some_and(Map::is_empty) {
            continue;
        }
        o.insert(k, v);
    }
    if !o.get(ENTERPRISE_SCHEMA).is_some_and(Value::is_object) {
        if let Some(Value::Array(schemas)) = o.get_mut("schemas") {
            schemas.retain(|s| s != ENTERPRISE_SCHEMA);
        }
    }
    let mut repr = Value::Object(o);
    let version = version_of(&repr);
    repr["meta"] = json!({
        "resourceType": "User",
        "created": u.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "lastModified": u.last_modified.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "location": format!("{base}/Users/{}", u.id),
        "version": version,
    });
    repr
}

/// A user as a client sent it (POST, PUT, or the result of a PATCH).
struct Incoming {
    user_name: String,
    given_name: String,
    family_name: String,
    email: Option<String>,
    /// `None`: left out (a new account is enabled; an existing one keeps its state).
    active: Option<bool>,
    external_id: Option<String>,
    password: Option<SecretString>,
    extra: Map<String, Value>,
}

/// The value of attribute `name` of `o`, whatever its case (attribute
/// names are case-insensitive).
fn get_ci<'a>(o: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        // Entra sends "True" and "False".
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn text_of(v: Option<&Value>, what: &str) -> Result<Option<String>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid_value(format!("{what} must be a string"))),
    }
}

fn parse_user(body: &Value) -> Result<Incoming> {
    let o = body.as_object().ok_or_else(|| invalid_value("the body must be a User object"))?;
    // NFKC: `ＡＤＭＩＮ` is `ADMIN`, and so collides with `admin`.
    let user_name = text_of(get_ci(o, "userName"), "userName")?
        .map(|s| unicode_normalization::UnicodeNormalization::nfkc(s.trim()).collect::<String>())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid_value("userName is required"))?;
    if user_name.chars().count() > 256 || !user_name.chars().all(crate::domain::visible) {
        return Err(invalid_value("userName must be 1 to 256 visible characters"));
    }
    let name = match get_ci(o, "name") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(n)) => n.clone(),
        Some(_) => return Err(invalid_value("name must be an object")),
    };
    let given_name = text_of(get_ci(&name, "givenName"), "name.givenName")?.unwrap_or_default();
    let family_name = text_of(get_ci(&name, "familyName"), "name.familyName")?.unwrap_or_default();
    let email = match get_ci(o, "emails") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => {
            // The primary address first; the first that is an address at all.
            let mut ordered: Vec<&Value> =
                list.iter().filter(|e| e.get("primary").and_then(as_bool) == Some(true)).collect();
            ordered.extend(list.iter());
            ordered
                .into_iter()
                .filter_map(|e| e.get("value").and_then(Value::as_str))
                .find(|v| Email::parse(v).is_ok() && !v.trim().to_ascii_lowercase().ends_with(PLACEHOLDER_DOMAIN))
                .map(str::to_string)
        }
        Some(_) => return Err(invalid_value("emails must be a list")),
    };
    let active = match get_ci(o, "active") {
        None | Some(Value::Null) => None,
        Some(v) => Some(as_bool(v).ok_or_else(|| invalid_value("active must be true or false"))?),
    };
    let external_id = text_of(get_ci(o, "externalId"), "externalId")?;
    if external_id.as_ref().is_some_and(|x| x.is_empty() || x.chars().count() > 256) {
        return Err(invalid_value("externalId must be 1 to 256 characters"));
    }
    let password = text_of(get_ci(o, "password"), "password")?.map(SecretString::from);
    let mut extra = Map::new();
    for (k, v) in o {
        if CORE_KEYS.iter().any(|c| c.eq_ignore_ascii_case(k)) || v.is_null() {
            continue;
        }
        // Only what the schemas declare is kept (anything else is ignored).
        let Some(declared) = KEPT.iter().find(|d| d.eq_ignore_ascii_case(k)) else { continue };
        extra.insert((*declared).to_string(), declared_only(declared, v.clone()));
    }
    if active.is_none() {
        extra.insert(ACTIVE_UNSET.into(), Value::Bool(true));
    }
    if serde_json::to_vec(&extra).map(|v| v.len()).unwrap_or(0) > 16 * 1024 {
        return Err(invalid_value("the attributes registrar keeps as sent are limited to 16 KiB"));
    }
    Ok(Incoming { user_name, given_name, family_name, email, active, external_id, password, extra })
}

/// The registrar username of a new SCIM user: the userName when it is a
/// valid username, else one made from it.
async fn username_for(conn: &mut sqlx::PgConnection, user_name: &str, email: &Email) -> Result<String> {
    if crate::domain::Username::parse(user_name).is_ok() && !crate::store::users::name_taken(conn, user_name).await? {
        return Ok(user_name.to_string());
    }
    let local = user_name.split('@').next().unwrap_or(user_name);
    Ok(crate::service::users::unique_username(conn, Some(local), email).await?.as_str().to_string())
}

fn uniqueness(what: &str) -> Error {
    Error::conflict("uniqueness", format!("{what} is already taken"))
}

async fn write_scim_fields(
    tx: &mut sqlx::PgConnection,
    client: &Client,
    audit: &Audit,
    id: Uuid,
    username: &str,
    inc: &Incoming,
) -> Result<()> {
    let scim_name = (inc.user_name != username).then_some(inc.user_name.as_str());
    if !store::set_user_scim(tx, audit, id, scim_name, &Value::Object(inc.extra.clone())).await? {
        return Err(uniqueness("userName"));
    }
    if !store::set_external_id(tx, audit, &client.name, "User", id, inc.external_id.as_deref()).await? {
        return Err(uniqueness("externalId"));
    }
    Ok(())
}

async fn read(tx: &mut sqlx::PgConnection, client: &Client, id: Uuid) -> Result<Value> {
    let u = store::user(tx, &client.name, id).await?.ok_or_else(not_found)?;
    Ok(user_json(&u, &client.base))
}

/// `POST /Users`. Two creates racing for one derived username: the loser
/// tries again with the next free one (a taken userName stays a 409).
pub async fn create_user(state: &AppState, client: &Client, audit: &Audit, body: &Value) -> Result<Value> {
    let mut attempt = 0;
    loop {
        match create_user_once(state, client, audit, body).await {
            Err(e) if e.code() == "uniqueness" && attempt < 3 => attempt += 1,
            other => return other,
        }
    }
}

async fn create_user_once(state: &AppState, client: &Client, audit: &Audit, body: &Value) -> Result<Value> {
    let inc = parse_user(body)?;
    let email = inc.email.clone().unwrap_or_else(|| placeholder_email(Uuid::new_v4()));
    let parsed_email = Email::parse(&email).map_err(|e| invalid_value(e.to_string()))?;
    let mut tx = state.pool.begin().await?;
    if !store::user_name_free(&mut tx, &inc.user_name, None).await? {
        return Err(uniqueness("userName"));
    }
    let username = username_for(&mut tx, &inc.user_name, &parsed_email).await?;
    let create = crate::service::users::CreateUser {
        username: username.clone(),
        email,
        first_name: inc.given_name.clone(),
        last_name: inc.family_name.clone(),
        password: inc.password.clone(),
        enabled: inc.active.unwrap_or(true),
        ..Default::default()
    };
    let user = crate::service::users::create_user_in(&mut tx, &state.hasher, &client.acting, audit, create)
        .await
        .map_err(conflict_is_uniqueness)?;
    write_scim_fields(&mut tx, client, audit, user.id, &username, &inc).await?;
    let repr = read(&mut tx, client, user.id).await?;
    tx.commit().await?;
    Ok(repr)
}

fn conflict_is_uniqueness(e: Error) -> Error {
    match e {
        Error::Conflict { message, .. } => Error::conflict("uniqueness", message),
        other => other,
    }
}

/// Refuses a write whose `If-Match` names another version (412).
fn check_version(current: &Value, if_match: Option<&str>) -> Result<()> {
    let Some(wanted) = if_match else { return Ok(()) };
    let have = current["meta"]["version"].as_str().unwrap_or_default();
    let matches = wanted
        .split(',')
        .map(str::trim)
        .any(|w| w == "*" || w.trim_start_matches("W/") == have.trim_start_matches("W/"));
    if matches {
        Ok(())
    } else {
        Err(Error::conflict("precondition_failed", "the resource changed since that version (If-Match)"))
    }
}

/// Writes `inc` over user `id` (PUT, and a PATCH's result).
async fn replace_in(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    client: &Client,
    audit: &Audit,
    id: Uuid,
    inc: Incoming,
) -> Result<Value> {
    let current = store::user(tx, &client.name, id).await?.ok_or_else(not_found)?;
    protected(state, &crate::store::users::get(tx, &id.to_string(), false).await?)?;
    if inc.user_name != current.scim_user_name.as_deref().unwrap_or(&current.username)
        && !store::user_name_free(tx, &inc.user_name, Some(id)).await?
    {
        return Err(uniqueness("userName"));
    }
    // The directory is the source of truth: no usable address, the placeholder.
    let email = match &inc.email {
        Some(e) => Some(e.clone()),
        None if current.email.to_ascii_lowercase().ends_with(PLACEHOLDER_DOMAIN) => None,
        None => Some(placeholder_email(id)),
    };
    let update = crate::service::users::UpdateUser {
        email,
        first_name: Some(inc.given_name.clone()),
        last_name: Some(inc.family_name.clone()),
        enabled: inc.active,
        ..Default::default()
    };
    let reset = match &inc.password {
        Some(p) => {
            let target = crate::store::users::get(tx, &id.to_string(), false).await?;
            Some(crate::service::users::reset_hash(&state.hasher, &client.acting, &target, p.clone()).await?)
        }
        None => None,
    };
    crate::service::users::update_user_in(tx, &client.acting, audit, &id.to_string(), update, reset)
        .await
        .map_err(conflict_is_uniqueness)?;
    write_scim_fields(tx, client, audit, id, &current.username, &inc).await?;
    read(tx, client, id).await
}

/// `PUT /Users/{id}`.
pub async fn replace_user(
    state: &AppState,
    client: &Client,
    audit: &Audit,
    id: Uuid,
    body: &Value,
    if_match: Option<&str>,
) -> Result<Value> {
    let inc = parse_user(body)?;
    let mut tx = state.pool.begin().await?;
    if !store::lock_user(&mut tx, id).await? {
        return Err(not_found());
    }
    check_version(&read(&mut tx, client, id).await?, if_match)?;
    let repr = replace_in(state, &mut tx, client, audit, id, inc).await?;
    tx.commit().await?;
    Ok(repr)
}

/// `PATCH /Users/{id}`: the operations applied to the current
/// representation, then written as a PUT would (one transaction, the row
/// locked, so concurrent patches do not lose each other's changes).
pub async fn patch_user(
    state: &AppState,
    client: &Client,
    audit: &Audit,
    id: Uuid,
    body: &Value,
    if_match: Option<&str>,
) -> Result<Value> {
    let ops = crate::service::scim_patch::operations(body)?;
    let mut tx = state.pool.begin().await?;
    if !store::lock_user(&mut tx, id).await? {
        return Err(not_found());
    }
    let mut current = read(&mut tx, client, id).await?;
    check_version(&current, if_match)?;
    let before = current.clone();
    for op in &ops {
        crate::service::scim_patch::apply(&mut current, op)?;
    }
    if current == before {
        tx.commit().await?;
        return Ok(before);
    }
    let inc = parse_user(&current)?;
    let repr = replace_in(state, &mut tx, client, audit, id, inc).await?;
    tx.commit().await?;
    Ok(repr)
}

/// `DELETE /Users/{id}`: the account, its sessions and keys.
pub async fn delete_user(
    state: &AppState,
    client: &Client,
    audit: &Audit,
    id: Uuid,
    if_match: Option<&str>,
) -> Result<()> {
    let mut tx = state.pool.begin().await?;
    if !store::lock_user(&mut tx, id).await? {
        return Err(not_found());
    }
    check_version(&read(&mut tx, client, id).await?, if_match)?;
    protected(state, &crate::store::users::get(&mut tx, &id.to_string(), false).await?)?;
    crate::service::users::delete_user_in(&mut tx, &state.role_permissions, &client.acting, audit, &id.to_string())
        .await?;
    tx.commit().await?;
    Ok(())
}

/// `GET /Users/{id}`.
pub async fn get_user(state: &AppState, client: &Client, id: Uuid) -> Result<Value> {
    state.read(async |c| read(c, client, id).await).await
}

/// What a list asks for (query string or `/.search` body).
pub struct ListQuery {
    pub filter: Option<scim_v2::filter::Filter>,
    pub start_index: i64,
    pub count: i64,
}

/// `GET /Users` and `POST /Users/.search`: a ListResponse.
pub async fn list_users(state: &AppState, client: &Client, q: &ListQuery) -> Result<Value> {
    let (rows, total) = state
        .read(async |c| store::list_users(c, &client.name, q.filter.as_ref(), q.start_index, q.count).await)
        .await?;
    let resources: Vec<Value> = rows.iter().map(|u| user_json(u, &client.base)).collect();
    Ok(json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": q.start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    }))
}

/// A new provisioning credential named `name` (the client's name, under
/// which its external ids are kept), owned by `owner` (an administrator);
/// the key is shown once.
pub async fn create_credential(
    pool: &sqlx::PgPool,
    keys: &crate::auth::tokens::Keys,
    audit: &Audit,
    owner: Uuid,
    name: &str,
) -> Result<(crate::store::api_keys::ApiKeyView, String)> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || !name.chars().all(crate::domain::visible) {
        return Err(Error::invalid("invalid_name", "a provisioning client's name is 1 to 100 visible characters")
            .on_field("name"));
    }
    let mut tx = pool.begin().await?;
    if store::credential_name_taken(&mut tx, name).await? {
        return Err(Error::conflict("credential_exists", "a live provisioning credential has this name"));
    }
    let made = crate::store::api_keys::create_scoped(&mut tx, audit, keys, owner, name, None, "scim").await?;
    tx.commit().await?;
    Ok(made)
}

/// Revokes a live provisioning credential; 404 when there is none of that id.
pub async fn revoke_credential(pool: &sqlx::PgPool, audit: &Audit, id: Uuid) -> Result<()> {
    let mut tx = pool.begin().await?;
    if !store::revoke_credential(&mut tx, audit, id).await? {
        return Err(Error::not_found("credential_not_found", "no live credential of that id"));
    }
    tx.commit().await?;
    Ok(())
}

/// The owner of a provisioning credential made from the command line.
pub async fn default_owner(pool: &sqlx::PgPool) -> Result<Uuid> {
    let mut conn = pool.acquire().await?;
    store::oldest_admin(&mut conn)
        .await?
        .ok_or_else(|| Error::conflict("no_administrator", "there is no enabled administrator to own the credential"))
}

// ---------------------------------------------------------------------------
// Groups: registrar's groups, a project's level groups included (a member
// of `PROJ_member` is a member of project PROJ).

fn group_json(g: &store::ScimGroup, members: &[(Uuid, String)], base: &str) -> Value {
    let mut o = Map::new();
    o.insert("schemas".into(), json!([store::GROUP_SCHEMA]));
    o.insert("id".into(), json!(g.id.to_string()));
    if let Some(x) = &g.external_id {
        o.insert("externalId".into(), json!(x));
    }
    let display = if g.display_name.is_empty() { &g.name } else { &g.display_name };
    o.insert("displayName".into(), json!(display));
    if !members.is_empty() {
        let list: Vec<Value> = members
            .iter()
            .map(|(id, username)| {
                let _ = username;
                json!({"value": id.to_string(), "$ref": format!("{base}/Users/{id}"), "type": "User"})
            })
            .collect();
        o.insert("members".into(), Value::Array(list));
    }
    let mut repr = Value::Object(o);
    let version = version_of(&repr);
    repr["meta"] = json!({
        "resourceType": "Group",
        "created": g.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "lastModified": g.last_modified.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "location": format!("{base}/Groups/{}", g.id),
        "version": version,
    });
    repr
}

async fn read_group(tx: &mut sqlx::PgConnection, client: &Client, id: Uuid) -> Result<Value> {
    let g = store::group(tx, &client.name, id).await?.ok_or_else(not_found)?;
    let members = store::members_of(tx, &g.name).await?;
    Ok(group_json(&g, &members, &client.base))
}

struct IncomingGroup {
    display_name: String,
    external_id: Option<String>,
    /// User ids; values that are no user's are left out.
    members: Vec<Uuid>,
}

fn parse_group(body: &Value) -> Result<IncomingGroup> {
    let o = body.as_object().ok_or_else(|| invalid_value("the body must be a Group object"))?;
    let display_name = text_of(get_ci(o, "displayName"), "displayName")?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid_value("displayName is required"))?;
    if display_name.chars().count() > 200 || !display_name.chars().all(crate::domain::visible) {
        return Err(invalid_value("displayName must be 1 to 200 visible characters"));
    }
    let external_id = text_of(get_ci(o, "externalId"), "externalId")?;
    if external_id.as_ref().is_some_and(|x| x.is_empty() || x.chars().count() > 256) {
        return Err(invalid_value("externalId must be 1 to 256 characters"));
    }
    let members = match get_ci(o, "members") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => {
            if list.len() > 10_000 {
                return Err(Error::invalid("tooMany", "at most 10,000 members at once"));
            }
            // Values that are no user's id are left out (a directory may
            // name members registrar does not have).
            list.iter().filter_map(|m| m.get("value").and_then(Value::as_str)).filter_map(|v| v.parse().ok()).collect()
        }
        Some(_) => return Err(invalid_value("members must be a list")),
    };
    Ok(IncomingGroup { display_name, external_id, members })
}

/// A group name made from a display name: valid and unused.
async fn group_name_for(tx: &mut sqlx::PgConnection, display: &str) -> Result<String> {
    let base: String = display
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(56)
        .collect();
    let base = if crate::domain::parse_group_name(&base).is_ok() { base } else { "scim-group".to_string() };
    for n in 0..1000u32 {
        let candidate = if n == 0 { base.clone() } else { format!("{base}-{}", n + 1) };
        if crate::domain::parse_group_name(&candidate).is_ok() && !store::group_name_taken(tx, &candidate).await? {
            return Ok(candidate);
        }
    }
    Ok(format!("scim-{}", Uuid::new_v4().simple()))
}

/// Makes the group's members exactly `wanted` (under the group's lock):
/// the same rules as the native API (no administrator's account).
async fn set_members(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    client: &Client,
    audit: &Audit,
    group: &str,
    wanted: &[Uuid],
) -> Result<()> {
    let current = store::members_of(tx, group).await?;
    let wanted = store::usernames_of(tx, wanted).await?;
    // The accounts that change locked first, in id order (`users::lock_many`).
    let changing: Vec<String> = wanted
        .iter()
        .filter(|(id, _)| !current.iter().any(|(c, _)| c == id))
        .chain(current.iter().filter(|(id, _)| !wanted.iter().any(|(w, _)| w == id)))
        .map(|(id, _)| id.to_string())
        .collect();
    crate::store::users::lock_many(tx, &changing.iter().map(String::as_str).collect::<Vec<_>>()).await?;
    for (id, username) in &wanted {
        if !current.iter().any(|(c, _)| c == id) {
            let user = crate::service::users::lock_managed(tx, &client.acting, &id.to_string()).await?;
            protected(state, &user)?;
            crate::store::groups::add(tx, audit, username, group).await?;
        }
    }
    for (id, username) in &current {
        if !wanted.iter().any(|(w, _)| w == id) {
            let user = crate::service::users::lock_managed(tx, &client.acting, &id.to_string()).await?;
            protected(state, &user)?;
            crate::store::groups::remove(tx, audit, username, group).await?;
        }
    }
    Ok(())
}

/// `POST /Groups`.
pub async fn create_group(state: &AppState, client: &Client, audit: &Audit, body: &Value) -> Result<Value> {
    let inc = parse_group(body)?;
    let mut tx = state.pool.begin().await?;
    let name = group_name_for(&mut tx, &inc.display_name).await?;
    crate::store::groups::create(&mut tx, audit, &name, &inc.display_name).await.map_err(conflict_is_uniqueness)?;
    let id = store::group_id(&mut tx, &name).await?;
    if !store::set_external_id(&mut tx, audit, &client.name, "Group", id, inc.external_id.as_deref()).await? {
        return Err(uniqueness("externalId"));
    }
    set_members(state, &mut tx, client, audit, &name, &inc.members).await?;
    let repr = read_group(&mut tx, client, id).await?;
    tx.commit().await?;
    Ok(repr)
}

async fn replace_group_in(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    client: &Client,
    audit: &Audit,
    id: Uuid,
    name: &str,
    inc: IncomingGroup,
) -> Result<Value> {
    let g = store::group(tx, &client.name, id).await?.ok_or_else(not_found)?;
    let shown = if g.display_name.is_empty() { &g.name } else { &g.display_name };
    if *shown != inc.display_name {
        crate::store::groups::update(tx, audit, name, None, Some(&inc.display_name)).await?;
    }
    if !store::set_external_id(tx, audit, &client.name, "Group", id, inc.external_id.as_deref()).await? {
        return Err(uniqueness("externalId"));
    }
    set_members(state, tx, client, audit, name, &inc.members).await?;
    read_group(tx, client, id).await
}

/// Takes group `id` for a change of its members (`wanted` says who they
/// would be, given the group as read): the users whose membership changes
/// first, in id order (`users::lock_many`), and only then the group. That is
/// the order of every other write (a user's row, then the groups it
/// touches: a bulk action, a user's deletion); the group first made those
/// deadlock with this. Who changes is known only from the members read
/// before the group is locked: when they differ once it is, every lock is
/// let go (the savepoint's rollback) and taken again. The group's name and
/// its representation, read under the lock.
async fn take_group(
    tx: &mut sqlx::PgConnection,
    client: &Client,
    id: Uuid,
    wanted: impl Fn(&Value) -> Result<Vec<Uuid>>,
) -> Result<(String, Value)> {
    // The users whose membership `wanted` changes, given the group as `repr` shows it.
    let changing = |repr: &Value| -> Result<HashSet<Uuid>> {
        let members: HashSet<Uuid> = repr["members"]
            .as_array()
            .map(|list| list.iter().filter_map(|m| m["value"].as_str()?.parse().ok()).collect())
            .unwrap_or_default();
        let after: HashSet<Uuid> = wanted(repr)?.into_iter().collect();
        Ok(after.symmetric_difference(&members).copied().collect())
    };
    // SCIM's writers of one group one at a time, before any row: they would
    // otherwise keep changing whom each other touches (a replace-all against
    // adds and removes), and retry each other out.
    store::take_group_writers(&mut *tx, id).await?;
    for _ in 0..MAX_TAKE_TRIES {
        let mut sp = sqlx::Connection::begin(&mut *tx).await?;
        let seen = read_group(&mut sp, client, id).await?;
        let locked = changing(&seen)?;
        let names: Vec<String> = locked.iter().map(Uuid::to_string).collect();
        crate::store::users::lock_many(&mut sp, &names.iter().map(String::as_str).collect::<Vec<_>>()).await?;
        // A project's group: its project before it, as `projects::set_level` takes them.
        let found = store::group(&mut sp, &client.name, id).await?.ok_or_else(not_found)?;
        if let Some(project) = &found.project_id {
            crate::store::projects::get(&mut sp, project, true).await?;
        }
        let name = store::lock_group(&mut sp, id).await?.ok_or_else(not_found)?;
        let now = read_group(&mut sp, client, id).await?;
        // Members others added or removed meanwhile matter only when they
        // change whom this change touches (a remove by filter, a replace).
        // Going on regardless would lock the rest while holding the group,
        // out of order: under a storm of replaces that deadlocked (found by
        // attack), so after the last try this answers 409.
        if now == seen || changing(&now)?.is_subset(&locked) {
            sp.commit().await?;
            return Ok((name, now));
        }
        sp.rollback().await?;
    }
    Err(Error::conflict("concurrent_update", "the group kept changing; try again"))
}

/// How often `take_group` takes its locks again before it answers 409.
const MAX_TAKE_TRIES: usize = 5;

/// `PUT /Groups/{id}`.
pub async fn replace_group(
    state: &AppState,
    client: &Client,
    audit: &Audit,
    id: Uuid,
    body: &Value,
    if_match: Option<&str>,
) -> Result<Value> {
    let inc = parse_group(body)?;
    let mut tx = state.pool.begin().await?;
    let (name, current) = take_group(&mut tx, client, id, |_| Ok(inc.members.clone())).await?;
    check_version(&current, if_match)?;
    let repr = replace_group_in(state, &mut tx, client, audit, id, &name, inc).await?;
    tx.commit().await?;
    Ok(repr)
}

/// `PATCH /Groups/{id}` (Entra's and Okta's member adds and removes): the
/// group locked, its members read, changed and written in one transaction.
pub async fn patch_group(
    state: &AppState,
    client: &Client,
    audit: &Audit,
    id: Uuid,
    body: &Value,
    if_match: Option<&str>,
) -> Result<Value> {
    let ops = crate::service::scim_patch::operations(body)?;
    let mut tx = state.pool.begin().await?;
    let patched = |seen: &Value| {
        let mut after = seen.clone();
        for op in &ops {
            crate::service::scim_patch::apply(&mut after, op)?;
        }
        Ok(parse_group(&after)?.members)
    };
    let (name, mut current) = take_group(&mut tx, client, id, patched).await?;
    check_version(&current, if_match)?;
    let before = current.clone();
    for op in &ops {
        crate::service::scim_patch::apply(&mut current, op)?;
    }
    if current == before {
        tx.commit().await?;
        return Ok(before);
    }
    let inc = parse_group(&current)?;
    let repr = replace_group_in(state, &mut tx, client, audit, id, &name, inc).await?;
    tx.commit().await?;
    Ok(repr)
}

/// `DELETE /Groups/{id}` (a project's groups go with their project: 409).
pub async fn delete_group(
    state: &AppState,
    client: &Client,
    audit: &Audit,
    id: Uuid,
    if_match: Option<&str>,
) -> Result<()> {
    let mut tx = state.pool.begin().await?;
    // The members first, then the group (users before groups).
    let found = store::group(&mut tx, &client.name, id).await?.ok_or_else(not_found)?;
    crate::store::groups::lock_members(&mut tx, &found.name).await?;
    let name = store::lock_group(&mut tx, id).await?.ok_or_else(not_found)?;
    check_version(&read_group(&mut tx, client, id).await?, if_match)?;
    // Deleting a group ends its memberships: the same rule as removing them.
    for (member, _) in store::members_of(&mut tx, &name).await? {
        protected(state, &crate::store::users::get(&mut tx, &member.to_string(), false).await?)?;
    }
    crate::store::groups::delete(&mut tx, audit, &name).await?;
    store::set_external_id(&mut tx, audit, &client.name, "Group", id, None).await?;
    tx.commit().await?;
    Ok(())
}

/// `GET /Groups/{id}`.
pub async fn get_group(state: &AppState, client: &Client, id: Uuid) -> Result<Value> {
    state.read(async |c| read_group(c, client, id).await).await
}

/// `GET /Groups` and `POST /Groups/.search`.
pub async fn list_groups(state: &AppState, client: &Client, q: &ListQuery) -> Result<Value> {
    let (rows, total, members) = state
        .read(async |c| {
            let (rows, total) = store::list_groups(c, &client.name, q.filter.as_ref(), q.start_index, q.count).await?;
            let mut members = Vec::with_capacity(rows.len());
            for g in &rows {
                members.push(store::members_of(c, &g.name).await?);
            }
            Ok((rows, total, members))
        })
        .await?;
    let resources: Vec<Value> = rows.iter().zip(&members).map(|(g, m)| group_json(g, m, &client.base)).collect();
    Ok(json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": q.start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    }))
}
