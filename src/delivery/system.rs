//! The system provider: the operator's own way out, for the mail Mailroom sends itself
//! (alerts to admins, verification codes). Never offered for manual sends. Without SMTP
//! settings it writes `.eml` files into `<data_dir>/outbox/` (lettre's file transport), so
//! a fresh install works end to end.

use std::path::PathBuf;

use crate::config::Settings;
use crate::providers::model::TlsMode;
use crate::providers::smtp::Endpoint;

/// Where system mail goes.
#[derive(Debug, Clone)]
pub enum SystemTransport {
    /// The operator's SMTP server.
    Smtp(Endpoint),
    /// `.eml` files in this directory.
    Outbox(PathBuf),
}

/// The system provider as configured.
#[derive(Debug, Clone)]
pub struct SystemProvider {
    /// Its transport.
    pub transport: SystemTransport,
    /// From address.
    pub from: String,
}

impl SystemProvider {
    /// From the settings.
    pub fn from_settings(settings: &Settings) -> Self {
        let transport = match &settings.system_smtp_host {
            Some(host) => SystemTransport::Smtp(Endpoint {
                host: host.clone(),
                port: settings.system_smtp_port,
                tls: TlsMode::parse(&settings.system_smtp_tls).unwrap_or(TlsMode::StartTls),
                username: settings.system_smtp_username.clone(),
                password: settings.system_smtp_password.clone(),
            }),
            None => SystemTransport::Outbox(settings.data_dir.join("outbox")),
        };
        Self {
            transport,
            from: settings.system_from.clone(),
        }
    }

    /// Words for the log.
    pub fn describe(&self) -> String {
        match &self.transport {
            SystemTransport::Smtp(e) => format!("{}:{}", e.host, e.port),
            SystemTransport::Outbox(dir) => format!("files in {}", dir.display()),
        }
    }
}
