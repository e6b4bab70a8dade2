//! An authoritative DNS server inside the test process (`hickory-server` on a loopback
//! port, UDP and TCP): each test says what every name answers — TXT records (each a list
//! of character-strings), SERVFAIL, or silence — and every other name is NXDOMAIN.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::TXT;
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

/// What a name answers.
#[derive(Debug, Clone)]
pub enum Answer {
    /// These TXT records, each as its character-strings (at most 255 bytes each).
    Txt(Vec<Vec<String>>),
    /// SERVFAIL.
    ServFail,
    /// Nothing at all (the resolver times out).
    Silence,
}

#[derive(Clone, Default)]
struct Zone {
    names: Arc<RwLock<HashMap<String, Answer>>>,
}

/// The running server.
pub struct DnsServer {
    /// Where it listens (UDP and TCP).
    pub addr: SocketAddr,
    zone: Zone,
    _server: Server<Zone>,
}

impl DnsServer {
    /// Starts a server that knows no names yet.
    pub async fn start() -> Result<Self, Box<dyn std::error::Error>> {
        let zone = Zone::default();
        for _ in 0..20 {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
            let addr = udp.local_addr()?;
            let Ok(tcp) = tokio::net::TcpListener::bind(addr).await else {
                continue; // the TCP port was taken: another pair
            };
            let mut server = Server::new(zone.clone());
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(10), 32);
            return Ok(Self {
                addr,
                zone,
                _server: server,
            });
        }
        Err("no free UDP and TCP port pair".into())
    }

    /// `name` (no trailing dot) answers `answer` from now on.
    pub fn set(&self, name: &str, answer: Answer) {
        self.zone
            .names
            .write()
            .expect("zone lock")
            .insert(format!("{}.", name.to_ascii_lowercase()), answer);
    }

    /// `name` answers one TXT record made of `strings`.
    pub fn txt(&self, name: &str, strings: &[&str]) {
        self.set(
            name,
            Answer::Txt(vec![strings.iter().map(|s| (*s).to_owned()).collect()]),
        );
    }

    /// `name` answers one TXT record holding `value`, cut into strings of `size` bytes.
    pub fn txt_split(&self, name: &str, value: &str, size: usize) {
        let strings = value
            .as_bytes()
            .chunks(size)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        self.set(name, Answer::Txt(vec![strings]));
    }

    /// `name` is NXDOMAIN again.
    pub fn remove(&self, name: &str) {
        self.zone
            .names
            .write()
            .expect("zone lock")
            .remove(&format!("{}.", name.to_ascii_lowercase()));
    }
}

#[async_trait::async_trait]
impl RequestHandler for Zone {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = true;
        let fallback = ResponseInfo::from(Header {
            metadata: meta,
            counts: HeaderCounts::default(),
        });
        let Some(query) = request.queries.queries().first() else {
            return fallback;
        };
        let answer = self
            .names
            .read()
            .expect("zone lock")
            .get(&query.name().to_string().to_ascii_lowercase())
            .cloned();
        let name: Name = query.original().name().clone();
        let mut edns = Edns::new();
        edns.set_max_payload(request.max_payload());
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if request.edns.is_some() {
            builder.edns(&edns);
        }
        let (code, records) = match answer {
            None => (ResponseCode::NXDomain, Vec::new()),
            Some(Answer::Silence) => return fallback,
            Some(Answer::ServFail) => (ResponseCode::ServFail, Vec::new()),
            Some(Answer::Txt(records)) => (ResponseCode::NoError, records),
        };
        meta.response_code = code;
        let records: Vec<Record> = if query.query_type() == RecordType::TXT {
            records
                .into_iter()
                .map(|strings| Record::from_rdata(name.clone(), 60, RData::TXT(TXT::new(strings))))
                .collect()
        } else {
            Vec::new()
        };
        let response = builder.build(meta, &records, [], [], []);
        response_handle
            .send_response(response)
            .await
            .unwrap_or(fallback)
    }
}
