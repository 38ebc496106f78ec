//! Bulk import of users (JSON or CSV), with a dry run that is the real run
//! rolled back: one code path, so the dry run's report is what the real run
//! will do (as long as nothing else changes in between).

use serde::{Deserialize, Serialize};

use crate::audit::Audit;
use crate::auth::password::Hasher;
use crate::auth::principal::Principal;
use crate::domain::{Error, Result};
use crate::service::users::{CreateUser, UpdateUser};
use crate::store::users::{self, User};

/// At most this many rows per import.
pub const MAX_ROWS: usize = 10_000;

/// One user to create or bring up to date. Fields left out (or empty CSV
/// cells) stay as they are on an existing user; `roles`, when given, is
/// the user's whole set of roles afterwards.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    pub username: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub affiliation: Option<String>,
    pub contact: Option<String>,
    pub orcid: Option<String>,
    pub url: Option<String>,
    pub enabled: Option<bool>,
    pub verified: Option<bool>,
    pub roles: Option<Vec<String>>,
    /// A first password for a new user (ignored for an existing one).
    pub password: Option<secrecy::SecretString>,
}

/// What happened to a row.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct RowReport {
    /// 1-based, in the order given.
    pub row: usize,
    pub username: String,
    /// `created`, `updated`, `unchanged` or `refused`.
    pub outcome: &'static str,
    /// The fields an update changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RowError>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct RowError {
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Summary {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub refused: usize,
}

/// The answer of an import, dry or real.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub dry_run: bool,
    /// `all_or_nothing` or `per_row`.
    pub mode: &'static str,
    /// Whether anything was written (never for a dry run; not for an
    /// all-or-nothing import with a refused row).
    pub applied: bool,
    pub summary: Summary,
    pub rows: Vec<RowReport>,
}

/// How refusals are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One transaction: any refused row and nothing is written.
    AllOrNothing,
    /// Each row on its own (a savepoint): refused rows are skipped.
    PerRow,
}

/// The columns of the CSV export (`GET /api/v1/users?format=csv`): every
/// field an operator needs, no secret. An import reads the same columns
/// (and `password`); those only an export has (`id`, `admin`, `locked`,
/// the times) it ignores, so an export imports back.
pub const EXPORT_COLUMNS: [&str; 17] = [
    "id",
    "username",
    "email",
    "first_name",
    "last_name",
    "affiliation",
    "contact",
    "orcid",
    "url",
    "enabled",
    "verified",
    "admin",
    "roles",
    "locked",
    "created_at",
    "last_successful_login",
    "password_updated",
];

/// Reads CSV rows (a header row, then one user per row): empty cells are
/// left out, `enabled`/`verified` are `true`/`false`, `roles` are separated
/// by `;`. A column this does not know is refused by name.
pub fn rows_from_csv(text: &str) -> Result<Vec<Row>> {
    let mut rd = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
    let header: Vec<String> = rd
        .headers()
        .map_err(|_| Error::malformed("invalid_csv", "the CSV has no readable header row"))?
        .iter()
        .map(str::to_string)
        .collect();

    if let Some(dup) = header.iter().enumerate().find(|(i, h)| header[..*i].contains(h)).map(|(_, h)| h) {
        return Err(Error::malformed(
            "duplicate_column",
            format!("column `{}` is given twice", dup.chars().take(64).collect::<String>()),
        ));
    }
    let known = |h: &str| h == "password" || EXPORT_COLUMNS.contains(&h);
    if let Some(bad) = header.iter().find(|h| !known(h)) {
        return Err(Error::malformed(
            "unknown_column",
            format!("unknown column `{}`", bad.chars().take(64).collect::<String>()),
        ));
    }
    if !header.iter().any(|h| h == "username") {
        return Err(Error::malformed("missing_column", "the CSV needs a `username` column"));
    }
    let mut out = Vec::new();
    for (i, rec) in rd.records().enumerate() {
        let rec = rec.map_err(|_| Error::malformed("invalid_csv", format!("row {} cannot be read", i + 1)))?;
        let mut row = Row::default();
        for (h, v) in header.iter().zip(rec.iter()) {
            // The export quotes a cell a spreadsheet would run (`'=...`):
            // undo exactly that, so an export imports back unchanged.
            let v = match v.strip_prefix('\'') {
                Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
                _ => v,
            };
            let text = (!v.is_empty()).then(|| v.to_string());
            let flag = |v: &str, name: &str| match v {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                "" => Ok(None),
                _ => Err(Error::malformed("invalid_csv", format!("row {}: `{name}` must be true or false", i + 1))),
            };
            match h.as_str() {
                "username" => row.username = v.to_string(),
                "email" => row.email = text,
                "first_name" => row.first_name = text,
                "last_name" => row.last_name = text,
                "affiliation" => row.affiliation = text,
                "contact" => row.contact = text,
                "orcid" => row.orcid = text,
                "url" => row.url = text,
                "enabled" => row.enabled = flag(v, "enabled")?,
                "verified" => row.verified = flag(v, "verified")?,
                "roles" => {
                    row.roles = Some(v.split(';').map(str::trim).filter(|r| !r.is_empty()).map(String::from).collect())
                }
                "password" => row.password = text.map(secrecy::SecretString::from),
                _ => {}
            }
        }
        out.push(row);
    }
    Ok(out)
}

fn refused(e: &Error) -> RowError {
    let field = match e {
        Error::Invalid { field, .. } | Error::Malformed { field, .. } => *field,
        _ => None,
    };
    RowError { code: e.code(), message: e.to_string(), field }
}

/// The fields that differ between two states of a user.
fn changed(before: &User, after: &User) -> Vec<&'static str> {
    let mut out = Vec::new();
    let pairs: [(&'static str, bool); 10] = [
        ("email", before.email != after.email),
        ("first_name", before.first_name != after.first_name),
        ("last_name", before.last_name != after.last_name),
        ("affiliation", before.affiliation != after.affiliation),
        ("contact", before.contact != after.contact),
        ("orcid", before.orcid != after.orcid),
        ("url", before.url != after.url),
        ("enabled", before.enabled != after.enabled),
        ("verified", before.verified != after.verified),
        ("roles", before.roles != after.roles),
    ];
    for (name, differs) in pairs {
        if differs {
            out.push(name);
        }
    }
    out
}

/// Applies one row inside `conn` (a transaction or savepoint).
async fn apply_row(
    conn: &mut sqlx::PgConnection,
    hasher: &Hasher,
    caller: &Principal,
    audit: &Audit,
    row: Row,
) -> Result<(&'static str, Vec<&'static str>)> {
    let name = row.username.trim().to_string();
    match users::by_name(conn, &name).await? {
        None => {
            let create = CreateUser {
                username: name.clone(),
                email: row
                    .email
                    .ok_or_else(|| Error::invalid("missing_field", "a new user needs an email").on_field("email"))?,
                first_name: row.first_name.unwrap_or_default(),
                last_name: row.last_name.unwrap_or_default(),
                affiliation: row.affiliation.unwrap_or_default(),
                contact: row.contact.unwrap_or_default(),
                orcid: row.orcid.unwrap_or_default(),
                url: row.url.unwrap_or_default(),
                password: row.password,
                enabled: row.enabled.unwrap_or(true),
                verified: row.verified.unwrap_or(false),
                admin: false,
                roles: row.roles.unwrap_or_default(),
            };
            crate::service::users::create_user_in(conn, hasher, caller, audit, create).await?;
            Ok(("created", Vec::new()))
        }
        Some(before) => {
            let patch = UpdateUser {
                email: row.email,
                first_name: row.first_name,
                last_name: row.last_name,
                affiliation: row.affiliation,
                contact: row.contact,
                orcid: row.orcid,
                url: row.url,
                enabled: row.enabled,
                verified: row.verified,
                ..Default::default()
            };
            let id = before.id.to_string();
            crate::service::users::update_user_in(conn, caller, audit, &id, patch, None).await?;
            if let Some(wanted) = row.roles {
                let grant: Vec<String> = wanted.iter().filter(|r| !before.roles.contains(r)).cloned().collect();
                let drop: Vec<String> = before.roles.iter().filter(|r| !wanted.contains(r)).cloned().collect();
                for (list, on) in [(grant, true), (drop, false)] {
                    if list.is_empty() {
                        continue;
                    }
                    let (_, items) = crate::service::users::apply_roles_in(conn, caller, audit, &id, &list, on).await?;
                    if let Some(e) = items.into_iter().find_map(|i| i.into_error()) {
                        return Err(e);
                    }
                }
            }
            let after = users::get_by_id(conn, before.id).await?;
            let changed = changed(&before, &after);
            Ok((if changed.is_empty() { "unchanged" } else { "updated" }, changed))
        }
    }
}

/// Imports `rows`: each created or brought up to date with the same rules
/// as the API (`create_user_in`, `update_user_in`, `apply_roles_in`), in
/// one transaction that a dry run, or an all-or-nothing import with a
/// refused row, rolls back. A fault (not a refusal) ends the import.
pub async fn import(
    pool: &sqlx::PgPool,
    hasher: &Hasher,
    caller: &Principal,
    audit: &Audit,
    rows: Vec<Row>,
    mode: Mode,
    dry_run: bool,
) -> Result<Report> {
    if rows.is_empty() || rows.len() > MAX_ROWS {
        return Err(Error::malformed("invalid_rows", format!("give between 1 and {MAX_ROWS} users")));
    }
    let mut tx = pool.begin().await?;
    // The rows' users locked first, in id order, not in the rows' order: as
    // bulk actions and a role's deletion do (`users::lock_many`).
    users::lock_many(&mut tx, &rows.iter().map(|r| r.username.trim()).collect::<Vec<_>>()).await?;
    let mut report = Report {
        dry_run,
        mode: if mode == Mode::PerRow { "per_row" } else { "all_or_nothing" },
        applied: false,
        summary: Summary::default(),
        rows: Vec::with_capacity(rows.len()),
    };
    for (i, row) in rows.into_iter().enumerate() {
        let username = row.username.trim().to_string();
        let mut point = sqlx::Connection::begin(&mut *tx).await?;
        let outcome = apply_row(&mut point, hasher, caller, audit, row).await;
        let entry = match outcome {
            Ok((outcome, changed)) => {
                point.commit().await?;
                match outcome {
                    "created" => report.summary.created += 1,
                    "updated" => report.summary.updated += 1,
                    _ => report.summary.unchanged += 1,
                }
                RowReport { row: i + 1, username, outcome, changed, error: None }
            }
            Err(e) if e.is_refusal() => {
                point.rollback().await?;
                report.summary.refused += 1;
                RowReport { row: i + 1, username, outcome: "refused", changed: Vec::new(), error: Some(refused(&e)) }
            }
            Err(e) => return Err(e),
        };
        report.rows.push(entry);
    }
    let writes = !dry_run && (mode == Mode::PerRow || report.summary.refused == 0);
    if writes {
        tx.commit().await?;
        report.applied = true;
    } else {
        tx.rollback().await?;
    }
    Ok(report)
}
