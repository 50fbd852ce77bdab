//! The URL policy refuses an address in a forbidden range whatever its spelling: dotted,
//! decimal, octal, hex and short IPv4 forms (mixed per part, percent-encoded, full-width),
//! and every IPv6 form that embeds an IPv4 address (mapped, translated, compatible, NAT64,
//! 6to4), in full, compressed or zero-padded notation. Public addresses spelled the same
//! ways are accepted and normalised to the canonical form, which shows the spellings are
//! real ones and not parse errors.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use wf_core::url_policy::{ip_permitted, is_forbidden_ip, AllowedCidrs, WebhookUrl};

/// The IPv4 ranges no webhook may target (README, Security).
const FORBIDDEN_V4: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 0, 0, 0), 24),
    (Ipv4Addr::new(192, 0, 2, 0), 24),
    (Ipv4Addr::new(192, 88, 99, 0), 24),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    (Ipv4Addr::new(198, 51, 100, 0), 24),
    (Ipv4Addr::new(203, 0, 113, 0), 24),
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// IPv6 ranges forbidden on their own account.
const FORBIDDEN_V6: &[(u128, u8)] = &[
    (1, 128),                                              // ::1
    (0, 128),                                              // ::
    (0xfc00 << 112, 7),                                    // unique local
    (0xfe80 << 112, 10),                                   // link-local
    (0xfec0 << 112, 10),                                   // site-local
    (0xff00 << 112, 8),                                    // multicast
    (0x2001_0db8 << 96, 32),                               // documentation
    (0x2001 << 112, 32),                                   // Teredo
    ((0x64_u128 << 112) | (0xff9b << 96) | (1 << 80), 48), // local-use NAT64
];

fn mask_v4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

fn in_forbidden_v4(ip: Ipv4Addr) -> bool {
    let bits = u32::from(ip);
    FORBIDDEN_V4
        .iter()
        .any(|&(net, len)| bits & mask_v4(len) == u32::from(net) & mask_v4(len))
}

fn forbidden_v4() -> impl Strategy<Value = Ipv4Addr> {
    (prop::sample::select(FORBIDDEN_V4), any::<u32>()).prop_map(|((net, len), host)| {
        Ipv4Addr::from((u32::from(net) & mask_v4(len)) | (host & !mask_v4(len)))
    })
}

fn public_v4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>()
        .prop_map(Ipv4Addr::from)
        .prop_filter("public", |ip| !in_forbidden_v4(*ip))
}

fn forbidden_v6() -> impl Strategy<Value = Ipv6Addr> {
    (prop::sample::select(FORBIDDEN_V6), any::<u128>()).prop_map(|((net, len), host)| {
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        Ipv6Addr::from((net & mask) | (host & !mask))
    })
}

/// One number of an IPv4 spelling in decimal, octal (`0` prefix) or hex (`0x`/`0X`), with
/// extra leading zeros and either letter case.
fn number(n: u32) -> impl Strategy<Value = String> {
    (0u8..3, 0usize..3, any::<bool>(), any::<bool>()).prop_map(
        move |(radix, zeros, upper, upper_x)| {
            let pad = "0".repeat(zeros);
            match radix {
                0 => n.to_string(),
                1 => format!("0{pad}{n:o}"),
                _ => {
                    let digits = if upper {
                        format!("{n:X}")
                    } else {
                        format!("{n:x}")
                    };
                    format!("{}{pad}{digits}", if upper_x { "0X" } else { "0x" })
                }
            }
        },
    )
}

/// `ip` written with 1 to 4 parts (the last one filling the remaining bytes), each part in
/// its own radix, and optionally a trailing dot.
fn v4_spelling(ip: Ipv4Addr) -> impl Strategy<Value = String> {
    let b = ip.octets();
    let bits = u32::from(ip);
    (1usize..=4, any::<bool>())
        .prop_flat_map(move |(parts, dot)| {
            let nums: Vec<u32> = match parts {
                1 => vec![bits],
                2 => vec![b[0].into(), bits & 0x00ff_ffff],
                3 => vec![b[0].into(), b[1].into(), bits & 0xffff],
                _ => b.iter().map(|&x| u32::from(x)).collect(),
            };
            (nums.into_iter().map(number).collect::<Vec<_>>(), Just(dot))
        })
        .prop_map(|(parts, dot)| {
            let mut s = parts.join(".");
            if dot {
                s.push('.');
            }
            s
        })
}

/// Percent-encodes some characters of a host, or writes digits and dots full-width:
/// the URL parser undoes both before it reads the address.
fn disguise(host: String) -> impl Strategy<Value = String> {
    let n = host.chars().count();
    (0u8..3, prop::collection::vec(any::<bool>(), n)).prop_map(move |(how, pick)| match how {
        0 => host.clone(),
        1 => host
            .chars()
            .zip(&pick)
            .map(|(c, &p)| {
                if p {
                    format!("%{:02X}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect(),
        _ => host
            .chars()
            .zip(&pick)
            .map(|(c, &p)| match c {
                '0'..='9' if p => char::from_u32(0xff10 + (c as u32 - '0' as u32)).unwrap(),
                '.' if p => '\u{ff0e}',
                c => c,
            })
            .collect(),
    })
}

/// The 8 groups of an IPv6 address as text: compressed or in full, optionally
/// zero-padded and upper-case, optionally with the last 32 bits as a dotted quad.
fn v6_text(ip: Ipv6Addr) -> impl Strategy<Value = String> {
    (0u8..3, any::<bool>(), any::<bool>()).prop_map(move |(style, upper, dotted_tail)| {
        let seg = ip.segments();
        let group = |g: u16| match (style, upper) {
            (2, true) => format!("{g:04X}"),
            (2, false) => format!("{g:04x}"),
            (_, true) => format!("{g:X}"),
            (_, false) => format!("{g:x}"),
        };
        let tail = |s: &[u16]| -> Vec<String> {
            if dotted_tail {
                let v4 = Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
                s[..6]
                    .iter()
                    .map(|&g| group(g))
                    .chain([v4.to_string()])
                    .collect()
            } else {
                s.iter().map(|&g| group(g)).collect()
            }
        };
        if style == 0 {
            // Compressed: the longest run of zero groups (of two or more) becomes `::`.
            let parts = tail(&seg);
            let groups = if dotted_tail { 6 } else { 8 };
            let (mut best, mut best_len, mut i) = (0, 0, 0);
            while i < groups {
                if seg[i] == 0 {
                    let start = i;
                    while i < groups && seg[i] == 0 {
                        i += 1;
                    }
                    if i - start > best_len {
                        (best, best_len) = (start, i - start);
                    }
                } else {
                    i += 1;
                }
            }
            if best_len >= 2 {
                let head = parts[..best].join(":");
                let rest = parts[best + best_len..].join(":");
                return format!("{head}::{rest}");
            }
            parts.join(":")
        } else {
            tail(&seg).join(":")
        }
    })
}

/// The IPv6 forms that embed `v4` and route to it.
fn embedding(v4: Ipv4Addr) -> impl Strategy<Value = Ipv6Addr> {
    let low = u128::from(u32::from(v4));
    (0u8..5, any::<u128>()).prop_map(move |(form, noise)| {
        Ipv6Addr::from(match form {
            0 => (0xffff << 32) | low,                 // mapped ::ffff:a.b.c.d
            1 => (0xffff << 48) | low,                 // translated ::ffff:0:a.b.c.d
            2 => low,                                  // compatible ::a.b.c.d
            3 => (0x64 << 112) | (0xff9b << 96) | low, // NAT64 64:ff9b::a.b.c.d
            _ => (0x2002 << 112) | (low << 80) | (noise & ((1 << 80) - 1)), // 6to4
        })
    })
}

/// A URL around `host`: sometimes a port, a path and a query.
fn url_around(host: String) -> impl Strategy<Value = String> {
    (
        prop::option::of(1u16..),
        "(/[a-z0-9]{0,8}){0,3}",
        prop::option::of("[a-z]{1,5}=[0-9]{1,3}"),
    )
        .prop_map(move |(port, path, query)| {
            let mut u = format!("https://{host}");
            if let Some(p) = port {
                u.push_str(&format!(":{p}"));
            }
            u.push_str(if path.is_empty() { "/" } else { &path });
            if let Some(q) = query {
                u.push('?');
                u.push_str(&q);
            }
            u
        })
}

fn refused_as_private(url: &str) -> Result<(), TestCaseError> {
    match WebhookUrl::parse(url, &AllowedCidrs::default()) {
        Ok(u) => Err(TestCaseError::fail(format!("{url:?} accepted as {u}"))),
        Err(e) => {
            prop_assert_eq!(e.code(), "url_private_address", "{:?}: {}", url, e);
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn forbidden_ipv4_in_any_spelling_is_refused(
        url in forbidden_v4()
            .prop_flat_map(v4_spelling)
            .prop_flat_map(disguise)
            .prop_flat_map(url_around)
    ) {
        refused_as_private(&url)?;
    }

    #[test]
    fn public_ipv4_in_any_spelling_is_accepted_and_normalised(
        (ip, url) in public_v4().prop_flat_map(|ip| {
            (Just(ip), v4_spelling(ip).prop_flat_map(disguise).prop_flat_map(url_around))
        })
    ) {
        let parsed = WebhookUrl::parse(&url, &AllowedCidrs::default());
        prop_assert!(parsed.is_ok(), "{:?}: {:?}", url, parsed);
        let parsed = parsed.unwrap();
        prop_assert_eq!(parsed.host_ip(), Some(IpAddr::V4(ip)));
        prop_assert_eq!(parsed.host_str(), ip.to_string());
    }

    #[test]
    fn ipv6_embedding_a_forbidden_ipv4_is_refused(
        (ip, url) in forbidden_v4()
            .prop_flat_map(embedding)
            .prop_flat_map(|ip| (Just(ip), v6_text(ip).prop_flat_map(|t| url_around(format!("[{t}]")))))
    ) {
        prop_assert!(is_forbidden_ip(IpAddr::V6(ip)), "{}", ip);
        prop_assert!(!ip_permitted(IpAddr::V6(ip), &AllowedCidrs::default()));
        refused_as_private(&url)?;
    }

    #[test]
    fn forbidden_ipv6_in_any_spelling_is_refused(
        (ip, url) in forbidden_v6()
            .prop_flat_map(|ip| (Just(ip), v6_text(ip).prop_flat_map(|t| url_around(format!("[{t}]")))))
    ) {
        prop_assert!(is_forbidden_ip(IpAddr::V6(ip)), "{}", ip);
        refused_as_private(&url)?;
    }

    /// The delivery-time check agrees: every forbidden address, and each IPv6 form
    /// embedding it, is refused by `ip_permitted` unless explicitly allowed.
    #[test]
    fn resolved_forbidden_addresses_are_not_permitted(v4 in forbidden_v4(), v6 in forbidden_v4().prop_flat_map(embedding)) {
        let none = AllowedCidrs::default();
        prop_assert!(!ip_permitted(IpAddr::V4(v4), &none));
        prop_assert!(!ip_permitted(IpAddr::V6(v6), &none));
        let exempt = AllowedCidrs::parse(&format!("{v4}/32")).unwrap();
        prop_assert!(ip_permitted(IpAddr::V4(v4), &exempt));
    }
}
