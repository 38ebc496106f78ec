//! The floor for password logins: raw argon2id verifications per second with
//! the configured parameters, at the server's hashing parallelism, through
//! the very function logins use (`Hasher::verify`).
//!
//! `cargo run --release --example argon2_floor -- [seconds] [parallelism]`
//! prints `{"verifications_per_sec": .., "parallelism": .., "memory_kib": ..}`.

use std::time::{Duration, Instant};

use registrar::auth::password::Hasher;
use registrar::config::Settings;
use secrecy::SecretString;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let settings = Settings::load()?;
    let parallel: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| settings.hash_workers());
    let hasher = Hasher::new(&settings.password, parallel)?;
    let stored = hasher
        .hash(SecretString::from("bench password for the floor".to_string()))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let (h, s) = (hasher.clone(), stored.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let ok =
                    h.verify(SecretString::from("bench password for the floor".to_string()), Some(s.clone())).await;
                assert!(matches!(ok, Ok(registrar::auth::password::Verified::Yes)));
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"verifications_per_sec\": {:.2}, \"parallelism\": {parallel}, \"memory_kib\": {}, \"iterations\": {}}}",
        total as f64 / secs,
        settings.password.memory_kib,
        settings.password.iterations
    );
    Ok(())
}
