//! Test databases for both backends. SQLite lives in a temporary directory; PostgreSQL tests
//! each get a fresh database on the server named by KSMITH_TEST_PG_URL (started by
//! scripts/test-services.sh) and drop it afterwards.
#![allow(dead_code)]

pub mod fixture;
pub mod python;

use std::sync::atomic::{AtomicU32, Ordering};

pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

pub fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/nested/ksmith.db", dir.path().display());
    TestDb {
        url,
        _dir: Some(dir),
        pg: None,
    }
}

/// A fresh PostgreSQL database, or None (with a visible message) when no server is configured
/// outside CI. In CI (CI=true) a missing server fails the test: it must never pass silently.
pub fn postgres(test: &str) -> Option<TestDb> {
    let admin = match std::env::var("KSMITH_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("{test}: KSMITH_TEST_PG_URL is not set in CI; `source scripts/test-services.sh` first");
            }
            eprintln!("SKIPPED {test} on PostgreSQL: KSMITH_TEST_PG_URL is not set (source scripts/test-services.sh)");
            return None;
        }
    };
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "ksmith_t_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos()
    );
    admin_exec(&admin, &format!("CREATE DATABASE {name}"));
    let base = admin.rsplit_once('/').expect("admin URL has a database").0;
    Some(TestDb {
        url: format!("{base}/{name}"),
        _dir: None,
        pg: Some((admin, name)),
    })
}

fn admin_exec(admin: &str, sql: &str) {
    use sqlx::Connection;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sql = sql.to_string();
    rt.block_on(async {
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to test PostgreSQL {admin}: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
    });
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.pg {
            if !std::thread::panicking() {
                admin_exec(
                    admin,
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                );
            }
        }
    }
}

/// Defines `NAME_sqlite` and `NAME_postgres` tests running `body(url)` on each backend.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:path) => {
        mod $name {
            #[test]
            fn sqlite() {
                let db = $crate::common::sqlite();
                $body(&db.url);
            }
            #[test]
            fn postgres() {
                if let Some(db) = $crate::common::postgres(concat!(stringify!($name), "::postgres"))
                {
                    $body(&db.url);
                }
            }
        }
    };
}
