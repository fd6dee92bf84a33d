use std::sync::OnceLock;

use outbox_core::cluster::{Options, PrivateCluster};
use tokio_postgres::NoTls;

enum Server {
    External(String),
    Private(PrivateCluster),
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

/// An admin URL of the test server: `DATABASE_URL`, or a private cluster started on first use.
pub fn admin_url() -> String {
    let server = SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Ok(Server::External(url)),
        _ => PrivateCluster::start(&Options { unsafe_fast: true })
            .map(Server::Private)
            .map_err(|e| e.to_string()),
    });
    match server {
        Ok(Server::External(url)) => url.clone(),
        Ok(Server::Private(cluster)) => cluster.url("postgres"),
        Err(e) => panic!("no Postgres for the tests: {e}"),
    }
}

/// A fresh, migrated database, dropped when this is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let db = TestDb::empty().await;
        let mut client = db.connect().await;
        outbox_core::migrate(&mut client)
            .await
            .expect("migrating the test database");
        db
    }

    /// A fresh database without the outbox schema.
    pub async fn empty() -> TestDb {
        let admin = admin_url();
        let name = format!("outbox_test_{}", uuid::Uuid::new_v4().simple());
        let (client, conn) = tokio_postgres::connect(&admin, NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test server: {e}"));
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("creating the test database");
        let url = outbox_core::db::with_database(&admin, &name);
        TestDb { name, url, admin }
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.name));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop needs no async context: use a thread with its own small runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
