//! The URL and address policy (SPEC §3): which webhook URLs are accepted and which
//! addresses the delivery client may connect to.

use std::net::IpAddr;

use ipnet::IpNet;

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

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }
}
