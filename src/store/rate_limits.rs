//! The shared rate-limit state (`rate_limits`, an UNLOGGED table): one GCRA
//! step per check, atomic under the row lock of `INSERT ... ON CONFLICT`.

use sqlx::PgPool;

use crate::domain::Result;

/// One request against `key` of `bucket`: let through while the key's next
/// arrival time is at most `tolerance` ahead of now, and then moved on by
/// `interval`. Returns `None` if let through, else the seconds to wait.
pub async fn take(pool: &PgPool, bucket: &str, key: &str, interval: f64, tolerance: f64) -> Result<Option<f64>> {
    let row = sqlx::query!(
        r#"INSERT INTO rate_limits AS r (bucket, key, tat, allowed)
           VALUES ($1, $2, now() + make_interval(secs => $3), true)
           ON CONFLICT (bucket, key) DO UPDATE SET
               allowed = greatest(r.tat, now()) - now() <= make_interval(secs => $4),
               tat = CASE WHEN greatest(r.tat, now()) - now() <= make_interval(secs => $4)
                          THEN greatest(r.tat, now()) + make_interval(secs => $3)
                          ELSE r.tat END
           RETURNING allowed, extract(epoch FROM tat - now())::float8 - $4 AS "wait!""#,
        bucket,
        key,
        interval,
        tolerance,
    )
    .fetch_one(pool)
    .await?;
    Ok((!row.allowed).then_some(row.wait))
}

/// Forgets the keys whose whole budget is back (an absent key is the same).
pub async fn purge(pool: &PgPool) -> Result<u64> {
    Ok(sqlx::query!("DELETE FROM rate_limits WHERE tat < now()").execute(pool).await?.rows_affected())
}
