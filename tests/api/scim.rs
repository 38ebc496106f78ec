//! SCIM 2.0 at /scim/v2 (RFC 7643/7644) with a provisioning credential:
//! who may call it, discovery, Users CRUD, filters compiled to SQL, paging,
//! PATCH idioms of Entra and Okta, ETags, and the state after each write.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

async fn credential(app: &TestApp, name: &str) -> (String, String) {
    let r = app.post("/api/v1/scim/credentials", &app.admin_token, json!({"name": name})).await.expect(201).json();
    (r["key"].as_str().expect("key").to_string(), r["id"].as_str().expect("id").to_string())
}

fn scim_error(r: &Resp, status: u16, scim_type: Option<&str>) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text);
    assert!(r.headers["content-type"].to_str().expect("ct").starts_with("application/scim+json"));
    let b = r.json();
    assert_eq!(b["schemas"], json!([ERROR]), "{b}");
    assert_eq!(b["status"], status.to_string());
    assert_eq!(b.get("scimType").and_then(Value::as_str), scim_type, "{b}");
    let keys: Vec<&String> = b.as_object().expect("object").keys().collect();
    assert!(keys.iter().all(|k| ["schemas", "status", "scimType", "detail"].contains(&k.as_str())), "{keys:?}");
}

async fn user_count(app: &TestApp, like: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM users WHERE username LIKE $1 OR scim_user_name LIKE $1")
        .bind(like)
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn only_a_provisioning_credential_reaches_scim_and_it_reaches_nothing_else() {
    let app = spawn_app().await;
    let (key, key_id) = credential(&app, "entra").await;
    let ordinary = app.user("ordinary").await;
    // The credential works at /scim/v2 ...
    app.get("/scim/v2/Users", &key).await.expect(200);
    // ... and nowhere else: the native API, XNAT's, Basic with it as password.
    app.get("/api/v1/users/me", &key).await.expect(401);
    app.get("/data/projects", &key).await.expect(401);
    let basic = app.send(Method::GET, "/api/v1/users/me", &Auth::Basic(ADMIN.into(), key.clone()), None).await;
    assert_eq!(basic.status, 401);
    // Sessions and ordinary keys, the administrator's included, are refused at /scim/v2 (SCIM's error shape).
    scim_error(&app.get("/scim/v2/Users", &app.admin_token).await, 403, None);
    scim_error(&app.get("/scim/v2/Users", &ordinary).await, 403, None);
    let unauthenticated = app.send(Method::GET, "/scim/v2/Users", &Auth::None, None).await;
    scim_error(&unauthenticated, 401, None);
    assert_eq!(
        unauthenticated.headers.get("www-authenticate").and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"registrar\""),
        "a 401 names its scheme"
    );
    let admin_key = app.post("/api/v1/users/me/api-keys", &app.admin_token, json!({"name": "k"})).await.expect(201);
    scim_error(&app.get("/scim/v2/Users", admin_key.json()["key"].as_str().expect("key")).await, 403, None);
    // Non-canonical paths are no way around it.
    for path in ["/scim/v2//Users", "/scim/v2/Users/", "/scim/v2/%55sers", "/scim//v2/Users"] {
        let r = app.get(path, &app.admin_token).await;
        assert!(matches!(r.status.as_u16(), 403 | 404 | 401), "{path}: {}", r.status);
    }
    // Only an administrator makes credentials; a name is unique among live ones.
    app.post("/api/v1/scim/credentials", &ordinary, json!({"name": "x"})).await.expect(403);
    app.post("/api/v1/scim/credentials", &app.admin_token, json!({"name": "entra"})).await.expect(409);
    // Also when the creates race: one wins, the rest are 409, one live key.
    let racing = (0..12).map(|_| app.post("/api/v1/scim/credentials", &app.admin_token, json!({"name": "okta"})));
    let statuses: Vec<u16> = futures_util::future::join_all(racing).await.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| matches!(s, 201 | 409)), "{statuses:?}");
    let live = "SELECT count(*) FROM api_keys WHERE scope = 'scim' AND name = 'okta' AND revoked_at IS NULL";
    assert_eq!(app.count(live).await, 1);
    // Revoked as the owner's key: refused at once.
    app.delete(&format!("/api/v1/users/me/api-keys/{key_id}"), &app.admin_token).await.expect(204);
    scim_error(&app.get("/scim/v2/Users", &key).await, 401, None);
}

#[tokio::test]
async fn discovery_documents() {
    let app = spawn_app().await;
    let (key, _) = credential(&app, "okta").await;
    let spc = app.get("/scim/v2/ServiceProviderConfig", &key).await.expect(200).json();
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["etag"]["supported"], true);
    assert_eq!(spc["filter"]["supported"], true);
    let types = app.get("/scim/v2/ResourceTypes", &key).await.expect(200).json();
    assert_eq!(types["Resources"][0]["endpoint"], "/Users");
    app.get("/scim/v2/ResourceTypes/User", &key).await.expect(200);
    scim_error(&app.get("/scim/v2/ResourceTypes/Nope", &key).await, 404, None);
    let schemas = app.get("/scim/v2/Schemas", &key).await.expect(200).json();
    let ids: Vec<&str> =
        schemas["Resources"].as_array().expect("list").iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(ids, [USER, ENTERPRISE, "urn:ietf:params:scim:schemas:core:2.0:Group"]);
    app.get(&format!("/scim/v2/Schemas/{USER}"), &key).await.expect(200);
    for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let r = app.send(m, "/scim/v2/ServiceProviderConfig", &Auth::Bearer(key.clone()), None).await;
        scim_error(&r, 405, None);
    }
}

#[tokio::test]
async fn users_are_created_read_replaced_patched_and_deleted() {
    let app = spawn_app().await;
    let (key, key_id) = credential(&app, "entra").await;
    let body = json!({
        "schemas": [USER, ENTERPRISE],
        "userName": "Bjensen@Example.com",
        "externalId": "00u1",
        "name": {"givenName": "Barbara", "familyName": "Jensen", "formatted": "Ms. Barbara J Jensen III"},
        "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}],
        "title": "Tour Guide",
        "password": "a long enough passphrase for scim 42",
        ENTERPRISE: {"employeeNumber": "701984", "department": "Imaging"},
    });
    let created = app.post("/scim/v2/Users", &key, body.clone()).await.expect(201);
    let u = created.json();
    let id = u["id"].as_str().expect("id").to_string();
    assert_eq!(created.headers["location"].to_str().expect("loc"), u["meta"]["location"].as_str().expect("location"));
    assert_eq!(created.headers["etag"].to_str().expect("etag"), u["meta"]["version"].as_str().expect("version"));
    assert_eq!(u["userName"], "Bjensen@Example.com");
    assert_eq!(u["name"]["formatted"], "Ms. Barbara J Jensen III");
    assert_eq!(u[ENTERPRISE]["department"], "Imaging");
    assert_eq!(u["schemas"], json!([USER, ENTERPRISE]));
    assert!(u.get("password").is_none(), "a password is never returned: {u}");
    // In registrar: a valid username made from the userName, the email, the names, the password.
    let row: (String, String, String, bool) =
        sqlx::query_as("SELECT username, email, first_name, password_hash IS NOT NULL FROM users WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .expect("row");
    assert_eq!(row, ("Bjensen".into(), "bjensen@example.com".into(), "Barbara".into(), true));
    app.login("Bjensen", "a long enough passphrase for scim 42").await;
    // userName is unique without regard to case; so is externalId per client.
    let mut dup = body.clone();
    dup["userName"] = json!("BJENSEN@example.com");
    dup["emails"] = json!([{"value": "other@example.com"}]);
    scim_error(&app.post("/scim/v2/Users", &key, dup).await, 409, Some("uniqueness"));
    // A bad body changes nothing.
    scim_error(&app.post("/scim/v2/Users", &key, json!({"schemas": [USER]})).await, 400, Some("invalidValue"));
    assert_eq!(user_count(&app, "%jensen%").await, 1);

    // PUT with a stale If-Match is 412 and changes nothing; with the current one it replaces.
    let mut put = u.clone();
    put["name"]["givenName"] = json!("Babs");
    let stale = app
        .exchange(
            "PUT user",
            app.client
                .put(app.url(&format!("/scim/v2/Users/{id}")))
                .bearer_auth(&key)
                .header("If-Match", "W/\"nope\"")
                .json(&put),
        )
        .await;
    scim_error(&stale, 412, None);
    let version = u["meta"]["version"].as_str().expect("v").to_string();
    let replaced = app
        .exchange(
            "PUT user",
            app.client
                .put(app.url(&format!("/scim/v2/Users/{id}")))
                .bearer_auth(&key)
                .header("If-Match", &version)
                .json(&put),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(replaced["name"]["givenName"], "Babs");
    assert_ne!(replaced["meta"]["version"], u["meta"]["version"]);

    // PATCH: Entra's idioms (capitalised op, "False"), a filtered path, the extension by URN path.
    let session_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sessions WHERE user_id = $1::uuid AND revoked_at IS NULL")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .expect("n");
    assert_eq!(session_before, 1, "the login above");
    let patched = app
        .patch(
            &format!("/scim/v2/Users/{id}"),
            &key,
            json!({"schemas": [PATCH], "Operations": [
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "barbara@example.com"},
                {"op": "add", "path": format!("{ENTERPRISE}:costCenter"), "value": "4130"},
                {"op": "remove", "path": "title"}
            ]}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(patched["active"], false);
    assert_eq!(patched[ENTERPRISE]["costCenter"], "4130");
    assert!(patched.get("title").is_none());
    let (enabled, email, live): (bool, String, i64) = sqlx::query_as(
        "SELECT enabled, email, (SELECT count(*) FROM sessions s WHERE s.user_id = u.id AND s.revoked_at IS NULL)
         FROM users u WHERE id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .expect("row");
    assert_eq!((enabled, email.as_str(), live), (false, "barbara@example.com", 0), "disabled, sessions ended at once");
    // Okta: a path-less replace.
    let r = app
        .patch(
            &format!("/scim/v2/Users/{id}"),
            &key,
            json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": true}}]}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(r["active"], true);
    scim_error(
        &app.patch(&format!("/scim/v2/Users/{id}"), &key, json!({"schemas": [PATCH], "Operations": [{"op": "jump"}]}))
            .await,
        400,
        Some("invalidSyntax"),
    );
    scim_error(
        &app.patch(
            &format!("/scim/v2/Users/{id}"),
            &key,
            json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "emails[type eq \"home\"].value", "value": "x"}]}),
        )
        .await,
        400,
        Some("noTarget"),
    );

    // attributes / excludedAttributes.
    let some =
        app.get(&format!("/scim/v2/Users/{id}?attributes=userName,name.familyName"), &key).await.expect(200).json();
    assert_eq!(some["name"], json!({"familyName": "Jensen"}));
    assert!(some.get("emails").is_none() && some.get("id").is_some() && some.get("meta").is_some(), "{some}");
    let without = app.get(&format!("/scim/v2/Users/{id}?excludedAttributes=emails"), &key).await.expect(200).json();
    assert!(without.get("emails").is_none() && without.get("userName").is_some());

    // Every SCIM write is logged with the credential as the acting key.
    let by_key: i64 =
        sqlx::query_scalar("SELECT count(*) FROM change_log WHERE actor_api_key_id = $1::uuid AND subject_id = $2")
            .bind(&key_id)
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .expect("n");
    assert!(by_key >= 4, "create, put, patches: {by_key}");

    // Another client sees no externalId of this one's.
    let (other, _) = credential(&app, "okta").await;
    let seen = app.get(&format!("/scim/v2/Users/{id}"), &other).await.expect(200).json();
    assert!(seen.get("externalId").is_none(), "{seen}");

    // DELETE: gone, with its sessions and keys; then 404.
    let r = app.delete(&format!("/scim/v2/Users/{id}"), &key).await;
    assert_eq!(r.status, 204);
    assert!(r.text.is_empty());
    scim_error(&app.get(&format!("/scim/v2/Users/{id}"), &key).await, 404, None);
    assert_eq!(user_count(&app, "%jensen%").await, 0);
    // An administrator's account is not the directory's to change.
    let admin_id = app.get("/api/v1/users/me", &app.admin_token).await.json()["id"].as_str().expect("id").to_string();
    scim_error(&app.delete(&format!("/scim/v2/Users/{admin_id}"), &key).await, 403, None);
}

#[tokio::test]
async fn filters_and_paging() {
    let app = spawn_app().await;
    let (key, _) = credential(&app, "idm").await;
    for i in 0..25 {
        let dept = if i % 2 == 0 { "even" } else { "odd" };
        app.post(
            "/scim/v2/Users",
            &key,
            json!({"schemas": [USER], "userName": format!("p{i:02}@uni.example"), "externalId": format!("x{i}"),
                   "name": {"givenName": format!("Given{i}"), "familyName": dept},
                   "emails": [{"value": format!("p{i:02}@uni.example"), "type": "work"}], "active": i % 5 != 0}),
        )
        .await
        .expect(201);
    }
    let q = |f: &str| {
        format!(
            "/scim/v2/Users?filter={}&count=200",
            percent_encoding::utf8_percent_encode(f, percent_encoding::NON_ALPHANUMERIC)
        )
    };
    let names = |v: &Value| -> Vec<String> {
        v["Resources"]
            .as_array()
            .expect("list")
            .iter()
            .map(|u| u["userName"].as_str().expect("n").to_string())
            .collect()
    };
    let cases: [(&str, usize); 12] = [
        (r#"userName eq "P03@UNI.example""#, 1),
        (r#"userName sw "p1""#, 10),
        (r#"userName ew "4@uni.example""#, 3),
        (r#"name.familyName eq "odd" and active eq true"#, 10),
        (r#"name.familyName eq "odd" or userName eq "p00@uni.example""#, 13),
        (r#"not (active eq true)"#, 5),
        (r#"(userName co "p2") and not (name.familyName eq "even")"#, 2),
        (r#"emails[type eq "work" and value co "p01"]"#, 1),
        (r#"externalId eq "x7""#, 1),
        (r#"externalId eq "X7""#, 0),
        (r#"name.givenName pr"#, 25),
        (r#"meta.created gt "2000-01-01T00:00:00Z""#, 26),
    ];
    for (f, n) in cases {
        let r = app.get(&q(f), &key).await.expect(200).json();
        assert_eq!(r["totalResults"], n, "{f}: {r}");
        assert_eq!(names(&r).len(), n, "{f}");
    }
    // A batch lookup: one `or` chain of 100 userNames, 25 of which exist.
    let batch: Vec<String> = (0..100).map(|i| format!(r#"userName eq "p{i:02}@uni.example""#)).collect();
    let r = app.get(&q(&batch.join(" or ")), &key).await.expect(200).json();
    assert_eq!(r["totalResults"], 25, "{r}");
    let too_deep = format!("{}userName pr{}", "(".repeat(65), ")".repeat(65));
    let too_long = batch.iter().cycle().take(200).cloned().collect::<Vec<_>>().join(" or ");
    for bad in [r#"userName eq"#, r#"nope eq "x""#, r#"active gt true"#, r#"meta.created eq "yesterday""#, "((((("] {
        scim_error(&app.get(&q(bad), &key).await, 400, Some("invalidFilter"));
    }
    for bad in [too_deep, too_long] {
        scim_error(&app.get(&q(&bad), &key).await, 400, Some("invalidFilter"));
    }
    // Paging: a stable order, every user once; count=0 counts only.
    let mut seen = Vec::new();
    let mut start = 1;
    loop {
        let page = app.get(&format!("/scim/v2/Users?startIndex={start}&count=7"), &key).await.expect(200).json();
        assert_eq!(page["startIndex"], start);
        let got = names(&page);
        if got.is_empty() {
            break;
        }
        assert_eq!(page["itemsPerPage"], got.len());
        seen.extend(got);
        start += 7;
    }
    let total = app.get("/scim/v2/Users?count=0", &key).await.expect(200).json();
    assert_eq!(total["Resources"], json!([]));
    assert_eq!(total["totalResults"], seen.len());
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no user twice across pages");
    assert_eq!(seen.len(), 26, "25 and the administrator");
    // /.search takes the same in a body.
    let r = app
        .post(
            "/scim/v2/Users/.search",
            &key,
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
              "filter": "userName sw \"p2\"", "attributes": ["userName"], "count": 3}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(r["totalResults"], 5);
    assert_eq!(names(&r).len(), 3);
    assert!(r["Resources"][0].get("emails").is_none());
    for body in [json!([]), json!(null), json!("userName pr")] {
        scim_error(&app.post("/scim/v2/Users/.search", &key, body).await, 400, Some("invalidSyntax"));
    }
}

async fn scim_user(app: &TestApp, key: &str, name: &str) -> String {
    let u = app
        .post(
            "/scim/v2/Users",
            key,
            json!({"schemas": [USER], "userName": name, "emails": [{"value": format!("{name}@uni.example")}]}),
        )
        .await
        .expect(201)
        .json();
    u["id"].as_str().expect("id").to_string()
}

/// A group's member change takes the users it changes before the group,
/// the order of every other write (a bulk action locks its users, then
/// adds them to the group; a user's deletion locks the user, then leaves
/// the groups). The group first made those deadlock with it (409).
#[tokio::test]
async fn a_group_change_takes_its_users_before_the_group() {
    let app = spawn_app().await;
    let (key, _) = credential(&app, "entra").await;
    let leaving = scim_user(&app, &key, "leaving").await;
    let staying = scim_user(&app, &key, "staying").await;
    let joining: uuid::Uuid = scim_user(&app, &key, "joining").await.parse().expect("uuid");
    let g = app
        .post(
            "/scim/v2/Groups",
            &key,
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
              "displayName": "Order Team", "members": [{"value": leaving}, {"value": staying}]}),
        )
        .await
        .expect(201)
        .json();
    let gid = g["id"].as_str().expect("id").to_string();
    let group: String = sqlx::query_scalar("SELECT name FROM groups WHERE id = $1::uuid")
        .bind(&gid)
        .fetch_one(&app.pool)
        .await
        .expect("name");

    // Another writer holds the leaving member's row, then adds someone to the group.
    let mut writer = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT id FROM users WHERE id = $1::uuid FOR UPDATE")
        .bind(&leaving)
        .execute(&mut *writer)
        .await
        .expect("lock");
    let remove = json!({"schemas": [PATCH], "Operations": [{"op": "Remove", "path": format!("members[value eq \"{leaving}\"]")}]});
    let path = format!("/scim/v2/Groups/{gid}");
    let patch = app.patch(&path, &key, remove);
    let other = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        sqlx::query("INSERT INTO user_groups (user_id, group_name) VALUES ($1, $2)")
            .bind(joining)
            .bind(&group)
            .execute(&mut *writer)
            .await
            .expect("the other writer is not a deadlock victim");
        writer.commit().await.expect("commit");
    };
    let (patched, ()) = tokio::join!(patch, other);
    assert_eq!(patched.status.as_u16(), 200, "{}", patched.text);
    let after = app.get(&format!("/scim/v2/Groups/{gid}"), &key).await.expect(200).json();
    let mut now: Vec<String> =
        after["members"].as_array().expect("m").iter().filter_map(|m| m["value"].as_str().map(String::from)).collect();
    now.sort();
    let mut expected = vec![staying.clone(), joining.to_string()];
    expected.sort();
    assert_eq!(now, expected, "the removal and the other writer's addition both hold");
}

/// SCIM takes rows in the order of every other write: a group's deletion
/// takes its members before the group; a change of a project's group takes
/// the project before the group (as `set_level` does: user, project, then
/// the group through its membership row). Found by attack: 20 of 20 SCIM
/// group deletions racing a member's removal deadlocked, and 7 of 30 SCIM
/// adds to a project's group racing the projects API.
#[tokio::test]
async fn scim_takes_members_and_projects_before_the_group() {
    let app = spawn_app().await;
    let t = app.admin_token.clone();
    let (key, _) = credential(&app, "entra").await;
    let member: uuid::Uuid = scim_user(&app, &key, "held").await.parse().expect("uuid");
    let newcomer = scim_user(&app, &key, "newcomer").await;
    let g = app
        .post(
            "/scim/v2/Groups",
            &key,
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
              "displayName": "Doomed", "members": [{"value": member.to_string()}]}),
        )
        .await
        .expect(201)
        .json();
    let doomed = format!("/scim/v2/Groups/{}", g["id"].as_str().expect("id"));
    app.post("/api/v1/projects", &t, json!({"id": "PSCIM", "name": "Scim"})).await.expect(201);
    let project_group: String = sqlx::query_scalar("SELECT id::text FROM groups WHERE name = 'PSCIM_member'")
        .fetch_one(&app.pool)
        .await
        .expect("group");
    let add =
        json!({"schemas": [PATCH], "Operations": [{"op": "add", "path": "members", "value": [{"value": newcomer}]}]});
    let add_path = format!("/scim/v2/Groups/{project_group}");

    // (first lock the other writer holds, the lock it then takes, the request)
    let cases = [
        (
            format!("SELECT 1 FROM users WHERE id = '{member}' FOR UPDATE"),
            "SELECT 1 FROM groups WHERE name = (SELECT name FROM groups WHERE display_name = 'Doomed') FOR NO KEY UPDATE",
            "delete",
        ),
        (
            "SELECT 1 FROM projects WHERE id = 'PSCIM' FOR UPDATE".to_string(),
            "SELECT 1 FROM groups WHERE name = 'PSCIM_member' FOR KEY SHARE",
            "patch",
        ),
    ];
    for (first, then, request) in cases {
        let send = async {
            match request {
                "delete" => app.delete(&doomed, &key).await,
                _ => app.patch(&add_path, &key, add.clone()).await,
            }
        };
        let (answer, waited) = while_another_writer_holds(&app, &first, then, send).await;
        assert!(answer.status.is_success(), "{request}: {} {}", answer.status, answer.text);
        assert!(waited, "{request}: done while the other writer held its first lock");
    }
    app.get(&doomed, &key).await.expect(404);
    let members = app.get("/api/v1/projects/PSCIM/members", &t).await.expect(200).json();
    assert!(members.to_string().contains("newcomer"), "{members}");
}

#[tokio::test]
async fn groups_and_their_members_including_a_projects_level_group() {
    let app = spawn_app().await;
    let (key, _) = credential(&app, "entra").await;
    let mut ids: Vec<String> = Vec::new();
    for i in 0..6 {
        ids.push(scim_user(&app, &key, &format!("m{i}")).await);
    }
    let g = app
        .post("/scim/v2/Groups", &key, json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
              "displayName": "Imaging Team", "externalId": "g-1", "members": [{"value": ids[0]}, {"value": ids[1]}, {"value": "not-a-user"}]}))
        .await
        .expect(201)
        .json();
    let gid = g["id"].as_str().expect("id").to_string();
    assert_eq!(g["displayName"], "Imaging Team");
    assert_eq!(g["members"].as_array().expect("members").len(), 2, "an unknown member is left out: {g}");
    // In registrar: a plain group with those two users.
    let name: String = sqlx::query_scalar("SELECT name FROM groups WHERE id = $1::uuid")
        .bind(&gid)
        .fetch_one(&app.pool)
        .await
        .expect("name");
    let members = app.get(&format!("/api/v1/groups/{name}/members"), &app.admin_token).await.expect(200).json();
    assert_eq!(members["items"].as_array().map(Vec::len), Some(2), "{members}");

    // Entra's member PATCHes: add by list, remove by filtered path; Okta's replace-all.
    let patch = |ops: Value| json!({"schemas": [PATCH], "Operations": ops});
    app.patch(
        &format!("/scim/v2/Groups/{gid}"),
        &key,
        patch(json!([{"op": "Add", "path": "members", "value": [{"value": ids[2]}]}])),
    )
    .await
    .expect(200);
    let r = app
        .patch(
            &format!("/scim/v2/Groups/{gid}"),
            &key,
            patch(json!([{"op": "Remove", "path": format!("members[value eq \"{}\"]", ids[0])}])),
        )
        .await
        .expect(200)
        .json();
    let now: Vec<&str> = r["members"].as_array().expect("m").iter().filter_map(|m| m["value"].as_str()).collect();
    assert_eq!(now, [ids[1].as_str(), ids[2].as_str()]);
    // Concurrent PATCHes of one group's members lose nothing.
    let path = format!("/scim/v2/Groups/{gid}");
    let bodies: Vec<Value> =
        (3..6).map(|i| patch(json!([{"op": "add", "path": "members", "value": [{"value": ids[i]}]}]))).collect();
    let adds = bodies.into_iter().map(|b| app.patch(&path, &key, b));
    for r in futures_util::future::join_all(adds).await {
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let after = app.get(&format!("/scim/v2/Groups/{gid}"), &key).await.expect(200).json();
    assert_eq!(after["members"].as_array().expect("m").len(), 5, "{after}");
    // Filters over groups.
    let q = |f: &str| {
        format!(
            "/scim/v2/Groups?filter={}",
            percent_encoding::utf8_percent_encode(f, percent_encoding::NON_ALPHANUMERIC)
        )
    };
    let by_member = app.get(&q(&format!("members[value eq \"{}\"]", ids[4])), &key).await.expect(200).json();
    assert_eq!(by_member["totalResults"], 1);
    assert_eq!(app.get(&q("displayName eq \"imaging team\""), &key).await.expect(200).json()["totalResults"], 1);
    assert_eq!(app.get(&q(&format!("members eq \"{}\"", ids[0])), &key).await.expect(200).json()["totalResults"], 0);
    scim_error(&app.get(&q("members gt \"x\""), &key).await, 400, Some("invalidFilter"));
    let slim = app.get(&format!("/scim/v2/Groups/{gid}?excludedAttributes=members"), &key).await.expect(200).json();
    assert!(slim.get("members").is_none());

    // A project's level group: a directory group grants project access.
    app.post("/api/v1/projects", &app.admin_token, json!({"id": "BRAIN", "name": "Brain"})).await.expect(201);
    let member_group: String = sqlx::query_scalar("SELECT id::text FROM groups WHERE name = 'BRAIN_member'")
        .fetch_one(&app.pool)
        .await
        .expect("project group");
    app.patch(
        &format!("/scim/v2/Groups/{member_group}"),
        &key,
        patch(json!([{"op": "add", "path": "members", "value": [{"value": ids[5]}]}])),
    )
    .await
    .expect(200);
    let m5 = app.get(&format!("/api/v1/users/{}", ids[5]), &app.admin_token).await.json()["username"]
        .as_str()
        .expect("u")
        .to_string();
    let t = {
        sqlx::query("UPDATE users SET password_hash = (SELECT password_hash FROM users WHERE username = 'admin') WHERE username = $1")
            .bind(&m5)
            .execute(&app.pool)
            .await
            .expect("password");
        app.login(&m5, ADMIN_PASSWORD).await
    };
    app.get("/api/v1/projects/BRAIN", &t).await.expect(200);
    // A project's group is not the directory's to delete.
    scim_error(&app.delete(&format!("/scim/v2/Groups/{member_group}"), &key).await, 409, None);

    // DELETE: gone; members stay users.
    let r = app.delete(&format!("/scim/v2/Groups/{gid}"), &key).await;
    assert_eq!(r.status, 204);
    scim_error(&app.get(&format!("/scim/v2/Groups/{gid}"), &key).await, 404, None);
    app.get(&format!("/scim/v2/Users/{}", ids[1]), &key).await.expect(200);
    // Its externalId is free again.
    app.post("/scim/v2/Groups", &key, json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Again", "externalId": "g-1"}))
        .await
        .expect(201);
}

/// Runs a checker's command from the venv; (exit code, stdout).
async fn checker(venv_python: &std::path::Path, program: &str, args: &[&str]) -> (i32, String) {
    let bin = venv_python.parent().expect("venv bin").join(program);
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(600),
        tokio::process::Command::new(&bin).args(args).stdin(std::process::Stdio::null()).kill_on_drop(true).output(),
    )
    .await
    .expect("the checker timed out")
    .expect("run the checker");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        println!("{program} stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.code().unwrap_or(-1), stdout)
}

/// The real third-party checkers from PyPI against a running registrar:
/// `scim2-tester` (through `scim2-cli`: discovery, CRUD of both resource
/// types, attributes, PATCH add/replace/remove of every declared attribute)
/// and `scim-sanity` (lifecycles, filters, paging, errors, `active=false`,
/// group membership). Both must report no failure.
#[tokio::test]
async fn third_party_scim_checkers_find_nothing_wrong() {
    let py = crate::xnat_clients::venv("REGISTRAR_SCIM_PYTHON", "scim-venv", "scim_checkers").await;
    let app = spawn_app().await;
    let (key, _) = credential(&app, "checkers").await;
    let base = format!("{}/scim/v2", app.address);
    let auth = format!("Authorization: Bearer {key}");

    let (code, out) = checker(&py, "scim2", &["--url", &base, "--header", &auth, "test"]).await;
    let ok = out.lines().filter(|l| l.starts_with("SUCCESS")).count();
    let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("ERROR") || l.starts_with("SKIPPED")).collect();
    println!("scim2-tester: {ok} SUCCESS, {} not (exit {code})", failed.len());
    assert!(code == 0 && failed.is_empty() && ok > 50, "scim2-tester failed:\n{out}");

    let (code, out) =
        checker(&py, "scim-sanity", &["probe", &base, "--token", &key, "--i-accept-side-effects", "--json-output"])
            .await;
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("scim-sanity output: {out}"));
    let s = &report["summary"];
    println!("scim-sanity: {s}");
    let bad: Vec<&Value> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| !matches!(r["status"].as_str(), Some("pass" | "skip")))
        .collect();
    assert!(code == 0 && s["failed"] == 0 && s["errors"] == 0 && bad.is_empty(), "scim-sanity: {bad:?}\n{out}");
    assert!(s["passed"].as_u64().unwrap_or(0) >= 25, "{s}");
    // What it skipped is what registrar does not offer (Agent resources).
    for r in report["results"].as_array().expect("results").iter().filter(|r| r["status"] == "skip") {
        assert!(r["name"].as_str().unwrap_or("").contains("Agent"), "skipped: {r}");
    }
}

/// 10,000 users paged through 200 at a time: every one exactly once, in a
/// stable order, and the same order twice.
#[tokio::test]
async fn ten_thousand_users_page_in_a_stable_order() {
    let app = spawn_app().await;
    let (key, _) = credential(&app, "bulk").await;
    // Seeded in SQL (the paging is what is under test, not 10,000 POSTs).
    sqlx::query(
        "INSERT INTO users (id, username, email, email_key, created_at)
         SELECT gen_random_uuid(), 'bulk' || n, 'bulk' || n || '@uni.example', 'bulk' || n || '@uni.example',
                now() - make_interval(secs => n % 7)
         FROM generate_series(1, 10000) AS n",
    )
    .execute(&app.pool)
    .await
    .expect("seed");
    let walk = || async {
        let mut seen = Vec::with_capacity(10_001);
        let mut start = 1;
        loop {
            let page = app
                .get(&format!("/scim/v2/Users?startIndex={start}&count=200&attributes=id"), &key)
                .await
                .expect(200)
                .json();
            assert_eq!(page["totalResults"], 10_001);
            let items = page["Resources"].as_array().expect("list");
            if items.is_empty() {
                break;
            }
            assert!(items.len() <= 200);
            seen.extend(items.iter().map(|u| u["id"].as_str().expect("id").to_string()));
            start += 200;
        }
        seen
    };
    let first = walk().await;
    let second = walk().await;
    assert_eq!(first.len(), 10_001, "everyone once (and the administrator)");
    let mut unique = first.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), first.len(), "no one twice");
    assert_eq!(first, second, "the same order both times");
    // count above maxResults is cut to it.
    let page = app.get("/scim/v2/Users?count=100000", &key).await.expect(200).json();
    assert_eq!(page["itemsPerPage"], 200);
}

/// Regressions of the attack run: the credential's owner is no exception
/// to "no administrator's account", a demoted owner's credential stops, a
/// SCIM userName never makes a native name 500, bad group input is a 400.
#[tokio::test]
async fn administrators_are_out_of_reach_and_names_do_not_collide() {
    let app = spawn_app().await;
    let (key, _) = credential(&app, "entra").await;
    let me = app.get("/api/v1/users/me", &app.admin_token).await.json();
    let admin_id = me["id"].as_str().expect("id").to_string();
    let email_before = me["email"].clone();
    // The owner's own account: no email change, no PUT, no membership removal.
    let take = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "emails", "value": [{"value": "attacker@evil.test", "primary": true}]}]});
    scim_error(&app.patch(&format!("/scim/v2/Users/{admin_id}"), &key, take).await, 403, None);
    scim_error(
        &app.put(&format!("/scim/v2/Users/{admin_id}"), &key, json!({"schemas": [USER], "userName": "admin"})).await,
        403,
        None,
    );
    assert_eq!(app.get("/api/v1/users/me", &app.admin_token).await.json()["email"], email_before);
    app.post("/api/v1/projects", &app.admin_token, json!({"id": "OWNED", "name": "Owned"})).await.expect(201);
    let owners: String = sqlx::query_scalar("SELECT id::text FROM groups WHERE name = 'OWNED_owner'")
        .fetch_one(&app.pool)
        .await
        .expect("g");
    let strip = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "members", "value": []}]});
    scim_error(&app.patch(&format!("/scim/v2/Groups/{owners}"), &key, strip).await, 403, None);
    let still: i64 =
        sqlx::query_scalar("SELECT count(*) FROM user_groups WHERE group_name = 'OWNED_owner' AND user_id = $1::uuid")
            .bind(&admin_id)
            .fetch_one(&app.pool)
            .await
            .expect("n");
    assert_eq!(still, 1, "the administrator still owns the project");

    // A credential of an owner who is no longer an administrator does nothing.
    app.create_user("adm2", json!({"roles": ["Administrator"]})).await;
    let t2 = app.login("adm2", PASSWORD).await;
    let k2 = app.post("/api/v1/scim/credentials", &t2, json!({"name": "adm2s"})).await.expect(201).json()["key"]
        .as_str()
        .expect("key")
        .to_string();
    app.get("/scim/v2/Users", &k2).await.expect(200);
    app.delete("/api/v1/users/adm2/roles/Administrator", &app.admin_token).await.expect(200);
    app.settle_auth_cache().await;
    scim_error(&app.get("/scim/v2/Users", &k2).await, 403, None);

    // A SCIM userName and a native username never collide into a 500.
    let id = scim_user(&app, &key, "carol@uni.example").await;
    let rename =
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "userName", "value": "freshname"}]});
    app.patch(&format!("/scim/v2/Users/{id}"), &key, rename).await.expect(200);
    let r =
        app.post("/api/v1/users", &app.admin_token, json!({"username": "FreshName", "email": "f@uni.example"})).await;
    assert_eq!(r.status, 409, "{}", r.text);
    let other = scim_user(&app, &key, "freshname@other.example").await;
    let row: String = sqlx::query_scalar("SELECT username FROM users WHERE id = $1::uuid")
        .bind(&other)
        .fetch_one(&app.pool)
        .await
        .expect("u");
    assert_ne!(row.to_lowercase(), "freshname");
    // The userName of one is never the username of another, case aside, NFKC too.
    scim_error(
        &app.post("/scim/v2/Users", &key, json!({"schemas": [USER], "userName": "ＡＤＭＩＮ"})).await,
        409,
        Some("uniqueness"),
    );
    // Nor is any account that manages others (a user manager here), nor a
    // group of such an account's that is deleted whole.
    let mgr = app.create_user("mgr", json!({"roles": ["UserManager"]})).await["id"].as_str().expect("id").to_string();
    let pw = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "password", "value": "Scim-Owned-Pass-2026-Qx"}]});
    scim_error(&app.patch(&format!("/scim/v2/Users/{mgr}"), &key, pw).await, 403, None);
    app.login("mgr", PASSWORD).await;
    app.post("/api/v1/groups", &app.admin_token, json!({"name": "admteam", "display_name": "Admin team"}))
        .await
        .expect(201);
    app.put("/api/v1/users/mgr/groups/admteam", &app.admin_token, json!(null)).await.expect(200);
    let team: String =
        sqlx::query_scalar("SELECT id::text FROM groups WHERE name = 'admteam'").fetch_one(&app.pool).await.expect("g");
    scim_error(&app.delete(&format!("/scim/v2/Groups/{team}"), &key).await, 403, None);
    let kept = app.get("/api/v1/users/mgr/groups", &app.admin_token).await.json();
    assert_eq!(kept["total"], 1, "{kept}");
    // A native rename never takes another user's SCIM userName, nor a SCIM
    // userName an old username.
    let a = scim_user(&app, &key, "renamed.one@uni.example").await;
    let _ = a;
    let r = app.patch("/api/v1/users/mgr", &app.admin_token, json!({"username": "freshname"})).await;
    assert_eq!(r.status, 409, "{}", r.text);
    app.create_user("olive", json!({})).await;
    app.patch("/api/v1/users/olive", &app.admin_token, json!({"username": "olive2"})).await.expect(200);
    let c = scim_user(&app, &key, "claire@uni.example").await;
    scim_error(
        &app.patch(
            &format!("/scim/v2/Users/{c}"),
            &key,
            json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "userName", "value": "OLIVE"}]}),
        )
        .await,
        409,
        Some("uniqueness"),
    );
    // Placeholders cannot be sent, whatever the case or blanks.
    let u = app
        .post(
            "/scim/v2/Users",
            &key,
            json!({"schemas": [USER], "userName": "pex", "emails": [{"value": "a3@PROVISIONED.invalid "}]}),
        )
        .await
        .expect(201)
        .json();
    let stored: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1::uuid")
        .bind(u["id"].as_str().expect("id"))
        .fetch_one(&app.pool)
        .await
        .expect("e");
    assert!(stored.starts_with("scim-"), "a placeholder of registrar's own, not the sent one: {stored}");
    // Undeclared sub-attributes are not kept either.
    let u = app
        .post("/scim/v2/Users", &key, json!({"schemas": [USER, ENTERPRISE], "userName": "sub", "name": {"givenName": "S", "isAdmin": true},
               "emails": [{"value": "sub@uni.example", "x-evil": 1}], ENTERPRISE: {"department": "D", "x-evil": {"n": 1}}}))
        .await
        .expect(201)
        .json();
    assert_eq!(u["name"], json!({"givenName": "S"}));
    assert_eq!(u["emails"], json!([{"value": "sub@uni.example"}]));
    assert_eq!(u[ENTERPRISE], json!({"department": "D"}));
    // Group input is checked.
    let g = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "x", "externalId": ""});
    scim_error(&app.post("/scim/v2/Groups", &key, g).await, 400, Some("invalidValue"));
    // Undeclared attributes are not kept; a placeholder is no address to take.
    let u = app
        .post(
            "/scim/v2/Users",
            &key,
            json!({"schemas": [USER], "userName": "dora", "roles": [{"value": "Administrator"}], "admin": true}),
        )
        .await
        .expect(201)
        .json();
    assert!(u.get("roles").is_none() && u.get("admin").is_none(), "{u}");
    assert_eq!(app.get("/api/v1/users/dora", &app.admin_token).await.json()["admin"], false);
}
