//! The data model xnatpy reads before it builds its classes (`xnat.connect`
//! with model parsing on, its default): the list of schemas, the schema
//! documents, and XNAT's search elements. The documents are registrar's own
//! and describe only what registrar serves: projects (`xnat:projectData`,
//! with the fields `/data/archive/projects` answers), accounts and project
//! access groups (`xdat:user`, `xdat:userGroup`). Nothing else is declared,
//! so a client never reaches for a data type registrar does not hold.

use actix_web::{web, HttpResponse};

use crate::auth::principal::Caller;
use crate::error::{ApiError, ApiResult};

/// Each schema registrar publishes, by the name XNAT lists it under.
const SCHEMAS: [(&str, &str); 2] =
    [("xnat", include_str!("schemas/xnat.xsd")), ("xdat", include_str!("schemas/xdat.xsd"))];

/// `GET /xapi/schemas`: the names of the published schemas. Authenticated.
#[utoipa::path(get, path = "/xapi/schemas", tag = "xnat", responses((status = 200, body = [String])))]
pub async fn list(_caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(SCHEMAS.iter().map(|(name, _)| *name).collect::<Vec<_>>())
}

/// `GET /xapi/schemas/{schema}`: one schema document (XML Schema). Authenticated.
#[utoipa::path(get, path = "/xapi/schemas/{schema}", tag = "xnat", params(("schema" = String, Path)),
    responses((status = 200, description = "the XML Schema document", body = String, content_type = "application/xml"),
    (status = 404, body = crate::error::ErrorBody)))]
pub async fn document(_caller: Caller, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let wanted = path.into_inner();
    let (_, text) = SCHEMAS
        .iter()
        .find(|(name, _)| *name == wanted)
        .ok_or_else(|| ApiError::not_found("schema_not_found", format!("no schema named '{wanted}'")))?;
    Ok(HttpResponse::Ok().content_type("application/xml; charset=utf-8").body(*text))
}

/// `GET /data/search/elements`: the searchable data types. registrar offers
/// XNAT's search service for none of them, so the list is empty (as on an
/// XNAT without data). Authenticated.
#[utoipa::path(get, path = "/data/search/elements", tag = "xnat",
    responses((status = 200, description = "an empty XNAT ResultSet", body = Object)))]
pub async fn search_elements(_caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(crate::table::Table::new("Elements", &["ELEMENT_NAME", "PLURAL"]).result_set())
}

#[cfg(test)]
mod tests {
    use super::SCHEMAS;

    /// xnatpy finds a schema's prefixes with a pattern on the `<xs:schema`
    /// tag and names classes prefix + type: both must hold for every document.
    #[test]
    fn every_schema_is_shaped_as_xnatpy_reads_it() {
        for (name, text) in SCHEMAS {
            let tag = text.split("<xs:schema").nth(1).expect("an <xs:schema> root");
            let tag = tag.split('>').next().expect("tag");
            assert!(tag.contains(&format!("xmlns:{name}=")), "{name}: the prefix is declared on the root tag");
            assert!(!text.trim_start().starts_with("<html") && !text.contains("<!DOCTYPE"));
        }
        assert!(SCHEMAS[0].1.contains(r#"<xs:complexType name="projectData">"#));
    }
}
