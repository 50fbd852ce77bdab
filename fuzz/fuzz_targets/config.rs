//! `Config::from_lookup` over an arbitrary environment. The input is `NAME=VALUE` lines
//! (the last one wins, like a shell's environment); each role reads it. The result is a
//! valid configuration or an error that names a `WF_*` variable that was set (every
//! default is valid, so an unset variable can never be at fault) and never shows the
//! secret key.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use wf_core::config::{Config, Role};
use wf_fuzz::text;

fuzz_target!(|data: &[u8]| {
    let input = text(data);
    let env: HashMap<&str, &str> = input.lines().filter_map(|l| l.split_once('=')).collect();
    for role in [Role::Ingestor, Role::Worker, Role::Cli] {
        match Config::from_lookup(role, |name| env.get(name).map(|v| (*v).to_owned())) {
            Ok(config) => {
                assert!(!config.retry_schedule.delays().is_empty());
                assert!(!config.delivery_timeout.is_zero());
                assert!(config.worker_concurrency >= 1);
                assert!(!config.delivery_log_retention.is_zero());
                let _ = format!("{config:?}");
                let _ = config.warnings();
            }
            Err(e) => {
                assert!(e.variable.starts_with("WF_"), "{e}");
                assert!(
                    env.contains_key(e.variable),
                    "unset {} reported as invalid: {e}",
                    e.variable
                );
                let shown = e.to_string();
                let prefix = format!("invalid {}=`", e.variable);
                assert!(shown.starts_with(&prefix), "{shown}");
                if e.variable == "WF_SECRET_KEY" {
                    assert_eq!(e.value, "<redacted>");
                }
            }
        }
    }
});
