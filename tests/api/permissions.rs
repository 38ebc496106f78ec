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
    let all = app.get("/api/v1/resource-permissions", &user).await.expect(200).json();
    assert!(all
        .as_array()
        .expect("list")
        .iter()
        .any(|p| p == &json!({"resource_type": "model", "resource_id": null, "method": "get"})));

    let wanted = json!({"permissions": [
        {"resource_type": "model", "resource_id": "m-1", "method": "get"},
        {"resource_type": "user", "resource_id": null, "method": "any"}
    ]});
    let held = app.put("/api/v1/groups/readers/permissions", &app.admin_token, wanted.clone()).await.expect(200).json();
    assert_eq!(held.as_array().expect("list").len(), 2);
    assert_eq!(app.get("/api/v1/groups/readers/permissions", &app.admin_token).await.expect(200).json(), held);
    // The same set again changes nothing and logs nothing more.
    app.put("/api/v1/groups/readers/permissions", &app.admin_token, wanted).await.expect(200);
    let logged = app.count("SELECT count(*) FROM change_log WHERE action = 'group.permissions_changed'").await;
    assert_eq!(logged, 1);
    // A new permission is registered for everyone to see.
    let all = app.get("/api/v1/resource-permissions", &user).await.expect(200).json();
    assert!(all.as_array().expect("list").iter().any(|p| p["resource_id"] == "m-1"));

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
