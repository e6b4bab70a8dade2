//! Pages of the domains slice.

use askama::Template;
use serde::Deserialize;

use super::model::{Domain, RecordCheck, Report};
use super::records::Record;
use crate::web::forms::FieldErrors;
use crate::web::frame::Frame;

/// The add-domain form as typed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DomainForm {
    /// The domain.
    #[serde(default)]
    pub name: String,
    /// Selector of the signing key (default `mr1`).
    #[serde(default)]
    pub active_selector: String,
    /// Selector of the standby key (default `mr2`).
    #[serde(default)]
    pub standby_selector: String,
    /// Where DMARC reports go (default `dmarc@<domain>`).
    #[serde(default)]
    pub dmarc_rua: String,
}

/// `GET /w/{slug}/domains`.
#[derive(Template)]
#[template(path = "domains/index.html")]
pub struct DomainsPage {
    /// Frame.
    pub frame: Frame,
    /// Domains by name.
    pub domains: Vec<Domain>,
    /// The add form.
    pub form: DomainForm,
    /// Its errors.
    pub errors: FieldErrors,
}

/// One record on a domain's page: what to publish, and what the last check saw.
pub struct RecordRow {
    /// What to publish.
    pub record: Record,
    /// The last check of it.
    pub check: Option<RecordCheck>,
}

impl RecordRow {
    /// The record as a zone file writes it: its strings quoted, side by side.
    pub fn quoted(&self) -> String {
        self.record
            .strings
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `GET /w/{slug}/domains/{id}`.
#[derive(Template)]
#[template(path = "domains/show.html")]
pub struct DomainPage {
    /// Frame.
    pub frame: Frame,
    /// The domain.
    pub domain: Domain,
    /// Its records, each with its last check.
    pub rows: Vec<RecordRow>,
    /// The SPF advice of the last check.
    pub spf: Option<RecordCheck>,
    /// Whether the last check was made before the last rotation (its results are about
    /// other keys).
    pub stale: bool,
}

impl DomainPage {
    /// The page of `domain`.
    pub fn new(frame: Frame, domain: Domain) -> Self {
        let report = domain.report().unwrap_or(Report {
            records: Vec::new(),
        });
        let rows = domain
            .records()
            .into_iter()
            .map(|record| RecordRow {
                check: report.record(&record.name).cloned(),
                record,
            })
            .collect();
        let spf = report.record(&domain.name).cloned();
        let stale = domain
            .checked_at
            .is_some_and(|checked| checked < domain.updated_at);
        Self {
            frame,
            rows,
            spf,
            stale,
            domain,
        }
    }
}
