//! Second factors: TOTP with codes computed by an independent
//! implementation (Debian's `oathtool`), recovery codes, the two-step login
//! (API and page), replay, window edges, the lockout, the clients that
//! cannot take a second step (HTTP Basic, XNAT's login) and an
//! administrator's reset. The state is checked after each step.

use reqwest::header::LOCATION;
use serde_json::{json, Value};

use crate::helpers::*;

pub const OATHTOOL: &str = "/usr/bin/oathtool";

/// The TOTP code of `secret` (base32) at `offset_secs` from now, by oathtool.
pub fn code(secret: &str, offset_secs: i64) -> String {
    let when = format!("now {offset_secs:+} seconds");
    let out = std::process::Command::new(OATHTOOL)
        .args(["--totp", "--base32", "--now", &when, secret])
        .output()
        .expect("oathtool runs");
    assert!(out.status.success(), "oathtool: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8").trim().to_string()
}

/// Seconds into the current 30-second TOTP step.
fn into_step() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() % 30
}

/// Waits until at least 5 seconds remain in the current step, so that a
/// code computed now is judged in the same step.
pub async fn away_from_step_edge() {
    if into_step() >= 25 {
        tokio::time::sleep(std::time::Duration::from_secs(31 - into_step())).await;
    }
}

/// Enrols `user` (logged in with `token`): the secret and the recovery codes.
async fn enrol(app: &TestApp, token: &str) -> (String, Vec<String>) {
    let e = app.post("/api/v1/users/me/mfa/totp", token, json!(null)).await.expect(201).json();
    let secret = e["secret"].as_str().expect("secret").to_string();
    let uri = e["otpauth_uri"].as_str().expect("uri");
    assert!(uri.starts_with("otpauth://totp/") && uri.contains(&format!("secret={secret}")), "{uri}");
    assert_eq!(app.get("/api/v1/users/me/mfa", token).await.expect(200).json()["totp"], "pending");
    away_from_step_edge().await;
    let r = app.post("/api/v1/users/me/mfa/totp/confirm", token, json!({"code": code(&secret, 0)})).await.expect(200);
    let codes: Vec<String> = r.json()["recovery_codes"]
        .as_array()
        .expect("recovery codes with the first factor")
        .iter()
        .map(|c| c.as_str().expect("code").to_string())
        .collect();
    assert_eq!(codes.len(), 10);
    (secret, codes)
}

async fn first_step(app: &TestApp, user: &str) -> Value {
    let r = app.post("/api/v1/auth/login", "", json!({"username": user, "password": PASSWORD})).await.expect(200);
    let b = r.json();
    assert_eq!(b["mfa_required"], true, "{b}");
    assert!(
        b.get("access_token").is_none() && b.get("refresh_token").is_none(),
        "no tokens before the second step: {b}"
    );
    assert!(r.headers.get("set-cookie").is_none(), "no session cookie before the second step");
    b
}

async fn second_step(app: &TestApp, mfa_token: &str, code: &str) -> Resp {
    app.post("/api/v1/auth/mfa", "", json!({"mfa_token": mfa_token, "code": code})).await
}

#[tokio::test]
async fn totp_and_recovery_codes_guard_the_login() {
    apt_install(&[OATHTOOL], &["oathtool"]).await;
    let app = spawn_app().await;
    app.create_user("mia", json!({})).await;
    let t = app.login("mia", PASSWORD).await;
    let (secret, recovery) = enrol(&app, &t).await;
    let status = app.get("/api/v1/users/mia/mfa", &app.admin_token).await.expect(200).json();
    assert_eq!(
        status,
        json!({"enabled": true, "totp": "confirmed", "recovery_codes_left": 10, "passkeys": [], "passkeys_available": false})
    );
    // A second enrolment while one is confirmed is refused and changes nothing.
    app.post("/api/v1/users/me/mfa/totp", &t, json!(null)).await.expect(409);
    // Nobody enrols for someone else, administrators included.
    app.post("/api/v1/users/mia/mfa/totp", &app.admin_token, json!(null)).await.expect(403);

    // The first step gives no tokens; the code the enrolment used is spent.
    let ch = first_step(&app, "mia").await;
    assert_eq!(ch["methods"], json!(["totp", "recovery_code"]));
    let mfa_token = ch["mfa_token"].as_str().expect("mfa_token");
    away_from_step_edge().await;
    let e = second_step(&app, mfa_token, &code(&secret, 0)).await.expect(401).json();
    assert_eq!(e["error"]["code"], "invalid_code", "a code is good once");
    // Two steps away is outside the window.
    let e = second_step(&app, mfa_token, &code(&secret, 65)).await.expect(401).json();
    assert_eq!(e["error"]["code"], "invalid_code", "two steps ahead");
    // The next step's code is inside (one step of drift either side).
    let next = code(&secret, 30);
    let tokens = second_step(&app, mfa_token, &next).await.expect(200).json();
    let access = tokens["access_token"].as_str().expect("access token");
    assert_eq!(app.get("/api/v1/users/me", access).await.expect(200).json()["username"], "mia");
    // The mfa_token is spent, and the code too.
    assert_eq!(second_step(&app, mfa_token, &next).await.expect(401).json()["error"]["code"], "invalid_mfa_token");
    let again = first_step(&app, "mia").await;
    let e = second_step(&app, again["mfa_token"].as_str().expect("t"), &next).await.expect(401).json();
    assert_eq!(e["error"]["code"], "invalid_code", "a replayed code in its window");

    // A recovery code works once, in any spelling; its use is logged.
    let r = second_step(&app, again["mfa_token"].as_str().expect("t"), &recovery[0].to_uppercase()).await.expect(200);
    assert!(r.json()["access_token"].is_string());
    let third = first_step(&app, "mia").await;
    let e = second_step(&app, third["mfa_token"].as_str().expect("t"), &recovery[0]).await.expect(401).json();
    assert_eq!(e["error"]["code"], "invalid_code");
    assert_eq!(app.get("/api/v1/users/me/mfa", &t).await.expect(200).json()["recovery_codes_left"], 9);
    let mia = app.get("/api/v1/users/mia", &app.admin_token).await.expect(200).json();
    let actions = app.log_actions(mia["id"].as_str().expect("id")).await;
    for a in
        ["mfa.totp_enrolled", "mfa.recovery_codes_generated", "mfa.challenged", "mfa.failed", "mfa.recovery_code_used"]
    {
        assert!(actions.iter().any(|x| x == a), "{a} missing from {actions:?}");
    }
    let log: String = sqlx::query_scalar("SELECT string_agg(changes::text, ' ') FROM change_log")
        .fetch_one(&app.pool)
        .await
        .expect("log");
    for secret_text in recovery.iter().map(String::as_str).chain([secret.as_str(), next.as_str()]) {
        assert!(!log.contains(secret_text), "the change log holds a secret or code");
    }
    // Stored: the secret sealed, the recovery codes hashed.
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT secret_sealed FROM mfa_totp").fetch_one(&app.pool).await.expect("row");
    assert!(!String::from_utf8_lossy(&stored).contains(&secret));

    // New recovery codes: the old ones die.
    let fresh = app.post("/api/v1/users/me/mfa/recovery-codes", &t, json!(null)).await.expect(201).json();
    let fresh: Vec<String> =
        fresh["recovery_codes"].as_array().expect("codes").iter().map(|c| c.as_str().expect("c").to_string()).collect();
    let step = first_step(&app, "mia").await;
    let e = second_step(&app, step["mfa_token"].as_str().expect("t"), &recovery[1]).await.expect(401).json();
    assert_eq!(e["error"]["code"], "invalid_code", "an old recovery code after regeneration");
    second_step(&app, step["mfa_token"].as_str().expect("t"), &fresh[0]).await.expect(200);

    // Clients that cannot take a second step: Basic and XNAT's login refuse
    // the password; an API key keeps working for scripts.
    let basic =
        app.client.get(app.url("/api/v1/users/me")).basic_auth("mia", Some(PASSWORD)).send().await.expect("basic");
    assert_eq!(basic.status(), 401);
    assert_eq!(basic.json::<Value>().await.expect("json")["error"]["code"], "mfa_required");
    let xnat = app
        .client
        .put(app.url("/data/services/auth"))
        .form(&[("username", "mia"), ("password", PASSWORD)])
        .send()
        .await
        .expect("xnat");
    assert_eq!(xnat.status(), 401);
    let key = app.post("/api/v1/users/me/api-keys", &t, json!({"name": "script"})).await.expect(201).json();
    let key = key["key"].as_str().expect("key");
    app.get("/api/v1/users/me", key).await.expect(200);
    let via_basic = app.client.get(app.url("/api/v1/users/me")).basic_auth("mia", Some(key)).send().await.expect("b");
    assert_eq!(via_basic.status(), 200, "an API key as the Basic password");

    // An administrator resets the factors: every session ends, the password alone logs in again.
    app.delete("/api/v1/users/mia/mfa", &app.admin_token).await.expect(204);
    app.get("/api/v1/users/me", &t).await.expect(401);
    let b =
        app.post("/api/v1/auth/login", "", json!({"username": "mia", "password": PASSWORD})).await.expect(200).json();
    assert!(b["access_token"].is_string() && b.get("mfa_required").is_none(), "{b}");
    assert_eq!(app.count("SELECT count(*) FROM mfa_recovery_codes").await, 0);
}

#[tokio::test]
async fn wrong_codes_lock_the_account_like_wrong_passwords() {
    apt_install(&[OATHTOOL], &["oathtool"]).await;
    let app = spawn_app_with(|s| s.auth.max_failed_logins = 3).await;
    app.create_user("lou", json!({})).await;
    let t = app.login("lou", PASSWORD).await;
    let (secret, _) = enrol(&app, &t).await;
    let ch = first_step(&app, "lou").await;
    let token = ch["mfa_token"].as_str().expect("t");
    for _ in 0..3 {
        assert_eq!(second_step(&app, token, "000000").await.expect(401).json()["error"]["code"], "invalid_code");
    }
    // Locked: even the right code, and the right password, wait.
    away_from_step_edge().await;
    let r = second_step(&app, token, &code(&secret, 30)).await.expect(429);
    assert_eq!(r.json()["error"]["code"], "account_locked");
    let r = app.post("/api/v1/auth/login", "", json!({"username": "lou", "password": PASSWORD})).await.expect(429);
    assert_eq!(r.json()["error"]["code"], "account_locked");
    // Parallel guesses are counted before they are checked: no more than the limit get through.
    app.post("/api/v1/users/lou/unlock", &app.admin_token, json!(null)).await.expect(200);
    let ch = first_step(&app, "lou").await;
    let token = ch["mfa_token"].as_str().expect("t").to_string();
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (client, url, token) = (app.client.clone(), app.url("/api/v1/auth/mfa"), token.clone());
        guesses.spawn(async move {
            let body = json!({"mfa_token": token, "code": format!("{:06}", 100_000 + i)});
            client.post(url).json(&body).send().await.expect("guess").status().as_u16()
        });
    }
    let statuses: Vec<u16> = guesses.join_all().await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(checked <= 3, "{checked} guesses were checked: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
}

#[tokio::test]
async fn the_login_page_asks_for_the_second_factor() {
    apt_install(&[OATHTOOL], &["oathtool"]).await;
    let app = spawn_app().await;
    app.create_user("pia", json!({})).await;
    let t = app.login("pia", PASSWORD).await;
    let (secret, _) = enrol(&app, &t).await;
    let b =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().expect("c");
    let html = b.get(app.url("/login")).send().await.expect("GET").text().await.expect("html");
    let at = html.find("name=\"csrf\" value=\"").expect("csrf") + 19;
    let csrf = html[at..at + html[at..].find('"').expect("end")].to_string();
    let r = b
        .post(app.url("/login"))
        .form(&[("csrf", csrf.as_str()), ("username", "pia"), ("password", PASSWORD), ("return_to", "/account")])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200, "the password is only the first step");
    let page = r.text().await.expect("html");
    assert!(page.contains("id=\"login-mfa\""), "{page}");
    let at = page.find("name=\"mfa_token\" value=\"").expect("mfa_token") + 24;
    let mfa_token = page[at..at + page[at..].find('"').expect("end")].to_string();
    // Not logged in yet.
    assert_eq!(b.get(app.url("/account")).send().await.expect("GET").status(), 303);
    let wrong = b
        .post(app.url("/login/mfa"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("mfa_token", mfa_token.as_str()),
            ("code", "123456"),
            ("return_to", "/account"),
        ])
        .send()
        .await
        .expect("POST");
    assert_eq!(wrong.status(), 401);
    assert!(wrong.text().await.expect("html").contains("wrong"));
    away_from_step_edge().await;
    let ok = b
        .post(app.url("/login/mfa"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("mfa_token", mfa_token.as_str()),
            ("code", code(&secret, 30).as_str()),
            ("return_to", "/account"),
        ])
        .send()
        .await
        .expect("POST");
    assert_eq!(ok.status(), 303);
    assert_eq!(ok.headers()[LOCATION], "/account");
    assert_eq!(b.get(app.url("/account")).send().await.expect("GET").status(), 200, "logged in after the second step");

    // The OpenID Provider reports the factors of the session: amr and acr.
    let client = app
        .post(
            "/api/v1/oauth/clients",
            &app.admin_token,
            json!({"name": "App", "redirect_uris": ["http://127.0.0.1:9/cb"], "first_party": true}),
        )
        .await
        .expect(201)
        .json();
    let (id, secret) = (client["client_id"].as_str().expect("id"), client["client_secret"].as_str().expect("secret"));
    let verifier = "a-long-enough-pkce-verifier-for-the-mfa-test-0123456789";
    use base64::Engine;
    use sha2::Digest;
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let q = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", id),
        ("redirect_uri", "http://127.0.0.1:9/cb"),
        ("scope", "openid"),
        ("state", "s"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ])
    .expect("query");
    let r = b.get(app.url(&format!("/oauth2/authorize?{q}"))).send().await.expect("authorize");
    assert_eq!(r.status(), 303);
    let loc = url::Url::parse(r.headers()[LOCATION].to_str().expect("loc")).expect("url");
    let code = loc.query_pairs().find(|(k, _)| k == "code").expect("code").1.to_string();
    let t: Value = app
        .client
        .post(app.url("/oauth2/token"))
        .basic_auth(id, Some(secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let payload = t["id_token"].as_str().expect("id_token").split('.').nth(1).expect("payload").to_string();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("b64"))
            .expect("json");
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));
    assert_eq!(claims["acr"], "aal2");
}

/// `mfa.required_for_roles`: a holder without a factor may only enrol at
/// first; `mfa.step_up_secs`: sensitive operations of a user with a factor
/// need it used recently in the session.
#[tokio::test]
async fn policy_forces_enrolment_and_step_up_guards_sensitive_operations() {
    apt_install(&[OATHTOOL], &["oathtool"]).await;
    let app = spawn_app_with(|s| {
        s.mfa.required_for_roles = vec!["UserManager".into()];
        s.mfa.step_up_secs = 60;
    })
    .await;
    app.create_user("ula", json!({"roles": ["UserManager"]})).await;
    app.create_user("vic", json!({})).await;
    let r = app.post("/api/v1/auth/login", "", json!({"username": "ula", "password": PASSWORD})).await.expect(200);
    let b = r.json();
    assert_eq!(b["mfa_enrollment_required"], true, "{b}");
    let t = b["access_token"].as_str().expect("token").to_string();
    // Only the enrolment (and logging out) is open to this session.
    let e = app.get("/api/v1/users", &t).await.expect(403).json();
    assert_eq!(e["error"]["code"], "mfa_enrollment_required");
    app.get("/api/v1/users/me", &t).await.expect(403);
    app.get("/api/v1/users/me/mfa", &t).await.expect(200);
    // A password alone where no enrolment can follow is refused.
    let basic = app.client.get(app.url("/api/v1/users/me")).basic_auth("ula", Some(PASSWORD)).send().await.expect("b");
    assert_eq!(basic.status(), 401);
    assert_eq!(basic.json::<Value>().await.expect("json")["error"]["code"], "mfa_enrollment_required");
    let (secret, _) = enrol(&app, &t).await;
    // Enrolled: the same session is a full one.
    app.get("/api/v1/users", &t).await.expect(200);

    // Step-up: the factor used at enrolment is recent; an hour later it is not.
    app.put("/api/v1/users/vic/roles/UserManager", &t, json!(null)).await.expect(200);
    sqlx::query("UPDATE sessions SET mfa_at = now() - interval '1 hour' WHERE mfa_at IS NOT NULL")
        .execute(&app.pool)
        .await
        .expect("age the factor");
    app.settle_auth_cache().await;
    for (what, r) in [
        ("grant a role", app.put("/api/v1/users/vic/roles/DataEditor", &t, json!(null)).await),
        ("create an API key", app.post("/api/v1/users/me/api-keys", &t, json!({"name": "k"})).await),
        ("remove the factor", app.delete("/api/v1/users/me/mfa/totp", &t).await),
        (
            "register a client",
            app.post("/api/v1/oauth/clients", &t, json!({"name": "x", "redirect_uris": ["https://x.example/cb"]}))
                .await,
        ),
    ] {
        let status = r.status.as_u16();
        assert!(status == 403, "{what}: {status} {}", r.text);
        if what != "register a client" {
            assert_eq!(r.json()["error"]["code"], "mfa_step_up_required", "{what}");
        }
    }
    let vic = app.get("/api/v1/users/vic", &app.admin_token).await.expect(200).json();
    assert!(!vic["roles"].as_array().expect("roles").iter().any(|r| r == "DataEditor"), "nothing was granted");
    assert_eq!(app.count("SELECT count(*) FROM api_keys").await, 0, "no key was made");
    let e = app.post("/api/v1/auth/mfa/step-up", &t, json!({"code": "000000"})).await.expect(401).json();
    assert_eq!(e["error"]["code"], "invalid_code");
    away_from_step_edge().await;
    app.post("/api/v1/auth/mfa/step-up", &t, json!({"code": code(&secret, 30)})).await.expect(204);
    app.put("/api/v1/users/vic/roles/DataEditor", &t, json!(null)).await.expect(200);
    app.post("/api/v1/users/me/api-keys", &t, json!({"name": "k"})).await.expect(201);
    // An administrator without a factor is not held by either rule.
    app.post("/api/v1/users/admin/api-keys", &app.admin_token, json!({"name": "k2"})).await.expect(201);
}

/// Confirming an enrolment is a code check like any other: counted toward
/// the lockout, logged, and only with a recent login (never an API key). A
/// right password in between (a `current_password` check) does not clear
/// the second-factor failures.
#[tokio::test]
async fn confirming_is_counted_and_a_password_does_not_reset_code_failures() {
    apt_install(&[OATHTOOL], &["oathtool"]).await;
    let app = spawn_app_with(|s| s.auth.max_failed_logins = 3).await;
    app.create_user("cy", json!({})).await;
    let t = app.login("cy", PASSWORD).await;
    let key = app.post("/api/v1/users/me/api-keys", &t, json!({"name": "k"})).await.expect(201).json();
    let key = key["key"].as_str().expect("key").to_string();
    app.post("/api/v1/users/me/mfa/totp", &t, json!(null)).await.expect(201);
    let e = app.post("/api/v1/users/me/mfa/totp/confirm", &key, json!({"code": "123456"})).await.expect(403).json();
    assert_eq!(e["error"]["code"], "reauthentication_required", "an API key alone confirms nothing");
    for _ in 0..3 {
        app.post("/api/v1/users/me/mfa/totp/confirm", &t, json!({"code": "000000"})).await.expect(401);
    }
    let e = app.post("/api/v1/users/me/mfa/totp/confirm", &t, json!({"code": "000001"})).await.expect(429).json();
    assert_eq!(e["error"]["code"], "account_locked");
    assert_eq!(app.get("/api/v1/users/me/mfa", &t).await.expect(200).json()["totp"], "pending");
    let cy = app.get("/api/v1/users/cy", &app.admin_token).await.expect(200).json();
    let failed = app.log_actions(cy["id"].as_str().expect("id")).await.iter().filter(|a| *a == "mfa.failed").count();
    assert_eq!(failed, 3, "each wrong confirmation is logged");

    // Enrolled (after an unlock), then: two wrong codes, a right password, one more wrong code: locked.
    app.post("/api/v1/users/cy/unlock", &app.admin_token, json!(null)).await.expect(200);
    let (secret, _) = enrol(&app, &t).await;
    let ch = first_step(&app, "cy").await;
    let token = ch["mfa_token"].as_str().expect("t");
    for _ in 0..2 {
        second_step(&app, token, "000000").await.expect(401);
    }
    let r = app.post("/api/v1/users/me/api-keys", &t, json!({"name": "k2", "current_password": PASSWORD})).await;
    r.expect(201);
    second_step(&app, token, "000000").await.expect(401);
    away_from_step_edge().await;
    let e = second_step(&app, token, &code(&secret, 30)).await.expect(429).json();
    assert_eq!(e["error"]["code"], "account_locked", "the third wrong code locked the account");
}

/// Passkeys without a browser: what a forged or replayed answer gets, the
/// bindings of each ceremony, and a server with no domain name. (The real
/// ceremonies run in Chromium: `web_console::passkeys_in_a_real_browser`.)
#[tokio::test]
async fn passkey_refusals_without_a_browser() {
    use base64::Engine as _;
    apt_install(&[OATHTOOL], &["oathtool"]).await;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);

    // An IP address as the public URL: no relying-party id, no passkeys.
    let plain = spawn_app().await;
    plain.create_user("pia", json!({})).await;
    let t = plain.login("pia", PASSWORD).await;
    let r = plain.post("/api/v1/auth/passkey/options", "", json!(null)).await.expect(409);
    assert_eq!(r.json()["error"]["code"], "passkeys_unavailable");
    assert_eq!(plain.get("/api/v1/users/me/mfa", &t).await.expect(200).json()["passkeys_available"], false);
    plain.post("/api/v1/users/me/mfa/passkeys/options", &t, json!(null)).await.expect(409);

    let port = crate::web_console::free_port();
    let origin = format!("http://localhost:{port}");
    let public = origin.clone();
    let app = spawn_app_with(move |s| {
        s.bind = format!("127.0.0.1:{port}").parse().expect("addr");
        s.public_url = public;
    })
    .await;
    let ida = app.create_user("ida", json!({})).await;
    let ida_id: uuid::Uuid = ida["id"].as_str().expect("id").parse().expect("uuid");
    app.create_user("otto", json!({})).await;
    let t = app.login("ida", PASSWORD).await;

    // Registration: one's own only; a garbage answer stores nothing.
    let o = app.post("/api/v1/users/me/mfa/passkeys/options", &t, json!(null)).await.expect(200).json();
    assert_eq!(o["publicKey"]["rp"]["id"], "localhost");
    assert_eq!(o["publicKey"]["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(o["publicKey"]["authenticatorSelection"]["userVerification"], "required");
    assert_eq!(o["publicKey"]["user"]["id"], b64(ida_id.as_bytes()), "the user handle is the user's id");
    app.post("/api/v1/users/otto/mfa/passkeys/options", &t, json!(null)).await.expect(403);
    let r = app.post("/api/v1/users/me/mfa/passkeys", &t, json!({"name": "x", "credential": {"id": "AAAA"}})).await;
    assert_eq!(r.expect(422).json()["error"]["code"], "invalid_passkey");
    let r = app.post("/api/v1/users/me/mfa/passkeys", &t, json!({"name": " ", "credential": {}})).await;
    assert_eq!(r.expect(422).json()["error"]["code"], "invalid_passkey_name");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM mfa_passkeys").fetch_one(&app.pool).await.expect("n");
    assert_eq!(rows, 0);

    // A forged login answer for a real challenge: refused, the ceremony spent.
    let o = app.post("/api/v1/auth/passkey/options", "", json!(null)).await.expect(200).json();
    assert_eq!(o["publicKey"]["userVerification"], "required");
    assert_eq!(o["publicKey"]["allowCredentials"], json!([]), "username-less: no credential list");
    let challenge = o["publicKey"]["challenge"].as_str().expect("challenge");
    let client_data = json!({"type": "webauthn.get", "challenge": challenge, "origin": origin, "crossOrigin": false});
    let mut auth_data = {
        use sha2::Digest as _;
        sha2::Sha256::digest(b"localhost").to_vec()
    };
    auth_data.extend([0x05, 0, 0, 0, 7]);
    let forged = json!({"credential": {
        "id": b64(&[7; 16]), "rawId": b64(&[7; 16]), "type": "public-key",
        "response": {
            "clientDataJSON": b64(client_data.to_string().as_bytes()),
            "authenticatorData": b64(&auth_data),
            "signature": b64(&[1; 70]),
            "userHandle": b64(ida_id.as_bytes()),
        },
        "clientExtensionResults": {}, "authenticatorAttachment": "platform",
    }});
    let sessions_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sessions").fetch_one(&app.pool).await.expect("n");
    for _ in 0..2 {
        let r = app.post("/api/v1/auth/passkey", "", forged.clone()).await.expect(401);
        assert_eq!(r.json()["error"]["code"], "invalid_passkey");
    }
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM webauthn_ceremonies WHERE purpose = 'login'")
        .fetch_one(&app.pool)
        .await
        .expect("n");
    assert_eq!(left, 0, "the ceremony is used up by the first try");
    let r = app.post("/api/v1/auth/passkey", "", json!({"credential": {"x": 1}})).await.expect(401);
    assert_eq!(r.json()["error"]["code"], "invalid_passkey");
    let sessions_after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sessions").fetch_one(&app.pool).await.expect("n");
    assert_eq!(sessions_before, sessions_after, "no session from a refused passkey");

    // The second step: a passkey answer counts as an attempt like a code;
    // exactly one of code and passkey.
    enrol(&app, &t).await;
    let first = first_step(&app, "ida").await;
    assert_eq!(first["methods"], json!(["totp", "recovery_code"]), "no passkey method without a passkey");
    let token = first["mfa_token"].as_str().expect("mfa_token");
    let r = app.post("/api/v1/auth/mfa/passkey/options", "", json!({"mfa_token": "nope"})).await.expect(401);
    assert_eq!(r.json()["error"]["code"], "invalid_mfa_token");
    let r = app.post("/api/v1/auth/mfa/passkey/options", "", json!({"mfa_token": token})).await.expect(409);
    assert_eq!(r.json()["error"]["code"], "no_passkey", "no ceremony for a user without a passkey");
    let r = app.post("/api/v1/auth/mfa", "", json!({"mfa_token": token, "code": "123456", "passkey": {}})).await;
    assert_eq!(r.expect(422).json()["error"]["code"], "code_or_passkey");
    let r = app.post("/api/v1/auth/mfa", "", json!({"mfa_token": token, "passkey": forged["credential"]})).await;
    assert_eq!(r.expect(401).json()["error"]["code"], "invalid_passkey");
    let failures: i32 = sqlx::query_scalar("SELECT mfa_failed_attempts FROM users WHERE id = $1")
        .bind(ida_id)
        .fetch_one(&app.pool)
        .await
        .expect("n");
    assert_eq!(failures, 1, "the refused passkey counted toward the lockout");
}

/// `mfa.required_for_roles` in a browser: the login page sends a holder
/// without a factor to the enrolment page, and nothing else opens until a
/// factor is confirmed there (the page's own form, a code from oathtool).
#[tokio::test]
async fn the_pages_force_enrolment_where_the_policy_requires_it() {
    apt_install(&[OATHTOOL], &["oathtool"]).await;
    let app = spawn_app_with(|s| s.mfa.required_for_roles = vec!["UserManager".into()]).await;
    app.create_user("uma", json!({"roles": ["UserManager"]})).await;
    let b =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().expect("c");
    let csrf_of = |html: &str| {
        let at = html.find("name=\"csrf\" value=\"").expect("csrf") + 19;
        html[at..at + html[at..].find('"').expect("end")].to_string()
    };
    let html = b.get(app.url("/login")).send().await.expect("GET").text().await.expect("html");
    let csrf = csrf_of(&html);
    let r = b
        .post(app.url("/login"))
        .form(&[("csrf", csrf.as_str()), ("username", "uma"), ("password", PASSWORD), ("return_to", "/admin/users")])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/account/mfa", "the login goes to the enrolment, not to return_to");
    for page in ["/account", "/admin/users", "/account/api-keys"] {
        assert_eq!(b.get(app.url(page)).send().await.expect("GET").status(), 403, "{page} before enrolling");
    }
    let page = b.get(app.url("/account/mfa")).send().await.expect("GET");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    let csrf = csrf_of(&html);
    assert!(html.contains("id=\"totp-begin\""), "the enrolment is offered");
    let started = b.post(app.url("/account/mfa/totp")).form(&[("csrf", csrf.as_str())]).send().await.expect("POST");
    assert_eq!(started.status(), 200);
    let html = started.text().await.expect("html");
    assert!(html.contains("<svg") && html.contains("id=\"totp-qr\""), "the QR code is on the page");
    let at = html.find("id=\"totp-secret\">").expect("secret") + 17;
    let secret = html[at..at + html[at..].find('<').expect("end")].to_string();
    away_from_step_edge().await;
    let confirmed = b
        .post(app.url("/account/mfa/totp/confirm"))
        .form(&[("csrf", csrf.as_str()), ("code", code(&secret, 0).as_str())])
        .send()
        .await
        .expect("POST");
    assert_eq!(confirmed.status(), 200);
    let html = confirmed.text().await.expect("html");
    assert_eq!(html.matches("<li><code>").count(), 10, "ten recovery codes shown once");
    assert_eq!(b.get(app.url("/admin/users")).send().await.expect("GET").status(), 200, "a full session now");
    let status = app.get("/api/v1/users/uma/mfa", &app.admin_token).await.expect(200).json();
    assert_eq!((status["enabled"].clone(), status["totp"].clone()), (json!(true), json!("confirmed")));
}
