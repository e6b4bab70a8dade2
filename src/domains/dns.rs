//! Asking DNS for a domain's TXT records (`hickory-resolver`), one nameserver at a time
//! so the page can say which one answered: the configured ones (`dns_servers`) in order,
//! or the system's. A nameserver that does not answer (timeout, SERVFAIL, refused) passes
//! the question to the next; NXDOMAIN or no TXT records is an answer.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::join_all;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData};

use super::check::{self, Answer, Lookup, SpfHint};
use super::model::{Domain, Report};
use super::records::RecordKind;
use crate::providers::model::{Kind, Provider};

/// Where domain checks ask.
#[derive(Debug, Clone)]
pub struct Resolver {
    /// The nameservers; empty: the system's, read at each check.
    servers: Vec<SocketAddr>,
    /// How long one nameserver has to answer one question.
    timeout: Duration,
}

impl Resolver {
    /// Asks `servers` in order (empty: the system's), each within `timeout`.
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration) -> Self {
        Self { servers, timeout }
    }

    fn servers(&self) -> Result<Vec<SocketAddr>, String> {
        if !self.servers.is_empty() {
            return Ok(self.servers.clone());
        }
        let (config, _) = hickory_resolver::system_conf::read_system_conf().map_err(|e| {
            format!("the system's nameservers are unknown ({e}); set MAILROOM_DNS_SERVERS")
        })?;
        let mut out = Vec::new();
        for server in config.name_servers() {
            let port = server.connections.first().map_or(53, |c| c.port);
            let address = SocketAddr::new(server.ip, port);
            if !out.contains(&address) {
                out.push(address);
            }
        }
        Ok(out)
    }

    /// The TXT records at `name`, from the first nameserver that answers.
    pub async fn txt(&self, name: &str) -> Lookup {
        let servers = match self.servers() {
            Ok(servers) => servers,
            Err(why) => return lookup(Answer::NoAnswer(why), None),
        };
        let mut last = lookup(Answer::NoAnswer("no nameserver to ask".into()), None);
        for server in servers {
            let answer = match one_server(server, self.timeout) {
                Ok(resolver) => ask(&resolver, name).await,
                Err(e) => Answer::NoAnswer(format!("cannot ask {server}: {e}")),
            };
            let answered = !matches!(answer, Answer::NoAnswer(_));
            last = lookup(answer, Some(server.to_string()));
            if answered {
                break;
            }
        }
        last
    }
}

fn lookup(answer: Answer, nameserver: Option<String>) -> Lookup {
    Lookup {
        answer,
        nameserver,
        at: crate::db::now(),
    }
}

/// A resolver that asks exactly one nameserver, once (UDP, TCP when the answer is
/// truncated), without a cache, hosts file or search domains.
fn one_server(server: SocketAddr, timeout: Duration) -> Result<TokioResolver, NetError> {
    let mut udp = ConnectionConfig::udp();
    udp.port = server.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = server.port();
    let nameserver = NameServerConfig::new(server.ip(), true, vec![udp, tcp]);
    let mut builder = TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![nameserver]),
        TokioRuntimeProvider::default(),
    );
    let options = builder.options_mut();
    options.timeout = timeout;
    // Retries after the first try: none (a silent server is passed over, not waited for).
    options.attempts = 0;
    options.cache_size = 0;
    options.use_hosts_file = ResolveHosts::Never;
    options.num_concurrent_reqs = 1;
    builder.build()
}

/// Most TXT records read at one name (a hostile zone could answer thousands).
const MAX_RECORDS: usize = 50;

async fn ask(resolver: &TokioResolver, name: &str) -> Answer {
    let mut fqdn = match Name::from_ascii(name) {
        Ok(fqdn) => fqdn,
        Err(e) => return Answer::Missing(format!("{name} is not a DNS name: {e}")),
    };
    fqdn.set_fqdn(true);
    match resolver.txt_lookup(fqdn).await {
        Ok(found) => {
            let records: Vec<Vec<String>> = found
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect(),
                    ),
                    _ => None,
                })
                .take(MAX_RECORDS + 1)
                .collect();
            // Past the cap, a second DMARC or DKIM record could hide among the unread:
            // not an answer to pass on.
            if records.len() > MAX_RECORDS {
                return Answer::Missing(format!(
                    "more than {MAX_RECORDS} TXT records at the name: keep only the ones needed"
                ));
            }
            if records.is_empty() {
                Answer::Missing("the name has no TXT records".into())
            } else {
                Answer::Records(records)
            }
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(NoRecords { response_code, .. }))) => {
            match response_code {
                ResponseCode::NXDomain => {
                    Answer::Missing("NXDOMAIN: the name does not exist".into())
                }
                ResponseCode::NoError => Answer::Missing("the name has no TXT records".into()),
                other => Answer::NoAnswer(format!("the nameserver answered {other}")),
            }
        }
        Err(NetError::Dns(DnsError::ResponseCode(code))) => {
            Answer::NoAnswer(format!("the nameserver answered {code}"))
        }
        Err(NetError::Timeout) => Answer::NoAnswer("the nameserver did not answer in time".into()),
        Err(e) => Answer::NoAnswer(e.to_string()),
    }
}

/// What the workspace's providers want an SPF record to include.
pub fn spf_hints(providers: &[Provider]) -> Vec<SpfHint> {
    providers
        .iter()
        .map(|p| SpfHint {
            provider: p.name.clone(),
            include: match Kind::parse(&p.kind) {
                Some(Kind::Gmail) => Some("_spf.google.com".into()),
                Some(Kind::Outlook) => Some("spf.protection.outlook.com".into()),
                Some(Kind::Ses) => Some("amazonses.com".into()),
                Some(Kind::Smtp) | None => None,
            },
            host: p.host.clone(),
        })
        .collect()
}

/// Looks every record of `domain` up (at once) and judges each.
pub async fn check_domain(resolver: &Resolver, domain: &Domain, hints: &[SpfHint]) -> Report {
    let records = domain.records();
    let mut names: Vec<String> = records.iter().map(|r| r.name.clone()).collect();
    names.push(domain.name.clone());
    let lookups = join_all(names.iter().map(|name| resolver.txt(name))).await;
    let (active, standby) = domain.public_keys();
    let mut checks = Vec::with_capacity(records.len() + 1);
    for (record, found) in records.iter().zip(&lookups) {
        checks.push(match record.kind {
            RecordKind::Token => check::token(record, found),
            RecordKind::ActiveKey => check::dkim_key(record, &active, found),
            RecordKind::StandbyKey => check::dkim_key(record, &standby, found),
            RecordKind::Dmarc => check::dmarc(record, found),
            RecordKind::Spf => check::spf(&domain.name, hints, found),
        });
    }
    if let Some(found) = lookups.last() {
        checks.push(check::spf(&domain.name, hints, found));
    }
    Report { records: checks }
}
