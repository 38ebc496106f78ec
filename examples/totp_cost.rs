//! What a second factor adds to a login: the CPU time of one TOTP check
//! through the very function logins use (`service::mfa::totp_step`: open the
//! AES-256-GCM-sealed secret, compute the codes of three time steps, compare
//! in constant time). The database work of the second step (the challenge,
//! the step's single use, the session) is that of any login statement.
//!
//! `cargo run --release --example totp_cost -- [iterations]` prints
//! `{"checks": .., "micros_per_check": ..}`.

use std::time::Instant;

use registrar::auth::tokens::Keys;
use registrar::service::mfa;

fn main() -> anyhow::Result<()> {
    let n: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let keys = Keys::new(&[7u8; 32], vec![9u8; 32], 900);
    let secret = [42u8; 20];
    let sealed = mfa::seal_secret(&keys, &secret).map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = 1_780_000_000u64;
    let code = mfa::current_code(&secret, now).map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    for _ in 0..n {
        let step = mfa::totp_step(&keys, &sealed, "registrar", "bench", std::hint::black_box(&code), now)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(step, Some((now / 30) as i64));
    }
    let micros = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("{{\"checks\": {n}, \"micros_per_check\": {micros:.2}}}");
    Ok(())
}
