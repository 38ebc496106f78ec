//! registrar as an OpenID Provider, over plain HTTP as a relying party and
//! an attacker send it: the negative cases (wrong redirect URI, code replay,
//! PKCE mismatch, expired code, wrong secret, public client without PKCE,
//! a disabled user's refresh, a revoked session's introspection, a token of
//! one client presented by another, refresh-token reuse), consent, prompt,
//! logout and key rotation. The real relying parties are in `op_clients.rs`.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::header::LOCATION;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::*;

const VERIFIER: &str = "a-long-enough-pkce-verifier-for-the-tests-0123456789";
const REDIRECT: &str = "http://127.0.0.1:9/cb";

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

struct Registered {
    id: String,
    secret: Option<String>,
}

async fn register(app: &TestApp, body: Value) -> Registered {
    let r = app.post("/api/v1/oauth/clients", &app.admin_token, body).await.expect(201).json();
    Registered {
        id: r["client_id"].as_str().expect("client_id").to_string(),
        secret: r["client_secret"].as_str().map(str::to_string),
    }
}

async fn confidential(app: &TestApp, first_party: bool) -> Registered {
    register(
        app,
        json!({"name": "App", "redirect_uris": [REDIRECT], "post_logout_redirect_uris": ["http://127.0.0.1:9/bye"],
               "first_party": first_party, "scopes": ["openid", "profile", "email", "groups", "projects", "roles"],
               "grant_types": ["authorization_code", "refresh_token", "client_credentials"]}),
    )
    .await
}

/// Logs `user` in through the login page in `b`.
async fn log_in(app: &TestApp, b: &reqwest::Client, user: &str, password: &str) {
    let html = b.get(app.url("/login")).send().await.expect("GET").text().await.expect("html");
    let at = html.find("name=\"csrf\" value=\"").expect("csrf") + 19;
    let csrf = &html[at..at + html[at..].find('"').expect("end")];
    let r = b
        .post(app.url("/login"))
        .form(&[("csrf", csrf), ("username", user), ("password", password), ("return_to", "/account")])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 303, "login of {user}");
}

fn authorize_url(client: &str, extra: &[(&str, &str)]) -> String {
    let ch = challenge(VERIFIER);
    let mut q = vec![
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", REDIRECT),
        ("scope", "openid profile email groups projects"),
        ("state", "s-123"),
        ("nonce", "n-456"),
        ("code_challenge", ch.as_str()),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in extra {
        q.retain(|(qk, _)| qk != k);
        if !v.is_empty() {
            q.push((k, v));
        }
    }
    format!("/oauth2/authorize?{}", serde_urlencoded::to_string(&q).expect("query"))
}

/// The query of a redirect to the client.
fn query_of(location: &str) -> HashMap<String, String> {
    let url = url::Url::parse(location).expect("absolute redirect");
    url.query_pairs().into_owned().collect()
}

/// Authorizes in a logged-in browser: the code.
async fn code(app: &TestApp, b: &reqwest::Client, client: &str) -> String {
    let r = b.get(app.url(&authorize_url(client, &[]))).send().await.expect("authorize");
    assert_eq!(r.status(), 303);
    let loc = r.headers()[LOCATION].to_str().expect("location").to_string();
    assert!(loc.starts_with(REDIRECT), "{loc}");
    let q = query_of(&loc);
    assert_eq!(q.get("state").map(String::as_str), Some("s-123"));
    q["code"].clone()
}

async fn token(app: &TestApp, c: &Registered, form: &[(&str, &str)]) -> (u16, Value) {
    let mut rb = app.client.post(app.url("/oauth2/token"));
    rb = match &c.secret {
        Some(s) => rb.basic_auth(&c.id, Some(s)),
        None => rb,
    };
    let mut form: Vec<(&str, &str)> = form.to_vec();
    if c.secret.is_none() {
        form.push(("client_id", &c.id));
    }
    let r = rb.form(&form).send().await.expect("token");
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_no_secret_leak(&body.to_string());
    (status, body)
}

async fn exchange(app: &TestApp, c: &Registered, code: &str) -> (u16, Value) {
    token(
        app,
        c,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await
}

async fn introspect(app: &TestApp, c: &Registered, t: &str) -> Value {
    let r = app
        .client
        .post(app.url("/oauth2/introspect"))
        .basic_auth(&c.id, c.secret.as_deref())
        .form(&[("token", t)])
        .send()
        .await
        .expect("introspect");
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

fn claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("b64")).expect("json")
}

/// The code flow end to end, then every refusal a relying party or an
/// attacker meets; the state after each is checked through introspection.
#[tokio::test]
async fn the_code_flow_and_its_refusals() {
    let app = spawn_app().await;
    app.create_user("rita", json!({"first_name": "Rita", "last_name": "Levi", "verified": true})).await;
    let c = confidential(&app, true).await;
    let other = confidential(&app, true).await;
    let b = browser();

    // Not logged in: to the login page, and back.
    let r = b.get(app.url(&authorize_url(&c.id, &[("login_hint", "rita")]))).send().await.expect("authorize");
    assert_eq!(r.status(), 303);
    let loc = r.headers()[LOCATION].to_str().expect("loc").to_string();
    assert!(loc.starts_with("/login?return_to=%2Foauth2%2Fauthorize"), "{loc}");
    let login_page = b.get(app.url(&loc)).send().await.expect("login").text().await.expect("html");
    assert!(login_page.contains("value=\"rita\""), "login_hint fills the name in");
    log_in(&app, &b, "rita", PASSWORD).await;

    // The flow: code, tokens, claims.
    let code1 = code(&app, &b, &c.id).await;
    let (status, t) = exchange(&app, &c, &code1).await;
    assert_eq!(status, 200, "{t}");
    let id = claims(t["id_token"].as_str().expect("id_token"));
    assert_eq!(id["aud"], c.id.as_str());
    assert_eq!(id["nonce"], "n-456");
    assert_eq!(id["preferred_username"], "rita");
    assert_eq!(id["email_verified"], true);
    assert!(id["auth_time"].is_i64() && id["sid"].is_string());
    assert_eq!((id["amr"].clone(), id["acr"].clone()), (json!(["pwd"]), json!("aal1")), "a password alone");
    let rita = app.get("/api/v1/users/rita", &app.admin_token).await.expect(200).json();
    assert_eq!(id["sub"], rita["id"], "sub is the stable user id");
    let access = t["access_token"].as_str().expect("access").to_string();
    let refresh = t["refresh_token"].as_str().expect("refresh").to_string();
    assert_eq!(introspect(&app, &c, &access).await["active"], true);
    assert_eq!(introspect(&app, &other, &access).await["active"], false, "another client learns nothing of it");
    assert_eq!(introspect(&app, &other, &refresh).await["active"], false);
    let ui = app.client.get(app.url("/oauth2/userinfo")).bearer_auth(&access).send().await.expect("ui");
    assert_eq!(ui.status(), 200);
    assert_eq!(ui.json::<Value>().await.expect("json")["name"], "Rita Levi");
    // An OP access token is no credential for registrar's own API.
    app.get("/api/v1/users/me", &access).await.expect(401);

    // Code replay: refused, and what the code issued is revoked.
    let (status, e) = exchange(&app, &c, &code1).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(introspect(&app, &c, &access).await["active"], false, "a replayed code revokes its tokens");
    assert_eq!(introspect(&app, &c, &refresh).await["active"], false);

    // PKCE verifier mismatch.
    let code2 = code(&app, &b, &c.id).await;
    let bad = token(
        &app,
        &c,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code2),
            ("redirect_uri", REDIRECT),
            ("code_verifier", "another-verifier-that-is-long-enough-to-be-valid-000000"),
        ],
    )
    .await;
    assert_eq!((bad.0, bad.1["error"].as_str()), (400, Some("invalid_grant")));
    // ... and the code is spent.
    assert_eq!(exchange(&app, &c, &code2).await.0, 400);

    // Wrong redirect_uri at the token endpoint.
    let code3 = code(&app, &b, &c.id).await;
    let bad = token(
        &app,
        &c,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code3),
            ("redirect_uri", "http://127.0.0.1:9/other"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(bad.1["error"], "invalid_grant");

    // Expired code.
    let code4 = code(&app, &b, &c.id).await;
    sqlx::query("UPDATE oauth_codes SET expires_at = now() - interval '1 second' WHERE used_at IS NULL")
        .execute(&app.pool)
        .await
        .expect("expire");
    assert_eq!(exchange(&app, &c, &code4).await.1["error"], "invalid_grant");

    // Wrong client secret; a code of one client presented by another.
    let code5 = code(&app, &b, &c.id).await;
    let wrong = Registered { id: c.id.clone(), secret: Some("not-the-secret".into()) };
    let (status, e) = exchange(&app, &wrong, &code5).await;
    assert_eq!((status, e["error"].as_str()), (401, Some("invalid_client")));
    let (status, e) = exchange(&app, &other, &code5).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_grant")), "another client's code");

    // Refresh: rotation, another client's refresh token, reuse revokes the grant.
    let code6 = code(&app, &b, &c.id).await;
    let (_, t) = exchange(&app, &c, &code6).await;
    let r1 = t["refresh_token"].as_str().expect("r1").to_string();
    let (status, e) = token(&app, &other, &[("grant_type", "refresh_token"), ("refresh_token", &r1)]).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_grant")), "another client's refresh token");
    let (status, t2) = token(&app, &c, &[("grant_type", "refresh_token"), ("refresh_token", &r1)]).await;
    assert_eq!(status, 200, "{t2}");
    let r2 = t2["refresh_token"].as_str().expect("r2").to_string();
    assert_ne!(r1, r2, "refresh tokens rotate");
    let (_, e) = token(&app, &c, &[("grant_type", "refresh_token"), ("refresh_token", &r1)]).await;
    assert_eq!(e["error"], "invalid_grant");
    assert_eq!(introspect(&app, &c, &r2).await["active"], false, "reusing a refresh token revokes the grant");

    // A disabled user's refresh; then enabled again, the grant is still gone
    // (disabling ended the session that authorized it).
    let code7 = code(&app, &b, &c.id).await;
    let (_, t) = exchange(&app, &c, &code7).await;
    let r = t["refresh_token"].as_str().expect("r").to_string();
    app.patch("/api/v1/users/rita", &app.admin_token, json!({"enabled": false})).await.expect(200);
    let (status, e) = token(&app, &c, &[("grant_type", "refresh_token"), ("refresh_token", &r)]).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_grant")), "a disabled user's refresh");
    app.patch("/api/v1/users/rita", &app.admin_token, json!({"enabled": true})).await.expect(200);

    // A revoked session's tokens are inactive.
    let b2 = browser();
    log_in(&app, &b2, "rita", PASSWORD).await;
    let code8 = code(&app, &b2, &c.id).await;
    let (_, t) = exchange(&app, &c, &code8).await;
    let access = t["access_token"].as_str().expect("a").to_string();
    assert_eq!(introspect(&app, &c, &access).await["active"], true);
    app.delete("/api/v1/users/rita/sessions", &app.admin_token).await.expect(200);
    assert_eq!(introspect(&app, &c, &access).await["active"], false, "a revoked session's token");
    let ui = app.client.get(app.url("/oauth2/userinfo")).bearer_auth(&access).send().await.expect("ui");
    assert_eq!(ui.status(), 401);

    // client_credentials: a token for the client itself, no ID token.
    let (status, t) = token(&app, &c, &[("grant_type", "client_credentials"), ("scope", "groups")]).await;
    assert_eq!(status, 200, "{t}");
    assert!(t.get("id_token").is_none() && t.get("refresh_token").is_none());
    assert_eq!(claims(t["access_token"].as_str().expect("at"))["sub"], c.id.as_str());

    // Revocation (RFC 7009): only the client's own tokens.
    let b3 = browser();
    log_in(&app, &b3, "rita", PASSWORD).await;
    let code9 = code(&app, &b3, &c.id).await;
    let (_, t) = exchange(&app, &c, &code9).await;
    let rt = t["refresh_token"].as_str().expect("rt").to_string();
    let r = app
        .client
        .post(app.url("/oauth2/revoke"))
        .basic_auth(&other.id, other.secret.as_deref())
        .form(&[("token", rt.as_str())])
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 200);
    assert_eq!(introspect(&app, &c, &rt).await["active"], true, "another client cannot revoke it");
    let r = app
        .client
        .post(app.url("/oauth2/revoke"))
        .basic_auth(&c.id, c.secret.as_deref())
        .form(&[("token", rt.as_str())])
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 200);
    assert_eq!(introspect(&app, &c, &rt).await["active"], false);

    // Everything the client caused names it in the change log.
    let attributed = app
        .count(&format!(
            "SELECT count(*) FROM change_log WHERE action = 'oauth.grant_revoked' AND actor_username = 'client:{}'",
            c.id
        ))
        .await;
    assert!(attributed >= 3, "{attributed}");
}

/// Refusals before a client and its redirect URI are known are pages,
/// never redirects; after, errors go back to the client per spec.
#[tokio::test]
async fn authorization_errors_never_redirect_anywhere_else() {
    let app = spawn_app().await;
    app.create_user("sam", json!({})).await;
    let c = confidential(&app, true).await;
    let public = register(
        &app,
        json!({"name": "SPA", "redirect_uris": [REDIRECT], "public": true, "first_party": true,
        "scopes": ["openid", "profile", "email", "groups", "projects"]}),
    )
    .await;
    assert!(public.secret.is_none());
    let b = browser();
    log_in(&app, &b, "sam", PASSWORD).await;
    for (what, url) in [
        ("unknown client", authorize_url("rc_nobody", &[])),
        ("unregistered redirect_uri", authorize_url(&c.id, &[("redirect_uri", "https://evil.example/cb")])),
        ("redirect_uri with a different path", authorize_url(&c.id, &[("redirect_uri", "http://127.0.0.1:9/cb/x")])),
        ("no redirect_uri", authorize_url(&c.id, &[("redirect_uri", "")])),
    ] {
        let r = b.get(app.url(&url)).send().await.expect("authorize");
        assert_eq!(r.status(), 400, "{what}");
        assert!(r.headers().get(LOCATION).is_none(), "{what}: no redirect");
    }
    let back = |r: &reqwest::Response| query_of(r.headers()[LOCATION].to_str().expect("loc"));
    let discovery: Value = app
        .client
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .expect("d")
        .json()
        .await
        .expect("json");
    let issuer = discovery["issuer"].as_str().expect("issuer").to_string();
    // A public client without PKCE.
    let r = b
        .get(app.url(&authorize_url(&public.id, &[("code_challenge", ""), ("code_challenge_method", "")])))
        .send()
        .await
        .expect("a");
    assert_eq!(back(&r)["error"], "invalid_request");
    // plain PKCE, a scope not allowed, a wrong response_type.
    for (extra, error) in [
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("scope", "openid offline_access")], "invalid_scope"),
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("scope", "profile")], "invalid_scope"),
    ] {
        let r = b.get(app.url(&authorize_url(&c.id, &extra))).send().await.expect("a");
        let q = back(&r);
        assert_eq!((q["error"].as_str(), q.get("state").map(String::as_str)), (error, Some("s-123")), "{extra:?}");
        assert_eq!(q["iss"], issuer, "RFC 9207: the answer names its issuer");
    }
    // prompt=none without a session; a public client with PKCE works.
    let r = browser().get(app.url(&authorize_url(&c.id, &[("prompt", "none")]))).send().await.expect("a");
    assert_eq!(back(&r)["error"], "login_required");
    let code = code(&app, &b, &public.id).await;
    let (status, t) = exchange(&app, &public, &code).await;
    assert_eq!(status, 200, "{t}");
    // prompt=login asks for the password again (the login above is a
    // second old at least), then completes; a made-up "the login was asked
    // at" value proves nothing.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for forged in ["0", "-5", "1.x", &format!("{}.AAAA", chrono::Utc::now().timestamp() - 5)] {
        let url = authorize_url(&c.id, &[("prompt", "login"), ("registrar_login_after", forged)]);
        let r = b.get(app.url(&url)).send().await.expect("a");
        assert!(r.headers()[LOCATION].to_str().expect("l").starts_with("/login"), "forged login time {forged}");
        let url = authorize_url(&c.id, &[("max_age", "0"), ("registrar_login_after", forged)]);
        let r = b.get(app.url(&url)).send().await.expect("a");
        assert!(r.headers()[LOCATION].to_str().expect("l").starts_with("/login"), "max_age, forged {forged}");
    }
    let r = b.get(app.url(&authorize_url(&c.id, &[("prompt", "login")]))).send().await.expect("a");
    let loc = r.headers()[LOCATION].to_str().expect("loc").to_string();
    assert!(loc.starts_with("/login?return_to="), "{loc}");
    let back_to = url::form_urlencoded::parse(loc.split_once('?').expect("q").1.as_bytes())
        .find(|(k, _)| k == "return_to")
        .map(|(_, v)| v.into_owned())
        .expect("return_to");
    let r = b.get(app.url(&back_to)).send().await.expect("a");
    assert!(r.headers()[LOCATION].to_str().expect("l").starts_with("/login"), "still asks for a login");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    log_in(&app, &b, "sam", PASSWORD).await;
    let r = b.get(app.url(&back_to)).send().await.expect("a");
    assert!(query_of(r.headers()[LOCATION].to_str().expect("l")).contains_key("code"), "after the fresh login");
}

/// A third-party client asks for consent once; the consent is listed,
/// revocable, and a denial goes back as access_denied.
#[tokio::test]
async fn third_party_clients_ask_for_consent() {
    let app = spawn_app().await;
    app.create_user("tom", json!({})).await;
    let c = confidential(&app, false).await;
    let b = browser();
    log_in(&app, &b, "tom", PASSWORD).await;
    let r = b.get(app.url(&authorize_url(&c.id, &[]))).send().await.expect("a");
    assert_eq!(r.status(), 200);
    let html = r.text().await.expect("html");
    assert!(html.contains("form id=\"consent\"") && html.contains("see your email address"), "{html}");
    let field = |name: &str| {
        let pat = format!("name=\"{name}\" value=\"");
        let at = html.find(&pat).expect(name) + pat.len();
        html_escape::decode_html_entities(&html[at..at + html[at..].find('"').expect("end")]).into_owned()
    };
    let (csrf, request) = (field("csrf"), field("request"));
    let deny = b
        .post(app.url("/oauth2/consent"))
        .form(&[("csrf", csrf.as_str()), ("request", request.as_str()), ("decision", "deny")])
        .send()
        .await
        .expect("deny");
    assert_eq!(query_of(deny.headers()[LOCATION].to_str().expect("l"))["error"], "access_denied");
    let allow = b
        .post(app.url("/oauth2/consent"))
        .form(&[("csrf", csrf.as_str()), ("request", request.as_str()), ("decision", "allow")])
        .send()
        .await
        .expect("allow");
    assert!(query_of(allow.headers()[LOCATION].to_str().expect("l")).contains_key("code"));
    // Remembered: no consent page the second time.
    let again = b.get(app.url(&authorize_url(&c.id, &[]))).send().await.expect("a");
    assert_eq!(again.status(), 303);
    let t = app.login("tom", PASSWORD).await;
    let list = app.get("/api/v1/users/me/consents", &t).await.expect(200).json();
    assert_eq!(list["items"][0]["client_id"], c.id.as_str());
    // Withdrawn: asked again, and the tokens it issued end.
    let code = code(&app, &b, &c.id).await;
    let (_, tokens) = exchange(&app, &c, &code).await;
    let refresh = tokens["refresh_token"].as_str().expect("r").to_string();
    app.delete(&format!("/api/v1/users/me/consents/{}", c.id), &t).await.expect(204);
    assert_eq!(introspect(&app, &c, &refresh).await["active"], false);
    assert_eq!(b.get(app.url(&authorize_url(&c.id, &[]))).send().await.expect("a").status(), 200);
    assert!(
        app.count("SELECT count(*) FROM change_log WHERE action IN ('oauth.consent_granted', 'oauth.consent_revoked')")
            .await
            >= 2
    );
}

/// RP-initiated logout: to a registered post-logout URI only; the session
/// and the grants it authorized end.
#[tokio::test]
async fn logout_ends_the_session_and_returns_only_where_registered() {
    let app = spawn_app().await;
    app.create_user("una", json!({})).await;
    let c = confidential(&app, true).await;
    let b = browser();
    log_in(&app, &b, "una", PASSWORD).await;
    let first = code(&app, &b, &c.id).await;
    let (_, t) = exchange(&app, &c, &first).await;
    let id_token = t["id_token"].as_str().expect("id").to_string();
    let refresh = t["refresh_token"].as_str().expect("r").to_string();
    // Another user's ID token logs nobody out without asking.
    app.create_user("mal", json!({})).await;
    let mb = browser();
    log_in(&app, &mb, "mal", PASSWORD).await;
    let mcode = code(&app, &mb, &c.id).await;
    let (_, mt) = exchange(&app, &c, &mcode).await;
    let q = serde_urlencoded::to_string([
        ("id_token_hint", mt["id_token"].as_str().expect("id")),
        ("post_logout_redirect_uri", "http://127.0.0.1:9/bye"),
    ])
    .expect("q");
    let r = b.get(app.url(&format!("/oauth2/logout?{q}"))).send().await.expect("logout");
    assert_eq!(r.status(), 200, "a confirmation page, not a logout");
    assert!(r.text().await.expect("html").contains("confirm-logout"));
    assert_eq!(introspect(&app, &c, &refresh).await["active"], true, "una is still logged in");
    // A hint of one client with another client's id: refused.
    let other = confidential(&app, true).await;
    let q = serde_urlencoded::to_string([
        ("id_token_hint", id_token.as_str()),
        ("client_id", other.id.as_str()),
        ("post_logout_redirect_uri", "http://127.0.0.1:9/bye"),
    ])
    .expect("q");
    let r = b.get(app.url(&format!("/oauth2/logout?{q}"))).send().await.expect("logout");
    assert_eq!(r.status(), 400);
    assert_eq!(introspect(&app, &c, &refresh).await["active"], true);
    // An unregistered target: no redirect there.
    let q = serde_urlencoded::to_string([
        ("id_token_hint", id_token.as_str()),
        ("post_logout_redirect_uri", "https://evil.example/"),
    ])
    .expect("q");
    let r = browser().get(app.url(&format!("/oauth2/logout?{q}"))).send().await.expect("logout");
    assert!(r.headers().get(LOCATION).is_none_or(|l| !l.to_str().unwrap_or("").contains("evil")));
    assert_eq!(introspect(&app, &c, &refresh).await["active"], true, "another browser's logout ends nothing of una's");
    let q = serde_urlencoded::to_string([
        ("id_token_hint", id_token.as_str()),
        ("post_logout_redirect_uri", "http://127.0.0.1:9/bye"),
        ("state", "xyz"),
    ])
    .expect("q");
    let r = b.get(app.url(&format!("/oauth2/logout?{q}"))).send().await.expect("logout");
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION].to_str().expect("l"), "http://127.0.0.1:9/bye?state=xyz");
    assert_eq!(introspect(&app, &c, &refresh).await["active"], false, "the grant ended with the session");
    let account = b.get(app.url("/account")).send().await.expect("account");
    assert!(account.headers()[LOCATION].to_str().expect("l").starts_with("/login"), "the browser is logged out");
}

/// Key rotation: tokens signed before still verify until they expire; new
/// ones use the new key; the JWKS publishes both.
#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid() {
    let app = spawn_app().await;
    app.create_user("vic", json!({})).await;
    let c = confidential(&app, true).await;
    let b = browser();
    log_in(&app, &b, "vic", PASSWORD).await;
    let code1 = code(&app, &b, &c.id).await;
    let (_, t) = exchange(&app, &c, &code1).await;
    let old = t["access_token"].as_str().expect("at").to_string();
    let kid_of = |jwt: &str| {
        let h: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').next().expect("h")).expect("b64"))
            .expect("json");
        h["kid"].as_str().expect("kid").to_string()
    };
    let old_kid = kid_of(&old);
    let kids = registrar::op::keys::rotate(&app.pool, 960).await.expect("rotate");
    // Instances re-read keys within 30 s; this one is told now.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let jwks: Value = app.client.get(app.url("/oauth2/jwks")).send().await.expect("jwks").json().await.expect("json");
    let published: Vec<String> =
        jwks["keys"].as_array().expect("keys").iter().map(|k| k["kid"].as_str().expect("kid").to_string()).collect();
    assert!(published.contains(&old_kid), "the old key stays published");
    assert_eq!(published.len(), 4, "{published:?}");
    assert!(
        kids.iter().all(|k| published.contains(k)),
        "the new keys are published once re-read: {kids:?} {published:?}"
    );
    let ui = app.client.get(app.url("/oauth2/userinfo")).bearer_auth(&old).send().await.expect("ui");
    assert_eq!(ui.status(), 200, "a token signed before the rotation still works");
}

/// Userinfo and introspection answer from the auth cache. Each change their
/// answer depends on reaches the next call at once: a group membership, a
/// project level, a profile change, a role, the client revoking the token,
/// the session ending and the user being disabled.
#[tokio::test]
async fn cached_claims_follow_every_change() {
    let app = spawn_app().await;
    app.create_user("cara", json!({"first_name": "Cara", "last_name": "Mol", "verified": true})).await;
    let t = &app.admin_token;
    app.post("/api/v1/groups", t, json!({"name": "lab"})).await.expect(201);
    app.put("/api/v1/users/cara/groups/lab", t, json!({})).await.expect(200);
    app.post("/api/v1/projects", t, json!({"id": "PX", "name": "Project X"})).await.expect(201);
    app.put("/api/v1/projects/PX/members/cara", t, json!({"level": "member"})).await.expect(200);
    let c = register(
        &app,
        json!({"name": "App", "redirect_uris": [REDIRECT], "first_party": true, "signing_alg": "ES256",
               "scopes": ["openid", "profile", "email", "groups", "projects", "roles"]}),
    )
    .await;
    let b = browser();
    log_in(&app, &b, "cara", PASSWORD).await;
    let r = b.get(app.url(&authorize_url(&c.id, &[("scope", "openid profile groups projects roles")]))).send().await;
    let code = query_of(r.expect("authorize").headers()[LOCATION].to_str().expect("loc"))["code"].clone();
    let (status, tokens) = exchange(&app, &c, &code).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().expect("access").to_string();
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(access.split('.').next().expect("header")).expect("b64"))
            .expect("json");
    assert_eq!(header["alg"], "ES256", "the client asked for ES256 tokens");
    let id_header = tokens["id_token"].as_str().expect("id").split('.').next().expect("h").to_string();
    assert_eq!(
        serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(id_header).expect("b64")).expect("json")["alg"],
        "ES256"
    );

    let userinfo = || async {
        let r = app.client.get(app.url("/oauth2/userinfo")).bearer_auth(&access).send().await.expect("userinfo");
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    let (s, u) = userinfo().await;
    assert_eq!(s, 200);
    assert_eq!(u["groups"], json!(["lab", "PX_member"]));
    assert_eq!(u["projects"], json!({"PX": "member"}));
    let has_role = |u: &Value| u["roles"].as_array().expect("roles").iter().any(|r| r == "UserManager");
    assert!(!has_role(&u), "{u}");
    // Served twice (the second from the cache), then each change shows at once.
    assert_eq!(userinfo().await.1, u);

    app.delete("/api/v1/users/cara/groups/lab", t).await.expect(200);
    assert_eq!(userinfo().await.1["groups"], json!(["PX_member"]), "a removed membership");
    app.put("/api/v1/projects/PX/members/cara", t, json!({"level": "collaborator"})).await.expect(200);
    assert_eq!(userinfo().await.1["projects"], json!({"PX": "collaborator"}), "a changed level");
    app.patch("/api/v1/users/cara", t, json!({"first_name": "Carla"})).await.expect(200);
    assert_eq!(userinfo().await.1["given_name"], "Carla", "a profile change");
    app.put("/api/v1/users/cara/roles/UserManager", t, json!({})).await.expect(200);
    assert!(has_role(&userinfo().await.1), "a role");
    assert_eq!(introspect(&app, &c, &access).await["username"], "cara");

    // The client revokes its refresh token: the grant, and so the access token, end.
    let refresh = tokens["refresh_token"].as_str().expect("refresh");
    let r = app
        .client
        .post(app.url("/oauth2/revoke"))
        .basic_auth(&c.id, c.secret.as_deref())
        .form(&[("token", refresh)])
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 200);
    assert_eq!(introspect(&app, &c, &access).await["active"], false, "revoked: inactive at once");
    assert_eq!(userinfo().await.0, 401);

    // A second grant: ended by disabling the user, then (a third) by the session's end.
    let fresh = |b: reqwest::Client| {
        let (app, c) = (&app, &c);
        async move {
            let r = b.get(app.url(&authorize_url(&c.id, &[]))).send().await.expect("authorize");
            let code = query_of(r.headers()[LOCATION].to_str().expect("loc"))["code"].clone();
            let (status, tokens) = exchange(app, c, &code).await;
            assert_eq!(status, 200, "{tokens}");
            tokens["access_token"].as_str().expect("access").to_string()
        }
    };
    let second = fresh(b.clone()).await;
    assert_eq!(introspect(&app, &c, &second).await["active"], true);
    app.patch("/api/v1/users/cara", t, json!({"enabled": false})).await.expect(200);
    assert_eq!(introspect(&app, &c, &second).await["active"], false, "a disabled user's token");
    app.patch("/api/v1/users/cara", t, json!({"enabled": true})).await.expect(200);
    let b2 = browser();
    log_in(&app, &b2, "cara", PASSWORD).await;
    let third = fresh(b2).await;
    assert_eq!(introspect(&app, &c, &third).await["active"], true);
    app.delete("/api/v1/users/cara/sessions", t).await.expect(200);
    assert_eq!(introspect(&app, &c, &third).await["active"], false, "the session ended");
}

/// A session an API key opened (the data tracker's key login) is no login
/// for the provider: the authorization asks for one.
#[tokio::test]
async fn an_api_key_session_is_no_login_for_the_provider() {
    let app = spawn_app().await;
    app.create_user("kay", json!({})).await;
    let t = app.login("kay", PASSWORD).await;
    let key = app.post("/api/v1/users/me/api-keys", &t, json!({"name": "k"})).await.expect(201).json();
    let c = confidential(&app, true).await;
    let b = browser();
    let r = b
        .post(app.url("/api/v1/login/apikey"))
        .json(&json!({"api-user": "kay", "api-key": key["key"]}))
        .send()
        .await
        .expect("key login");
    assert_eq!(r.status(), 200);
    let r = b.get(app.url(&authorize_url(&c.id, &[]))).send().await.expect("authorize");
    assert_eq!(r.status(), 303);
    let loc = r.headers()[LOCATION].to_str().expect("loc");
    assert!(loc.starts_with("/login?return_to="), "to the login page, not back with a code: {loc}");
    let r = b.get(app.url(&authorize_url(&c.id, &[("prompt", "none")]))).send().await.expect("authorize");
    let loc = r.headers()[LOCATION].to_str().expect("loc").to_string();
    assert_eq!(query_of(&loc).get("error").map(String::as_str), Some("login_required"), "{loc}");
}
