use wf_testkit::{rabbitmqctl, Database, Vhost};

/// A connection to the server's own `postgres` database.
async fn admin() -> tokio_postgres::Client {
    let url = format!("{}/postgres", wf_testkit::pg_server_url());
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

async fn exists(name: &str) -> bool {
    admin()
        .await
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap()
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_exists_while_its_value_does_even_with_connections_open() {
    let db = Database::create().await;
    let name = db.name.clone();
    assert!(name.starts_with("wf_test_"), "{name}");
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE t (x int)")
        .await
        .unwrap();
    assert!(exists(&name).await);
    drop(db);
    assert!(!exists(&name).await, "{name} outlived its value");
    assert!(client.batch_execute("SELECT 1").await.is_err());

    let reserved = Database::reserve();
    let name = reserved.name.clone();
    assert!(!exists(&name).await, "a reserved name is not created");
    admin()
        .await
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    drop(reserved);
    assert!(!exists(&name).await, "what the test created is dropped too");
}

fn vhosts() -> Vec<String> {
    rabbitmqctl(&["list_vhosts", "--no-table-headers"])
        .lines()
        .map(|l| l.trim().to_owned())
        .collect()
}

#[test]
fn a_vhost_exists_while_its_value_does() {
    let vhost = Vhost::create();
    let name = vhost.name.clone();
    assert_eq!(
        vhost.url(),
        format!("amqp://guest:guest@127.0.0.1:5672/{name}")
    );
    assert!(vhosts().contains(&name));
    let perms = rabbitmqctl(&["list_permissions", "-p", &name, "--no-table-headers"]);
    assert!(
        perms
            .lines()
            .any(|l| l.split_whitespace().eq(["guest", ".*", ".*", ".*"])),
        "{perms}"
    );
    assert!(vhost.queue_column("type").is_empty());
    drop(vhost);
    assert!(!vhosts().contains(&name), "{name} outlived its value");
}
