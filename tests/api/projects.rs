//! Groups, projects, membership levels and project access requests.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

async fn project(app: &TestApp, owner_token: &str, id: &str) -> Value {
    app.post(
        "/api/v1/projects",
        owner_token,
        json!({"id": id, "name": format!("Project {id}"), "description": "d", "pi": "Dr. P"}),
    )
    .await
    .expect(201)
    .json()
}

fn levels(members: &Value) -> Vec<(String, String)> {
    members["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| (m["username"].as_str().expect("u").to_string(), m["level"].as_str().expect("l").to_string()))
        .collect()
}

#[tokio::test]
async fn creating_a_project_creates_its_groups_and_owner() {
    let app = spawn_app().await;
    let olga = app.user("olga").await;
    let p = project(&app, &olga, "P1").await;
    assert_eq!(p["id"], "P1");
    assert_eq!(p["pi"], "Dr. P");
    for g in ["P1_owner", "P1_member", "P1_collaborator"] {
        let group = app.get(&format!("/api/v1/groups/{g}"), &app.admin_token).await.expect(200).json();
        assert_eq!(group["project_id"], "P1");
    }
    assert_eq!(app.get("/api/v1/users/olga/groups", &olga).await.expect(200).json()["items"], json!(["P1_owner"]));
    let mine = app.get("/api/v1/users/me/projects", &olga).await.expect(200).json()["items"].clone();
    assert_eq!(mine[0]["id"], "P1");
    assert_eq!(mine[0]["level"], "owner");
    // Duplicates (any case) and bad ids are refused, writing nothing.
    assert_eq!(project_err(&app, &olga, json!({"id": "p1", "name": "x"})).await, (409, "project_exists".into()));
    assert_eq!(
        project_err(&app, &olga, json!({"id": "bad id!", "name": "x"})).await,
        (422, "invalid_project_id".into())
    );
    assert_eq!(project_err(&app, &olga, json!({"id": "P2", "name": ""})).await, (422, "invalid_text".into()));
    assert_eq!(app.count("SELECT count(*) FROM projects").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM groups").await, 3);
    let log = app.log_actions("P1").await;
    assert_eq!(log, ["project.created", "project.member_set"]);
}

/// Accepting an access request takes the user's row and the project's
/// before the request's, as deleting the user, the project or the inviter
/// does (their cascades reach the request last). The request first
/// deadlocked with each (found by attack).
#[tokio::test]
async fn accepting_a_request_takes_the_user_and_project_first() {
    let app = spawn_app().await;
    let owner = app.user("powner").await;
    let ivy = app.user("ivy").await;
    let ivy_id: uuid::Uuid = app.get("/api/v1/users/ivy", &app.admin_token).await.expect(200).json()["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    project(&app, &owner, "PACC").await;
    let par = app
        .post("/api/v1/projects/PACC/access-requests", &owner, json!({"username": "ivy", "level": "member"}))
        .await
        .expect(201)
        .json();
    let id = par["par_id"].as_i64().expect("id");
    let path = format!("/api/v1/access-requests/{id}");
    let (answer, waited) = while_another_writer_holds(
        &app,
        &format!("SELECT id FROM users WHERE id = '{ivy_id}' FOR UPDATE"),
        &format!("SELECT 1 FROM access_requests WHERE par_id = {id} FOR UPDATE"),
        app.put(&path, &ivy, json!({"action": "accept"})),
    )
    .await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text);
    assert!(waited, "accepted while the user's row was held by another writer");
    let members = app.get("/api/v1/projects/PACC/members", &owner).await.expect(200).json();
    assert!(members.to_string().contains("ivy"), "{members}");
}

async fn project_err(app: &TestApp, token: &str, body: Value) -> (u16, String) {
    let r = app.post("/api/v1/projects", token, body).await;
    (r.status.as_u16(), r.code())
}

#[tokio::test]
async fn levels_and_add_user_checks() {
    let app = spawn_app().await;
    let olga = app.user("olga").await;
    app.create_user("mia", json!({})).await;
    app.create_user("off", json!({"enabled": false})).await;
    project(&app, &olga, "P1").await;
    let r = app.put("/api/v1/projects/P1/members/mia", &olga, json!({"level": "member"})).await.expect(200);
    assert_eq!(levels(&r.json()), [("olga".into(), "owner".into()), ("mia".into(), "member".into())]);
    // One level per project: changing it replaces the old one.
    let r = app.put("/api/v1/projects/P1/members/mia", &olga, json!({"level": "collaborator"})).await.expect(200);
    assert_eq!(levels(&r.json())[1], ("mia".into(), "collaborator".into()));
    let mia_groups: Vec<String> =
        serde_json::from_value(app.get("/api/v1/users/mia/groups", &app.admin_token).await.json()["items"].clone())
            .expect("list");
    assert_eq!(mia_groups, ["P1_collaborator"]);
    // The checks say which one failed.
    let r = app.put("/api/v1/projects/P1/members/ghost", &olga, json!({"level": "member"})).await.expect(404);
    assert_eq!(r.code(), "user_not_found");
    let r = app.put("/api/v1/projects/P1/members/off", &olga, json!({"level": "member"})).await.expect(409);
    assert_eq!(r.code(), "user_disabled");
    let r = app.put("/api/v1/projects/P1/members/mia", &olga, json!({"level": "emperor"})).await.expect(422);
    assert_eq!(r.code(), "invalid_level");
    // The last owner stays.
    let r = app.delete("/api/v1/projects/P1/members/olga", &olga).await.expect(409);
    assert_eq!(r.code(), "last_owner");
    app.put("/api/v1/projects/P1/members/olga", &olga, json!({"level": "member"})).await.expect(409);
    app.delete("/api/v1/projects/P1/members/mia", &olga).await.expect(200);
    let log = app.log_actions("P1").await;
    assert_eq!(log.iter().filter(|a| *a == "project.member_set").count(), 3, "{log:?}");
    assert!(log.contains(&"project.member_removed".to_string()));
}

#[tokio::test]
async fn owner_member_outsider_permissions() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    let member = app.user("member").await;
    let outsider = app.user("outsider").await;
    project(&app, &owner, "P1").await;
    app.put("/api/v1/projects/P1/members/member", &owner, json!({"level": "member"})).await.expect(200);
    // Read: owner and member yes, outsider no.
    for t in [&owner, &member] {
        app.get("/api/v1/projects/P1", t).await.expect(200);
        app.get("/api/v1/projects/P1/members", t).await.expect(200);
    }
    app.get("/api/v1/projects/P1", &outsider).await.expect(403);
    app.get("/api/v1/projects/P1/members", &outsider).await.expect(403);
    // Manage: owner only.
    app.patch("/api/v1/projects/P1", &member, json!({"name": "x"})).await.expect(403);
    app.put("/api/v1/projects/P1/members/outsider", &member, json!({"level": "member"})).await.expect(403);
    app.get("/api/v1/projects/P1/access-requests", &member).await.expect(403);
    app.delete("/api/v1/projects/P1", &member).await.expect(403);
    let r = app.patch("/api/v1/projects/P1", &owner, json!({"name": "Renamed", "pi": "Dr. Q"})).await.expect(200);
    assert_eq!(r.json()["name"], "Renamed");
    // A member cannot invite; they can only ask for themselves.
    app.post("/api/v1/projects/P1/access-requests", &member, json!({"username": "outsider", "level": "member"}))
        .await
        .expect(403);
    // Lists: outsider sees none, member sees P1, admin sees all.
    assert_eq!(app.get("/api/v1/projects", &outsider).await.expect(200).json()["items"], json!([]));
    assert_eq!(app.get("/api/v1/projects", &member).await.json()["items"][0]["level"], "member");
    assert_eq!(app.get("/api/v1/projects", &app.admin_token).await.json()["items"].as_array().expect("list").len(), 1);
    // Another user's project list is private.
    app.get("/api/v1/users/member/projects", &outsider).await.expect(403);
    // Admin may manage any project; the owner may delete theirs.
    app.put("/api/v1/projects/P1/members/outsider", &app.admin_token, json!({"level": "collaborator"}))
        .await
        .expect(200);
    app.delete("/api/v1/projects/P1", &owner).await.expect(200);
    app.get("/api/v1/projects/P1", &app.admin_token).await.expect(404);
    assert_eq!(app.count("SELECT count(*) FROM groups").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM user_groups").await, 0);
    assert!(app.log_actions("P1").await.contains(&"project.deleted".to_string()));
}

#[tokio::test]
async fn invite_by_username_accept_and_decline() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    let ivy = app.user("ivy").await;
    project(&app, &owner, "P1").await;
    project(&app, &owner, "P2").await;
    let par = app
        .post("/api/v1/projects/P1/access-requests", &owner, json!({"username": "ivy", "level": "member"}))
        .await
        .expect(201)
        .json();
    let par2 = app
        .post("/api/v1/projects/P2/access-requests", &owner, json!({"username": "ivy", "level": "collaborator"}))
        .await
        .expect(201)
        .json();
    assert!(par["par_id"].is_i64());
    // A second open invitation for the same person and project is refused.
    app.post("/api/v1/projects/P1/access-requests", &owner, json!({"username": "ivy", "level": "owner"}))
        .await
        .expect(409);
    let mine = app.get("/api/v1/access-requests", &ivy).await.expect(200).json();
    assert_eq!(mine["items"].as_array().expect("items").len(), 2);
    // Someone else cannot answer ivy's invitation.
    let other = app.user("other").await;
    let id = par["par_id"].as_i64().expect("id");
    app.put(&format!("/api/v1/access-requests/{id}"), &other, json!({"action": "accept"})).await.expect(404);
    // Accept: membership at the invited level, at once.
    let r = app.put(&format!("/api/v1/access-requests/{id}"), &ivy, json!({"action": "accept"})).await.expect(200);
    assert_eq!(r.json()["status"], "accepted");
    assert!(r.json()["decided_at"].is_string());
    app.get("/api/v1/projects/P1", &ivy).await.expect(200);
    // Twice: refused.
    let r = app.put(&format!("/api/v1/access-requests/{id}"), &ivy, json!({"action": "accept"})).await.expect(409);
    assert_eq!(r.code(), "already_answered");
    // Decline: no membership.
    let id2 = par2["par_id"].as_i64().expect("id");
    let r = app.put(&format!("/api/v1/access-requests/{id2}"), &ivy, json!({"action": "decline"})).await.expect(200);
    assert_eq!(r.json()["status"], "declined");
    app.get("/api/v1/projects/P2", &ivy).await.expect(403);
    app.put(&format!("/api/v1/access-requests/{id2}"), &ivy, json!({"action": "accept"})).await.expect(409);
    assert_eq!(app.get("/api/v1/access-requests", &ivy).await.json()["items"], json!([]));
    // The project's list shows both, with approval data.
    let list = app.get("/api/v1/projects/P1/access-requests", &owner).await.expect(200).json();
    assert_eq!(list["items"][0]["username"], "ivy");
    assert!(list["items"][0]["decided_at"].is_string());
    assert_eq!(app.log_actions(&id.to_string()).await, ["access_request.invited", "access_request.accepted"]);
    assert_eq!(app.log_actions(&id2.to_string()).await, ["access_request.invited", "access_request.declined"]);
}

#[tokio::test]
async fn join_request_answered_by_owner() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    let jo = app.user("jo").await;
    project(&app, &owner, "P1").await;
    let par =
        app.post("/api/v1/projects/P1/access-requests", &jo, json!({"level": "collaborator"})).await.expect(201).json();
    assert_eq!(par["kind"], "request");
    let id = par["par_id"].as_i64().expect("id");
    // The requester cannot approve themself.
    app.put(&format!("/api/v1/access-requests/{id}"), &jo, json!({"action": "accept"})).await.expect(404);
    app.put(&format!("/api/v1/access-requests/{id}"), &owner, json!({"action": "accept"})).await.expect(200);
    let members = app.get("/api/v1/projects/P1/members", &jo).await.expect(200).json();
    assert!(levels(&members).contains(&("jo".into(), "collaborator".into())));
    // A member asking again is refused (already a member); nobody asks for owner.
    app.post("/api/v1/projects/P1/access-requests", &jo, json!({"level": "member"})).await.expect(409);
    app.post("/api/v1/projects/P1/access-requests", &jo, json!({"level": "owner"})).await.expect(422);
}

#[tokio::test]
async fn email_invitation_waits_for_a_verified_account() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    project(&app, &owner, "P1").await;
    project(&app, &owner, "P2").await;
    app.post(
        "/api/v1/projects/P1/access-requests",
        &owner,
        json!({"email": "New.Person@example.org", "level": "member"}),
    )
    .await
    .expect(201);
    app.post(
        "/api/v1/projects/P2/access-requests",
        &owner,
        json!({"email": "new.person@example.org", "level": "owner"}),
    )
    .await
    .expect(201);
    // An account with that email but unverified does not get them...
    app.create_user("newbie", json!({"email": "new.person@example.org", "verified": false})).await;
    let t = app.login("newbie", PASSWORD).await;
    assert_eq!(app.get("/api/v1/access-requests", &t).await.json()["items"], json!([]));
    // ...until the email is verified.
    app.patch("/api/v1/users/newbie", &app.admin_token, json!({"verified": true})).await.expect(200);
    let mine = app.get("/api/v1/access-requests", &t).await.expect(200).json();
    assert_eq!(mine["items"].as_array().expect("items").len(), 2);
    let p1 = mine["items"].as_array().expect("items").iter().find(|r| r["project_id"] == "P1").expect("P1's");
    let id = p1["par_id"].as_i64().expect("id");
    app.put(&format!("/api/v1/access-requests/{id}"), &t, json!({"action": "accept"})).await.expect(200);
    app.get("/api/v1/projects/P1", &t).await.expect(200);
    // A user created already verified picks theirs up at once.
    app.post(
        "/api/v1/projects/P1/access-requests",
        &owner,
        json!({"email": "later@example.org", "level": "collaborator"}),
    )
    .await
    .expect(201);
    app.create_user("later", json!({"email": "LATER@example.org", "verified": true})).await;
    let t2 = app.login("later", PASSWORD).await;
    assert_eq!(app.get("/api/v1/access-requests", &t2).await.json()["items"][0]["level"], "collaborator");
    // Inviting an email that already has a verified account targets it directly.
    app.post("/api/v1/projects/P2/access-requests", &owner, json!({"email": "later@example.org", "level": "member"}))
        .await
        .expect(201);
    assert_eq!(app.get("/api/v1/access-requests", &t2).await.json()["items"].as_array().expect("items").len(), 2);
}

#[tokio::test]
async fn parallel_accepts_add_one_membership() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    let pam = app.user("pam").await;
    project(&app, &owner, "P1").await;
    let par = app
        .post("/api/v1/projects/P1/access-requests", &owner, json!({"username": "pam", "level": "member"}))
        .await
        .expect(201)
        .json();
    let path = format!("/api/v1/access-requests/{}", par["par_id"]);
    let body = json!({"action": "accept"});
    let results = futures_util::future::join_all((0..10).map(|_| app.put(&path, &pam, body.clone()))).await;
    assert_eq!(results.iter().filter(|r| r.status == 200).count(), 1);
    assert_eq!(results.iter().filter(|r| r.status == 409).count(), 9);
    assert_eq!(app.count("SELECT count(*) FROM user_groups WHERE project_id = 'P1'").await, 2);
}

#[tokio::test]
async fn bulk_group_changes_report_per_group() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    app.create_user("gus", json!({})).await;
    project(&app, &owner, "P1").await;
    app.post("/api/v1/groups", &app.admin_token, json!({"name": "readers", "display_name": "Readers"}))
        .await
        .expect(201);
    app.post("/api/v1/groups", &app.admin_token, json!({"name": "READERS"})).await.expect(409);
    app.post("/api/v1/groups", &app.admin_token, json!({"name": "bad name"})).await.expect(422);
    let t = &app.admin_token;
    let r = app.put("/api/v1/users/gus/groups", t, json!(["readers", "nope", "P1_member"])).await.expect(202);
    let results = r.json()["results"].clone();
    assert_eq!(results[0], json!({"name": "readers", "ok": true}));
    assert_eq!(r.json()["user"]["username"], "gus");
    assert_eq!(results[1]["ok"], false);
    assert!(results[1]["error"].as_str().expect("e").contains("nope"));
    assert_eq!(results[2]["ok"], true);
    assert_eq!(app.get("/api/v1/users/gus/groups", t).await.json()["items"], json!(["P1_member", "readers"]));
    // All fine -> 200; a project group replaces the level.
    app.put("/api/v1/users/gus/groups", t, json!({"groups": ["P1_owner"]})).await.expect(200);
    assert_eq!(app.get("/api/v1/users/gus/groups", t).await.json()["items"], json!(["P1_owner", "readers"]));
    let members = app.get("/api/v1/groups/readers/members", t).await.expect(200).json();
    assert_eq!(members["items"][0]["username"], "gus");
    // Removing: partial again.
    let r = app
        .send(
            Method::DELETE,
            "/api/v1/users/gus/groups",
            &Auth::Bearer(t.clone()),
            Some(json!(["readers", "P1_member"])),
        )
        .await
        .expect(202);
    assert_eq!(r.json()["results"][1]["ok"], false);
    assert_eq!(app.get("/api/v1/users/gus/groups", t).await.json()["items"], json!(["P1_owner"]));
    // One at a time, answered like a bulk change of one (as for roles).
    let one = app.put("/api/v1/users/gus/groups/readers", t, json!(null)).await.expect(200).json();
    assert_eq!(one["results"], json!([{"name": "readers", "ok": true}]));
    assert_eq!(one["user"]["username"], "gus");
    // Nothing applied is no "some applied": the refusal, with each outcome.
    let r = app.put("/api/v1/users/gus/groups", t, json!(["nope", "nada"])).await.expect(404);
    assert_eq!(r.json()["error"]["details"]["results"].as_array().expect("results").len(), 2);
    app.delete("/api/v1/users/gus/groups/readers", t).await.expect(200);
    app.delete("/api/v1/users/gus/groups/readers", t).await.expect(404);
    // Project groups go only with their project; plain groups may be deleted.
    app.delete("/api/v1/groups/P1_owner", t).await.expect(409);
    app.delete("/api/v1/groups/readers", t).await.expect(200);
    // Nobody joins a group by managing, not even a UserManager (who passes
    // the route's permission check, so the refusal is the membership rule).
    app.create_user("mia", json!({"roles": ["UserManager"]})).await;
    let mia = app.login("mia", PASSWORD).await;
    let r = app.put("/api/v1/users/me/groups/P1_member", &mia, json!(null)).await.expect(403);
    assert_eq!(r.code(), "self_grant");
    assert_eq!(app.get("/api/v1/users/mia/groups", t).await.json()["items"], json!([]));
    let log = app.log_actions("readers").await;
    assert_eq!(
        log,
        [
            "group.created",
            "group.member_added",
            "group.member_removed",
            "group.member_added",
            "group.member_removed",
            "group.deleted"
        ]
    );
}

#[tokio::test]
async fn access_request_lists_in_four_formats() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    app.user("ivy").await;
    app.post(
        "/api/v1/projects",
        &owner,
        json!({"id": "P1", "name": "Evil, \"quoted\" <b>", "description": "<script>alert('x')</script>", "pi": "A, \"B\""}),
    )
    .await
    .expect(201);
    app.post("/api/v1/projects/P1/access-requests", &owner, json!({"username": "ivy", "level": "member"}))
        .await
        .expect(201);
    app.post(
        "/api/v1/projects/P1/access-requests",
        &owner,
        json!({"email": "o'brien+x@example.org", "level": "owner"}),
    )
    .await
    .expect(201);
    let get = |fmt: &str| {
        let path = format!("/api/v1/projects/P1/access-requests?format={fmt}");
        let owner = owner.clone();
        let app = &app;
        async move { app.get(&path, &owner).await }
    };
    // CSV parses with a CSV reader, values intact.
    let csv_text = get("csv").await.expect(200);
    assert!(csv_text.headers["content-type"].to_str().expect("ct").starts_with("text/csv"));
    let mut rd = csv::Reader::from_reader(csv_text.text.as_bytes());
    let header: Vec<String> = rd.headers().expect("header").iter().map(String::from).collect();
    // The native names, as in the JSON.
    assert_eq!(header, registrar::table::NATIVE_PAR_COLUMNS);
    let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[0][7], "o'brien+x@example.org");
    assert_eq!(&rows[0][2], "Evil, \"quoted\" <b>");
    assert_eq!(&rows[1][6], "ivy");
    // XML parses.
    let xml = get("xml").await.expect(200).text;
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut cells = 0;
    loop {
        match reader.read_event().expect("well-formed XML") {
            quick_xml::events::Event::Start(e) if e.name().as_ref() == b"cell" => cells += 1,
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(cells, 28);
    // HTML escapes.
    let user_html =
        app.get("/api/v1/access-requests?format=html", &app.login("ivy", PASSWORD).await).await.expect(200).text;
    assert!(!user_html.contains("<b>"), "{user_html}");
    assert!(user_html.contains("&lt;b&gt;"));
    // JSON is the default; unknown formats are refused.
    assert_eq!(get("json").await.expect(200).json()["items"].as_array().expect("items").len(), 2);
    assert_eq!(get("yaml").await.expect(400).code(), "invalid_format");
}

/// Access requests both ways: a requester sees and withdraws their own
/// request; non-members find only discoverable projects; invitations last
/// `access_requests.invitation_ttl_days`.
#[tokio::test]
async fn requests_both_ways_discoverable_projects_and_invitation_ttl() {
    let app = spawn_app_with(|s| s.access_requests.invitation_ttl_days = 2).await;
    let owner = app.user("owner").await;
    let jo = app.user("jo").await;
    app.post("/api/v1/projects", &owner, json!({"id": "OPEN", "name": "Open", "pi": "Dr Open"})).await.expect(201);
    app.post("/api/v1/projects", &owner, json!({"id": "HIDDEN", "name": "Hidden"})).await.expect(201);
    // Nothing is discoverable by default; an owner opts in.
    assert_eq!(app.get("/api/v1/discoverable-projects", &jo).await.expect(200).json()["items"], json!([]));
    app.patch("/api/v1/projects/OPEN", &jo, json!({"discoverable": true})).await.expect(403);
    let p = app.patch("/api/v1/projects/OPEN", &owner, json!({"discoverable": true})).await.expect(200).json();
    assert_eq!(p["discoverable"], true);
    let found = app.get("/api/v1/discoverable-projects", &jo).await.expect(200).json();
    assert_eq!((found["total"].as_u64(), found["items"][0]["id"].as_str()), (Some(1), Some("OPEN")));
    assert_eq!(app.log_actions("OPEN").await.last().map(String::as_str), Some("project.updated"));
    // jo asks to join and sees the request among their own pending items.
    let req =
        app.post("/api/v1/projects/OPEN/access-requests", &jo, json!({"level": "member"})).await.expect(201).json();
    let id = req["par_id"].as_i64().expect("id");
    let mine = app.get("/api/v1/access-requests", &jo).await.expect(200).json();
    assert_eq!((mine["items"][0]["par_id"].as_i64(), mine["items"][0]["kind"].as_str()), (Some(id), Some("request")));
    assert_eq!(app.get("/api/v1/access-requests?kind=invitation", &jo).await.json()["items"], json!([]));
    app.get("/api/v1/access-requests?kind=everything", &jo).await.expect(400);
    // An invitation lasts the configured days, and shows as an invitation.
    let inv =
        app.post("/api/v1/projects/HIDDEN/access-requests", &owner, json!({"username": "jo", "level": "member"})).await;
    let expires = inv.expect(201).json()["expires_at"].as_str().expect("expires").to_string();
    let expires = chrono::DateTime::parse_from_rfc3339(&expires).expect("date");
    let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
    assert!((47..=48).contains(&days), "{days} hours");
    let both = app.get("/api/v1/access-requests", &jo).await.expect(200).json();
    assert_eq!(both["total"], 2);
    assert_eq!(app.get("/api/v1/access-requests?kind=invitation", &jo).await.json()["total"], 1);
    // The requester withdraws their own request; it is gone from their list and logged.
    app.delete(&format!("/api/v1/access-requests/{id}"), &jo).await.expect(200);
    assert_eq!(app.get("/api/v1/access-requests?kind=request", &jo).await.json()["items"], json!([]));
    assert_eq!(app.log_actions(&id.to_string()).await.last().map(String::as_str), Some("access_request.withdrawn"));
}

/// Attack review of imports and access requests: nobody verifies an
/// address of their own choosing (and so takes the invitations sent to
/// it); a requester sees no more of a private project than when asking; a
/// user manager does not let an administrator into a project.
#[tokio::test]
async fn invitations_by_email_cannot_be_claimed_by_self_verification() {
    let app = spawn_app().await;
    let owner = app.user("carol").await;
    let dave = app.user("dave").await;
    app.patch("/api/v1/users/dave", &app.admin_token, json!({"verified": true})).await.expect(200);
    app.post(
        "/api/v1/projects",
        &owner,
        json!({"id": "PC", "name": "PC", "description": "secret roadmap", "pi": "Dr X"}),
    )
    .await
    .expect(201);
    app.post("/api/v1/projects/PC/access-requests", &owner, json!({"email": "newhire@partner.org", "level": "owner"}))
        .await
        .expect(201);
    // A new address stays unverified; saying otherwise is a manager's call, on every route.
    let r = app.patch("/api/v1/users/me", &dave, json!({"email": "newhire@partner.org", "verified": true})).await;
    r.expect(403);
    let body = json!({"email": "newhire@partner.org", "verified": true});
    app.put("/xapi/users/dave", &dave, body).await.expect(403);
    let me = app.patch("/api/v1/users/me", &dave, json!({"email": "newhire@partner.org"})).await.expect(200).json();
    assert_eq!(me["verified"], false);
    assert_eq!(app.get("/api/v1/access-requests", &dave).await.json()["items"], json!([]));
    // A user manager importing their own row is held to the same rule.
    app.create_user("mgr", json!({"roles": ["UserManager"], "verified": true})).await;
    let mgr = app.login("mgr", PASSWORD).await;
    let rows = json!([{"username": "mgr", "email": "newhire2@partner.org", "verified": true}]);
    let rb = app.client.post(app.url("/api/v1/import/users?mode=per_row")).bearer_auth(&mgr).json(&rows);
    let r = app.exchange("self import", rb).await.expect(200).json();
    assert_eq!(r["rows"][0]["outcome"], "refused");
    // A join request shows the requester no description or investigator.
    let req =
        app.post("/api/v1/projects/PC/access-requests", &dave, json!({"level": "member"})).await.expect(201).json();
    let mine = app.get("/api/v1/access-requests?kind=request", &dave).await.expect(200).json();
    assert_eq!(
        (mine["items"][0]["project_description"].as_str(), mine["items"][0]["project_pi"].as_str()),
        (Some(""), Some(""))
    );
    let id = req["par_id"].as_i64().expect("id");
    // An administrator's request to join: not answered by a user manager; by the owner, yes.
    app.create_user("admin2", json!({"admin": true})).await;
    let admin2 = app.login("admin2", PASSWORD).await;
    let areq =
        app.post("/api/v1/projects/PC/access-requests", &admin2, json!({"level": "member"})).await.expect(201).json();
    let aid = areq["par_id"].as_i64().expect("id");
    app.put(&format!("/api/v1/access-requests/{aid}"), &mgr, json!({"action": "accept"})).await.expect(404);
    app.get("/api/v1/projects/PC", &admin2).await.expect(200); // administrators read every project anyway
    let members = app.get("/api/v1/projects/PC/members", &owner).await.expect(200).json();
    assert!(!members["items"].as_array().expect("items").iter().any(|m| m["username"] == "admin2"));
    app.put(&format!("/api/v1/access-requests/{aid}"), &owner, json!({"action": "accept"})).await.expect(200);
    app.put(&format!("/api/v1/access-requests/{id}"), &mgr, json!({"action": "accept"})).await.expect(200);
}

/// Attack review: inviting by email is no directory lookup. The inviter
/// sees the address they typed, not which account it found (a user
/// manager does); the invitee still gets the invitation.
#[tokio::test]
async fn an_email_invitation_does_not_reveal_the_account() {
    let app = spawn_app().await;
    app.create_user("alice", json!({"first_name": "Alice", "last_name": "Liddell", "verified": true})).await;
    let stranger = app.user("stranger").await;
    app.post("/api/v1/projects", &stranger, json!({"id": "PROBE", "name": "Probe"})).await.expect(201);
    let r = app
        .post(
            "/api/v1/projects/PROBE/access-requests",
            &stranger,
            json!({"email": "alice@example.org", "level": "member"}),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(
        (r["username"].clone(), r["first_name"].clone(), r["last_name"].clone()),
        (json!(null), json!(null), json!(null))
    );
    assert_eq!(r["email"], "alice@example.org");
    let listed = app.get("/api/v1/projects/PROBE/access-requests", &stranger).await.expect(200).json();
    assert_eq!(listed["items"][0]["username"], json!(null));
    let managed = app.get("/api/v1/projects/PROBE/access-requests", &app.admin_token).await.expect(200).json();
    assert_eq!(managed["items"][0]["username"], "alice");
    let alice = app.login("alice", PASSWORD).await;
    assert_eq!(app.get("/api/v1/access-requests", &alice).await.json()["total"], 1);
}
