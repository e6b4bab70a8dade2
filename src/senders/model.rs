//! Senders: the stored row, and what makes one ready to send.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::senders;
use crate::domains::model::Domain;
pub use crate::ids::SenderId;
use crate::providers::model::{Provider, ProviderId};
use crate::workspaces::model::WorkspaceId;

/// A stored sender.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = senders)]
pub struct Sender {
    /// Id.
    pub id: SenderId,
    /// Owning workspace.
    pub workspace_id: WorkspaceId,
    /// The display name on From.
    pub name: String,
    /// The address (its domain lower-cased).
    pub address: String,
    /// The provider it sends through (`None`: the provider was deleted).
    pub provider_id: Option<ProviderId>,
    /// Reply-To of its mail (empty: none).
    pub reply_to: String,
    /// When its address was proven by a one-time code.
    pub validated_at: Option<NaiveDateTime>,
    /// HMAC of the current code (`Sealer::mac`), if one was sent.
    pub code_hash: Option<String>,
    /// When the current code expires.
    pub code_expires_at: Option<NaiveDateTime>,
    /// Wrong tries of the current code.
    pub code_tries: i32,
    /// When the current code was sent.
    pub code_sent_at: Option<NaiveDateTime>,
    /// Created.
    pub created_at: NaiveDateTime,
    /// Last changed.
    pub updated_at: NaiveDateTime,
}

/// A new sender's row.
#[derive(Debug, Insertable)]
#[diesel(table_name = senders)]
pub struct NewSender {
    /// Owning workspace.
    pub workspace_id: WorkspaceId,
    /// Display name.
    pub name: String,
    /// Address.
    pub address: String,
    /// Provider.
    pub provider_id: Option<ProviderId>,
    /// Reply-To.
    pub reply_to: String,
    /// No code yet.
    pub code_tries: i32,
    /// Created.
    pub created_at: NaiveDateTime,
    /// Created.
    pub updated_at: NaiveDateTime,
}

impl Sender {
    /// The domain part of its address.
    pub fn domain(&self) -> &str {
        self.address.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

/// Where a sender's domain stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainState {
    /// One of the workspace's domains, authenticated (mail is DKIM-signed).
    Authenticated(String),
    /// One of the workspace's domains, not (yet) authenticated.
    Pending(String),
    /// Not one of the workspace's domains.
    Foreign,
}

/// What a sender needs before it may send, and whether it has it.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// The address was proven by a code.
    pub address_validated: bool,
    /// Its domain.
    pub domain: DomainState,
    /// The address is the account its provider signs in as.
    pub provider_account: bool,
    /// It has a provider that can send.
    pub provider_active: bool,
    /// Everything it needs: it may send.
    pub ready: bool,
}

impl Readiness {
    /// Judges `sender` with its provider and the workspace's domains.
    pub fn of(sender: &Sender, provider: Option<&Provider>, domains: &[Domain]) -> Self {
        let candidates = crate::domains::service::signing_candidates(&sender.address);
        let domain = candidates
            .iter()
            .find_map(|name| domains.iter().find(|d| &d.name == name))
            .map_or(DomainState::Foreign, |d| {
                if d.authenticated {
                    DomainState::Authenticated(d.name.clone())
                } else {
                    DomainState::Pending(d.name.clone())
                }
            });
        let provider_account =
            provider.is_some_and(|p| p.account_address.eq_ignore_ascii_case(&sender.address));
        let provider_active = provider.is_some_and(Provider::is_active);
        let address_validated = sender.validated_at.is_some();
        let domain_ok = matches!(domain, DomainState::Authenticated(_)) || provider_account;
        Self {
            ready: address_validated && domain_ok && provider_active,
            address_validated,
            domain,
            provider_account,
            provider_active,
        }
    }

    /// Whether the domain side is settled (authenticated, or the provider's own account).
    pub fn domain_validated(&self) -> bool {
        matches!(self.domain, DomainState::Authenticated(_)) || self.provider_account
    }

    /// What to do next, in a sentence; empty when ready.
    pub fn next_step(&self) -> String {
        if !self.provider_active {
            return "Its provider cannot send: check the provider (or pick another).".into();
        }
        if !self.address_validated {
            return "Enter the code mailed to the address.".into();
        }
        match &self.domain {
            DomainState::Pending(name) if !self.provider_account => {
                format!("Publish the DNS records of {name} and check the domain.")
            }
            DomainState::Foreign if !self.provider_account => {
                "Add its domain under Domains, or use the address the provider signs in as.".into()
            }
            _ => String::new(),
        }
    }
}

/// A sender as listed: with its provider, readiness and send count.
pub struct SenderRow {
    /// The sender.
    pub sender: Sender,
    /// Its provider's name (`None`: deleted).
    pub provider: Option<String>,
    /// What it needs.
    pub readiness: Readiness,
    /// Email messages sent as it.
    pub sent: i64,
}
