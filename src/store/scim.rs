//! SCIM 2.0 reads (`/scim/v2`): a filter (RFC 7644 section 3.4.2.2, parsed
//! by the `scim_v2` crate) compiled to one SQL condition over the user
//! table, paging in a stable order, and the external ids each provisioning
//! client keeps. Only the attributes the User schema declares are
//! filterable; anything else is `invalidFilter`, never a 500.

use chrono::{DateTime, Utc};
use scim_v2::filter::{AttrExp, AttrPath, CompValue, CompareOp, Filter, ValFilter};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::Error;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// A row and the total of its query (`count(*) OVER ()`).
#[derive(sqlx::FromRow)]
struct Counted<T> {
    #[sqlx(flatten)]
    row: T,
    total: i64,
}

/// A user as SCIM shows it.
#[derive(Debug, sqlx::FromRow)]
pub struct ScimUser {
    pub id: Uuid,
    pub username: String,
    pub scim_user_name: Option<String>,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub last_modified: DateTime<Utc>,
    pub scim_extra: serde_json::Value,
    pub external_id: Option<String>,
}

/// What an attribute of a filter stands for in SQL.
#[derive(Clone, Copy)]
enum Column {
    /// Text compared without regard to case (`caseExact: false`).
    Text(&'static str),
    /// Text compared exactly (`id`, `externalId`).
    Exact(&'static str),
    Bool(&'static str),
    Time(&'static str),
    /// A group's members by user id (`members`, `members.value`).
    Members,
}

/// The resource a filter is over.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    User,
    Group,
}

fn invalid_filter(detail: impl Into<String>) -> Error {
    Error::invalid("invalidFilter", detail)
}

/// The column of a User attribute path (`prefix` is the multi-valued
/// attribute of an enclosing `emails[...]`).
fn column(resource: Resource, path: &AttrPath, prefix: Option<&str>) -> Result<Column, Error> {
    match resource {
        Resource::User => user_column(path, prefix),
        Resource::Group => group_column(path, prefix),
    }
}

/// The lower-case dotted name of an attribute path of `schema`
/// (`name.givenname`, `emails.value` inside `emails[...]`).
fn full_name(path: &AttrPath, prefix: Option<&str>, schema: &str) -> Result<String, Error> {
    let not_here = || invalid_filter(format!("attribute {path} is not filterable here"));
    if path.uri.as_deref().is_some_and(|uri| !uri.eq_ignore_ascii_case(schema)) {
        return Err(not_here());
    }
    let name = path.name.to_ascii_lowercase();
    let sub = path.sub_attr.as_deref().map(str::to_ascii_lowercase);
    Ok(match (prefix, sub) {
        (Some(p), None) => format!("{p}.{name}"),
        (Some(_), Some(_)) => return Err(not_here()),
        (None, Some(s)) => format!("{name}.{s}"),
        (None, None) => name,
    })
}

fn group_column(path: &AttrPath, prefix: Option<&str>) -> Result<Column, Error> {
    Ok(match full_name(path, prefix, GROUP_SCHEMA)?.as_str() {
        "id" => Column::Exact("g.id::text"),
        "displayname" => Column::Text("coalesce(nullif(g.display_name, ''), g.name)"),
        "externalid" => Column::Exact("x.external_id"),
        "members" | "members.value" => Column::Members,
        "meta.created" => Column::Time("g.created_at"),
        "meta.lastmodified" => Column::Time("g.last_modified"),
        "meta.resourcetype" => Column::Exact("'Group'::text"),
        _ => return Err(invalid_filter(format!("attribute {path} is not filterable here"))),
    })
}

fn user_column(path: &AttrPath, prefix: Option<&str>) -> Result<Column, Error> {
    Ok(match full_name(path, prefix, USER_SCHEMA)?.as_str() {
        "id" => Column::Exact("u.id::text"),
        "username" => Column::Text("coalesce(u.scim_user_name, u.username)"),
        "name.givenname" => Column::Text("u.first_name"),
        "name.familyname" => Column::Text("u.last_name"),
        "name.formatted" | "displayname" => Column::Text("btrim(u.first_name || ' ' || u.last_name)"),
        // The placeholder address of a user without one is no address.
        "emails" | "emails.value" => {
            Column::Text("(CASE WHEN lower(u.email) LIKE '%@provisioned.invalid' THEN NULL ELSE u.email END)")
        }
        "emails.type" => Column::Text("'work'::text"),
        "emails.primary" => Column::Bool("true"),
        "active" => Column::Bool("u.enabled"),
        "externalid" => Column::Exact("x.external_id"),
        "meta.created" => Column::Time("u.created_at"),
        "meta.lastmodified" => Column::Time("u.last_modified"),
        "meta.resourcetype" => Column::Exact("'User'::text"),
        _ => return Err(invalid_filter(format!("attribute {path} is not filterable here"))),
    })
}

/// Appends the SQL condition of `filter` to `q`.
fn push_filter(q: &mut QueryBuilder<'_, Postgres>, r: Resource, filter: &Filter) -> Result<(), Error> {
    match filter {
        Filter::Attr(e) => push_attr(q, r, e, None),
        Filter::ValuePath(vp) => {
            let name = vp.attr.name.to_ascii_lowercase();
            let multi = match r {
                Resource::User => "emails",
                Resource::Group => "members",
            };
            if name != multi || vp.attr.sub_attr.is_some() {
                return Err(invalid_filter(format!("{} has no value filter here", vp.attr)));
            }
            push_val(q, r, &vp.filter, multi)
        }
        Filter::Not(inner) => {
            q.push("NOT coalesce((");
            push_filter(q, r, inner)?;
            q.push("), false)");
            Ok(())
        }
        Filter::And(all) => push_joined(q, all, " AND ", |q, f| push_filter(q, r, f)),
        Filter::Or(any) => push_joined(q, any, " OR ", |q, f| push_filter(q, r, f)),
    }
}

/// `(a OP b OP ...)`.
fn push_joined<'a, T>(
    q: &mut QueryBuilder<'a, Postgres>,
    operands: &[T],
    op: &str,
    mut push: impl FnMut(&mut QueryBuilder<'a, Postgres>, &T) -> Result<(), Error>,
) -> Result<(), Error> {
    q.push("(");
    for (i, f) in operands.iter().enumerate() {
        if i > 0 {
            q.push(op);
        }
        push(q, f)?;
    }
    q.push(")");
    Ok(())
}

fn push_val(q: &mut QueryBuilder<'_, Postgres>, r: Resource, f: &ValFilter, prefix: &str) -> Result<(), Error> {
    match f {
        ValFilter::Attr(e) => push_attr(q, r, e, Some(prefix)),
        ValFilter::Not(inner) => {
            q.push("NOT coalesce((");
            push_val(q, r, inner, prefix)?;
            q.push("), false)");
            Ok(())
        }
        ValFilter::And(all) => push_joined(q, all, " AND ", |q, f| push_val(q, r, f, prefix)),
        ValFilter::Or(any) => push_joined(q, any, " OR ", |q, f| push_val(q, r, f, prefix)),
    }
}

fn push_attr(q: &mut QueryBuilder<'_, Postgres>, r: Resource, e: &AttrExp, prefix: Option<&str>) -> Result<(), Error> {
    let (path, op, value) = match e {
        AttrExp::Present(path) => {
            match column(r, path, prefix)? {
                Column::Text(c) | Column::Exact(c) => q.push(format!("(nullif({c}, '') IS NOT NULL)")),
                Column::Bool(c) | Column::Time(c) => q.push(format!("({c} IS NOT NULL)")),
                Column::Members => q.push("EXISTS (SELECT 1 FROM user_groups ug WHERE ug.group_name = g.name)"),
            };
            return Ok(());
        }
        AttrExp::Comparison(path, op, value) => (path, op, value),
    };
    let column = column(r, path, prefix)?;
    if let Column::Members = column {
        let (CompareOp::Eq, CompValue::Str(s)) = (op, value) else {
            return Err(invalid_filter(format!("{path} takes eq with a user id, or pr")));
        };
        q.push("EXISTS (SELECT 1 FROM user_groups ug WHERE ug.group_name = g.name AND ug.user_id::text = ");
        q.push_bind(s.clone());
        q.push(")");
        return Ok(());
    }
    if matches!(value, CompValue::Null) {
        let test = match (op, column) {
            (CompareOp::Eq, Column::Text(c) | Column::Exact(c)) => format!("(nullif({c}, '') IS NULL)"),
            (CompareOp::Ne, Column::Text(c) | Column::Exact(c)) => format!("(nullif({c}, '') IS NOT NULL)"),
            (CompareOp::Eq, Column::Bool(c) | Column::Time(c)) => format!("({c} IS NULL)"),
            (CompareOp::Ne, Column::Bool(c) | Column::Time(c)) => format!("({c} IS NOT NULL)"),
            _ => return Err(invalid_filter(format!("{op} null is not a comparison"))),
        };
        q.push(test);
        return Ok(());
    }
    match column {
        Column::Text(c) | Column::Exact(c) => {
            let CompValue::Str(s) = value else {
                return Err(invalid_filter(format!("{path} is compared with a string")));
            };
            let exact = matches!(column, Column::Exact(_));
            let (l, r) = if exact { (c.to_string(), "$") } else { (format!("lower({c})"), "lower($)") };
            let (before, after) = r.split_once('$').unwrap_or(("", ""));
            let sql_op = match op {
                CompareOp::Eq => "=",
                CompareOp::Ne => "IS DISTINCT FROM",
                CompareOp::Gt => ">",
                CompareOp::Ge => ">=",
                CompareOp::Lt => "<",
                CompareOp::Le => "<=",
                CompareOp::Co => {
                    q.push(format!("(strpos({l}, {before}"));
                    q.push_bind(s.clone());
                    q.push(format!("{after}) > 0)"));
                    return Ok(());
                }
                CompareOp::Sw => {
                    q.push(format!("starts_with({l}, {before}"));
                    q.push_bind(s.clone());
                    q.push(format!("{after})"));
                    return Ok(());
                }
                CompareOp::Ew => {
                    q.push(format!("(right({l}, char_length("));
                    q.push_bind(s.clone());
                    q.push(format!(")) = {before}"));
                    q.push_bind(s.clone());
                    q.push(format!("{after})"));
                    return Ok(());
                }
            };
            let collate = if matches!(op, CompareOp::Eq | CompareOp::Ne) { "" } else { " COLLATE \"C\"" };
            q.push(format!("({l}{collate} {sql_op} {before}"));
            q.push_bind(s.clone());
            q.push(format!("{after})"));
        }
        Column::Bool(c) => {
            let b = match value {
                CompValue::True => true,
                CompValue::False => false,
                // Entra sends booleans as strings.
                CompValue::Str(s) if s.eq_ignore_ascii_case("true") => true,
                CompValue::Str(s) if s.eq_ignore_ascii_case("false") => false,
                _ => return Err(invalid_filter(format!("{path} is compared with true or false"))),
            };
            let sql_op = match op {
                CompareOp::Eq => "=",
                CompareOp::Ne => "IS DISTINCT FROM",
                _ => return Err(invalid_filter(format!("{path} takes eq, ne or pr"))),
            };
            q.push(format!("({c} {sql_op} "));
            q.push_bind(b);
            q.push(")");
        }
        Column::Members => unreachable!("handled above"),
        Column::Time(c) => {
            let CompValue::Str(s) = value else {
                return Err(invalid_filter(format!("{path} is compared with a date-time string")));
            };
            let t = DateTime::parse_from_rfc3339(s)
                .map_err(|_| invalid_filter(format!("{path} is compared with an RFC 3339 date-time")))?
                .with_timezone(&Utc);
            let sql_op = match op {
                CompareOp::Eq => "=",
                CompareOp::Ne => "IS DISTINCT FROM",
                CompareOp::Gt => ">",
                CompareOp::Ge => ">=",
                CompareOp::Lt => "<",
                CompareOp::Le => "<=",
                _ => return Err(invalid_filter(format!("{path} takes eq, ne, gt, ge, lt, le or pr"))),
            };
            q.push(format!("(date_trunc('milliseconds', {c}) {sql_op} "));
            q.push_bind(t);
            q.push(")");
        }
    }
    Ok(())
}

/// Checks that a filter compiles (for a 400 before any query runs).
pub fn check_filter(r: Resource, filter: &Filter) -> Result<(), Error> {
    let mut q = QueryBuilder::<Postgres>::new("");
    push_filter(&mut q, r, filter)
}

fn user_query<'a>(select: &str, client: &'a str, filter: Option<&Filter>) -> Result<QueryBuilder<'a, Postgres>, Error> {
    let mut q = QueryBuilder::<Postgres>::new(select);
    q.push(" FROM users u LEFT JOIN scim_external_ids x ON x.resource_type = 'User' AND x.resource_id = u.id AND x.client = ");
    q.push_bind(client);
    if let Some(f) = filter {
        // Not wrapped: a WHERE takes NULL as false, and the bare condition
        // lets PostgreSQL use the userName index.
        q.push(" WHERE (");
        push_filter(&mut q, Resource::User, f)?;
        q.push(")");
    }
    Ok(q)
}

const USER_COLUMNS: &str =
    "SELECT u.id, u.username, u.scim_user_name, u.email, u.first_name, u.last_name, u.enabled, u.created_at, \
                            u.last_modified, u.scim_extra, x.external_id";

/// One page of users matching `filter`, in creation order (stable under
/// paging), and how many match in all. `start` is 1-based.
pub async fn list_users(
    conn: &mut PgConnection,
    client: &str,
    filter: Option<&Filter>,
    start: i64,
    count: i64,
) -> Result<(Vec<ScimUser>, i64), Error> {
    if count > 0 {
        // One query: the page, each row carrying the total.
        let mut q = user_query(&format!("{USER_COLUMNS}, count(*) OVER () AS total"), client, filter)?;
        q.push(" ORDER BY u.created_at, u.id LIMIT ");
        q.push_bind(count);
        q.push(" OFFSET ");
        q.push_bind(start - 1);
        let rows = q.build_query_as::<Counted<ScimUser>>().fetch_all(&mut *conn).await?;
        if let Some(first) = rows.first() {
            let total = first.total;
            return Ok((rows.into_iter().map(|r| r.row).collect(), total));
        }
    }
    let mut total = user_query("SELECT count(*)", client, filter)?;
    let total: i64 = total.build_query_scalar().fetch_one(&mut *conn).await?;
    Ok((Vec::new(), total))
}

pub async fn user(conn: &mut PgConnection, client: &str, id: Uuid) -> Result<Option<ScimUser>, Error> {
    let mut q = user_query(USER_COLUMNS, client, None)?;
    q.push(" WHERE u.id = ");
    q.push_bind(id);
    Ok(q.build_query_as::<ScimUser>().fetch_optional(&mut *conn).await?)
}

/// Sets (or clears) the client's external id of a resource. `false` when
/// another resource of the client already has that external id.
pub async fn set_external_id(
    conn: &mut PgConnection,
    audit: &crate::audit::Audit,
    client: &str,
    resource_type: &str,
    id: Uuid,
    external_id: Option<&str>,
) -> Result<bool, Error> {
    let before = sqlx::query_scalar!(
        "SELECT external_id FROM scim_external_ids WHERE client = $1 AND resource_type = $2 AND resource_id = $3",
        client,
        resource_type,
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    if before.as_deref() == external_id {
        return Ok(true);
    }
    let subject = if resource_type == "User" { "user" } else { "group" };
    let changes = crate::audit::Changes::new().set("client", client).field(
        "external_id",
        before.clone(),
        external_id.map(str::to_string),
    );
    crate::audit::record(&mut *conn, audit, subject, &id.to_string(), "scim.external_id_changed", changes).await?;
    sqlx::query!(
        "DELETE FROM scim_external_ids WHERE client = $1 AND resource_type = $2 AND resource_id = $3",
        client,
        resource_type,
        id
    )
    .execute(&mut *conn)
    .await?;
    let Some(external_id) = external_id else { return Ok(true) };
    let done = sqlx::query!(
        "INSERT INTO scim_external_ids (client, resource_type, resource_id, external_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (client, resource_type, external_id) DO NOTHING",
        client,
        resource_type,
        id,
        external_id
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(done == 1)
}

/// Stores the SCIM userName (when it is not the username) and the SCIM
/// attributes registrar has no column for. `false` when the userName is
/// another user's.
pub async fn set_user_scim(
    conn: &mut PgConnection,
    audit: &crate::audit::Audit,
    id: Uuid,
    user_name: Option<&str>,
    extra: &serde_json::Value,
) -> Result<bool, Error> {
    let before = sqlx::query!("SELECT scim_user_name, scim_extra FROM users WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(before) = before else { return Ok(true) };
    if before.scim_user_name.as_deref() == user_name && &before.scim_extra == extra {
        return Ok(true);
    }
    let r = sqlx::query!("UPDATE users SET scim_user_name = $2, scim_extra = $3 WHERE id = $1", id, user_name, extra)
        .execute(&mut *conn)
        .await;
    match r {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.constraint() == Some("users_scim_user_name_key") => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    let changes = crate::audit::Changes::new()
        .field("scim_user_name", before.scim_user_name, user_name.map(str::to_string))
        .field("scim_attributes", before.scim_extra, extra.clone());
    crate::audit::record(&mut *conn, audit, "user", &id.to_string(), "user.scim_updated", changes).await?;
    Ok(true)
}

/// Whether a userName is free (no user has it as userName or username).
pub async fn user_name_free(conn: &mut PgConnection, user_name: &str, except: Option<Uuid>) -> Result<bool, Error> {
    Ok(!sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM users
                          WHERE (lower(coalesce(scim_user_name, username)) = lower($1) OR lower(username) = lower($1))
                            AND id IS DISTINCT FROM $2)
               OR EXISTS (SELECT 1 FROM username_history WHERE name_key = lower($1) AND user_id IS DISTINCT FROM $2)
               AS "taken!""#,
        user_name,
        except
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// Locks a user's row for a read-modify-write (PUT, PATCH).
pub async fn lock_user(conn: &mut PgConnection, id: Uuid) -> Result<bool, Error> {
    Ok(sqlx::query_scalar!("SELECT id FROM users WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(&mut *conn)
        .await?
        .is_some())
}

/// The oldest enabled administrator (the owner of a provisioning
/// credential made from the command line).
pub async fn oldest_admin(conn: &mut PgConnection) -> Result<Option<Uuid>, Error> {
    Ok(sqlx::query_scalar!(
        "SELECT u.id FROM users u JOIN user_roles r ON r.user_id = u.id AND r.role = 'Administrator'
         WHERE u.enabled ORDER BY u.created_at, u.id LIMIT 1"
    )
    .fetch_optional(&mut *conn)
    .await?)
}

/// Whether a provisioning credential of this name is live.
pub async fn credential_name_taken(conn: &mut PgConnection, name: &str) -> Result<bool, Error> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM api_keys WHERE scope = 'scim' AND name = $1 AND revoked_at IS NULL) AS "t!""#,
        name
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// A group as SCIM shows it.
#[derive(Debug, sqlx::FromRow)]
pub struct ScimGroup {
    pub id: Uuid,
    pub name: String,
    pub display_name: String,
    pub project_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_modified: DateTime<Utc>,
    pub external_id: Option<String>,
}

const GROUP_COLUMNS: &str =
    "SELECT g.id, g.name, g.display_name, g.project_id, g.created_at, g.last_modified, x.external_id";

fn group_query<'a>(
    select: &str,
    client: &'a str,
    filter: Option<&Filter>,
) -> Result<QueryBuilder<'a, Postgres>, Error> {
    let mut q = QueryBuilder::<Postgres>::new(select);
    q.push(" FROM groups g LEFT JOIN scim_external_ids x ON x.resource_type = 'Group' AND x.resource_id = g.id AND x.client = ");
    q.push_bind(client);
    if let Some(f) = filter {
        q.push(" WHERE (");
        push_filter(&mut q, Resource::Group, f)?;
        q.push(")");
    }
    Ok(q)
}

/// One page of groups matching `filter`, in creation order, and the total.
pub async fn list_groups(
    conn: &mut PgConnection,
    client: &str,
    filter: Option<&Filter>,
    start: i64,
    count: i64,
) -> Result<(Vec<ScimGroup>, i64), Error> {
    let mut total = group_query("SELECT count(*)", client, filter)?;
    let total: i64 = total.build_query_scalar().fetch_one(&mut *conn).await?;
    if count == 0 {
        return Ok((Vec::new(), total));
    }
    let mut q = group_query(GROUP_COLUMNS, client, filter)?;
    q.push(" ORDER BY g.created_at, g.id LIMIT ");
    q.push_bind(count);
    q.push(" OFFSET ");
    q.push_bind(start - 1);
    Ok((q.build_query_as::<ScimGroup>().fetch_all(&mut *conn).await?, total))
}

pub async fn group(conn: &mut PgConnection, client: &str, id: Uuid) -> Result<Option<ScimGroup>, Error> {
    let mut q = group_query(GROUP_COLUMNS, client, None)?;
    q.push(" WHERE g.id = ");
    q.push_bind(id);
    Ok(q.build_query_as::<ScimGroup>().fetch_optional(&mut *conn).await?)
}

/// Waits for, then holds until the transaction ends, the turn of SCIM's
/// writers of group `id` (a transaction advisory lock on the id's hash;
/// a shared hash only makes two groups take turns).
pub async fn take_group_writers(conn: &mut PgConnection, id: Uuid) -> Result<(), Error> {
    sqlx::query_scalar!("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 7))::text", id.to_string())
        .fetch_one(&mut *conn)
        .await?;
    Ok(())
}

/// Locks a group's row (its membership is read, changed and written in
/// one transaction, so concurrent PATCHes lose nothing). Its name.
pub async fn lock_group(conn: &mut PgConnection, id: Uuid) -> Result<Option<String>, Error> {
    Ok(sqlx::query_scalar!("SELECT name FROM groups WHERE id = $1 FOR UPDATE", id).fetch_optional(&mut *conn).await?)
}

/// The members of a group: user id and username, in a stable order.
pub async fn members_of(conn: &mut PgConnection, group: &str) -> Result<Vec<(Uuid, String)>, Error> {
    Ok(sqlx::query!(
        "SELECT u.id, u.username FROM user_groups ug JOIN users u ON u.id = ug.user_id
         WHERE ug.group_name = $1 ORDER BY ug.added_at, u.id",
        group
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| (r.id, r.username))
    .collect())
}

/// The usernames of those of `ids` that are users.
pub async fn usernames_of(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>, Error> {
    Ok(sqlx::query!("SELECT id, username FROM users WHERE id = ANY($1)", ids)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| (r.id, r.username))
        .collect())
}

/// Whether a group name is taken (any case).
pub async fn group_name_taken(conn: &mut PgConnection, name: &str) -> Result<bool, Error> {
    Ok(sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM groups WHERE lower(name) = lower($1)) AS "t!""#, name)
        .fetch_one(&mut *conn)
        .await?)
}

/// The id of group `name`.
pub async fn group_id(conn: &mut PgConnection, name: &str) -> Result<Uuid, Error> {
    Ok(sqlx::query_scalar!("SELECT id FROM groups WHERE name = $1", name).fetch_one(&mut *conn).await?)
}

/// A provisioning credential as the admin console lists it (never its secret).
#[derive(Debug, sqlx::FromRow)]
pub struct CredentialView {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub owner: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn credentials(conn: &mut PgConnection) -> Result<Vec<CredentialView>, Error> {
    Ok(sqlx::query_as!(
        CredentialView,
        "SELECT k.id, k.name, k.prefix, u.username AS owner, k.created_at, k.last_used_at, k.revoked_at
         FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.scope = 'scim'
         ORDER BY k.revoked_at IS NOT NULL, k.created_at DESC"
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// Revokes a provisioning credential (whoever owns it). Whether it was live.
pub async fn revoke_credential(conn: &mut PgConnection, audit: &crate::audit::Audit, id: Uuid) -> Result<bool, Error> {
    let done = sqlx::query_scalar!(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND scope = 'scim' AND revoked_at IS NULL RETURNING name",
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(name) = done else { return Ok(false) };
    let changes = crate::audit::Changes::new().set("name", name).set("scope", "scim");
    crate::audit::record(&mut *conn, audit, "api_key", &id.to_string(), "api_key.revoked", changes).await?;
    Ok(true)
}
