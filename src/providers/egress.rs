//! Egress policy: providers name hosts that Mailroom connects to, which makes them a
//! server-side request forgery risk (OWASP SSRF Prevention Cheat Sheet). Every SMTP/IMAP
//! host is resolved and each address checked, at save and again at connect, and the
//! connection goes to the address that was checked, never to a second lookup.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Ranges refused unless the operator allows them: loopback, unspecified, link-local
/// (which holds the cloud metadata services at 169.254.169.254), the AWS IPv6 metadata
/// address, Alibaba's metadata address, multicast and broadcast.
const REFUSED: &[(&str, &str)] = &[
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("0.0.0.0/8", "unspecified"),
    ("::/128", "unspecified"),
    ("169.254.0.0/16", "link-local / cloud metadata"),
    ("fe80::/10", "link-local"),
    ("fd00:ec2::254/128", "cloud metadata"),
    ("100.100.100.200/32", "cloud metadata"),
    ("168.63.129.16/32", "cloud metadata"),
    ("192.0.0.192/32", "cloud metadata"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
    ("255.255.255.255/32", "broadcast"),
];

/// Ranges per-request SMTP also refuses: anyone with a `send` key names those servers, and
/// must not reach the operator's own networks through them (private RFC 1918, shared
/// RFC 6598, unique-local RFC 4193, benchmarking and documentation-free reserved space).
const PRIVATE: &[(&str, &str)] = &[
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "shared"),
    ("192.0.0.0/24", "protocol assignments"),
    ("198.18.0.0/15", "benchmarking"),
    ("240.0.0.0/4", "reserved"),
    ("fc00::/7", "unique-local"),
    ("fec0::/10", "site-local"),
    ("64:ff9b:1::/48", "local NAT64"),
    ("::ffff:0:0:0/96", "IPv4-translated"),
    ("2001::/32", "Teredo"),
];

/// The SMTP ports per-request SMTP may always use (RFC 5321 §4.5.4.2 relay, RFC 8314
/// submission over TLS, RFC 6409 submission, and the common alternative 2525).
pub const SMTP_PORTS: &[u16] = &[25, 465, 587, 2525];

/// The operator's egress policy.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    allowed: Vec<IpNet>,
    /// Certificate authorities trusted for TLS besides the public web roots: an
    /// operator's own CA (`MAILROOM_SMTP_CA_FILE`).
    extra_roots: Arc<[CertificateDer<'static>]>,
    /// Private, shared and unique-local ranges refused too (per-request SMTP).
    private_refused: bool,
    /// Only these ports (per-request SMTP); `None`: any port.
    ports: Option<Arc<[RangeInclusive<u16>]>>,
    /// Errors name neither the address a host resolves to nor why it is refused: the
    /// caller may be anyone holding a `send` key, and must not learn where names point
    /// inside the operator's network.
    opaque: bool,
}

impl EgressPolicy {
    /// Parses `MAILROOM_EGRESS_ALLOW`: comma-separated CIDRs (a bare address means /32 or /128).
    pub fn parse(allow: &str) -> Result<Self, String> {
        let allowed = allow
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{s:?} is not an address or CIDR range like 127.0.0.1/32"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            allowed,
            ..Self::default()
        })
    }

    /// The same trust with every address allowed (the operator's own system SMTP server).
    pub fn allowing_everything(&self) -> Self {
        Self {
            allowed: ["0.0.0.0/0", "::/0"]
                .iter()
                .filter_map(|net| net.parse().ok())
                .collect(),
            extra_roots: self.extra_roots.clone(),
            ..Self::default()
        }
    }

    /// The policy for SMTP servers an API call names (per-request SMTP): everything this
    /// policy refuses plus private, shared and unique-local ranges, unless `allow`
    /// (`MAILROOM_PER_REQUEST_SMTP_ALLOW`, CIDRs) lists them; only the SMTP ports and
    /// those `ports` lists (`MAILROOM_PER_REQUEST_SMTP_PORTS`: numbers or ranges like
    /// `2500-2599`); errors that name no address. The operator's `MAILROOM_EGRESS_ALLOW`
    /// does not carry over: it is for the providers admins set up.
    pub fn for_per_request(&self, allow: &str, ports: &str) -> Result<Self, String> {
        let allowed = Self::parse(allow)?.allowed;
        let mut open: Vec<RangeInclusive<u16>> = SMTP_PORTS.iter().map(|p| *p..=*p).collect();
        for item in ports.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (low, high) = item.split_once('-').unwrap_or((item, item));
            let port = |s: &str| {
                s.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        format!("{item:?} is not a port (1–65535) or a range like 2500-2599")
                    })
            };
            let (low, high) = (port(low)?, port(high)?);
            if low > high {
                return Err(format!("{item:?}: the range ends before it starts"));
            }
            open.push(low..=high);
        }
        Ok(Self {
            allowed,
            extra_roots: self.extra_roots.clone(),
            private_refused: true,
            ports: Some(open.into()),
            opaque: true,
        })
    }

    /// Also trusts the certificate authorities of a PEM file for TLS to providers.
    pub fn trusting_pem_file(mut self, path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("{shown}: {e}"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{shown}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{shown} holds no PEM certificate"));
        }
        let mut store = rustls::RootCertStore::empty();
        for cert in &certs {
            store
                .add(cert.clone())
                .map_err(|e| format!("{shown}: a certificate cannot be a trust anchor: {e}"))?;
        }
        self.extra_roots = certs.into();
        Ok(self)
    }

    /// The rustls client configuration for STARTTLS and implicit TLS: the web roots plus
    /// the operator's CAs.
    pub fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in self.extra_roots.iter() {
            roots.add(cert.clone())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth(),
        ))
    }

    /// Why an address is refused, or `None` when it may be used. An IPv6 address that
    /// carries an IPv4 one (mapped `::ffff:0:0/96`, compatible `::/96`, NAT64 `64:ff9b::/96`,
    /// 6to4 `2002::/16`) is judged by that IPv4 address too, so `::ffff:169.254.169.254` or
    /// `64:ff9b::a9fe:a9fe` cannot reach a metadata service.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        let mut candidates = vec![ip];
        if let IpAddr::V6(v6) = ip {
            let o = v6.octets();
            let embedded =
                |a: u8, b: u8, c: u8, d: u8| IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d));
            if let Some(v4) = v6.to_ipv4_mapped() {
                candidates.push(IpAddr::V4(v4));
            }
            if o[..12] == [0; 12] && v6.segments()[6] != 0 {
                candidates.push(embedded(o[12], o[13], o[14], o[15])); // ::a.b.c.d
            }
            if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                candidates.push(embedded(o[12], o[13], o[14], o[15])); // NAT64
            }
            if v6.segments()[0] == 0x2002 {
                candidates.push(embedded(o[2], o[3], o[4], o[5])); // 6to4
            }
        }
        for candidate in candidates {
            if self.allowed.iter().any(|net| net.contains(&candidate)) {
                continue;
            }
            let private: &[(&str, &str)] = if self.private_refused { PRIVATE } else { &[] };
            if let Some((_, why)) = REFUSED
                .iter()
                .chain(private)
                .find(|(net, _)| net.parse::<IpNet>().is_ok_and(|n| n.contains(&candidate)))
            {
                return Some(why);
            }
        }
        None
    }

    /// Resolves `host:port` and checks every address; returns the addresses to connect to.
    /// If any address is refused the host is refused: a name that also points inside is
    /// not half-allowed.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, EgressError> {
        if let Some(ports) = &self.ports
            && !ports.iter().any(|open| open.contains(&port))
        {
            return Err(EgressError::Refused(format!(
                "port {port} is not an SMTP port: per-request SMTP uses 25, 465, 587 or 2525 (an operator can allow more with MAILROOM_PER_REQUEST_SMTP_PORTS)."
            )));
        }
        // Per-request SMTP says the same whether a name does not resolve or resolves
        // inside: a `send` key must not learn which names the operator's resolver knows.
        let opaque = || {
            EgressError::Refused(format!(
                "{host} is not a public internet host: per-request SMTP servers must resolve, and not to private, loopback or reserved addresses (an operator can allow ranges with MAILROOM_PER_REQUEST_SMTP_ALLOW)."
            ))
        };
        let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
            Ok(found) => found.collect(),
            Err(_) if self.opaque => return Err(opaque()),
            Err(e) => {
                return Err(EgressError::Unresolvable(format!(
                    "{host} cannot be resolved: {e}"
                )));
            }
        };
        if addrs.is_empty() {
            if self.opaque {
                return Err(opaque());
            }
            return Err(EgressError::Unresolvable(format!(
                "{host} has no addresses"
            )));
        }
        for addr in &addrs {
            if self.opaque && self.refusal(addr.ip()).is_some() {
                return Err(opaque());
            }
            if let Some(why) = self.refusal(addr.ip()) {
                return Err(EgressError::Refused(format!(
                    "{host} resolves to {}, which the egress policy refuses ({why}). An operator can allow it with MAILROOM_EGRESS_ALLOW.",
                    addr.ip()
                )));
            }
        }
        Ok(addrs)
    }
}

/// A host that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EgressError {
    /// DNS gave no usable answer.
    #[error("{0}")]
    Unresolvable(String),
    /// The policy refuses an address it resolves to.
    #[error("{0}")]
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_link_local_and_metadata_are_refused_unless_allowed() {
        let policy = EgressPolicy::parse("").expect("empty is valid");
        for ip in [
            "127.0.0.1",
            "::1",
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "100.100.100.200",
            "::ffff:127.0.0.1",
        ] {
            assert!(
                policy.refusal(ip.parse().expect("ip")).is_some(),
                "{ip} should be refused"
            );
        }
        for ip in [
            "10.1.2.3",
            "192.168.1.10",
            "172.16.0.5",
            "203.0.113.9",
            "2001:db8::1",
        ] {
            assert!(
                policy.refusal(ip.parse().expect("ip")).is_none(),
                "{ip} should be allowed"
            );
        }
        let allowed = EgressPolicy::parse("127.0.0.1/32, 169.254.10.0/24").expect("valid");
        assert!(allowed.refusal("127.0.0.1".parse().expect("ip")).is_none());
        assert!(allowed.refusal("127.0.0.2".parse().expect("ip")).is_some());
        assert!(
            allowed
                .refusal("169.254.169.254".parse().expect("ip"))
                .is_some()
        );
        assert!(EgressPolicy::parse("not a range").is_err());
    }

    #[test]
    fn per_request_smtp_also_refuses_private_ranges_unless_allowed() {
        let base = EgressPolicy::parse("10.0.0.0/8").expect("valid");
        let strict = base.for_per_request("", "").expect("valid");
        for ip in [
            "10.1.2.3",
            "172.16.0.5",
            "172.31.255.255",
            "192.168.1.10",
            "100.64.0.1",
            "fd12::1",
            "fc00::1",
            "::ffff:192.168.0.1",
            "127.0.0.1",
            "169.254.169.254",
        ] {
            assert!(
                strict.refusal(ip.parse().expect("ip")).is_some(),
                "{ip} should be refused for per-request SMTP"
            );
        }
        for ip in [
            "fec0::1",
            "64:ff9b:1::a00:1",
            "2001:0:4136:e378::1",
            "192.0.0.8",
        ] {
            assert!(strict.refusal(ip.parse().expect("ip")).is_some(), "{ip}");
        }
        for ip in ["203.0.113.9", "2001:db8::1", "172.32.0.1", "100.128.0.1"] {
            assert!(strict.refusal(ip.parse().expect("ip")).is_none(), "{ip}");
        }
        // The providers' policy keeps allowing private ranges.
        assert!(base.refusal("192.168.1.10".parse().expect("ip")).is_none());
        let allowed = base.for_per_request("192.168.5.0/24", "").expect("valid");
        assert!(
            allowed
                .refusal("192.168.5.7".parse().expect("ip"))
                .is_none()
        );
        assert!(
            allowed
                .refusal("192.168.6.7".parse().expect("ip"))
                .is_some()
        );
        assert!(base.for_per_request("", "0").is_err());
        assert!(base.for_per_request("", "2600-2500").is_err());
        assert!(base.for_per_request("", "x").is_err());
    }

    #[actix_web::test]
    async fn per_request_smtp_uses_smtp_ports_and_names_no_address() {
        let strict = EgressPolicy::parse("")
            .expect("valid")
            .for_per_request("", "2600-2610")
            .expect("valid");
        let port = strict.resolve("localhost", 22).await.expect_err("ssh");
        assert!(port.to_string().contains("not an SMTP port"), "{port}");
        let refused = strict
            .resolve("localhost", 2605)
            .await
            .expect_err("loopback");
        let text = refused.to_string();
        assert!(
            !text.contains("127.0.0.1") && !text.contains("::1"),
            "{text}"
        );
        let unknown = strict
            .resolve("no-such-host.invalid", 25)
            .await
            .expect_err("unresolvable");
        assert_eq!(
            unknown
                .to_string()
                .replace("no-such-host.invalid", "localhost"),
            text,
            "a name that does not resolve reads the same as one inside"
        );
        let other = strict.resolve("10.9.8.7", 25).await.expect_err("private");
        assert_eq!(
            other.to_string().replace("10.9.8.7", "localhost"),
            text,
            "every refusal reads the same: no hint of the kind of range"
        );
    }
}
