//! Where the relay may send: the network policy, applied to the IP address in a URL and to every
//! address a host name resolves to, before any connection is opened.
//!
//! Refused by default (`allow_networks` overrides, `deny_networks` adds more):
//!
//! - link-local `169.254.0.0/16` and `fe80::/10`: the instance metadata services of AWS, Google
//!   Cloud, Azure, Oracle Cloud, DigitalOcean, Hetzner, IBM Cloud and OpenStack
//!   (`169.254.169.254`), AWS ECS task metadata (`169.254.170.2`), EKS Pod Identity
//!   (`169.254.170.23`), Tencent Cloud (`169.254.0.23`), Scaleway (`169.254.42.42`), OpenStack's
//!   IPv6 metadata (`fe80::a9fe:a9fe`);
//! - cloud metadata and platform addresses outside link-local: [`METADATA`];
//! - every IPv6 address that embeds a refused IPv4 address: IPv4-mapped (`::ffff:0:0/96`),
//!   IPv4-compatible (`::/96`), IPv4-translated (`::ffff:0:0:0/96`), NAT64 (`64:ff9b::/96`, and `64:ff9b:1::/48` with the IPv4 address
//!   in the last 32 bits), 6to4 (`2002::/16`), Teredo (`2001::/32`: server and client address)
//!   and ISATAP interface identifiers (`…:0:5efe:a.b.c.d`). A request to
//!   `[64:ff9b::a9fe:a9fe]` reaches `169.254.169.254` through a NAT64 gateway; it is refused
//!   as that address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Cloud metadata and platform endpoints outside the link-local ranges, refused by default.
pub const METADATA: [(&str, &str); 8] = [
    ("100.100.100.200/32", "Alibaba Cloud instance metadata"),
    (
        "168.63.129.16/32",
        "Azure WireServer (platform agent endpoint)",
    ),
    ("192.0.0.192/32", "Oracle Cloud Classic instance metadata"),
    (
        "fd00:ec2::/32",
        "AWS IPv6 services (instance metadata fd00:ec2::254, EKS Pod Identity fd00:ec2::23)",
    ),
    ("fd20:ce::254/128", "Google Cloud IPv6 instance metadata"),
    (
        "fd00:c1::a9fe:a9fe/128",
        "Oracle Cloud IPv6 instance metadata",
    ),
    (
        "fd00:a9fe:a9fe::1/128",
        "Akamai (Linode) IPv6 instance metadata",
    ),
    ("fd00:42::42/128", "Scaleway IPv6 instance metadata"),
];

/// Link-local ranges, refused by default.
const LINK_LOCAL: [&str; 2] = ["169.254.0.0/16", "fe80::/10"];

/// Which addresses the relay may send to: see the module documentation.
#[derive(Debug, Clone)]
pub struct NetworkPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        NetworkPolicy::new(Vec::new(), Vec::new())
    }
}

impl NetworkPolicy {
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> NetworkPolicy {
        let mut all_deny: Vec<IpNet> = LINK_LOCAL
            .iter()
            .chain(METADATA.iter().map(|(net, _)| net))
            .map(|net| net.parse().expect("static network"))
            .collect();
        all_deny.extend(deny);
        NetworkPolicy {
            allow,
            deny: all_deny,
        }
    }

    /// `None` if the address may be contacted, else why not. An address in `allow` may always
    /// be contacted; otherwise the address and every IPv4 address it embeds are checked against
    /// the denied networks (each unless itself allowed).
    pub fn check(&self, ip: IpAddr) -> Option<String> {
        if self.allowed(ip) {
            return None;
        }
        let (own, embedded) = match ip {
            IpAddr::V4(_) => (ip, Vec::new()),
            // An IPv4-mapped address is that IPv4 address: name it so.
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if self.allowed(IpAddr::V4(v4)) => return None,
                Some(v4) => (IpAddr::V4(v4), Vec::new()),
                None => (ip, embedded_ipv4(v6)),
            },
        };
        if let Some(net) = self.denied(own) {
            return Some(format!(
                "refused to connect to {own}: it is in {net}, {REFUSED_MARKER} (allow_networks overrides)"
            ));
        }
        embedded.into_iter().find_map(|(form, v4)| {
            let v4 = IpAddr::V4(v4);
            self.denied(v4).map(|net| {
                format!(
                    "refused to connect to {ip}: it is the {form} form of {v4}, which is in {net}, {REFUSED_MARKER} (allow_networks overrides)"
                )
            })
        })
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|n| n.contains(&ip))
    }

    fn denied(&self, ip: IpAddr) -> Option<&IpNet> {
        if self.allowed(ip) {
            return None;
        }
        self.deny.iter().find(|n| n.contains(&ip))
    }

    /// The addresses of `addrs` this policy allows, or — when it allows none of them — why not.
    /// What the resolver does with every lookup.
    pub(crate) fn filter(
        &self,
        host: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, String> {
        let mut refused = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.check(a.ip()) {
                None => true,
                Some(reason) => {
                    refused = Some(reason);
                    false
                }
            })
            .collect();
        match refused {
            Some(reason) if allowed.is_empty() => Err(format!("{host}: {reason}")),
            _ => Ok(allowed),
        }
    }

    /// The refusal of a URL whose host is an IP address (no lookup happens for those).
    pub(crate) fn check_literal_host(&self, url: &reqwest::Url) -> Option<String> {
        // The parser writes IPv4 hosts in dotted decimal whatever their spelling (`0xa9fea9fe`,
        // `2852039166`), and IPv6 hosts in brackets.
        let host = url.host_str()?;
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        self.check(literal.parse().ok()?)
    }
}

/// Marks a refusal in error texts (the HTTP client wraps the resolver's error).
pub(crate) const REFUSED_MARKER: &str = "which the relay's network policy denies";

/// The IPv4 addresses an IPv6 address carries, with the name of the form.
fn embedded_ipv4(v6: Ipv6Addr) -> Vec<(&'static str, Ipv4Addr)> {
    let s = v6.segments();
    let last32 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let mut out = Vec::new();
    if s[..6] == [0; 6] && !v6.is_unspecified() && !v6.is_loopback() {
        out.push(("IPv4-compatible", last32));
    }
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        out.push(("IPv4-translated", last32));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..3] == [0x64, 0xff9b, 1] {
        out.push(("NAT64", last32));
    }
    if s[0] == 0x2002 {
        out.push((
            "6to4",
            Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8),
        ));
    }
    if s[0] == 0x2001 && s[1] == 0 {
        out.push((
            "Teredo server",
            Ipv4Addr::new((s[2] >> 8) as u8, s[2] as u8, (s[3] >> 8) as u8, s[3] as u8),
        ));
        out.push(("Teredo client", Ipv4Addr::from(!u32::from(last32))));
    }
    if s[4] & 0xfdff == 0 && s[5] == 0x5efe {
        out.push(("ISATAP", last32));
    }
    out
}

/// reqwest's resolver: the system's lookup, then the policy on every address.
pub(crate) struct PolicyResolver {
    pub(crate) policy: Arc<NetworkPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = policy.filter(&host, addrs)?;
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(p: &NetworkPolicy, ip: &str) -> bool {
        p.check(ip.parse().unwrap()).is_some()
    }

    #[test]
    fn link_local_is_refused_unless_allowed() {
        let p = NetworkPolicy::default();
        assert!(refused(&p, "169.254.169.254"));
        assert!(refused(&p, "fe80::1"));
        assert!(refused(&p, "::ffff:169.254.169.254"));
        assert!(!refused(&p, "127.0.0.1"));
        let p = NetworkPolicy::new(
            vec!["169.254.169.254/32".parse().unwrap()],
            vec!["10.0.0.0/8".parse().unwrap()],
        );
        assert!(!refused(&p, "169.254.169.254"));
        assert!(refused(&p, "10.1.2.3"));
    }

    #[test]
    fn every_known_metadata_address_is_refused_by_default() {
        let p = NetworkPolicy::default();
        for ip in [
            "169.254.169.254", // AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack, ...
            "169.254.170.2",   // AWS ECS task metadata
            "169.254.170.23",  // EKS Pod Identity
            "169.254.0.23",    // Tencent Cloud
            "100.100.100.200", // Alibaba Cloud
            "168.63.129.16",   // Azure WireServer
            "192.0.0.192",     // Oracle Cloud Classic
            "fd00:ec2::254",   // AWS IPv6 IMDS
            "fd00:ec2::23",    // EKS Pod Identity IPv6
            "fd20:ce::254",    // Google Cloud IPv6
            "fd00:c1::a9fe:a9fe",
            "fd00:a9fe:a9fe::1",
            "fd00:42::42",
            "fe80::a9fe:a9fe", // OpenStack IPv6
        ] {
            assert!(refused(&p, ip), "{ip} must be refused");
        }
        for ip in [
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "192.168.1.10",
            "100.100.100.201",
            "fd00:ec3::254",
            "93.184.216.34",
            "2606:2800:220:1::1",
            "64:ff9b::808:808", // NAT64 of a public address
            "2002:808:808::1",  // 6to4 of a public address
        ] {
            assert!(!refused(&p, ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn ipv6_forms_embedding_a_refused_ipv4_address_are_refused() {
        let p = NetworkPolicy::default();
        for ip in [
            "::ffff:a9fe:a9fe",                     // IPv4-mapped
            "::ffff:100.100.100.200",               // IPv4-mapped Alibaba
            "::a9fe:a9fe",                          // IPv4-compatible
            "::ffff:0:a9fe:a9fe",                   // IPv4-translated (SIIT)
            "::169.254.169.254",                    // the same, dotted
            "64:ff9b::a9fe:a9fe",                   // NAT64 well-known prefix
            "64:ff9b::100.100.100.200",             // NAT64 of Alibaba
            "64:ff9b:1:0:0:0:a9fe:a9fe",            // NAT64 local-use prefix
            "2002:a9fe:a9fe::1",                    // 6to4
            "2002:6464:64c8::",                     // 6to4 of 100.100.100.200
            "2001:0:a9fe:a9fe::1",                  // Teredo server
            "2001:0:4136:e378:8000:63bf:5601:5601", // Teredo client 169.254.169.254 (inverted)
            "2001:db8::5efe:a9fe:a9fe",             // ISATAP
        ] {
            let reason = p.check(ip.parse().unwrap());
            assert!(reason.is_some(), "{ip} must be refused");
        }
        let reason = p.check("64:ff9b::a9fe:a9fe".parse().unwrap()).unwrap();
        assert!(
            reason.contains("NAT64 form of 169.254.169.254") && reason.contains("169.254.0.0/16"),
            "{reason}"
        );
        // Networks the operator denies are refused in every form too.
        let p = NetworkPolicy::new(Vec::new(), vec!["127.0.0.0/8".parse().unwrap()]);
        for ip in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
        ] {
            assert!(refused(&p, ip), "{ip} must be refused");
        }
        assert!(
            !refused(&p, "::1"),
            "IPv6 loopback is not denied by 127.0.0.0/8"
        );
    }

    #[test]
    fn allow_networks_overrides_in_every_form() {
        let p = NetworkPolicy::new(vec!["169.254.169.254/32".parse().unwrap()], Vec::new());
        for ip in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!refused(&p, ip), "{ip} is allowed");
        }
        assert!(refused(&p, "169.254.170.2"));
        let p = NetworkPolicy::new(vec!["64:ff9b::/96".parse().unwrap()], Vec::new());
        assert!(
            !refused(&p, "64:ff9b::a9fe:a9fe"),
            "the NAT64 range itself is allowed"
        );
        let p = NetworkPolicy::new(vec!["fd00:ec2::254/128".parse().unwrap()], Vec::new());
        assert!(!refused(&p, "fd00:ec2::254"));
        assert!(refused(&p, "fd00:ec2::23"));
    }

    #[test]
    fn the_resolver_drops_refused_addresses_and_fails_when_none_is_left() {
        let p = NetworkPolicy::default();
        let addr = |s: &str| SocketAddr::new(s.parse().unwrap(), 0);
        let mixed = vec![addr("64:ff9b::a9fe:a9fe"), addr("127.0.0.1")];
        assert_eq!(p.filter("h.example", mixed), Ok(vec![addr("127.0.0.1")]));
        let only_metadata = vec![addr("fd00:ec2::254"), addr("100.100.100.200")];
        let err = p.filter("metadata.example", only_metadata).unwrap_err();
        assert!(
            err.starts_with("metadata.example: refused to connect to")
                && err.contains(REFUSED_MARKER),
            "{err}"
        );
        assert_eq!(p.filter("nothing.example", Vec::new()), Ok(Vec::new()));
    }

    #[test]
    fn literal_hosts_are_checked_in_every_spelling() {
        let p = NetworkPolicy::default();
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://0xa9fea9fe/",
            "http://2852039166/",
            "http://169.254.43518/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[::a9fe:a9fe]/",
            "http://[fd00:ec2::254]/",
            "http://100.100.100.200/latest/meta-data/",
        ] {
            let url = reqwest::Url::parse(url).unwrap();
            assert!(
                p.check_literal_host(&url).is_some(),
                "{url} must be refused"
            );
        }
        let fine = reqwest::Url::parse("http://127.0.0.1:8080/hook").unwrap();
        assert_eq!(p.check_literal_host(&fine), None);
        let name = reqwest::Url::parse("http://example.com/hook").unwrap();
        assert_eq!(
            p.check_literal_host(&name),
            None,
            "names are checked when resolved"
        );
    }
}
