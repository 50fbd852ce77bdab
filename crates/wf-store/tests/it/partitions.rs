//! The delivery log's daily partitions: created ahead (idempotent, from many processes at
//! once), created on demand by a write that finds its day missing, dropped whole by
//! retention, one row per delivery however often its event is fanned out, and the
//! queries of the API pruned to the days they need.

use chrono::{DateTime, Days, NaiveDate, Utc};
use wf_core::events::EventType;
use wf_core::ids::{DeliveryId, EventId, OrgId, WebhookId};
use wf_store::{DeliveryFilter, DeliveryStatus, NewDelivery, NewPayload, Store, AHEAD_DAYS};

use crate::support::*;

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap()
}

/// The days that have a partition of `table`.
async fn days_of(s: &Store, table: &str) -> Vec<NaiveDate> {
    s.log_partitions()
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.table == table)
        .map(|p| p.day)
        .collect()
}

const TABLES: [&str; 3] = ["deliveries", "delivery_attempts", "event_payloads"];

fn delivery(a: &OrgId, w: &WebhookId, n: u32, at: DateTime<Utc>) -> NewDelivery {
    let event_id = EventId::parse(&format!("evt_p{n}")).unwrap();
    new_delivery(a, w, &event_id, EventType::AlertCreated, ms(at))
}

fn payload(d: &NewDelivery) -> NewPayload {
    NewPayload {
        org_id: d.org_id.clone(),
        event_id: d.event_id.clone(),
        body: format!("{{\"event\":\"{}\"}}", d.event_id.as_str()).into(),
        event_ts_ms: d.created_at.timestamp_millis(),
        created_at: d.created_at,
    }
}

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_ahead_are_created_idempotently_from_many_processes() {
    let db = TestDb::new().await;
    let s = &db.store;
    let t = today();
    // The migration made yesterday, today and the days ahead.
    let wanted: Vec<NaiveDate> = (0..=AHEAD_DAYS + 1)
        .map(|i| t - Days::new(1) + Days::new(i))
        .collect();
    for table in TABLES {
        assert_eq!(days_of(s, table).await, wanted, "{table}");
    }
    assert_eq!(s.ensure_log_partitions_around(Utc::now()).await.unwrap(), 0);

    // Five more days, asked for by four processes at once: each table gets each day
    // exactly once, and no caller fails.
    let (from, to) = (t + Days::new(20), t + Days::new(24));
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.ensure_log_partitions(from, to).await })
        })
        .collect();
    let mut created = 0;
    for c in calls {
        created += c.await.unwrap().unwrap();
    }
    assert_eq!(created, 15);
    assert_eq!(s.ensure_log_partitions(from, to).await.unwrap(), 0);
    for table in TABLES {
        let days = days_of(s, table).await;
        for i in 0..5 {
            let d = from + Days::new(i);
            assert_eq!(days.iter().filter(|x| **x == d).count(), 1, "{table} {d}");
        }
    }

    // Nonsense ranges: backwards is nothing to do; ten years at once is refused.
    assert_eq!(s.ensure_log_partitions(to, from).await.unwrap(), 0);
    let err = s
        .ensure_log_partitions(t, t + Days::new(4000))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refusing"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn retention_drops_old_days_whole_and_keeps_recent_rows_intact() {
    let db = TestDb::new().await;
    let s = &db.store;
    let c = db.sql().await;
    let a = org("org_p");
    let (w, _) = s
        .create_webhook(&a, new_webhook("p", &["alert.*"], true))
        .await
        .unwrap();
    let now = Utc::now();
    assert!(
        s.ensure_log_partitions(today() - Days::new(10), today())
            .await
            .unwrap()
            > 0
    );
    // One delivery per day over eleven days, each with two attempts and its payload.
    let rows: Vec<NewDelivery> = (0..=10)
        .map(|k| delivery(&a, &w.id, k, now - chrono::Duration::days(i64::from(k))))
        .collect();
    s.insert_payloads(&rows.iter().map(payload).collect::<Vec<_>>())
        .await
        .unwrap();
    s.insert_deliveries(&rows).await.unwrap();
    let attempts: Vec<_> = rows
        .iter()
        .flat_map(|d| {
            [
                attempt(d, 1, Some(500), None, DeliveryStatus::Failed),
                attempt(d, 2, Some(200), None, DeliveryStatus::Delivered),
            ]
        })
        .collect();
    s.record_attempts(&attempts).await.unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM delivery_attempts").await,
        22
    );

    // Another process maintaining the log: this one does nothing.
    let other = db.sql().await;
    other
        .execute("SELECT pg_advisory_lock($1)", &[&0x7766_5f70_7275_6e65_i64])
        .await
        .unwrap();
    assert_eq!(
        s.try_maintain_log(now, chrono::Duration::days(3))
            .await
            .unwrap(),
        None
    );
    other
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&0x7766_5f70_7275_6e65_i64],
        )
        .await
        .unwrap();

    // Three days: every day wholly older than that goes, the 4th day back and before.
    let m = s
        .try_maintain_log(now, chrono::Duration::days(3))
        .await
        .unwrap()
        .expect("the lock is free again");
    let last = today() - Days::new(4);
    assert_eq!(
        wf_store::last_expired_day(now, chrono::Duration::days(3)),
        last
    );
    assert_eq!(m.dropped.len(), 7 * 3, "{m:?}");
    assert_eq!(m.drop_failures, 0);
    for table in TABLES {
        let days = days_of(s, table).await;
        assert_eq!(days.first(), Some(&(last + Days::new(1))), "{table}");
    }
    // The rows of the days kept are all there, attempts and payloads included.
    assert_eq!(count(&c, "SELECT count(*) FROM deliveries").await, 4);
    assert_eq!(count(&c, "SELECT count(*) FROM delivery_attempts").await, 8);
    assert_eq!(count(&c, "SELECT count(*) FROM event_payloads").await, 4);
    let page = s
        .find_deliveries(&a, &w.id, &DeliveryFilter::default(), 100, None)
        .await
        .unwrap();
    let ids: Vec<&DeliveryId> = page.items.iter().map(|d| &d.id).collect();
    let kept: Vec<&DeliveryId> = rows[..4].iter().map(|d| &d.id).collect();
    assert_eq!(ids, kept, "newest first, the four recent days");
    for d in &page.items {
        assert_eq!(d.attempts.len(), 2, "{}", d.id);
        assert_eq!(d.status, DeliveryStatus::Delivered);
    }
    let item = s
        .replay_items(&wf_store::ReplayFilter {
            delivery: Some(&rows[3].id),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(item[0].logged().is_some(), "payload kept with its day");

    // Again: nothing more to drop.
    let m = s
        .try_maintain_log(now, chrono::Duration::days(3))
        .await
        .unwrap()
        .unwrap();
    assert!(m.dropped.is_empty(), "{m:?}");
}

#[tokio::test]
async fn a_write_to_a_missing_day_creates_it() {
    let db = TestDb::new().await;
    let s = &db.store;
    let c = db.sql().await;
    let a = org("org_p");
    let w = WebhookId::generate();
    let tomorrow = today() + Days::new(1);
    let suffix = tomorrow.format("%Y%m%d");
    c.batch_execute(&format!(
        "DROP TABLE deliveries_p{suffix}, delivery_attempts_p{suffix}, event_payloads_p{suffix}"
    ))
    .await
    .unwrap();
    assert!(!days_of(s, "deliveries").await.contains(&tomorrow));

    // Tomorrow (a clock ahead) and 40 days ago (a clock far behind): both land.
    let rows = [
        delivery(&a, &w, 1, Utc::now() + chrono::Duration::days(1)),
        delivery(&a, &w, 2, Utc::now() - chrono::Duration::days(40)),
    ];
    s.insert_payloads(&rows.iter().map(payload).collect::<Vec<_>>())
        .await
        .unwrap();
    s.insert_deliveries(&rows).await.unwrap();
    s.record_attempts(&[attempt(
        &rows[0],
        1,
        Some(200),
        None,
        DeliveryStatus::Delivered,
    )])
    .await
    .unwrap();
    for table in TABLES {
        let days = days_of(s, table).await;
        assert!(days.contains(&tomorrow), "{table}");
        assert!(
            days.contains(&(today() - Days::new(40))),
            "{table} {days:?}"
        );
    }
    assert_eq!(count(&c, "SELECT count(*) FROM deliveries").await, 2);
    assert_eq!(count(&c, "SELECT count(*) FROM delivery_attempts").await, 1);
    assert_eq!(count(&c, "SELECT count(*) FROM event_payloads").await, 2);
}

#[tokio::test]
async fn an_event_fanned_out_again_keeps_one_row_per_delivery() {
    let db = TestDb::new().await;
    let s = &db.store;
    let c = db.sql().await;
    let a = org("org_p");
    let w = WebhookId::generate();
    // First fan-out just before midnight; the redelivered event is fanned out again just
    // after, on the next day's partition.
    let midnight = today().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let first = delivery(&a, &w, 1, midnight - chrono::Duration::milliseconds(100));
    let again = NewDelivery {
        created_at: midnight + chrono::Duration::minutes(5),
        ..first.clone()
    };
    s.insert_payloads(&[payload(&first)]).await.unwrap();
    s.insert_deliveries(std::slice::from_ref(&first))
        .await
        .unwrap();
    s.record_attempts(&[attempt(&first, 1, Some(500), None, DeliveryStatus::Failed)])
        .await
        .unwrap();

    s.insert_payloads(&[payload(&again)]).await.unwrap();
    s.insert_deliveries(std::slice::from_ref(&again))
        .await
        .unwrap();
    // Its first attempt again (the same number: ignored), then the next two, one from a
    // job that does not carry the log time.
    s.record_attempts(&[
        attempt(&again, 1, Some(500), None, DeliveryStatus::Failed),
        attempt(&again, 2, Some(502), None, DeliveryStatus::Failed),
    ])
    .await
    .unwrap();
    s.record_attempts(&[wf_store::AttemptRecord {
        logged_at: None,
        ..attempt(&again, 3, Some(200), None, DeliveryStatus::Delivered)
    }])
    .await
    .unwrap();
    s.record_unsent_dead(&[wf_store::UnsentDead {
        delivery_id: first.id.clone(),
        org_id: a.clone(),
        webhook_id: w.clone(),
        event_id: first.event_id.clone(),
        event: first.event,
        attempts: 1,
        error: "late".into(),
        at: Utc::now(),
        logged_at: Some(again.created_at),
    }])
    .await
    .unwrap();

    assert_eq!(count(&c, "SELECT count(*) FROM deliveries").await, 1);
    assert_eq!(count(&c, "SELECT count(*) FROM delivery_attempts").await, 3);
    assert_eq!(count(&c, "SELECT count(*) FROM event_payloads").await, 1);
    let d = s.get_delivery(&a, &w, &first.id).await.unwrap().unwrap();
    assert_eq!(
        d.created_at, first.created_at,
        "logged as of its first fan-out"
    );
    assert_eq!(
        d.status,
        DeliveryStatus::Delivered,
        "an older unsent dead changes nothing"
    );
    let numbers: Vec<u32> = d.attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, [1, 2, 3]);
}

/// The lines of `EXPLAIN` (with `analyze`, of the run) for `sql`.
async fn plan(
    c: &tokio_postgres::Client,
    analyze: bool,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> String {
    let explain = if analyze {
        format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {sql}")
    } else {
        format!("EXPLAIN (COSTS OFF) {sql}")
    };
    let rows = c.query(&explain, params).await.unwrap();
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which days' partitions of `table` a plan touches.
fn touched(plan: &str, table: &str) -> Vec<String> {
    let mut days: Vec<String> = plan
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter_map(|w| w.strip_prefix(table)?.strip_prefix("_p"))
        .filter(|d| d.len() >= 8)
        .map(|d| d[..8].to_owned())
        .collect();
    days.sort();
    days.dedup();
    days
}

#[tokio::test]
async fn the_hot_queries_are_pruned_to_the_days_they_need() {
    let db = TestDb::new().await;
    let s = &db.store;
    let c = db.sql().await;
    let a = org("org_p");
    let w = WebhookId::generate();
    let now = Utc::now();
    s.ensure_log_partitions(today() - Days::new(6), today())
        .await
        .unwrap();
    // Fifty deliveries a day over a week.
    let rows: Vec<NewDelivery> = (0..350)
        .map(|i| {
            delivery(
                &a,
                &w,
                i,
                now - chrono::Duration::minutes(i64::from(i) * 28),
            )
        })
        .collect();
    s.insert_deliveries(&rows).await.unwrap();
    let attempts: Vec<_> = rows
        .iter()
        .map(|d| attempt(d, 1, Some(200), None, DeliveryStatus::Delivered))
        .collect();
    s.record_attempts(&attempts).await.unwrap();
    c.batch_execute("ANALYZE deliveries; ANALYZE delivery_attempts")
        .await
        .unwrap();
    let day = |k: u64| (today() - Days::new(k)).format("%Y%m%d").to_string();
    let cols = "id, created_at FROM deliveries WHERE webhook_id = $1 AND org_id = $2";
    let (wid, oid) = (w.as_str(), a.as_str());

    // First page, newest first: partitions are scanned newest first and the older ones
    // are never started once the page is full.
    let p = plan(
        &c,
        true,
        &format!("SELECT {cols} ORDER BY created_at DESC, id DESC LIMIT 21"),
        &[&wid, &oid],
    )
    .await;
    assert!(!p.contains("Sort"), "{p}");
    assert!(p.contains("never executed"), "{p}");

    // A later page: the days after its cursor are not in the plan at all.
    let cursor_at = now - chrono::Duration::days(3);
    let cursor_id = "dlv_zzz";
    let p = plan(
        &c,
        false,
        &format!(
            "SELECT {cols} AND created_at <= $3 AND (created_at, id) < ($3, $4) \
             ORDER BY created_at DESC, id DESC LIMIT 21"
        ),
        &[&wid, &oid, &cursor_at, &cursor_id],
    )
    .await;
    let days = touched(&p, "deliveries");
    assert!(!days.contains(&day(0)) && !days.contains(&day(2)), "{p}");
    assert!(days.contains(&day(3)), "{p}");

    // A time window: only its days.
    let (since, until) = (
        now - chrono::Duration::days(2),
        now - chrono::Duration::days(1),
    );
    let p = plan(
        &c,
        false,
        &format!(
            "SELECT {cols} AND created_at >= $3 AND created_at < $4 \
             ORDER BY created_at DESC, id DESC LIMIT 21"
        ),
        &[&wid, &oid, &since, &until],
    )
    .await;
    let mut want = vec![day(2), day(1)];
    want.sort();
    want.dedup();
    assert_eq!(touched(&p, "deliveries"), want, "{p}");

    // Attempts of a page: only the days of its deliveries.
    let page = &rows[100..110];
    let ids: Vec<&str> = page.iter().map(|d| d.id.as_str()).collect();
    let keys: Vec<DateTime<Utc>> = page.iter().map(|d| d.created_at).collect();
    let p = plan(
        &c,
        false,
        "SELECT attempt FROM delivery_attempts WHERE delivery_id = ANY($1) \
         AND delivery_created_at = ANY($2)",
        &[&ids, &keys],
    )
    .await;
    let mut want: Vec<String> = keys
        .iter()
        .map(|k| k.date_naive().format("%Y%m%d").to_string())
        .collect();
    want.sort();
    want.dedup();
    assert_eq!(touched(&p, "delivery_attempts"), want, "{p}");

    // A write's look-up of its delivery's row: the day before its log time up to the
    // record's time, nothing else.
    let logged = rows[200].created_at;
    let at = logged + chrono::Duration::hours(1);
    let p = plan(
        &c,
        false,
        "SELECT created_at FROM deliveries WHERE id = $1 \
         AND created_at >= $2::timestamptz - interval '1 day' AND created_at <= $3 \
         ORDER BY created_at LIMIT 1",
        &[&rows[200].id.as_str(), &logged, &at],
    )
    .await;
    let mut want: Vec<String> = [logged - chrono::Duration::days(1), logged, at]
        .iter()
        .map(|k| k.date_naive().format("%Y%m%d").to_string())
        .collect();
    want.sort();
    want.dedup();
    assert_eq!(touched(&p, "deliveries"), want, "{p}");
}
