//! `wfctl dlq list` and `wfctl dlq replay`: the operator's view of dead deliveries.
//!
//! Postgres (`status = dead`) is what is listed and what decides; the queue
//! `workflows.deliveries.dead` holds the dead jobs themselves. A replay drains the queue
//! (re-queueing each job that is still dead in Postgres, dropping the ones already
//! replayed through the API or delivered), then re-queues dead deliveries that only
//! Postgres knows of (their message was purged). Re-queued jobs get the next attempt
//! number and a fresh retry schedule, and are signed afresh by the worker.

use std::collections::HashSet;

use anyhow::Context;
use wf_broker::routes::queue_delivery;
use wf_broker::{names, Broker};
use wf_core::ids::WebhookId;
use wf_core::messages::DeliveryJob;
use wf_core::time::format_ms;
use wf_store::{DeliveryStatus, ReplayFilter, Store};

/// Rows fetched from Postgres per round trip.
const PAGE: i64 = 500;

/// Prints dead deliveries, oldest id first, and the dead-letter queue's depth.
///
/// # Errors
/// Postgres or RabbitMQ failures.
pub async fn list(
    store: &Store,
    broker: &Broker,
    webhook: Option<&WebhookId>,
    limit: usize,
) -> anyhow::Result<()> {
    let depth = broker.queue_depth(names::DEAD_QUEUE).await?;
    println!("{}: {depth} message(s)", names::DEAD_QUEUE);
    println!("DELIVERY\tORG\tWEBHOOK\tEVENT\tATTEMPTS\tDIED AT\tLAST ERROR");
    let mut after = None;
    let mut shown = 0usize;
    while shown < limit {
        let items = store
            .replay_items(&ReplayFilter {
                webhook,
                status: Some(DeliveryStatus::Dead),
                after: after.as_ref(),
                limit: PAGE.min((limit - shown) as i64),
                ..ReplayFilter::default()
            })
            .await?;
        let Some(last) = items.last() else { break };
        after = Some(last.delivery_id.clone());
        for d in &items {
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                d.delivery_id,
                d.org_id,
                d.webhook_id,
                d.event,
                d.attempt_count,
                format_ms(d.updated_at),
                d.last_error.as_deref().unwrap_or("-")
            );
        }
        shown += items.len();
        if (items.len() as i64) < PAGE {
            break;
        }
    }
    println!(
        "{shown} dead deliver{}",
        if shown == 1 { "y" } else { "ies" }
    );
    Ok(())
}

/// Re-queues dead deliveries (optionally of one webhook), at most `limit`.
///
/// # Errors
/// Postgres or RabbitMQ failures; what was re-queued before the failure stays re-queued.
pub async fn replay(
    store: &Store,
    broker: &Broker,
    webhook: Option<&WebhookId>,
    limit: usize,
) -> anyhow::Result<()> {
    let publisher = broker.publisher().await?;
    let depth = broker.queue_depth(names::DEAD_QUEUE).await? as usize;
    let (mut queued, mut stale, mut held) = (0usize, 0usize, Vec::new());
    let mut seen = HashSet::new();

    // 1. The queue. Messages kept (other webhooks, undecodable) are held unacked until
    //    the end, so the loop never sees them twice; then they go back.
    for _ in 0..depth {
        if queued >= limit {
            break;
        }
        let Some(msg) = broker.get(names::DEAD_QUEUE).await? else {
            break;
        };
        let Ok(job) = DeliveryJob::decode(&msg.body) else {
            held.push(msg);
            continue;
        };
        let j = job.v1();
        if webhook.is_some_and(|w| *w != j.webhook_id) {
            held.push(msg);
            continue;
        }
        let record = store
            .replay_items(&ReplayFilter {
                delivery: Some(&j.delivery_id),
                limit: 1,
                ..ReplayFilter::default()
            })
            .await?;
        if record
            .first()
            .is_some_and(|r| r.status != DeliveryStatus::Dead)
        {
            // Replayed through the API, or delivered since: this copy is stale.
            stale += 1;
            msg.ack().await?;
            continue;
        }
        let logged_attempts = record.first().map_or(0, |r| r.attempt_count);
        queue_delivery(&publisher, &job.requeued(logged_attempts))
            .await
            .context("re-queueing a dead delivery")?;
        store
            .mark_requeued(std::slice::from_ref(&j.delivery_id))
            .await?;
        msg.ack().await?;
        seen.insert(j.delivery_id.clone());
        queued += 1;
    }
    let kept = held.len();
    for msg in held {
        msg.nack(true).await?;
    }

    // 2. Dead in Postgres but no longer in the queue.
    let mut after = None;
    let mut missing_payload = 0usize;
    while queued < limit {
        let items = store
            .replay_items(&ReplayFilter {
                webhook,
                status: Some(DeliveryStatus::Dead),
                after: after.as_ref(),
                limit: PAGE,
                ..ReplayFilter::default()
            })
            .await?;
        let Some(last) = items.last() else { break };
        after = Some(last.delivery_id.clone());
        for item in items.iter().filter(|i| !seen.contains(&i.delivery_id)) {
            if queued >= limit {
                break;
            }
            let Some(logged) = item.logged() else {
                missing_payload += 1;
                continue;
            };
            queue_delivery(&publisher, &DeliveryJob::requeued_from_log(logged)).await?;
            store
                .mark_requeued(std::slice::from_ref(&item.delivery_id))
                .await?;
            queued += 1;
        }
        if (items.len() as i64) < PAGE {
            break;
        }
    }
    println!(
        "re-queued {queued}; dropped {stale} stale dead-letter message(s); left {kept} in {} (other webhooks or unreadable); {missing_payload} without a payload (past retention)",
        names::DEAD_QUEUE
    );
    Ok(())
}
