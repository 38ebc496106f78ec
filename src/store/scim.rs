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
}

fn invalid_filter(detail: impl Into<String>) -> Error {
    Error::invalid("invalidFilter", detail)
}

/// The column of a User attribute path (`prefix` is the multi-valued
/// attribute of an enclosing `emails[...]`).
fn user_column(path: &AttrPath, prefix: Option<&str>) -> Result<Column, Error> {
    if let Some(uri) = &path.uri {
        if !uri.eq_ignore_ascii_case(USER_SCHEMA) {
            return Err(invalid_filter(format!("attribute {path} is not filterable here")));
        }
    }
    let name = path.name.to_ascii_lowercase();
    let sub = path.sub_attr.as_deref().map(str::to_ascii_lowercase);
    let full = match (prefix, sub) {
        (Some(p), None) => format!("{p}.{name}"),
        (Some(_), Some(_)) => return Err(invalid_filter(format!("attribute {path} is not filterable here"))),
        (None, Some(s)) => format!("{name}.{s}"),
        (None, None) => name,
    };
    Ok(match full.as_str() {
        "id" => Column::Exact("u.id::text"),
        "username" => Column::Text("coalesce(u.scim_user_name, u.username)"),
        "name.givenname" => Column::Text("u.first_name"),
        "name.familyname" => Column::Text("u.last_name"),
        "name.formatted" | "displayname" => Column::Text("btrim(u.first_name || ' ' || u.last_name)"),
        "emails" | "emails.value" => Column::Text("u.email"),
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
fn push_filter(q: &mut QueryBuilder<'_, Postgres>, filter: &Filter) -> Result<(), Error> {
    match filter {
        Filter::Attr(e) => push_attr(q, e, None),
        Filter::ValuePath(vp) => {
            let name = vp.attr.name.to_ascii_lowercase();
            if name != "emails" || vp.attr.sub_attr.is_some() {
                return Err(invalid_filter(format!("{} has no value filter here", vp.attr)));
            }
            push_val(q, &vp.filter, "emails")
        }
        Filter::Not(inner) => {
            q.push("NOT coalesce((");
            push_filter(q, inner)?;
            q.push("), false)");
            Ok(())
        }
        Filter::And(a, b) => push_pair(q, a, " AND ", b),
        Filter::Or(a, b) => push_pair(q, a, " OR ", b),
    }
}

fn push_pair(q: &mut QueryBuilder<'_, Postgres>, a: &Filter, op: &str, b: &Filter) -> Result<(), Error> {
    q.push("(");
    push_filter(q, a)?;
    q.push(op);
    push_filter(q, b)?;
    q.push(")");
    Ok(())
}

fn push_val(q: &mut QueryBuilder<'_, Postgres>, f: &ValFilter, prefix: &str) -> Result<(), Error> {
    match f {
        ValFilter::Attr(e) => push_attr(q, e, Some(prefix)),
        ValFilter::Not(inner) => {
            q.push("NOT coalesce((");
            push_val(q, inner, prefix)?;
            q.push("), false)");
            Ok(())
        }
        ValFilter::And(a, b) | ValFilter::Or(a, b) => {
            let op = if matches!(f, ValFilter::And(..)) { " AND " } else { " OR " };
            q.push("(");
            push_val(q, a, prefix)?;
            q.push(op);
            push_val(q, b, prefix)?;
            q.push(")");
            Ok(())
        }
    }
}

fn push_attr(q: &mut QueryBuilder<'_, Postgres>, e: &AttrExp, prefix: Option<&str>) -> Result<(), Error> {
    let (path, op, value) = match e {
        AttrExp::Present(path) => {
            match user_column(path, prefix)? {
                Column::Text(c) | Column::Exact(c) => q.push(format!("(nullif({c}, '') IS NOT NULL)")),
                Column::Bool(c) | Column::Time(c) => q.push(format!("({c} IS NOT NULL)")),
            };
            return Ok(());
        }
        AttrExp::Comparison(path, op, value) => (path, op, value),
    };
    let column = user_column(path, prefix)?;
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
pub fn check_user_filter(filter: &Filter) -> Result<(), Error> {
    let mut q = QueryBuilder::<Postgres>::new("");
    push_filter(&mut q, filter)
}

fn user_query<'a>(select: &str, client: &'a str, filter: Option<&Filter>) -> Result<QueryBuilder<'a, Postgres>, Error> {
    let mut q = QueryBuilder::<Postgres>::new(select);
    q.push(" FROM users u LEFT JOIN scim_external_ids x ON x.resource_type = 'User' AND x.resource_id = u.id AND x.client = ");
    q.push_bind(client);
    if let Some(f) = filter {
        q.push(" WHERE coalesce((");
        push_filter(&mut q, f)?;
        q.push("), false)");
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
    let mut total = user_query("SELECT count(*)", client, filter)?;
    let total: i64 = total.build_query_scalar().fetch_one(&mut *conn).await?;
    if count == 0 {
        return Ok((Vec::new(), total));
    }
    let mut q = user_query(USER_COLUMNS, client, filter)?;
    q.push(" ORDER BY u.created_at, u.id LIMIT ");
    q.push_bind(count);
    q.push(" OFFSET ");
    q.push_bind(start - 1);
    let rows = q.build_query_as::<ScimUser>().fetch_all(&mut *conn).await?;
    Ok((rows, total))
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
    client: &str,
    resource_type: &str,
    id: Uuid,
    external_id: Option<&str>,
) -> Result<bool, Error> {
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
    id: Uuid,
    user_name: Option<&str>,
    extra: &serde_json::Value,
) -> Result<bool, Error> {
    let r = sqlx::query!("UPDATE users SET scim_user_name = $2, scim_extra = $3 WHERE id = $1", id, user_name, extra)
        .execute(&mut *conn)
        .await;
    match r {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.constraint() == Some("users_scim_user_name_key") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether a userName is free (no user has it as userName or username).
pub async fn user_name_free(conn: &mut PgConnection, user_name: &str, except: Option<Uuid>) -> Result<bool, Error> {
    Ok(!sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM users WHERE lower(coalesce(scim_user_name, username)) = lower($1)
                          AND id IS DISTINCT FROM $2) AS "taken!""#,
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
