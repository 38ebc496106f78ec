//! Resource permissions through the native API: what MLTE's groups hold.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn groups_hold_resource_permissions() {
    let app = spawn_app().await;
    let user = app.user("plain").await;
    app.post("/api/v1/groups", &app.admin_token, json!({"name": "readers", "display_name": "Readers"}))
        .await
        .expect(201);
    // The registered permissions include MLTE's defaults.
    let all = app.get("/api/v1/resource-permissions", &app.admin_token).await.expect(200).json();
    assert!(all["items"]
        .as_array()
        .expect("list")
        .iter()
        .any(|p| p == &json!({"resource_type": "model", "resource_id": null, "method": "get"})));

    let wanted = json!({"permissions": [
        {"resource_type": "model", "resource_id": "m-1", "method": "get"},
        {"resource_type": "user", "resource_id": null, "method": "any"}
    ]});
    let held = app.put("/api/v1/groups/readers/permissions", &app.admin_token, wanted.clone()).await.expect(200).json();
    assert_eq!(held["items"].as_array().expect("list").len(), 2);
    assert_eq!(app.get("/api/v1/groups/readers/permissions", &app.admin_token).await.expect(200).json(), held);
    // The same set again changes nothing and logs nothing more.
    app.put("/api/v1/groups/readers/permissions", &app.admin_token, wanted).await.expect(200);
    let logged = app.count("SELECT count(*) FROM change_log WHERE action = 'group.permissions_changed'").await;
    assert_eq!(logged, 1);
    // A new permission is registered for everyone to see.
    let all = app.get("/api/v1/resource-permissions", &app.admin_token).await.expect(200).json();
    assert!(all["items"].as_array().expect("list").iter().any(|p| p["resource_id"] == "m-1"));

    // Bad input: the field is named, nothing changes.
    let bad = json!({"permissions": [{"resource_type": "model", "resource_id": null, "method": "patch"}]});
    let r = app.put("/api/v1/groups/readers/permissions", &app.admin_token, bad).await.expect(422);
    assert_eq!(r.json()["error"]["details"]["field"], "method");
    let unknown = json!({"permissions": [{"resource_type": "model", "method": "get", "extra": 1}]});
    app.put("/api/v1/groups/readers/permissions", &app.admin_token, unknown).await.expect(400);
    assert_eq!(app.get("/api/v1/groups/readers/permissions", &app.admin_token).await.expect(200).json(), held);
    // Only USER_MANAGEMENT changes them; an unknown group is 404.
    app.put("/api/v1/groups/readers/permissions", &user, json!({"permissions": []})).await.expect(403);
    app.put("/api/v1/groups/nobody/permissions", &app.admin_token, json!({"permissions": []})).await.expect(404);

    // Members of the group hold them: the MLTE API lets `plain` read users.
    app.put("/api/v1/users/plain/groups/readers", &app.admin_token, json!({})).await.expect(200);
    let tok = app.login("plain", PASSWORD).await;
    app.get("/api/user", &tok).await.expect(200);
    app.get("/api/user/admin", &tok).await.expect(200);
    // Not what it does not hold: groups.
    app.get("/api/group", &tok).await.expect(403);
    // And never an administrator's account, whatever the permission says.
    app.delete("/api/user/admin", &tok).await.expect(403);
    app.get("/api/v1/users/admin", &app.admin_token).await.expect(200);
}

/// Attack review of the MLTE API: what a resource permission lets its
/// holder do stops short of user management.
#[tokio::test]
async fn resource_permissions_do_not_escalate() {
    let app = spawn_app().await;
    let perm = |t: &str, id: Option<&str>, m: &str| json!({"resource_type": t, "resource_id": id, "method": m});
    // The registry names users, groups and models: not for everyone.
    let plain = app.user("plain").await;
    app.get("/api/v1/resource-permissions", &plain).await.expect(403);
    app.get("/api/groups/permissions", &plain).await.expect(403);
    // `g` lets its members edit `g` itself.
    app.post("/api/v1/groups", &app.admin_token, json!({"name": "g", "display_name": "G"})).await.expect(201);
    let only_g = json!({"permissions": [perm("group", Some("g"), "put")]});
    app.put("/api/v1/groups/g/permissions", &app.admin_token, only_g).await.expect(200);
    app.create_user("holder", json!({})).await;
    app.put("/api/v1/users/holder/groups/g", &app.admin_token, json!({})).await.expect(200);
    let holder = app.login("holder", PASSWORD).await;
    // Granting itself user or group powers, or what it does not hold: refused, nothing changes.
    for wanted in [perm("user", None, "any"), perm("group", None, "any"), perm("model", Some("m1"), "get")] {
        let body = json!({"name": "g", "permissions": [perm("group", Some("g"), "put"), wanted]});
        app.put("/api/group", &holder, body).await.expect(403);
    }
    let held = app.get("/api/v1/groups/g/permissions", &app.admin_token).await.expect(200).json();
    assert_eq!(held["items"], json!([perm("group", Some("g"), "put")]));
    // Removing is fine.
    app.put("/api/group", &holder, json!({"name": "g", "permissions": []})).await.expect(200);

    // A project's groups hold no resource permissions (their owners pick the members).
    let owner = app.user("owner").await;
    app.post("/api/v1/projects", &owner, json!({"id": "P1", "name": "P1"})).await.expect(201);
    let any_user = json!({"permissions": [perm("user", None, "any")]});
    let r = app.put("/api/v1/groups/P1_owner/permissions", &app.admin_token, any_user).await.expect(409);
    assert_eq!(r.code(), "project_group");
    // Nor are they granted as plain groups through MLTE.
    app.create_user("joiner", json!({})).await;
    let body = json!({"username": "joiner", "groups": [{"name": "P1_owner", "permissions": []}]});
    app.put("/api/user", &app.admin_token, body).await.expect(409);
    assert_eq!(app.get("/api/v1/users/joiner/groups", &app.admin_token).await.expect(200).json()["items"], json!([]));

    // `user any` through a group: ordinary accounts yes, user managers no.
    app.post("/api/v1/groups", &app.admin_token, json!({"name": "editors", "display_name": "E"})).await.expect(201);
    let any_user = json!({"permissions": [perm("user", None, "any")]});
    app.put("/api/v1/groups/editors/permissions", &app.admin_token, any_user).await.expect(200);
    app.create_user("editor", json!({})).await;
    app.put("/api/v1/users/editor/groups/editors", &app.admin_token, json!({})).await.expect(200);
    let editor = app.login("editor", PASSWORD).await;
    app.create_user("um", json!({"roles": ["UserManager"]})).await;
    app.create_user("plainuser", json!({"first_name": "Plain", "last_name": "User"})).await;
    app.put("/api/user", &editor, json!({"username": "um", "email": "attacker@evil.example"})).await.expect(403);
    app.delete("/api/user/um", &editor).await.expect(403);
    assert_eq!(app.get("/api/v1/users/um", &app.admin_token).await.expect(200).json()["email"], "um@example.org");
    app.put("/api/user", &editor, json!({"username": "plainuser", "full_name": "Plain Renamed"})).await.expect(200);

    // An edit changes only what it sends: a disabled account stays
    // disabled, groups and role stay as they are.
    app.patch("/api/v1/users/plainuser", &app.admin_token, json!({"enabled": false})).await.expect(200);
    app.put("/api/v1/users/plainuser/groups/g", &app.admin_token, json!({})).await.expect(200);
    app.put("/api/user", &app.admin_token, json!({"username": "plainuser", "full_name": "P U"})).await.expect(200);
    let u = app.get("/api/v1/users/plainuser", &app.admin_token).await.expect(200).json();
    assert_eq!((u["enabled"].clone(), u["first_name"].clone()), (json!(false), json!("P")));
    assert_eq!(
        app.get("/api/v1/users/plainuser/groups", &app.admin_token).await.expect(200).json()["items"],
        json!(["g"])
    );
}
