//! A Postgres database per test: tests run in parallel against the one server without
//! seeing each other's rows, and nothing is left behind, also when a test panics.

use crate::unique;

/// The Postgres server tests use, without a database: `WF_TEST_PG_URL`, by default the
/// local one `make services` starts.
pub fn pg_server_url() -> String {
    std::env::var("WF_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// A uniquely named database (`wf_test_…`), dropped (`WITH (FORCE)`, so open connections
/// do not keep it) when the value is.
#[derive(Debug)]
pub struct Database {
    pub name: String,
}

impl Database {
    /// Creates an empty database on the server.
    ///
    /// # Panics
    /// When the server is unreachable or refuses: the test cannot run without it.
    pub async fn create() -> Database {
        let db = Database::reserve();
        let admin = connect(&admin_url())
            .await
            .unwrap_or_else(|e| panic!("connecting to Postgres at {}: {e}", pg_server_url()));
        admin
            .batch_execute(&format!("CREATE DATABASE \"{}\"", db.name))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {}: {e}", db.name));
        db
    }

    /// A name only: nothing is created, for tests of code that creates its database
    /// itself. Whatever creates it, it is still dropped with the value.
    pub fn reserve() -> Database {
        Database {
            name: unique("wf_test"),
        }
    }

    pub fn url(&self) -> String {
        format!("{}/{}", pg_server_url(), self.name)
    }

    /// A plain connection to the database, to look at (or lock) tables behind the back of
    /// the code under test.
    ///
    /// # Panics
    /// When it cannot connect.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.url())
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url()))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await, and the test's runtime may be shutting down (or be a
        // current-thread one this thread is blocking): a thread and a runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(admin) = connect(&admin_url()).await {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

fn admin_url() -> String {
    format!("{}/postgres", pg_server_url())
}

/// A connection whose driver runs on a task of its own.
async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}
