//! A list of broker nodes: a node down at start, and a node lost while publishes wait for
//! their confirms. Each "node" here is a TCP proxy in front of the local RabbitMQ that a
//! test can kill (every connection cut, no new ones accepted), as a dead node would be.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use wf_broker::names;

use crate::support::*;

/// A TCP proxy to the local RabbitMQ that can be killed.
struct Node {
    addr: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Node {
    async fn start() -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let tasks = tasks.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let pipe = tokio::spawn(async move {
                        if let Ok(mut broker) = TcpStream::connect("127.0.0.1:5672").await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                        }
                    });
                    tasks.lock().unwrap().push(pipe);
                }
            }
        });
        Node {
            addr,
            tasks,
            accept,
        }
    }

    /// This node's URL for `vhost`.
    fn url(&self, vhost: &Vhost) -> String {
        vhost
            .url()
            .replace("127.0.0.1:5672", &self.addr.to_string())
    }

    /// Cuts every connection and refuses new ones.
    fn kill(&self) {
        self.accept.abort();
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// A closed port: nothing listens there.
fn dead_url(vhost: &Vhost) -> String {
    vhost.url().replace("127.0.0.1:5672", "127.0.0.1:1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_at_start_is_skipped() {
    let vhost = Vhost::create();
    let list = format!("{},{}", dead_url(&vhost), vhost.url());
    // Whichever node it tries first, it ends up on the one that answers.
    for _ in 0..3 {
        let broker = connect(&list, "skip-the-dead").await;
        assert_eq!(broker.node(), 1);
        assert!(broker.is_connected());
        assert!(
            broker.redacted_url().contains("127.0.0.1:1/")
                && !broker.redacted_url().contains(":guest@"),
            "the list, passwords hidden: {}",
            broker.redacted_url()
        );
        broker.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_pending_when_a_node_dies_are_published_again_on_the_next() {
    const N: usize = 3_000;
    let vhost = Vhost::create();
    let nodes = [Node::start().await, Node::start().await];
    let list = format!("{},{}", nodes[0].url(&vhost), nodes[1].url(&vhost));
    let broker = connect_with_topology(&list, "failover").await;
    let first = broker.node();
    let publisher = broker.publisher().await.unwrap();

    // Publish N messages concurrently (confirms pipelined) and kill the node mid-way.
    let publishing = tokio::spawn({
        let publisher = publisher.clone();
        async move {
            let all = (0..N).map(|i| {
                let publisher = publisher.clone();
                async move {
                    let body = format!("{i}");
                    publisher
                        .publish(message(
                            names::DELIVERIES_EXCHANGE,
                            names::DELIVERY_ROUTING_KEY,
                            body.as_bytes(),
                        ))
                        .await
                }
            });
            futures::future::join_all(all).await
        }
    });
    let observer = connect(&vhost.url(), "observer").await;
    eventually("publishing under way", Duration::from_secs(20), || async {
        depth(&observer, names::DELIVERIES_QUEUE).await >= 200
    })
    .await;
    nodes[first].kill();
    let results = within("every publish settled", Duration::from_secs(60), publishing)
        .await
        .unwrap();
    for (i, r) in results.iter().enumerate() {
        assert!(r.is_ok(), "publish {i} failed: {r:?}");
    }
    assert_eq!(broker.node(), 1 - first, "failed over to the other node");
    assert!(broker.is_connected());

    // Every message is there (some possibly twice: their confirm was lost with the node).
    let mut seen = BTreeSet::new();
    let mut total = 0usize;
    while let Some(m) = observer.get(names::DELIVERIES_QUEUE).await.unwrap() {
        let i: usize = std::str::from_utf8(&m.body).unwrap().parse().unwrap();
        seen.insert(i);
        total += 1;
        m.ack().await.unwrap();
    }
    assert_eq!(seen.len(), N, "no message lost ({total} received)");
    println!(
        "{N} published across a node loss: {total} enqueued, {} duplicates",
        total - N
    );
    broker.close().await;
    observer.close().await;
}
