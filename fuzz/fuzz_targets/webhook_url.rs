//! `WebhookUrl::parse` and the address policy. The input is tried as a URL and, when it
//! has no scheme, as the host of `https://<input>/`. A URL that is accepted is https,
//! without credentials, at most 2048 characters, normalised for good (parsing the stored
//! form again gives the same URL), and its host is neither an address the README forbids
//! (judged by an independent oracle, whatever the spelling: decimal, octal, hex, short
//! IPv4, every IPv6 form embedding IPv4) nor an internal name, nor a name that the C
//! resolver would read as an IPv4 address (the URL parser must have turned every such
//! spelling into an address literal, which the policy then judged).
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use url::Host;
use wf_core::url_policy::{
    ip_permitted, is_forbidden_host_name, is_forbidden_ip, AllowedCidrs, WebhookUrl, MAX_URL_LEN,
};
use wf_fuzz::{check_oracle, inet_aton, oracle_blocked, oracle_internal_name, text};

fn check(input: &str) {
    let none = AllowedCidrs::default();
    let Ok(url) = WebhookUrl::parse(input, &none) else {
        return;
    };
    let u = url.url();
    assert_eq!(u.scheme(), "https", "{input:?}");
    assert!(
        u.username().is_empty() && u.password().is_none(),
        "{input:?}"
    );
    assert!(url.as_str().chars().count() <= MAX_URL_LEN, "{input:?}");
    assert_eq!(
        WebhookUrl::parse(url.as_str(), &none).as_ref(),
        Ok(&url),
        "the stored form of {input:?} does not parse back to itself"
    );
    match u.host().expect("an accepted URL has a host") {
        Host::Ipv4(ip) => assert_ip_allowed(IpAddr::V4(ip), input),
        Host::Ipv6(ip) => assert_ip_allowed(IpAddr::V6(ip), input),
        Host::Domain(name) => {
            assert!(
                !oracle_internal_name(name),
                "{input:?}: internal name {name}"
            );
            assert!(!is_forbidden_host_name(name), "{input:?}");
            if let Some(ip) = inet_aton(name) {
                panic!("{input:?}: host {name} is the IPv4 address {ip} to a resolver");
            }
            assert!(name.parse::<IpAddr>().is_err(), "{input:?}: {name}");
        }
    }
    assert_eq!(
        url.host_ip().is_some(),
        !matches!(u.host(), Some(Host::Domain(_)))
    );
}

fn assert_ip_allowed(ip: IpAddr, input: &str) {
    assert!(
        !oracle_blocked(ip),
        "{input:?} accepted with blocked address {ip}"
    );
    assert!(!is_forbidden_ip(ip), "{input:?}");
}

fuzz_target!(init: check_oracle(), |data: &[u8]| {
    let input = text(data);
    check(&input);
    if !input.contains("://") {
        check(&format!("https://{input}/"));
    }
    // The input as an address on its own: the policy forbids at least what the oracle does,
    // and the delivery-time check agrees with the registration-time one.
    if let Ok(ip) = input.trim().parse::<IpAddr>() {
        if oracle_blocked(ip) {
            assert!(is_forbidden_ip(ip), "{ip} must be forbidden");
        }
        let none = AllowedCidrs::default();
        assert_eq!(ip_permitted(ip, &none), !is_forbidden_ip(ip));
        assert_eq!(is_forbidden_host_name(input.trim()), is_forbidden_ip(ip));
    }
});
