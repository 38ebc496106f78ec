//! The browser face: server-rendered pages, one more front end over the
//! service layer. Templates are askama's (`src/web/templates/`, checked at
//! compile time); the only script is `/assets/app.js` (no inline script: the
//! pages' Content-Security-Policy forbids it). Every page route is in
//! `startup::routes` with its rule, like every API route; a refusal on a
//! page path is a page (`denied`): 401 sends the browser to `/login`.
//!
//! Forms: every POST carries a `csrf` field (`Form`), a MAC of the session
//! (or, before login, of the browser's form cookie) under the server
//! pepper, on top of the guard's Sec-Fetch-Site/Origin check. Writes answer
//! 303 to a page (Post/Redirect/Get) with a message named by `?m=`.

pub mod account;
pub mod admin;
pub mod assets;
pub mod mfa;
pub mod public;

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use askama::Template;
use serde::de::DeserializeOwned;

use crate::auth::principal::Principal;
use crate::domain::Permission;
use crate::error::ApiError;
use crate::state::AppState;

/// The path prefixes served as pages.
const PAGE_PREFIXES: [&str; 7] =
    ["/login", "/logout", "/account", "/admin", "/forgot-password", "/reset-password", "/verify-email"];

/// Whether a route pattern is a page (its refusals are pages too).
pub fn is_page(pattern: &str) -> bool {
    PAGE_PREFIXES.iter().any(|p| pattern == *p || pattern.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')))
}

/// The cookie that binds a form's CSRF token to a browser before login.
const FORM_COOKIE: &str = "registrar_form";

/// The messages a redirect may ask a page to show (`?m=<key>`): a fixed
/// list, so no text travels in a URL.
const FLASH: &[(&str, &str)] = &[
    ("logged-out", "You have logged out."),
    ("saved", "Your changes have been saved."),
    ("saved-verify", "Saved. We have sent a link to your new address: follow it to verify it."),
    ("verify-sent", "We have sent a verification link to your address."),
    ("password-changed", "Your password has been changed. Your other sessions have ended."),
    ("session-revoked", "The session has ended."),
    ("others-revoked", "Every other session has ended."),
    ("key-revoked", "The API key has been revoked."),
    ("credential-revoked", "The provisioning credential has been revoked."),
    ("totp-removed", "The authenticator app has been removed."),
    ("passkey-removed", "The passkey has been removed."),
    ("stepped-up", "Confirmed: you can change your sign-in factors for the next few minutes."),
    ("unlinked", "The identity has been unlinked."),
    ("linked", "The identity has been linked."),
    ("accepted", "Invitation accepted: you are now a member of the project."),
    ("declined", "Invitation declined."),
    ("user-created", "The user has been created."),
    ("user-created-mailed", "The user has been created and mailed a link to choose a password."),
    ("user-created-verify", "The user has been created and mailed a link to verify their address."),
    ("enabled", "The account is enabled."),
    ("disabled", "The account is disabled and its sessions have ended."),
    ("verified", "The email address is marked verified."),
    ("unlocked", "The account is unlocked."),
    ("password-reset", "The password has been set; the user's sessions have ended."),
    ("reset-sent", "A password-reset link has been mailed to the user."),
    ("sessions-revoked", "Every session of the user has ended."),
    ("roles-saved", "The roles have been saved."),
    ("group-added", "Added to the group."),
    ("group-removed", "Removed from the group."),
    ("user-deleted", "The user has been deleted."),
    ("group-created", "The group has been created."),
    ("group-deleted", "The group has been deleted."),
    ("member-saved", "The member's level has been saved."),
    ("member-removed", "The member has been removed."),
    ("request-answered", "The access request has been answered."),
    ("client-deleted", "The client has been deleted; every token it held has ended."),
    ("consent-revoked", "The application's access has been withdrawn."),
];

fn flash_for(req: &HttpRequest) -> Option<&'static str> {
    let q = web::Query::<Vec<(String, String)>>::from_query(req.query_string()).ok()?;
    let key = q.iter().find(|(k, _)| k == "m")?.1.clone();
    FLASH.iter().find(|(k, _)| *k == key).map(|(_, msg)| *msg)
}

/// Who is looking at a page, for its navigation.
pub struct Who {
    pub username: String,
    pub manager: bool,
    pub admin: bool,
}

/// What every page's layout (`base.html`) needs.
pub struct Chrome {
    pub who: Option<Who>,
    pub csrf: String,
    pub flash: Option<&'static str>,
    /// Whether mail is configured (the flows that need it are offered).
    pub mail: bool,
    /// The page's own path, to mark the current navigation entry.
    pub path: String,
}

impl Chrome {
    /// The layout of a page for a logged-in caller.
    pub fn of(state: &AppState, req: &HttpRequest, caller: &Principal) -> Chrome {
        Chrome {
            who: Some(Who {
                username: caller.username.clone(),
                manager: caller.has(Permission::UserManagement),
                admin: caller.is_admin(),
            }),
            csrf: state.keys.csrf_token(&session_binding(caller)),
            flash: flash_for(req),
            mail: state.mailer.enabled(),
            path: req.path().to_string(),
        }
    }

    /// The layout of a public page, and the form cookie to set when the
    /// browser has none yet.
    pub fn public(state: &AppState, req: &HttpRequest) -> (Chrome, Option<Cookie<'static>>) {
        let (value, new) = match req.cookie(FORM_COOKIE).map(|c| c.value().to_string()).filter(|v| valid_form_cookie(v))
        {
            Some(v) => (v, None),
            None => {
                let v = crate::auth::tokens::random_secret();
                let cookie = Cookie::build(FORM_COOKIE, v.clone())
                    .path("/")
                    .http_only(true)
                    .same_site(SameSite::Lax)
                    .secure(state.settings.auth.cookie_secure)
                    .finish();
                (v, Some(cookie))
            }
        };
        let chrome = Chrome {
            who: None,
            csrf: state.keys.csrf_token(&format!("f:{value}")),
            flash: flash_for(req),
            mail: state.mailer.enabled(),
            path: req.path().to_string(),
        };
        (chrome, new)
    }

    /// Whether `href` is the current page's navigation entry.
    pub fn current(&self, href: &str) -> bool {
        self.path == href
    }
}

fn valid_form_cookie(v: &str) -> bool {
    (20..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn session_binding(caller: &Principal) -> String {
    match caller.session_id {
        Some(s) => format!("s:{s}"),
        None => format!("u:{}", caller.user_id),
    }
}

/// The CSRF check of a page POST: the token of this session (authenticated
/// routes) or of this browser's form cookie (public ones).
fn check_csrf(req: &HttpRequest, sent: &str) -> Result<(), PageError> {
    let state =
        req.app_data::<web::Data<AppState>>().ok_or_else(|| PageError::internal("application state missing"))?;
    // (The extensions' borrow ends before `cookie`, which borrows them again.)
    let session = req.extensions().get::<std::sync::Arc<Principal>>().map(|p| session_binding(p));
    let binding = session.or_else(|| {
        req.cookie(FORM_COOKIE)
            .map(|c| c.value().to_string())
            .filter(|v| valid_form_cookie(v))
            .map(|v| format!("f:{v}"))
    });
    let ok = binding
        .is_some_and(|b| crate::auth::tokens::constant_time_eq(state.keys.csrf_token(&b).as_bytes(), sent.as_bytes()));
    if ok {
        Ok(())
    } else {
        Err(csrf_refused())
    }
}

/// The refusal of a form without this browser's token, or posted from
/// another site.
fn csrf_refused() -> PageError {
    PageError {
        status: StatusCode::FORBIDDEN,
        title: "Form refused",
        message: "This form has expired or did not come from registrar. Go back, reload the page and try again.".into(),
    }
}

/// A page form (`application/x-www-form-urlencoded`, repeated names for
/// lists), accepted only with this browser's `csrf` token.
pub struct Form<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Form<T> {
    type Error = PageError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, PageError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let body = web::Bytes::from_request(&req, payload);
        Box::pin(async move {
            let urlencoded = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
            let bytes =
                body.await.map_err(|_| PageError::bad_request("The form is too large or could not be read."))?;
            if !urlencoded {
                return Err(PageError::bad_request(
                    "Send the form as a browser does (application/x-www-form-urlencoded).",
                ));
            }
            let pairs: Vec<(String, String)> = serde_html_form::from_bytes(&bytes)
                .map_err(|_| PageError::bad_request("The form could not be read."))?;
            let sent = pairs.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str()).unwrap_or("");
            check_csrf(&req, sent)?;
            let value = serde_html_form::from_bytes(&bytes)
                .map_err(|e| PageError::bad_request(format!("The form could not be read: {e}.")))?;
            Ok(Form(value))
        })
    }
}

/// A form with nothing but its `csrf` field (a button).
#[derive(serde::Deserialize)]
pub struct Button {}

/// The Content-Security-Policy of every page: nothing from another origin,
/// no inline script or style, not framed. No `form-action`: browsers apply
/// it to every redirect after a form post, and a login (or a consent) ends
/// at a client's registered redirect URI on another origin; the pages'
/// forms are written by the server, never by input.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; frame-ancestors 'none'";

/// A rendered page: HTML, never cached, under the pages' CSP.
pub fn render(_state: &AppState, status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(html) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header(("Content-Security-Policy", CSP))
            .body(html),
        Err(e) => {
            tracing::error!(error = %e, "a page could not be rendered");
            HttpResponse::InternalServerError().content_type("text/plain; charset=utf-8").body("internal error")
        }
    }
}

/// 303 to `location` (a path on this server, or a checked return URL).
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// A path segment, percent-encoded for a link or a redirect.
pub fn seg(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// A refused or failed page request, answered as a page.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
}

impl PageError {
    pub fn bad_request(message: impl Into<String>) -> PageError {
        PageError { status: StatusCode::BAD_REQUEST, title: "Bad request", message: message.into() }
    }
    fn internal(message: &str) -> PageError {
        tracing::error!(message, "page error");
        PageError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            title: "Something went wrong",
            message: "Something went wrong on the server. Try again later.".into(),
        }
    }
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> PageError {
        let title = match e.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::UNAUTHORIZED => "Log in first",
            StatusCode::CONFLICT => "Not possible now",
            StatusCode::TOO_MANY_REQUESTS => "Too many requests",
            s if s.is_server_error() => "Something went wrong",
            _ => "Not accepted",
        };
        if e.status == StatusCode::INTERNAL_SERVER_ERROR {
            // Logs the cause (with the request id), says nothing of it.
            let _ = e.error_response();
        }
        PageError { status: e.status, title, message: sentence(&e.message) }
    }
}

impl From<crate::domain::Error> for PageError {
    fn from(e: crate::domain::Error) -> PageError {
        PageError::from(ApiError::from(e))
    }
}

impl From<sqlx::Error> for PageError {
    fn from(e: sqlx::Error) -> PageError {
        PageError::from(crate::domain::Error::from(e))
    }
}

/// An error message as a sentence: capitalised, with a full stop.
pub fn sentence(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 1);
    let mut chars = message.chars();
    if let Some(first) = chars.next() {
        out.extend(first.to_uppercase());
        out.push_str(chars.as_str());
    }
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// A page that says one thing (and may offer one link).
#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub c: Chrome,
    pub title: String,
    pub message: String,
    pub link: Option<(String, String)>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    c: Chrome,
    title: &'a str,
    message: &'a str,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let page = ErrorPage {
            c: Chrome { who: None, csrf: String::new(), flash: None, mail: false, path: String::new() },
            title: self.title,
            message: &self.message,
        };
        match page.render() {
            Ok(html) => HttpResponse::build(self.status)
                .content_type("text/html; charset=utf-8")
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .insert_header(("Content-Security-Policy", CSP))
                .body(html),
            Err(_) => {
                HttpResponse::build(self.status).content_type("text/plain; charset=utf-8").body(self.message.clone())
            }
        }
    }
}

pub type PageResult = Result<HttpResponse, PageError>;

/// The guard's refusal on a page path, as a page: a visitor who is not
/// logged in (or whose session ended) goes to the login page and comes back.
pub fn denied(req: &HttpRequest, err: ApiError) -> HttpResponse {
    if err.code == "cross_site_request" {
        return csrf_refused().error_response();
    }
    if err.status == StatusCode::UNAUTHORIZED {
        let back = match req.method() {
            &actix_web::http::Method::GET => req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/account"),
            _ => "/account",
        };
        let back = if back.starts_with('/') && !back.starts_with("//") { back } else { "/account" };
        let query = serde_urlencoded::to_string([("return_to", back)]).unwrap_or_default();
        return see_other(&format!("/login?{query}"));
    }
    PageError::from(err).error_response()
}

/// The caller's own page after a change to their own account.
pub fn back_to(path: &str, message: &str) -> HttpResponse {
    see_other(&format!("{path}?m={message}"))
}
