//! Durations (`parse_duration`) and retry schedules (`RetrySchedule::parse`), as operators
//! write them in `WF_*` variables. Never a panic (no overflow on huge numbers); what is
//! accepted prints in a form that parses back to the same value, and a schedule is never
//! empty and never holds a zero delay.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wf_core::duration::{format_duration, parse_duration, RetrySchedule};
use wf_fuzz::text;

fuzz_target!(|data: &[u8]| {
    let input = text(data);
    if let Ok(d) = parse_duration(&input) {
        let shown = format_duration(d);
        assert_eq!(parse_duration(&shown), Ok(d), "{input:?} shown as {shown}");
    }
    if let Ok(schedule) = RetrySchedule::parse(&input) {
        let delays = schedule.delays();
        assert!(!delays.is_empty());
        assert!(delays.iter().all(|d| !d.is_zero()));
        let shown = schedule.to_string();
        assert_eq!(
            RetrySchedule::parse(&shown).as_ref(),
            Ok(&schedule),
            "{input:?} shown as {shown}"
        );
        let distinct = schedule.distinct_delays();
        assert!(distinct.windows(2).all(|w| w[0] < w[1]));
        assert!(delays.iter().all(|d| distinct.contains(d)));
        for (i, d) in delays.iter().enumerate() {
            assert_eq!(schedule.delay_before_retry(i + 1), Some(*d));
        }
        assert_eq!(schedule.delay_before_retry(0), None);
        assert_eq!(schedule.delay_before_retry(delays.len() + 1), None);
    }
});
