//! `Event::from_amqp`: any bytes a producer can publish to `workflows.events`, with or
//! without a `message-id` property. It never panics; what it accepts survives the trip to
//! the wire form and back unchanged, and its payload is the documented object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wf_core::envelope::{Event, MAX_EVENT_BYTES};
use wf_fuzz::{check_accepted_event, split_message_id};

fuzz_target!(|data: &[u8]| {
    let (message_id, body) = split_message_id(data);
    match Event::from_amqp(body, message_id.as_deref()) {
        Ok(event) => {
            assert!(body.len() <= MAX_EVENT_BYTES);
            check_accepted_event(&event);
        }
        Err(rejection) => {
            assert!(!rejection.reason().is_empty());
            assert!(!rejection.to_string().is_empty());
        }
    }
});
