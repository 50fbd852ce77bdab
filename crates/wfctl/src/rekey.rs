//! `wfctl rekey`: re-encrypt every webhook secret and custom header value with the first
//! key of `WF_SECRET_KEY`, so that the keys after it can be removed; `--check` counts what
//! still needs an old key.

use wf_core::secret_keys::SecretKeys;
use wf_store::{key_id_hex, RekeyCounts, RekeyMode, Store};

#[derive(clap::Args)]
pub struct RekeyArgs {
    /// Webhook rows per transaction.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Only count: how many rows still need a key other than the first (exit status 1 if
    /// any, or if a value opens with no listed key). Writes nothing.
    #[arg(long)]
    pub check: bool,
}

/// Runs the rekey (or the check) and prints its report; an error when a value could not be
/// decrypted, a row kept changing, or (with `--check`) rows still need an old key.
pub async fn run(store: &Store, keys: &SecretKeys, args: &RekeyArgs) -> anyhow::Result<()> {
    let mode = if args.check {
        RekeyMode::Check
    } else {
        RekeyMode::Apply
    };
    println!("{}", describe_keys(keys));
    let counts = store
        .rekey(args.batch_size, mode, |c| {
            eprintln!("... {} row(s) scanned", c.scanned);
        })
        .await?;
    print!("{}", report(keys, mode, &counts));
    if counts.is_clean(mode) {
        return Ok(());
    }
    let mut why = Vec::new();
    if !counts.undecryptable.is_empty() {
        why.push(format!(
            "{} row(s) open with no key in WF_SECRET_KEY",
            counts.undecryptable.len()
        ));
    }
    if counts.contended > 0 {
        why.push(format!(
            "{} row(s) kept changing during the run; run it again",
            counts.contended
        ));
    }
    if mode == RekeyMode::Check && counts.outdated > 0 {
        why.push(format!(
            "{} row(s) are not yet sealed with the first key; run `wfctl rekey`",
            counts.outdated
        ));
    }
    anyhow::bail!("{}", why.join("; "))
}

/// `keys: 1 3f2a9c01 (encrypts), 2 77b0e4d2`: positions and key ids, never key material.
fn describe_keys(keys: &SecretKeys) -> String {
    let list: Vec<String> = keys
        .all()
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let role = if i == 0 { " (encrypts)" } else { "" };
            format!("{} {}{role}", i + 1, key_id_hex(k))
        })
        .collect();
    format!("keys: {}", list.join(", "))
}

fn report(keys: &SecretKeys, mode: RekeyMode, c: &RekeyCounts) -> String {
    let outdated = match mode {
        RekeyMode::Apply => "re-encrypted",
        RekeyMode::Check => "to re-encrypt",
    };
    let mut out = format!(
        "scanned {}, {outdated} {}, already current {}, failed to decrypt {}, \
         deleted meanwhile {}, changed meanwhile {}\n",
        c.scanned,
        c.outdated,
        c.current,
        c.undecryptable.len(),
        c.vanished,
        c.contended,
    );
    let verb = match mode {
        RekeyMode::Apply => "needed",
        RekeyMode::Check => "still need",
    };
    for (i, (key, n)) in keys.all().iter().zip(&c.needing_key).enumerate().skip(1) {
        out.push_str(&format!(
            "rows that {verb} key {} ({}): {n}\n",
            i + 1,
            key_id_hex(key)
        ));
    }
    if mode == RekeyMode::Check {
        out.push_str(&format!(
            "rows still needing an old key: {}\n",
            c.needing_old_keys()
        ));
    }
    for id in &c.undecryptable {
        out.push_str(&format!("failed to decrypt with any key: {id}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_name_keys_by_position_and_id_only() {
        let keys = SecretKeys::new(vec![[1; 32], [2; 32]]).unwrap();
        let d = describe_keys(&keys);
        assert_eq!(
            d,
            format!(
                "keys: 1 {} (encrypts), 2 {}",
                key_id_hex(&[1; 32]),
                key_id_hex(&[2; 32])
            )
        );
        let counts = RekeyCounts {
            scanned: 5,
            current: 2,
            outdated: 2,
            needing_key: vec![0, 2],
            undecryptable: vec![wf_core::ids::WebhookId::generate()],
            ..RekeyCounts::default()
        };
        let r = report(&keys, RekeyMode::Check, &counts);
        assert!(
            r.starts_with("scanned 5, to re-encrypt 2, already current 2, failed to decrypt 1"),
            "{r}"
        );
        assert!(r.contains("rows still needing an old key: 2"), "{r}");
        assert!(
            r.contains(&format!("still need key 2 ({}): 2", key_id_hex(&[2; 32]))),
            "{r}"
        );
        let r = report(&keys, RekeyMode::Apply, &counts);
        assert!(
            r.contains("re-encrypted 2") && !r.contains("still needing"),
            "{r}"
        );
    }
}
