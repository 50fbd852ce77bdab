//! The URL and address policy (docs/api.md, the Webhook object's `url`): which webhook
//! URLs are accepted and which
//! addresses the delivery client may connect to.
//!
//! Two checks share the same address classification ([`is_forbidden_ip`]):
//! - at registration, [`WebhookUrl::parse`] rejects URLs whose host is a private IP literal
//!   or an internal-looking name, so users get a clear `422` early;
//! - at delivery, the worker's connector re-checks every *resolved* address with
//!   [`ip_permitted`], because a public name can resolve to a private address at any time
//!   (DNS rebinding). The registration check alone is never enough.
//!
//! Everything here is pure: no DNS, no sockets.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::{Host, Url};

/// CIDRs exempt from the private-address block (`WF_ALLOWED_TARGET_CIDRS`): for tests and
/// on-prem receivers. Empty by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedCidrs(Vec<IpNet>);

impl AllowedCidrs {
    /// Parses a comma-separated list of CIDRs (`127.0.0.0/8,::1/128`); a bare address is
    /// taken as a single-host network. Empty or blank input is the empty list.
    ///
    /// # Errors
    /// The offending entry, when it is neither a CIDR nor an address.
    pub fn parse(s: &str) -> Result<AllowedCidrs, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net = part
                .parse::<IpNet>()
                .or_else(|_| part.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| part.to_owned())?;
            out.push(net);
        }
        Ok(AllowedCidrs(out))
    }

    /// Whether `ip` (IPv4-mapped IPv6 unwrapped first) is inside one of the ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// Whether no range is exempt (the production default).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The exempt ranges, e.g. for the start-up warning that lists them.
    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }
}

// ---------------------------------------------------------------------------------------
// Address classification
// ---------------------------------------------------------------------------------------

/// Whether `ip` is inside `net/len` (IPv4). `len` must be 0..=32.
const fn in_v4(ip: u32, net: [u8; 4], len: u32) -> bool {
    let net = u32::from_be_bytes(net);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    ip & mask == net & mask
}

/// Whether `ip` is inside `net/len` (IPv6). `len` must be 0..=128.
const fn in_v6(ip: u128, net: u128, len: u32) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    ip & mask == net & mask
}

/// IPv4 ranges that must never be a delivery target (IANA special-purpose registry, the
/// ones that are not globally reachable, plus everything above 224.0.0.0).
const FORBIDDEN_V4: &[([u8; 4], u32)] = &[
    ([0, 0, 0, 0], 8),  // "this network", incl. 0.0.0.0 which Linux routes to localhost
    ([10, 0, 0, 0], 8), // RFC 1918
    ([100, 64, 0, 0], 10), // CGNAT shared address space (RFC 6598)
    ([127, 0, 0, 0], 8), // loopback
    ([169, 254, 0, 0], 16), // link-local, incl. cloud metadata 169.254.169.254
    ([172, 16, 0, 0], 12), // RFC 1918
    ([192, 0, 0, 0], 24), // IETF protocol assignments
    ([192, 0, 2, 0], 24), // TEST-NET-1 (documentation)
    ([192, 88, 99, 0], 24), // deprecated 6to4 relay anycast
    ([192, 168, 0, 0], 16), // RFC 1918
    ([198, 18, 0, 0], 15), // benchmarking
    ([198, 51, 100, 0], 24), // TEST-NET-2 (documentation)
    ([203, 0, 113, 0], 24), // TEST-NET-3 (documentation)
    ([224, 0, 0, 0], 4), // multicast
    ([240, 0, 0, 0], 4), // reserved, incl. broadcast 255.255.255.255
];

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let bits = u32::from(ip);
    FORBIDDEN_V4.iter().any(|&(net, len)| in_v4(bits, net, len))
}

/// The IPv4 address in the low 32 bits of `ip`.
fn low_v4(ip: u128) -> Ipv4Addr {
    // Truncation is the point: the embedded address is the last 32 bits.
    Ipv4Addr::from((ip & 0xffff_ffff) as u32)
}

/// Whether an IP address is private, internal or otherwise special, i.e. not a place a
/// webhook may be delivered to.
///
/// Hand-classified because `IpAddr::is_global` is unstable, and deliberately stricter
/// than it: every IPv6 form that embeds an IPv4 address (mapped `::ffff:a.b.c.d`,
/// translated `::ffff:0:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4
/// `2002::/16`) is judged by the embedded IPv4 address, because the kernel or a gateway
/// on the path may turn it into exactly that IPv4 destination. Teredo (`2001::/32`) and
/// the local-use NAT64 prefix `64:ff9b:1::/48` are refused outright: their embedding
/// depends on the deployment (Teredo obfuscates the client address, local NAT64 prefixes
/// may be /48../96), so they cannot be classified reliably, and no real receiver needs
/// them. Outside the global-unicast block `2000::/3` nothing is allowed at all, which
/// covers `::`, `::1`, `fc00::/7`, `fe80::/10`, `fec0::/10`, `ff00::/8` and every
/// still-reserved range.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    // The unspecified address and loopback first: they sit inside ::/96 below, and
    // their "embedded IPv4" (0.0.0.0 / 0.0.0.1) happens to be forbidden too, but naming
    // them keeps the intent obvious.
    if ip.is_unspecified() || ip.is_loopback() {
        return true;
    }
    // IPv4-mapped ::ffff:0:0/96, IPv4-translated ::ffff:0:0:0/96, IPv4-compatible ::/96,
    // well-known NAT64 64:ff9b::/96: the IPv4 address is the low 32 bits.
    const EMBEDDED_V4_AT_END: &[(u128, u32)] = &[
        (0x0000_0000_0000_0000_0000_ffff_0000_0000, 96),
        (0x0000_0000_0000_0000_ffff_0000_0000_0000, 96),
        (0x0000_0000_0000_0000_0000_0000_0000_0000, 96),
        (0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96),
    ];
    if EMBEDDED_V4_AT_END
        .iter()
        .any(|&(net, len)| in_v6(bits, net, len))
    {
        return is_forbidden_v4(low_v4(bits));
    }
    // 6to4: 2002:AABB:CCDD::/48 carries A.B.C.D in bits 16..48.
    if in_v6(bits, 0x2002_0000_0000_0000_0000_0000_0000_0000, 16) {
        // Shift the embedded address down into the low 32 bits, then truncate.
        return is_forbidden_v4(low_v4(bits >> 80));
    }
    const FORBIDDEN_V6: &[(u128, u32)] = &[
        (0x0064_ff9b_0001_0000_0000_0000_0000_0000, 48), // local-use NAT64 (RFC 8215)
        (0x0100_0000_0000_0000_0000_0000_0000_0000, 64), // discard-only
        (0x2001_0000_0000_0000_0000_0000_0000_0000, 32), // Teredo
        (0x2001_0002_0000_0000_0000_0000_0000_0000, 48), // benchmarking
        (0x2001_0010_0000_0000_0000_0000_0000_0000, 28), // ORCHID (deprecated)
        (0x2001_0db8_0000_0000_0000_0000_0000_0000, 32), // documentation
        (0x3fff_0000_0000_0000_0000_0000_0000_0000, 20), // documentation (RFC 9637)
        (0x5f00_0000_0000_0000_0000_0000_0000_0000, 16), // SRv6 SIDs (RFC 9602)
        (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7),  // unique local
        (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10), // link-local
        (0xfec0_0000_0000_0000_0000_0000_0000_0000, 10), // site-local (deprecated)
        (0xff00_0000_0000_0000_0000_0000_0000_0000, 8),  // multicast
    ];
    if FORBIDDEN_V6.iter().any(|&(net, len)| in_v6(bits, net, len)) {
        return true;
    }
    // Everything globally routable today lives in 2000::/3; the rest is reserved.
    !in_v6(bits, 0x2000_0000_0000_0000_0000_0000_0000_0000, 3)
}

/// Host-name suffixes that only ever name something internal (RFC 6761/6762/8375 and the
/// cloud metadata convention `metadata.google.internal`).
const FORBIDDEN_SUFFIXES: &[&str] = &[
    ".localhost",
    ".local",
    ".internal",
    ".localdomain",
    ".home.arpa",
];

/// Whether a host *name* is internal: `localhost`, `*.localhost`, `*.local`,
/// `*.internal` (incl. `metadata.google.internal`), `*.localdomain`, `*.home.arpa`, or a
/// single-label name (no dot), which a resolver would complete with a local search
/// domain. Case-insensitive; trailing dots (the fully-qualified spelling `localhost.`)
/// are ignored so they cannot be used to slip past the suffix match.
///
/// If `host` is actually an IP address (bracketed or not) it is classified with
/// [`is_forbidden_ip`], so a caller that cannot tell names from literals stays safe.
pub fn is_forbidden_host_name(host: &str) -> bool {
    let trimmed = host.trim_end_matches('.');
    let unbracketed = trimmed
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(trimmed);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return is_forbidden_ip(ip);
    }
    let name = trimmed.to_ascii_lowercase();
    if name.is_empty() || !name.contains('.') || name == "localhost" {
        return true;
    }
    FORBIDDEN_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Whether the delivery client may connect to `ip`: an explicitly allowed CIDR
/// (`WF_ALLOWED_TARGET_CIDRS`) wins, otherwise the address must not be forbidden.
pub fn ip_permitted(ip: IpAddr, allowed: &AllowedCidrs) -> bool {
    allowed.contains(ip) || !is_forbidden_ip(ip)
}

// ---------------------------------------------------------------------------------------
// WebhookUrl
// ---------------------------------------------------------------------------------------

/// Longest accepted webhook URL, in characters.
pub const MAX_URL_LEN: usize = 2048;

/// Why a webhook URL was refused. [`UrlError::code`] is the API error code (docs/api.md,
/// "Errors").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL at all, no host, or credentials in it.
    #[error("invalid URL: {0}")]
    Invalid(String),
    /// Any scheme but `https` (deliveries carry signed payloads and must be encrypted).
    #[error("URL must use https, not `{0}`")]
    NotHttps(String),
    /// Longer than [`MAX_URL_LEN`] characters (given or once normalised).
    #[error("URL is {0} characters long; at most {MAX_URL_LEN} are allowed")]
    TooLong(usize),
    /// The host is a private, internal or special IP address or host name.
    #[error("URL host `{0}` is a private, internal or reserved address")]
    PrivateAddress(String),
}

impl UrlError {
    /// The stable snake_case code of the API error body.
    pub fn code(&self) -> &'static str {
        match self {
            UrlError::Invalid(_) => "invalid_url",
            UrlError::NotHttps(_) => "url_not_https",
            UrlError::TooLong(_) => "url_too_long",
            UrlError::PrivateAddress(_) => "url_private_address",
        }
    }
}

/// A webhook URL that passed the policy: absolute `https`, ≤ 2048 characters, no
/// credentials, and a host that is neither a forbidden IP literal nor an internal name.
///
/// It can only be built by [`WebhookUrl::parse`] ("parse, don't validate"), so code that
/// holds one never needs to re-check the syntax. The *resolved* addresses still have to
/// be checked at connect time; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    /// Parses and checks a webhook URL. Input is trimmed; the stored form is the WHATWG
    /// serialisation, so IPv4 spellings such as `2130706433`, `0x7f.1`, `017700000001`
    /// or `127.1` are normalised to `127.0.0.1` *before* the address check and cannot
    /// sneak past it. Addresses inside `allowed` are accepted even if private; host
    /// names are never exempted by `allowed` (their addresses are checked at delivery).
    ///
    /// # Errors
    /// [`UrlError::TooLong`], [`UrlError::Invalid`] (unparseable, no host, userinfo),
    /// [`UrlError::NotHttps`], [`UrlError::PrivateAddress`].
    pub fn parse(input: &str, allowed: &AllowedCidrs) -> Result<WebhookUrl, UrlError> {
        let input = input.trim();
        let len = input.chars().count();
        if len > MAX_URL_LEN {
            return Err(UrlError::TooLong(len));
        }
        let url = match Url::parse(input) {
            Ok(url) => url,
            Err(e) => {
                // `http://` alone fails to parse (empty host), but the useful answer
                // is still "use https".
                if let Some(scheme) = scheme_of(input) {
                    if !scheme.eq_ignore_ascii_case("https") {
                        return Err(UrlError::NotHttps(scheme.to_ascii_lowercase()));
                    }
                }
                return Err(UrlError::Invalid(e.to_string()));
            }
        };
        if url.scheme() != "https" {
            return Err(UrlError::NotHttps(url.scheme().to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Invalid(
                "URL must not contain a user name or password".to_owned(),
            ));
        }
        let denied = match url.host() {
            None => return Err(UrlError::Invalid("URL has no host".to_owned())),
            Some(Host::Ipv4(ip)) => !ip_permitted(IpAddr::V4(ip), allowed),
            Some(Host::Ipv6(ip)) => !ip_permitted(IpAddr::V6(ip), allowed),
            Some(Host::Domain(name)) => is_forbidden_host_name(name),
        };
        if denied {
            let host = url.host_str().unwrap_or_default().to_owned();
            return Err(UrlError::PrivateAddress(host));
        }
        // Normalisation can lengthen a URL (percent-encoding, punycode); the stored
        // form is what must fit.
        let normalised = url.as_str().chars().count();
        if normalised > MAX_URL_LEN {
            return Err(UrlError::TooLong(normalised));
        }
        Ok(WebhookUrl(url))
    }

    /// The normalised URL string (what is stored and shown).
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The parsed URL.
    pub fn url(&self) -> &Url {
        &self.0
    }

    /// The host as serialised in the URL (IPv6 literals in brackets). Always present.
    pub fn host_str(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }

    /// The host when it is an IP literal. The delivery client checks these itself,
    /// because hyper-util's connector does not pass literals through its resolver.
    pub fn host_ip(&self) -> Option<IpAddr> {
        match self.0.host()? {
            Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            Host::Domain(_) => None,
        }
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for WebhookUrl {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// The scheme of something that looks like `scheme:…` (RFC 3986 scheme syntax).
fn scheme_of(input: &str) -> Option<&str> {
    let (scheme, _) = input.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> AllowedCidrs {
        AllowedCidrs::default()
    }

    fn code_of(url: &str) -> &'static str {
        match WebhookUrl::parse(url, &none()) {
            Ok(u) => panic!("{url:?} was accepted as {u}"),
            Err(e) => e.code(),
        }
    }

    #[test]
    fn allowed_cidrs_parse() {
        let a = AllowedCidrs::parse(" 127.0.0.0/8, ::1 ,").unwrap();
        assert_eq!(a.nets().len(), 2);
        assert!(a.contains("127.3.4.5".parse().unwrap()));
        assert!(a.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(a.contains("::1".parse().unwrap()));
        assert!(!a.contains("10.0.0.1".parse().unwrap()));
        assert!(AllowedCidrs::parse("").unwrap().is_empty());
        assert_eq!(AllowedCidrs::parse("10.0.0.0/8,nope"), Err("nope".into()));
    }

    #[test]
    fn forbidden_ipv4_ranges() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "169.254.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(
                is_forbidden_ip(ip.parse().unwrap()),
                "{ip} should be forbidden"
            );
        }
    }

    #[test]
    fn public_ipv4_is_fine() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.3.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "11.0.0.1",
            "126.255.255.255",
            "128.0.0.1",
            "169.253.255.255",
        ] {
            assert!(
                !is_forbidden_ip(ip.parse().unwrap()),
                "{ip} should be allowed"
            );
        }
    }

    #[test]
    fn forbidden_ipv6_ranges() {
        for ip in [
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "100::1",
            "3fff::1",
            "64:ff9b:1::1",
            "64:ff9b:1::808:808",
            // not in 2000::/3
            "1::1",
            "4000::1",
            "e000::1",
        ] {
            assert!(
                is_forbidden_ip(ip.parse().unwrap()),
                "{ip} should be forbidden"
            );
        }
    }

    #[test]
    fn embedded_ipv4_forms() {
        for ip in [
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0:127.0.0.1",
            "::127.0.0.1",
            "::10.1.2.3",
            "::a9fe:a9fe",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::192.168.0.1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:0101:1::1",
        ] {
            assert!(
                is_forbidden_ip(ip.parse().unwrap()),
                "{ip} should be forbidden"
            );
        }
        for ip in [
            "::ffff:8.8.8.8",
            "::8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
            "2606:4700::1111",
            "2a00:1450:4001:82b::200e",
        ] {
            assert!(
                !is_forbidden_ip(ip.parse().unwrap()),
                "{ip} should be allowed"
            );
        }
    }

    #[test]
    fn forbidden_names() {
        for name in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "localhost..",
            "foo.localhost",
            "Foo.LocalHost.",
            "printer.local",
            "x.internal",
            "metadata.google.internal",
            "metadata.google.internal.",
            "box.localdomain",
            "localhost.localdomain",
            "nas.home.arpa",
            "intranet",
            "intranet.",
            "",
            ".",
            "127.0.0.1",
            "[::1]",
        ] {
            assert!(is_forbidden_host_name(name), "{name:?} should be forbidden");
        }
        for name in [
            "example.com",
            "example.com.",
            "your-server.com",
            "localhost.example.com",
            "internal.example.com",
            "local.example.com",
            "8.8.8.8",
        ] {
            assert!(!is_forbidden_host_name(name), "{name:?} should be allowed");
        }
    }

    #[test]
    fn ip_permitted_honours_allowed() {
        let allowed = AllowedCidrs::parse("127.0.0.0/8,fd00::/8").unwrap();
        assert!(ip_permitted("127.0.0.1".parse().unwrap(), &allowed));
        assert!(ip_permitted("::ffff:127.0.0.1".parse().unwrap(), &allowed));
        assert!(ip_permitted("fd00::5".parse().unwrap(), &allowed));
        assert!(ip_permitted("8.8.8.8".parse().unwrap(), &allowed));
        assert!(!ip_permitted("10.0.0.1".parse().unwrap(), &allowed));
        assert!(!ip_permitted("127.0.0.1".parse().unwrap(), &none()));
    }

    #[test]
    fn hostile_urls_are_rejected_with_the_right_code() {
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN + 1 - 20));
        assert_eq!(long.len(), MAX_URL_LEN + 1);
        let cases: &[(&str, &str)] = &[
            // IPv4 ranges
            ("https://127.0.0.1/", "url_private_address"),
            ("https://127.0.0.1:8443/hook", "url_private_address"),
            ("https://10.0.0.1/", "url_private_address"),
            ("https://172.16.5.4/", "url_private_address"),
            ("https://192.168.0.1/", "url_private_address"),
            (
                "https://169.254.169.254/latest/meta-data/",
                "url_private_address",
            ),
            ("https://100.64.0.1/", "url_private_address"),
            ("https://0.0.0.0/", "url_private_address"),
            ("https://224.0.0.1/", "url_private_address"),
            ("https://255.255.255.255/", "url_private_address"),
            ("https://240.0.0.1/", "url_private_address"),
            ("https://192.0.2.1/", "url_private_address"),
            ("https://198.51.100.1/", "url_private_address"),
            ("https://203.0.113.1/", "url_private_address"),
            ("https://198.18.0.1/", "url_private_address"),
            ("https://192.0.0.1/", "url_private_address"),
            // Alternative IPv4 spellings (normalised by the WHATWG parser)
            ("https://2130706433/", "url_private_address"),
            ("https://0x7f.1/", "url_private_address"),
            ("https://0x7f000001/", "url_private_address"),
            ("https://017700000001/", "url_private_address"),
            ("https://0177.0.0.1/", "url_private_address"),
            ("https://127.1/", "url_private_address"),
            ("https://127.0.1/", "url_private_address"),
            ("https://0/", "url_private_address"),
            ("https://0x0/", "url_private_address"),
            ("https://3232235521/", "url_private_address"), // 192.168.0.1
            ("https://0xA9FEA9FE/", "url_private_address"), // 169.254.169.254
            ("https://%31%32%37.0.0.1/", "url_private_address"),
            // IPv6 literals
            ("https://[::1]/", "url_private_address"),
            ("https://[::]/", "url_private_address"),
            ("https://[0:0:0:0:0:0:0:1]/", "url_private_address"),
            ("https://[fc00::1]/", "url_private_address"),
            ("https://[fd00::1]:8443/", "url_private_address"),
            ("https://[fe80::1]/", "url_private_address"),
            ("https://[fec0::1]/", "url_private_address"),
            ("https://[ff02::1]/", "url_private_address"),
            ("https://[2001:db8::1]/", "url_private_address"),
            ("https://[2001::1]/", "url_private_address"),
            // IPv4 embedded in IPv6
            ("https://[::ffff:127.0.0.1]/", "url_private_address"),
            ("https://[::ffff:7f00:1]/", "url_private_address"),
            ("https://[::ffff:a9fe:a9fe]/", "url_private_address"),
            ("https://[::127.0.0.1]/", "url_private_address"),
            ("https://[::7f00:1]/", "url_private_address"),
            ("https://[64:ff9b::7f00:1]/", "url_private_address"),
            ("https://[64:ff9b::10.0.0.1]/", "url_private_address"),
            ("https://[64:ff9b:1::1]/", "url_private_address"),
            ("https://[2002:7f00:1::1]/", "url_private_address"),
            ("https://[2002:a9fe:a9fe::]/", "url_private_address"),
            // Names
            ("https://localhost/", "url_private_address"),
            ("https://localhost./", "url_private_address"),
            ("https://LOCALHOST/", "url_private_address"),
            ("https://LocalHost:8443/x", "url_private_address"),
            ("https://foo.localhost/", "url_private_address"),
            ("https://x.internal/", "url_private_address"),
            (
                "https://metadata.google.internal/computeMetadata/v1/",
                "url_private_address",
            ),
            ("https://printer.local/", "url_private_address"),
            ("https://router.home.arpa/", "url_private_address"),
            ("https://box.localdomain/", "url_private_address"),
            ("https://intranet/", "url_private_address"),
            (
                "https://\u{ff4c}\u{ff4f}\u{ff43}\u{ff41}\u{ff4c}\u{ff48}\u{ff4f}\u{ff53}\u{ff54}/",
                "url_private_address",
            ),
            // Scheme
            ("http://example.com/hook", "url_not_https"),
            ("http://", "url_not_https"),
            ("HTTP://example.com/", "url_not_https"),
            ("ftp://example.com/", "url_not_https"),
            ("ws://example.com/", "url_not_https"),
            ("file:///etc/passwd", "url_not_https"),
            ("gopher://127.0.0.1:6379/_INFO", "url_not_https"),
            ("javascript:alert(1)", "url_not_https"),
            ("localhost:8080/hook", "url_not_https"),
            // Structure
            ("", "invalid_url"),
            ("   ", "invalid_url"),
            ("https://", "invalid_url"),
            // WHATWG skips the extra slashes: the host is the single label `hook`.
            ("https:///hook", "url_private_address"),
            ("example.com/hook", "invalid_url"),
            ("/relative/path", "invalid_url"),
            ("https://user:pw@example.com/", "invalid_url"),
            ("https://user@example.com/", "invalid_url"),
            ("https://:pw@example.com/", "invalid_url"),
            ("https://exa mple.com/", "invalid_url"),
            ("https://[::1/", "invalid_url"),
            ("https://1.2.3.4.5/", "invalid_url"),
            ("https://256.0.0.1/", "invalid_url"),
            ("https://example.com:99999/", "invalid_url"),
            (&long, "url_too_long"),
        ];
        assert!(cases.len() >= 40);
        let wrong: Vec<String> = cases
            .iter()
            .filter(|(url, want)| code_of(url) != *want)
            .map(|(url, want)| format!("{url:?}: got {}, want {want}", code_of(url)))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn whatwg_normalises_ipv4_spellings() {
        let allowed = AllowedCidrs::parse("127.0.0.0/8").unwrap();
        for spelling in [
            "https://2130706433/",
            "https://0x7f.1/",
            "https://017700000001/",
            "https://127.1/",
            "https://0x7F.0.0.1/",
            "https://0177.0.0.01/",
        ] {
            let u = WebhookUrl::parse(spelling, &allowed).unwrap();
            assert_eq!(u.host_str(), "127.0.0.1", "{spelling}");
            assert_eq!(u.as_str(), "https://127.0.0.1/", "{spelling}");
        }
    }

    #[test]
    fn good_urls_are_accepted() {
        for url in [
            "https://example.com/hook",
            "https://your-server.com/webhooks/workflows",
            "  https://your-server.com/webhooks/workflows  ",
            "https://8.8.8.8/x",
            "https://[2606:4700::1111]/",
            "https://[::ffff:8.8.8.8]/",
            "https://example.com:8443/a/b?c=d#frag",
            "HTTPS://Example.COM/Hook",
            "https://example.com./hook",
            "https://b\u{fc}cher.example/hook",
        ] {
            let parsed = WebhookUrl::parse(url, &none());
            assert!(parsed.is_ok(), "{url:?} was rejected: {parsed:?}");
        }
        let u = WebhookUrl::parse("HTTPS://Example.COM/Hook", &none()).unwrap();
        assert_eq!(u.as_str(), "https://example.com/Hook");
        assert_eq!(u.to_string(), u.as_str());
        assert_eq!(u.host_str(), "example.com");
        assert_eq!(u.url().path(), "/Hook");
        let v6 = WebhookUrl::parse("https://[2606:4700::1111]/", &none()).unwrap();
        assert_eq!(v6.host_str(), "[2606:4700::1111]");
        assert_eq!(v6.host_ip(), Some("2606:4700::1111".parse().unwrap()));
        assert_eq!(u.host_ip(), None);
        let exact = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN - 20));
        assert_eq!(exact.len(), MAX_URL_LEN);
        assert!(WebhookUrl::parse(&exact, &none()).is_ok());
    }

    #[test]
    fn normalised_length_is_checked_too() {
        // 1000 spaces fit the raw limit but become 3000 characters of %20.
        let url = format!("https://example.com/{}x", " ".repeat(1000));
        assert_eq!(
            WebhookUrl::parse(&url, &none()).unwrap_err().code(),
            "url_too_long"
        );
    }

    #[test]
    fn allowed_cidrs_exempt_literals_but_not_names() {
        let allowed = AllowedCidrs::parse("127.0.0.0/8").unwrap();
        let u = WebhookUrl::parse("https://127.0.0.1:8443/", &allowed).unwrap();
        assert_eq!(u.as_str(), "https://127.0.0.1:8443/");
        assert_eq!(
            WebhookUrl::parse("https://127.0.0.1:8443/", &none())
                .unwrap_err()
                .code(),
            "url_private_address"
        );
        assert!(WebhookUrl::parse("https://[::ffff:127.0.0.1]/", &allowed).is_ok());
        assert_eq!(
            WebhookUrl::parse("https://10.0.0.1/", &allowed)
                .unwrap_err()
                .code(),
            "url_private_address"
        );
        assert_eq!(
            WebhookUrl::parse("https://localhost:8443/", &allowed)
                .unwrap_err()
                .code(),
            "url_private_address"
        );
    }

    #[test]
    fn error_messages_are_human() {
        let e = WebhookUrl::parse("http://example.com", &none()).unwrap_err();
        assert_eq!(e.to_string(), "URL must use https, not `http`");
        let e = WebhookUrl::parse("https://10.1.2.3/", &none()).unwrap_err();
        assert!(e.to_string().contains("10.1.2.3"), "{e}");
        let e = WebhookUrl::parse("https://u:p@example.com/", &none()).unwrap_err();
        assert!(e.to_string().contains("user name or password"), "{e}");
    }
}
