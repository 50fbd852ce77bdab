//! Custom request headers of a webhook: what an endpoint owner asks us to send with every
//! delivery (an API gateway's key, a routing tag), within rules that keep the exchange
//! intact.
//!
//! - At most [`MAX_HEADERS`] headers, [`MAX_TOTAL_BYTES`] in all (names and values).
//! - A name is an HTTP token (RFC 9110 `tchar`s), unique case-insensitively.
//! - A value is printable: visible ASCII, spaces and tabs, neither leading nor trailing
//!   (HTTP would strip them), no CR, LF or other control character.
//! - Names the delivery itself sets, or that would break the request, are reserved
//!   ([`is_reserved`]): `Content-Type`, `Content-Length`, `Host`, `User-Agent`,
//!   `Transfer-Encoding`, `Connection`, any `X-WorkFlows-*` and any `webhook-*`.
//!
//! Values may hold credentials: the API shows them only when the webhook is created and
//! masks them ([`MASK`]) everywhere else, and the store keeps them encrypted.

use std::fmt;

use serde_json::{Map, Value};

/// Most custom headers one webhook may have.
pub const MAX_HEADERS: usize = 20;
/// Most bytes of names and values, all headers together.
pub const MAX_TOTAL_BYTES: usize = 4096;
/// What the API shows instead of a value.
pub const MASK: &str = "********";

/// Names (lower case) the delivery sets itself or that would break the exchange.
const RESERVED: [&str; 6] = [
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "transfer-encoding",
    "connection",
];
/// Reserved name prefixes (lower case): our own headers and the Standard Webhooks ones.
const RESERVED_PREFIXES: [&str; 2] = ["x-workflows-", "webhook-"];

/// Whether `name` (any case) is one a webhook may not set.
pub fn is_reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED.contains(&lower.as_str()) || RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p))
}

/// RFC 9110 `token`: one or more `tchar`s.
pub fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Visible ASCII, spaces and tabs, without surrounding whitespace (possibly empty).
pub fn is_printable_value(value: &str) -> bool {
    let ws = |b: u8| b == b' ' || b == b'\t';
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        && !value.bytes().next().is_some_and(ws)
        && !value.bytes().last().is_some_and(ws)
}

/// Why a set of custom headers was refused; [`code`](HeaderRuleError::code) is the API's
/// error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderRuleError {
    #[error("at most {MAX_HEADERS} custom headers are allowed, not {0}")]
    TooMany(usize),
    #[error("header name `{0}` is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~)")]
    InvalidName(String),
    #[error(
        "the value of header `{0}` must be visible ASCII, spaces and tabs (not at either \
         end), without CR, LF or other control characters"
    )]
    InvalidValue(String),
    #[error(
        "header `{0}` is set by the delivery itself and cannot be overridden (reserved: \
         Content-Type, Content-Length, Host, User-Agent, Transfer-Encoding, Connection, \
         X-WorkFlows-*, webhook-*)"
    )]
    Reserved(String),
    #[error("header `{0}` is given twice (names are case-insensitive)")]
    Duplicate(String),
    #[error(
        "custom headers take {0} bytes (names and values); at most {MAX_TOTAL_BYTES} are allowed"
    )]
    TooLarge(usize),
}

impl HeaderRuleError {
    /// The stable snake_case code of the API error body.
    pub fn code(&self) -> &'static str {
        match self {
            HeaderRuleError::TooMany(_) => "too_many_headers",
            HeaderRuleError::InvalidName(_) => "invalid_header_name",
            HeaderRuleError::InvalidValue(_) => "invalid_header_value",
            HeaderRuleError::Reserved(_) => "reserved_header",
            HeaderRuleError::Duplicate(_) => "duplicate_header",
            HeaderRuleError::TooLarge(_) => "headers_too_large",
        }
    }
}

/// A webhook's custom headers, valid by construction, in the order given.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CustomHeaders(Vec<(String, String)>);

impl fmt::Debug for CustomHeaders {
    /// Names only: values may be credentials and must not reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

impl CustomHeaders {
    /// Checks `pairs` against every rule, in this order: the count, then each header's
    /// name (token, reserved, duplicate) and value, then the total size.
    ///
    /// # Errors
    /// The first [`HeaderRuleError`] found.
    pub fn parse<I>(pairs: I) -> Result<CustomHeaders, HeaderRuleError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let pairs: Vec<(String, String)> = pairs.into_iter().collect();
        if pairs.len() > MAX_HEADERS {
            return Err(HeaderRuleError::TooMany(pairs.len()));
        }
        let mut seen: Vec<String> = Vec::with_capacity(pairs.len());
        let mut total = 0;
        for (name, value) in &pairs {
            if !is_token(name) {
                return Err(HeaderRuleError::InvalidName(printable(name)));
            }
            if is_reserved(name) {
                return Err(HeaderRuleError::Reserved(name.clone()));
            }
            let lower = name.to_ascii_lowercase();
            if seen.contains(&lower) {
                return Err(HeaderRuleError::Duplicate(name.clone()));
            }
            seen.push(lower);
            if !is_printable_value(value) {
                return Err(HeaderRuleError::InvalidValue(name.clone()));
            }
            total += name.len() + value.len();
        }
        if total > MAX_TOTAL_BYTES {
            return Err(HeaderRuleError::TooLarge(total));
        }
        Ok(CustomHeaders(pairs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `(name, value)` in the order given.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }

    /// The headers as a JSON object, values in clear (the create response, and what the
    /// store encrypts).
    pub fn to_json(&self) -> Map<String, Value> {
        self.iter()
            .map(|(n, v)| (n.to_owned(), Value::String(v.to_owned())))
            .collect()
    }

    /// Serialised for encryption at rest.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&Value::Object(self.to_json())).expect("a JSON object serialises")
    }

    /// Reads what [`to_bytes`](Self::to_bytes) wrote, checking the rules again.
    ///
    /// # Errors
    /// `None` when the bytes are not such an object or break a rule.
    pub fn from_bytes(bytes: &[u8]) -> Option<CustomHeaders> {
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(bytes) else {
            return None;
        };
        let pairs = m
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        CustomHeaders::parse(pairs).ok()
    }
}

/// The headers as the API shows them after creation: names with [`MASK`] for each value.
pub fn masked<'a>(names: impl IntoIterator<Item = &'a str>) -> Map<String, Value> {
    names
        .into_iter()
        .map(|n| (n.to_owned(), Value::String(MASK.to_owned())))
        .collect()
}

/// A name as it may be shown in an error message: control characters escaped.
fn printable(name: &str) -> String {
    name.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, value: &str) -> Result<CustomHeaders, HeaderRuleError> {
        CustomHeaders::parse([(name.to_owned(), value.to_owned())])
    }

    #[test]
    fn reserved_names_in_any_case() {
        for name in [
            "Content-Type",
            "content-length",
            "HOST",
            "User-Agent",
            "Transfer-Encoding",
            "connection",
            "X-WorkFlows-Signature",
            "x-workflows-anything",
            "webhook-id",
            "Webhook-Signature",
        ] {
            assert_eq!(
                one(name, "v").unwrap_err().code(),
                "reserved_header",
                "{name}"
            );
        }
        for name in [
            "X-Api-Key",
            "Authorization",
            "X-Workflow",
            "webhooks",
            "Hosts",
        ] {
            assert!(one(name, "v").is_ok(), "{name}");
        }
    }

    #[test]
    fn names_are_tokens() {
        for bad in ["", "X Api", "X:Api", "X-Api\r\n", "é", "(x)", "a/b"] {
            assert_eq!(
                one(bad, "v").unwrap_err().code(),
                "invalid_header_name",
                "{bad:?}"
            );
        }
        assert!(one("X-Api_Key.v1~!#$%&'*+^`|", "v").is_ok());
    }

    #[test]
    fn values_are_printable() {
        for bad in [
            "a\r\nX-Evil: 1",
            "a\nb",
            "a\rb",
            "nul\0",
            "\u{7f}",
            "é",
            " lead",
            "trail\t",
        ] {
            assert_eq!(
                one("X-A", bad).unwrap_err().code(),
                "invalid_header_value",
                "{bad:?}"
            );
        }
        for good in ["", "Bearer abc.def", "a\tb", "~!@#$%^&*()"] {
            assert!(one("X-A", good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn count_size_and_duplicates() {
        let n = |k: usize| (0..k).map(|i| (format!("X-H{i}"), "v".to_owned()));
        assert_eq!(CustomHeaders::parse(n(20)).unwrap().len(), 20);
        assert_eq!(
            CustomHeaders::parse(n(21)).unwrap_err(),
            HeaderRuleError::TooMany(21)
        );
        // 4096 bytes exactly is fine, one more is not.
        let fits = [("X-A".to_owned(), "v".repeat(MAX_TOTAL_BYTES - 3))];
        assert!(CustomHeaders::parse(fits).is_ok());
        let over = [("X-A".to_owned(), "v".repeat(MAX_TOTAL_BYTES - 2))];
        assert_eq!(
            CustomHeaders::parse(over).unwrap_err().code(),
            "headers_too_large"
        );
        let dup = [
            ("X-A".to_owned(), "1".to_owned()),
            ("x-a".to_owned(), "2".to_owned()),
        ];
        assert_eq!(
            CustomHeaders::parse(dup).unwrap_err().code(),
            "duplicate_header"
        );
    }

    #[test]
    fn bytes_round_trip_keeps_order_and_debug_hides_values() {
        let h = CustomHeaders::parse([
            ("X-B".to_owned(), "secret-1".to_owned()),
            ("X-A".to_owned(), "secret-2".to_owned()),
        ])
        .unwrap();
        let back = CustomHeaders::from_bytes(&h.to_bytes()).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.names().collect::<Vec<_>>(), ["X-B", "X-A"]);
        assert!(!format!("{h:?}").contains("secret"));
        assert_eq!(
            Value::Object(masked(h.names())),
            serde_json::json!({"X-B": MASK, "X-A": MASK})
        );
        assert_eq!(CustomHeaders::from_bytes(b"[1]"), None);
        assert_eq!(CustomHeaders::from_bytes(br#"{"Host": "x"}"#), None);
    }
}
