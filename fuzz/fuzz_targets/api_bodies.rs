//! The API's JSON bodies, as the ingestor checks them (`wf_core::requests`): every input
//! is tried as the body of each endpoint that takes one. A body is answered with a
//! value that honours the endpoint's rules or with a client error (400, 413 or 422, the
//! last naming the field); never a panic, never a 5xx. An accepted event is one the worker
//! accepts in its wire form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wf_core::events::EventFilters;
use wf_core::ids::OrgId;
use wf_core::requests::{self, RequestError};
use wf_core::url_policy::{AllowedCidrs, WebhookUrl};
use wf_fuzz::check_accepted_event;

fn client_error(e: &RequestError) {
    let status = e.status;
    assert!(
        matches!(status, 400 | 413 | 422),
        "{status} {}: {}",
        e.code,
        e.message
    );
    if status == 422 {
        assert!(e.field.is_some(), "422 {} names no field", e.code);
    }
    assert!(!e.code.is_empty() && !e.message.is_empty());
}

fn name_ok(name: &str) {
    assert_eq!(name, name.trim());
    assert!((1..=requests::MAX_NAME_CHARS).contains(&name.chars().count()));
}

fn url_ok(url: &str, allowed: &AllowedCidrs) {
    let parsed = WebhookUrl::parse(url, allowed).expect("stored URL parses again");
    assert_eq!(parsed.as_str(), url, "stored URL is not in normal form");
}

fn events_ok(events: &[String]) {
    let filters = EventFilters::parse(events).expect("stored filters parse again");
    assert_eq!(
        filters.to_strings(),
        events,
        "stored filters are not in normal form"
    );
}

fuzz_target!(|data: &[u8]| {
    let body = match requests::parse_object(data) {
        Ok(body) => body,
        Err(e) => {
            assert_eq!(e.status, 400);
            assert_eq!(e.code, "invalid_json");
            return;
        }
    };
    let allowed = AllowedCidrs::default();

    match requests::webhook_create(&body, &allowed) {
        Ok(new) => {
            name_ok(&new.name);
            url_ok(&new.url, &allowed);
            events_ok(&new.events);
        }
        Err(e) => client_error(&e),
    }

    match requests::webhook_update(&body, &allowed) {
        Ok(patch) => {
            if let Some(name) = &patch.name {
                name_ok(name);
            }
            if let Some(url) = &patch.url {
                url_ok(url, &allowed);
            }
            if let Some(events) = &patch.events {
                events_ok(events);
            }
            assert_eq!(patch.name.is_some(), body.contains_key("name"));
            assert_eq!(patch.url.is_some(), body.contains_key("url"));
            assert_eq!(patch.events.is_some(), body.contains_key("events"));
            assert_eq!(patch.is_active.is_some(), body.contains_key("isActive"));
        }
        Err(e) => client_error(&e),
    }

    match requests::api_key_create(&body) {
        Ok(name) => name_ok(&name),
        Err(e) => client_error(&e),
    }

    match requests::replay(&body) {
        Ok(window) => {
            if let (Some(since), Some(until)) = (window.since, window.until) {
                assert!(since < until);
            }
        }
        Err(e) => client_error(&e),
    }

    let org = OrgId::parse("org_fuzz").expect("valid org");
    match requests::event(body, &org) {
        Ok(event) => {
            assert_eq!(event.org_id, org);
            check_accepted_event(&event);
        }
        Err(rejection) => client_error(&requests::event_rejection(&rejection)),
    }
});
