//! The discovery documents of `/scim/v2` (RFC 7643 sections 5-7): what
//! registrar supports and the attributes of its resources. Only declared
//! attributes are shown in resources.

use serde_json::{json, Value};

use crate::service::scim::{ENTERPRISE_SCHEMA, LIST_SCHEMA, MAX_RESULTS};
use crate::store::scim::{GROUP_SCHEMA, USER_SCHEMA};

const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// A ListResponse of every item (discovery lists are not paged).
pub fn list(items: Vec<Value>) -> Value {
    json!({"schemas": [LIST_SCHEMA], "totalResults": items.len(), "startIndex": 1, "itemsPerPage": items.len(),
           "Resources": items})
}

pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/registrar/registrar#scim-20-provisioning",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": true},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Provisioning credential",
            "description": "An API key of scope scim (registrar admin scim-token, or POST /api/v1/scim/credentials)",
            "primary": true
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig")}
    })
}

pub fn resource_types(base: &str) -> Vec<Value> {
    vec![
        json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "A registrar account",
        "schema": USER_SCHEMA,
        "schemaExtensions": [{"schema": ENTERPRISE_SCHEMA, "required": false}],
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")}
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "A registrar group (a project's level groups included)",
            "schema": GROUP_SCHEMA,
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")}
        }),
    ]
}

fn attr(name: &str, kind: &str, description: &str) -> Value {
    json!({
        "name": name, "type": kind, "multiValued": false, "description": description, "required": false,
        "caseExact": false, "mutability": "readWrite", "returned": "default", "uniqueness": "none"
    })
}

fn complex(name: &str, description: &str, multi: bool, subs: Vec<Value>) -> Value {
    let mut a = attr(name, "complex", description);
    a["multiValued"] = json!(multi);
    a["subAttributes"] = json!(subs);
    a
}

fn typed_values(name: &str, description: &str, canonical: &[&str]) -> Value {
    let mut kind = attr("type", "string", "A label: work, home, other");
    kind["canonicalValues"] = json!(canonical);
    complex(
        name,
        description,
        true,
        vec![
            attr("value", "string", "The value"),
            attr("display", "string", "A human-readable name"),
            kind,
            attr("primary", "boolean", "The primary value"),
        ],
    )
}

fn user_schema(base: &str) -> Value {
    let mut user_name = attr("userName", "string", "Unique name of the user, used to log in");
    user_name["required"] = json!(true);
    user_name["uniqueness"] = json!("server");
    let mut password = attr("password", "string", "Sets the user's password (checked against the policy)");
    password["mutability"] = json!("writeOnly");
    password["returned"] = json!("never");
    let mut groups = complex(
        "groups",
        "The groups the user belongs to",
        true,
        vec![attr("value", "string", "The group's id"), attr("display", "string", "The group's name")],
    );
    groups["mutability"] = json!("readOnly");
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": USER_SCHEMA,
        "name": "User",
        "description": "User Account",
        "attributes": [
            user_name,
            complex("name", "The components of the user's name", false, vec![
                attr("formatted", "string", "The full name"),
                attr("familyName", "string", "The family name"),
                attr("givenName", "string", "The given name"),
                attr("middleName", "string", "The middle name"),
                attr("honorificPrefix", "string", "Honorific prefix"),
                attr("honorificSuffix", "string", "Honorific suffix"),
            ]),
            attr("displayName", "string", "The name to display"),
            attr("nickName", "string", "A casual name"),
            attr("title", "string", "The user's title"),
            attr("userType", "string", "The kind of account"),
            attr("preferredLanguage", "string", "Preferred language"),
            attr("locale", "string", "Locale"),
            attr("timezone", "string", "Time zone"),
            attr("active", "boolean", "Whether the account may log in (false ends its sessions)"),
            password,
            typed_values("emails", "Email addresses (the primary valid one is registrar's)", &["work", "home", "other"]),
            typed_values("phoneNumbers", "Phone numbers", &["work", "home", "mobile", "fax", "pager", "other"]),
            groups,
        ],
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{USER_SCHEMA}")}
    })
}

fn manager_ref() -> Value {
    let mut r = attr("$ref", "reference", "The manager's URI");
    r["referenceTypes"] = json!(["User"]);
    r
}

fn enterprise_schema(base: &str) -> Value {
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": ENTERPRISE_SCHEMA,
        "name": "EnterpriseUser",
        "description": "Enterprise User",
        "attributes": [
            attr("employeeNumber", "string", "Employee number"),
            attr("costCenter", "string", "Cost center"),
            attr("organization", "string", "Organization"),
            attr("division", "string", "Division"),
            attr("department", "string", "Department"),
            complex("manager", "The user's manager", false, vec![
                attr("value", "string", "The manager's id"),
                manager_ref(),
                attr("displayName", "string", "The manager's name"),
            ]),
        ],
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{ENTERPRISE_SCHEMA}")}
    })
}

fn group_schema(base: &str) -> Value {
    let mut display = attr("displayName", "string", "The group's name");
    display["required"] = json!(true);
    let mut kind = attr("type", "string", "The kind of member");
    kind["canonicalValues"] = json!(["User"]);
    kind["mutability"] = json!("immutable");
    let mut reference = attr("$ref", "reference", "The member's URI");
    reference["referenceTypes"] = json!(["User"]);
    reference["mutability"] = json!("immutable");
    let mut value = attr("value", "string", "The member's id");
    value["mutability"] = json!("immutable");
    let mut member_display = attr("display", "string", "The member's username");
    member_display["mutability"] = json!("readOnly");
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": GROUP_SCHEMA,
        "name": "Group",
        "description": "Group",
        "attributes": [
            display,
            complex("members", "The group's users", true, vec![value, reference, member_display, kind]),
        ],
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{GROUP_SCHEMA}")}
    })
}

pub fn schemas(base: &str) -> Vec<Value> {
    vec![user_schema(base), enterprise_schema(base), group_schema(base)]
}
