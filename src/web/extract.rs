//! Who the client is: its address (behind trusted proxies, the rightmost forwarded
//! address that is not one of them). The signed-in user and the workspace of a URL are
//! the `accounts` and `workspaces` slices' extractors.

use actix_web::{HttpRequest, web};

use crate::state::AppState;

/// The client's address: the TCP peer, or, behind a trusted reverse proxy
/// (`trust_forwarded_for`, with the peer one of `trusted_proxies`), the rightmost
/// `X-Forwarded-For` address that is not a trusted proxy, as nginx's realip module does
/// with `real_ip_recursive on`. Everything left of that is whatever the client wrote, so
/// the leftmost value is never believed. Sign-in throttling and the audit log key on it.
pub fn client_ip(req: &HttpRequest) -> String {
    let peer = req.peer_addr().map(|a| a.ip());
    let proxies = req
        .app_data::<web::Data<AppState>>()
        .filter(|s| s.settings.trust_forwarded_for)
        .map(|s| s.trusted_proxies.as_slice());
    // Every header line, byte for byte: a line that is not text (a client's junk left of
    // the proxy's entry) must not hide the entry the proxy appended to it.
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(",");
    let client = match (peer, proxies) {
        (Some(peer), Some(proxies)) => forwarded_client(peer, &forwarded, proxies),
        (peer, _) => peer.map(|ip| ip.to_canonical()),
    };
    client.map_or_else(|| "unknown".into(), |ip| ip.to_string())
}

/// The client behind a chain of proxies: walking `X-Forwarded-For` from the right (the
/// entry the nearest proxy appended) past every trusted proxy. An entry that is not an
/// address ends the walk at the last trusted hop: it cannot be a key to throttle by.
fn forwarded_client(
    peer: std::net::IpAddr,
    forwarded: &str,
    proxies: &[ipnet::IpNet],
) -> Option<std::net::IpAddr> {
    let trusted = |ip: &std::net::IpAddr| proxies.iter().any(|net| net.contains(ip));
    // A server listening on `[::]` sees an IPv4 peer as `::ffff:a.b.c.d`.
    let mut client = peer.to_canonical();
    if !trusted(&client) {
        return Some(client);
    }
    for entry in forwarded
        .rsplit(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let Some(hop) = parse_hop(entry) else {
            break;
        };
        client = hop;
        if !trusted(&client) {
            break;
        }
    }
    Some(client)
}

/// An `X-Forwarded-For` entry: an address, possibly bracketed or with a port
/// (`203.0.113.7:5123`, `[2001:db8::1]`, `[2001:db8::1]:443`), IPv4-mapped IPv6 as IPv4.
fn parse_hop(entry: &str) -> Option<std::net::IpAddr> {
    entry
        .parse::<std::net::IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })
        .map(|ip: std::net::IpAddr| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::forwarded_client;

    #[test]
    fn the_client_is_the_rightmost_address_that_is_not_a_trusted_proxy() {
        let proxies: Vec<ipnet::IpNet> = vec![
            "127.0.0.0/8".parse().expect("net"),
            "10.0.0.0/8".parse().expect("net"),
        ];
        let at = |peer: &str, header: &str| {
            forwarded_client(peer.parse().expect("ip"), header, &proxies)
                .map(|ip| ip.to_string())
                .unwrap_or_default()
        };
        // The client wrote the leftmost entries; the proxy appended the real address.
        assert_eq!(at("127.0.0.1", "6.6.6.6, 203.0.113.7"), "203.0.113.7");
        assert_eq!(
            at("127.0.0.1", "6.6.6.6, 203.0.113.7, 10.1.1.1"),
            "203.0.113.7"
        );
        assert_eq!(at("127.0.0.1", "203.0.113.7:5123"), "203.0.113.7");
        assert_eq!(at("127.0.0.1", "[2001:db8::1]:443"), "2001:db8::1");
        // A peer that is not a trusted proxy is the client, whatever it says.
        assert_eq!(at("198.51.100.1", "203.0.113.7"), "198.51.100.1");
        // Nothing forwarded, or all of it trusted: the last hop known.
        assert_eq!(at("127.0.0.1", ""), "127.0.0.1");
        assert_eq!(at("127.0.0.1", "10.2.2.2"), "10.2.2.2");
        // Garbage stops at the last trusted hop.
        assert_eq!(at("127.0.0.1", "203.0.113.7, not-an-ip"), "127.0.0.1");
        // A proxy seen through an IPv6 socket, brackets without a port, mapped entries.
        assert_eq!(at("::ffff:10.0.0.5", "6.6.6.6, 203.0.113.7"), "203.0.113.7");
        assert_eq!(at("127.0.0.1", "[2001:db8::1]"), "2001:db8::1");
        assert_eq!(at("127.0.0.1", "::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(at("127.0.0.1", "6.6.6.6, ::ffff:10.1.1.1"), "6.6.6.6");
        // A peer that is not a proxy, seen mapped, is the client as IPv4.
        assert_eq!(at("::ffff:198.51.100.1", "203.0.113.7"), "198.51.100.1");
    }
}
