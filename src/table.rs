//! Tabular answers in the four formats XNAT offers: JSON (XNAT's
//! `ResultSet`), CSV, XML and HTML. Every value is escaped by a maintained
//! encoder (csv, quick-xml, html-escape).

use actix_web::HttpResponse;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Csv,
    Xml,
    Html,
}

impl Format {
    pub fn parse(raw: Option<&str>) -> Result<Format, ApiError> {
        match raw.map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("json") => Ok(Format::Json),
            Some("csv") => Ok(Format::Csv),
            Some("xml") => Ok(Format::Xml),
            Some("html") => Ok(Format::Html),
            Some(_) => Err(ApiError::bad_request("invalid_format", "format must be json, csv, xml or html")),
        }
    }
}

/// Columns and rows of strings (XNAT reports every value as a string).
pub struct Table {
    pub title: String,
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: impl Into<String>, columns: &[&'static str]) -> Table {
        Table { title: title.into(), columns: columns.to_vec(), rows: Vec::new() }
    }

    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    /// XNAT's JSON: `{"ResultSet": {"Result": [{..}], "totalRecords": "N", "title": ".."}}`.
    pub fn result_set(&self) -> Value {
        let results: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let mut m = Map::new();
                for (c, v) in self.columns.iter().zip(row) {
                    m.insert((*c).to_string(), Value::String(v.clone()));
                }
                Value::Object(m)
            })
            .collect();
        json!({"ResultSet": {"Result": results, "totalRecords": self.rows.len().to_string(), "title": self.title}})
    }

    pub fn csv(&self) -> Result<String, ApiError> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&self.columns).map_err(ApiError::internal)?;
        for row in &self.rows {
            w.write_record(row.iter().map(|cell| csv_cell(cell).into_owned())).map_err(ApiError::internal)?;
        }
        let bytes = w.into_inner().map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
        String::from_utf8(bytes).map_err(ApiError::internal)
    }

    /// XNAT's XML result set: `<ResultSet><results><columns>..</columns><rows><row><cell>..`.
    pub fn xml(&self) -> Result<String, ApiError> {
        let mut w = Writer::new(Vec::new());
        let io = |e: std::io::Error| ApiError::internal(e);
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None))).map_err(io)?;
        let mut root = BytesStart::new("ResultSet");
        root.push_attribute(("totalRecords", self.rows.len().to_string().as_str()));
        root.push_attribute(("title", self.title.as_str()));
        w.write_event(Event::Start(root)).map_err(io)?;
        w.write_event(Event::Start(BytesStart::new("results"))).map_err(io)?;
        w.write_event(Event::Start(BytesStart::new("columns"))).map_err(io)?;
        for c in &self.columns {
            w.write_event(Event::Start(BytesStart::new("column"))).map_err(io)?;
            w.write_event(Event::Text(BytesText::new(c))).map_err(io)?;
            w.write_event(Event::End(BytesEnd::new("column"))).map_err(io)?;
        }
        w.write_event(Event::End(BytesEnd::new("columns"))).map_err(io)?;
        w.write_event(Event::Start(BytesStart::new("rows"))).map_err(io)?;
        for row in &self.rows {
            w.write_event(Event::Start(BytesStart::new("row"))).map_err(io)?;
            for v in row {
                w.write_event(Event::Start(BytesStart::new("cell"))).map_err(io)?;
                w.write_event(Event::Text(BytesText::new(&xml_safe(v)))).map_err(io)?;
                w.write_event(Event::End(BytesEnd::new("cell"))).map_err(io)?;
            }
            w.write_event(Event::End(BytesEnd::new("row"))).map_err(io)?;
        }
        w.write_event(Event::End(BytesEnd::new("rows"))).map_err(io)?;
        w.write_event(Event::End(BytesEnd::new("results"))).map_err(io)?;
        w.write_event(Event::End(BytesEnd::new("ResultSet"))).map_err(io)?;
        String::from_utf8(w.into_inner()).map_err(ApiError::internal)
    }

    pub fn html(&self) -> String {
        use html_escape::encode_safe;
        let mut out = String::from("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>");
        out.push_str(&encode_safe(&self.title));
        out.push_str("</title></head><body>\n<table>\n<thead><tr>");
        for c in &self.columns {
            out.push_str("<th>");
            out.push_str(&encode_safe(c));
            out.push_str("</th>");
        }
        out.push_str("</tr></thead>\n<tbody>\n");
        for row in &self.rows {
            out.push_str("<tr>");
            for v in row {
                out.push_str("<td>");
                out.push_str(&encode_safe(v));
                out.push_str("</td>");
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody>\n</table>\n</body></html>\n");
        out
    }

    /// Answers in `format`; `json` is rendered by the caller's `json` closure
    /// (native objects or XNAT's ResultSet).
    pub fn respond(&self, format: Format, json: impl FnOnce(&Table) -> Value) -> Result<HttpResponse, ApiError> {
        Ok(match format {
            Format::Json => HttpResponse::Ok().json(json(self)),
            Format::Csv => HttpResponse::Ok().content_type("text/csv; charset=utf-8").body(self.csv()?),
            Format::Xml => HttpResponse::Ok().content_type("application/xml; charset=utf-8").body(self.xml()?),
            Format::Html => HttpResponse::Ok()
                .content_type("text/html; charset=utf-8")
                .insert_header(("Content-Security-Policy", "default-src 'none'"))
                .body(self.html()),
        })
    }
}

/// A cell a spreadsheet would run as a formula (it starts with `=`, `+`,
/// `-`, `@`, a tab or a carriage return) is prefixed with `'`, as OWASP
/// recommends for CSV exports; any other cell is unchanged.
pub fn csv_cell(v: &str) -> std::borrow::Cow<'_, str> {
    if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{v}"))
    } else {
        std::borrow::Cow::Borrowed(v)
    }
}

/// XML 1.0 cannot carry most control characters or the non-characters
/// U+FFFE and U+FFFF, even escaped: drop them.
fn xml_safe(v: &str) -> String {
    v.chars()
        .filter(|c| (!c.is_control() || matches!(c, '\t' | '\n' | '\r')) && !matches!(c, '\u{FFFE}' | '\u{FFFF}'))
        .collect()
}

// The access-request tables of XNAT's `/data/.../pars` and of the native
// API's `format=csv|xml|html` answers.

/// The native API's access-request columns: the JSON fields' names.
pub const NATIVE_PAR_COLUMNS: [&str; 14] = [
    "par_id",
    "project_id",
    "project_name",
    "level",
    "kind",
    "status",
    "username",
    "email",
    "first_name",
    "last_name",
    "created_by",
    "created_at",
    "expires_at",
    "decided_at",
];

/// The native API's `format=csv|xml|html` table of access requests.
pub fn native_par_table(title: &str, list: &[crate::store::access_requests::AccessRequest]) -> Table {
    let mut t = Table::new(title, &NATIVE_PAR_COLUMNS);
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let time = |v: &Option<chrono::DateTime<chrono::Utc>>| v.map(|d| d.to_rfc3339()).unwrap_or_default();
    for r in list {
        t.push(vec![
            r.par_id.to_string(),
            r.project_id.clone(),
            r.project_name.clone(),
            r.level.clone(),
            r.kind.clone(),
            r.status.clone(),
            text(&r.username),
            text(&r.email),
            text(&r.first_name),
            text(&r.last_name),
            text(&r.created_by),
            r.created_at.to_rfc3339(),
            time(&r.expires_at),
            time(&r.decided_at),
        ]);
    }
    t
}

// XNAT's tables (`/data/pars`, `/data/projects/{p}/pars`), XNAT's names.

pub const PROJECT_PAR_COLUMNS: [&str; 9] =
    ["par_id", "proj_id", "level", "create_date", "email", "login", "secondary_id", "approved", "approval_date"];

/// The rows XNAT's `GET /data/projects/{p}/pars` gives.
pub fn project_par_table(project: &str, list: &[crate::store::access_requests::AccessRequest]) -> Table {
    let mut t = Table::new(format!("Access requests of {project}"), &PROJECT_PAR_COLUMNS);
    for r in list {
        t.push(vec![
            r.par_id.to_string(),
            r.project_id.clone(),
            r.level.clone(),
            r.created_at.to_rfc3339(),
            r.email.clone().unwrap_or_default(),
            r.username.clone().unwrap_or_default(),
            r.project_name.clone(),
            r.approved.map(|a| a.to_string()).unwrap_or_default(),
            r.decided_at.map(|d| d.to_rfc3339()).unwrap_or_default(),
        ]);
    }
    t
}

pub const USER_PAR_COLUMNS: [&str; 12] = [
    "par_id",
    "proj_id",
    "level",
    "create_date",
    "login",
    "firstname",
    "lastname",
    "secondary_id",
    "name",
    "id",
    "description",
    "?column?",
];

/// The rows XNAT's `GET /data/pars` gives: login/firstname/lastname are the
/// inviter's, `?column?` the project's investigator.
pub fn user_par_table(list: &[crate::store::access_requests::AccessRequest]) -> Table {
    let mut t = Table::new("Open project access requests", &USER_PAR_COLUMNS);
    for r in list {
        t.push(vec![
            r.par_id.to_string(),
            r.project_id.clone(),
            r.level.clone(),
            r.created_at.to_rfc3339(),
            r.created_by.clone().unwrap_or_default(),
            r.created_by_first_name.clone().unwrap_or_default(),
            r.created_by_last_name.clone().unwrap_or_default(),
            r.project_name.clone(),
            r.project_name.clone(),
            r.project_id.clone(),
            r.project_description.clone(),
            r.project_pi.clone(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new("t", &["a", "b"]);
        t.push(vec!["<script>alert(1)</script>".into(), "x,\"y\"\nz".into()]);
        t
    }

    #[test]
    fn escapes_everything() {
        let t = sample();
        assert!(!t.html().contains("<script>"));
        assert!(t.xml().expect("xml").contains("&lt;script&gt;"));
        let csv = t.csv().expect("csv");
        let mut r = csv::Reader::from_reader(csv.as_bytes());
        let row = r.records().next().expect("row").expect("ok");
        assert_eq!(&row[1], "x,\"y\"\nz");
        assert_eq!(t.result_set()["ResultSet"]["totalRecords"], "1");
    }
}
