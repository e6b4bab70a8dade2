//! Sending domains: the stored row and what a check of its records found.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::records::{self, Record};
use crate::db::schema::domains;
pub use crate::ids::DomainId;
use crate::workspaces::model::WorkspaceId;

/// A stored domain. The private keys are sealed (`crate::crypto::Sealer`) and only opened
/// to sign; they are never rendered (nor in its `Debug`).
#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = domains)]
pub struct Domain {
    /// Id.
    pub id: DomainId,
    /// Owning workspace.
    pub workspace_id: WorkspaceId,
    /// The domain, lower-case ASCII (an internationalized name as its A-labels).
    pub name: String,
    /// The ownership token published at `_mailroom.<name>`.
    pub token: String,
    /// Selector of the key that signs.
    pub active_selector: String,
    /// Its public key, base64 SubjectPublicKeyInfo DER.
    pub active_public: String,
    /// Its private key, sealed PKCS#8.
    pub active_private: String,
    /// Selector of the key kept for the next rotation.
    pub standby_selector: String,
    /// Its public key.
    pub standby_public: String,
    /// Its private key, sealed.
    pub standby_private: String,
    /// Where the recommended DMARC record sends aggregate reports.
    pub dmarc_rua: String,
    /// Whether the token, the active key and DMARC passed (mail from it is signed).
    pub authenticated: bool,
    /// The last check's report, JSON (`Report`); empty before the first.
    pub checks: String,
    /// When it was last checked.
    pub checked_at: Option<NaiveDateTime>,
    /// While authenticated: when a required record was first seen definitely wrong (a
    /// second such check an hour later turns the domain unauthenticated).
    pub failing_since: Option<NaiveDateTime>,
    /// Created.
    pub created_at: NaiveDateTime,
    /// Last changed.
    pub updated_at: NaiveDateTime,
}

/// A new domain's row.
#[derive(Debug, Insertable)]
#[diesel(table_name = domains)]
pub struct NewDomain {
    /// Owning workspace.
    pub workspace_id: WorkspaceId,
    /// The domain.
    pub name: String,
    /// Ownership token.
    pub token: String,
    /// Active selector.
    pub active_selector: String,
    /// Active public key.
    pub active_public: String,
    /// Active private key, sealed.
    pub active_private: String,
    /// Standby selector.
    pub standby_selector: String,
    /// Standby public key.
    pub standby_public: String,
    /// Standby private key, sealed.
    pub standby_private: String,
    /// DMARC report address.
    pub dmarc_rua: String,
    /// Not yet.
    pub authenticated: bool,
    /// No check yet.
    pub checks: String,
    /// Created.
    pub created_at: NaiveDateTime,
    /// Created.
    pub updated_at: NaiveDateTime,
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain")
            .field("id", &self.id)
            .field("workspace_id", &self.workspace_id)
            .field("name", &self.name)
            .field("active_selector", &self.active_selector)
            .field("standby_selector", &self.standby_selector)
            .field("authenticated", &self.authenticated)
            .finish_non_exhaustive()
    }
}

/// What the delivery engine reads of a domain: whose it is, whether it is authenticated,
/// and the key that signs (not its report or its standby key).
#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = domains)]
pub struct SigningDomain {
    /// Id.
    pub id: DomainId,
    /// Owning workspace.
    pub workspace_id: WorkspaceId,
    /// The domain.
    pub name: String,
    /// Selector of the key that signs.
    pub active_selector: String,
    /// Its public key.
    pub active_public: String,
    /// Its private key, sealed.
    pub active_private: String,
    /// Whether it is authenticated (an unauthenticated one holds its mail back).
    pub authenticated: bool,
}

impl Domain {
    /// What a sealed private key of this domain is bound to: its workspace and name, so a
    /// key copied to another row does not open.
    pub fn seal_context(workspace: WorkspaceId, name: &str) -> String {
        format!("dkim:workspace:{}:domain:{name}", workspace.0)
    }

    /// The public keys (DER SubjectPublicKeyInfo): (active, standby).
    pub fn public_keys(&self) -> (Vec<u8>, Vec<u8>) {
        let decode = |b64: &str| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_default()
        };
        (decode(&self.active_public), decode(&self.standby_public))
    }

    /// The records to publish.
    pub fn records(&self) -> Vec<Record> {
        let (active, standby) = self.public_keys();
        records::to_publish(
            &self.name,
            &self.token,
            (&self.active_selector, &active),
            (&self.standby_selector, &standby),
            &self.dmarc_rua,
        )
        // The report address was validated when the domain was added.
        .unwrap_or_default()
    }

    /// The last check's report, if there was one.
    pub fn report(&self) -> Option<Report> {
        serde_json::from_str(&self.checks).ok()
    }
}

/// The outcome of one record's check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// As expected.
    Pass,
    /// Not a failure: an advised record missing, or no answer (timeout, SERVFAIL).
    Warn,
    /// Definitely missing or wrong.
    Fail,
}

impl Verdict {
    /// Its word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One record as checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordCheck {
    /// What it is for.
    pub purpose: String,
    /// Its name.
    pub name: String,
    /// What should be there (for SPF: advice).
    pub expected: String,
    /// The TXT records found there (each joined), or none.
    pub observed: Vec<String>,
    /// Pass, warn or fail.
    pub verdict: Verdict,
    /// Why, in a sentence.
    pub reason: String,
    /// Whether authentication needs it.
    pub required: bool,
    /// The nameserver that answered (`host:port`), if one did.
    pub nameserver: Option<String>,
    /// When it answered (or was asked), RFC 3339.
    pub at: String,
}

/// The records a domain needs to be authenticated: the token, the signing key, DMARC.
pub const REQUIRED_RECORDS: usize = 3;

/// Every record of a domain as checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// In the order of the page.
    pub records: Vec<RecordCheck>,
}

impl Report {
    /// Every required record (the token, the signing key and DMARC: three) was checked
    /// and passed. A report missing one never authenticates.
    pub fn authenticates(&self) -> bool {
        let required: Vec<&RecordCheck> = self.records.iter().filter(|r| r.required).collect();
        required.len() >= REQUIRED_RECORDS && required.iter().all(|r| r.verdict == Verdict::Pass)
    }

    /// A required record is definitely missing or wrong (not merely unanswered).
    pub fn definitely_fails(&self) -> bool {
        self.records
            .iter()
            .any(|r| r.required && r.verdict == Verdict::Fail)
    }

    /// The check of the record at `name`.
    pub fn record(&self, name: &str) -> Option<&RecordCheck> {
        self.records.iter().find(|r| r.name == name)
    }
}
