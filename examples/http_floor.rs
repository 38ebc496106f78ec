//! The floor for authenticated reads: a bare actix-web server (no auth, no
//! database, no middleware) that answers every GET with one fixed JSON body.
//! `bench/run` gives it the very body registrar answers `GET
//! /api/v1/users/me` with, and runs it with the same wrk settings and the
//! same number of HTTP workers, so the ratio of a registrar row to this one
//! is what registrar's own per-request work costs.
//!
//! `cargo run --release --example http_floor -- <port> <body-file> [workers]`

use actix_web::{http::header, web, App, HttpResponse, HttpServer};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(8099);
    let body: &'static [u8] = match args.next() {
        Some(path) => std::fs::read(path)?.leak(),
        None => br#"{"username":"bench","email":"bench@example.org"}"#,
    };
    let workers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or_else(num_cpus::get);
    HttpServer::new(move || {
        App::new().default_service(web::to(move || async move {
            HttpResponse::Ok().insert_header((header::CONTENT_TYPE, "application/json")).body(body)
        }))
    })
    .workers(workers)
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
