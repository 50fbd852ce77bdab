//! What the fuzz targets share: how an input is framed, the checks every accepted event
//! must pass, and an address oracle written from the README's promises rather than from
//! the policy code it checks.
//!
//! Inputs are plain text wherever possible, so the seed corpus under `corpus/<target>/` is
//! made of real request bodies, URLs, durations and `WF_*` settings that a person can read
//! and extend.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::Value;
use wf_core::envelope::{Event, MAX_EVENT_BYTES};
use wf_core::time::{format_ms, parse_rfc3339};

/// The input as text: UTF-8 as given, anything else made valid lossily so that every input
/// still exercises the parser.
pub fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// Splits an `amqp_event` input into the AMQP `message-id` property and the body: an input
/// whose first line starts with `#` carries the message id on that line (`#evt_42\n{...}`);
/// any other input is all body, with no message id.
pub fn split_message_id(data: &[u8]) -> (Option<Cow<'_, str>>, &[u8]) {
    match data.strip_prefix(b"#") {
        Some(rest) => {
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let body = rest.get(end + 1..).unwrap_or_default();
            (Some(text(&rest[..end])), body)
        }
        None => (None, data),
    }
}

/// What must hold for every event an edge accepts: its wire form (what the ingestor
/// publishes and the worker parses) is accepted again as the very same event, and its
/// payload is the documented object, in the documented field order, with a timestamp that
/// reads back as the event's.
pub fn check_accepted_event(event: &Event) {
    let wire = event.to_wire();
    if wire.len() <= MAX_EVENT_BYTES {
        match Event::from_amqp(&wire, None) {
            Ok(again) => assert_eq!(
                &again,
                event,
                "the wire form parses to another event: {}",
                String::from_utf8_lossy(&wire)
            ),
            Err(r) => panic!(
                "the wire form of an accepted event is rejected ({r}): {}",
                String::from_utf8_lossy(&wire)
            ),
        }
    }
    let payload: Value = serde_json::from_slice(&event.payload()).expect("payload is JSON");
    let obj = payload.as_object().expect("payload is an object");
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(keys, ["event", "orgId", "timestamp", "data"]);
    assert_eq!(obj["event"], event.event.as_str());
    assert_eq!(obj["orgId"], event.org_id.as_str());
    let ts = obj["timestamp"].as_str().expect("timestamp is a string");
    assert_eq!(ts, format_ms(event.timestamp));
    assert_eq!(
        parse_rfc3339(ts),
        Some(event.timestamp),
        "payload timestamp {ts} does not read back as the event's"
    );
}

/// IPv4 ranges the README promises are never a delivery target: loopback, RFC 1918,
/// link-local (cloud metadata), CGNAT, multicast, reserved, "this network", and the
/// documentation and benchmarking ranges.
const BLOCKED_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// IPv6 ranges that are never a delivery target on their own account: loopback,
/// unspecified, unique-local, link-local, site-local, multicast, documentation.
const BLOCKED_V6: &[&str] = &[
    "::1/128",
    "::/128",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
    "2001:db8::/32",
];

/// Whether the README's policy forbids `ip`, judged independently of `wf_core::url_policy`:
/// IPv4 by [`BLOCKED_V4`]; IPv6 by [`BLOCKED_V6`] and by the IPv4 address it embeds in any
/// of the forms a kernel or gateway may turn into that IPv4 destination (mapped,
/// translated, compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`).
pub fn oracle_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => {
            let in_net = |s: &str| s.parse::<Ipv6Net>().expect("valid net").contains(&v6);
            BLOCKED_V6.iter().any(|n| in_net(n)) || embedded_v4(v6).is_some_and(blocked_v4)
        }
    }
}

fn blocked_v4(ip: Ipv4Addr) -> bool {
    BLOCKED_V4
        .iter()
        .any(|n| n.parse::<Ipv4Net>().expect("valid net").contains(&ip))
}

/// The IPv4 address an IPv6 address carries, in the forms that route to it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let seg = ip.segments();
    let low = Ipv4Addr::new(
        (seg[6] >> 8) as u8,
        seg[6] as u8,
        (seg[7] >> 8) as u8,
        seg[7] as u8,
    );
    let prefix96 = |p: [u16; 6]| seg[..6] == p;
    if prefix96([0, 0, 0, 0, 0, 0xffff])      // mapped ::ffff:a.b.c.d
        || prefix96([0, 0, 0, 0, 0xffff, 0])  // translated ::ffff:0:a.b.c.d
        || prefix96([0, 0, 0, 0, 0, 0])       // compatible ::a.b.c.d
        || prefix96([0x64, 0xff9b, 0, 0, 0, 0])
    // NAT64 64:ff9b::a.b.c.d
    {
        return Some(low);
    }
    if seg[0] == 0x2002 {
        // 6to4 2002:aabb:ccdd::/48
        return Some(Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        ));
    }
    None
}

/// The host names the README promises are refused: `localhost` and the internal suffixes.
pub fn oracle_internal_name(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost"
        || [".localhost", ".local", ".internal"]
            .iter()
            .any(|s| h.ends_with(s))
}

/// How the C library's resolver reads an IPv4 address in numbers-and-dots notation
/// (`inet_aton`): one to four parts, each decimal, octal (`0` prefix) or hex (`0x`), the
/// last one filling the remaining bytes (`127.1`, `0x7f000001`, `0177.0.0.1`). A host name
/// that reads as an address this way would be connected to as that address.
pub fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let s = s.strip_suffix('.').unwrap_or(s);
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or(p.strip_prefix("0X")) {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        if digits.is_empty() && radix != 16 {
            return None;
        }
        let n = if digits.is_empty() {
            0
        } else {
            if !digits.chars().all(|c| c.is_digit(radix)) {
                return None;
            }
            u64::from_str_radix(digits, radix).ok()?
        };
        nums.push(n);
    }
    let (last, head) = nums.split_last()?;
    if head.iter().any(|&n| n > 255) {
        return None;
    }
    let room = 8 * (4 - head.len() as u32);
    if room < 64 && *last >= (1u64 << room) {
        return None;
    }
    let mut v: u64 = 0;
    for (i, n) in head.iter().enumerate() {
        v |= n << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from((v | last) as u32))
}

/// Checks the oracle itself on known answers; the targets that rely on it run this once at
/// start-up (libFuzzer's initialisation), so a broken judge fails every run loudly.
pub fn check_oracle() {
    let lo = Some(Ipv4Addr::new(127, 0, 0, 1));
    for s in [
        "127.0.0.1",
        "127.1",
        "0x7f.1",
        "0177.0.0.1",
        "2130706433",
        "0x7f000001",
        "127.0.0.1.",
    ] {
        assert_eq!(inet_aton(s), lo, "inet_aton({s})");
    }
    for s in [
        "example.com",
        "1.2.3.4.5",
        "256.1.1.1",
        "08",
        "",
        "1..2",
        "0x1g",
    ] {
        assert_eq!(inet_aton(s), None, "inet_aton({s})");
    }
    for s in [
        "10.1.2.3",
        "169.254.169.254",
        "::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "::ffff:0:10.0.0.1",
        "::192.168.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:c0a8:101::1",
    ] {
        assert!(oracle_blocked(s.parse().unwrap()), "oracle must block {s}");
    }
    for s in [
        "8.8.8.8",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        "2002:808:808::1",
    ] {
        assert!(!oracle_blocked(s.parse().unwrap()), "oracle must allow {s}");
    }
    assert!(oracle_internal_name("Metadata.Google.Internal."));
    assert!(!oracle_internal_name("example.com"));
}
