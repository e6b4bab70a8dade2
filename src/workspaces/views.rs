//! Pages of the workspaces slice.

use askama::Template;

use crate::messages::model::Status;
use crate::messages::service::{DayCounts, LogOverview};
use crate::providers::model::Provider;
use crate::web::fmt::count;
use crate::web::forms::FieldErrors;
use crate::web::frame::Frame;
use crate::workspaces::model::Role;

/// `GET /w/{slug}/`.
#[derive(Template)]
#[template(path = "workspaces/overview.html")]
pub struct OverviewPage {
    /// Frame.
    pub frame: Frame,
    /// Members of the workspace.
    pub member_count: usize,
    /// Admins of the workspace.
    pub admin_count: usize,
    /// The viewer's role.
    pub role: Role,
    /// Site name (subject prefix).
    pub site_name: String,
    /// The log: 30 days and the queue.
    pub log: LogOverview,
    /// The chart of the 30 days.
    pub chart: Chart,
    /// The workspace's providers and their statuses.
    pub providers: Vec<Provider>,
    /// Its senders: name, address, what they need, the email sent as each.
    pub senders: Vec<crate::senders::model::SenderRow>,
    /// Its domains and whether each is authenticated.
    pub domains: Vec<crate::domains::model::Domain>,
}

impl OverviewPage {
    /// Whether a sender is ready (otherwise the page says what to do next).
    pub fn any_ready(&self) -> bool {
        self.senders.iter().any(|r| r.readiness.ready)
    }
}

impl OverviewPage {
    /// Totals of today, 7 and 30 days: (label, counts).
    pub fn periods(&self) -> [(&'static str, DayCounts); 3] {
        [
            ("Today", self.log.last(1)),
            ("Last 7 days", self.log.last(7)),
            ("Last 30 days", self.log.last(30)),
        ]
    }

    /// Messages waiting to go: scheduled, queued, sending, held.
    pub fn queue(&self) -> [(&'static str, &'static str, String); 4] {
        [
            ("Queued", "blue", count(self.log.now(Status::Queued))),
            ("Sending", "blue", count(self.log.now(Status::Sending))),
            ("Scheduled", "grey", count(self.log.now(Status::Scheduled))),
            ("Held", "amber", count(self.log.now(Status::Held))),
        ]
    }

    /// Whether the workspace has sent anything yet.
    pub fn has_messages(&self) -> bool {
        self.log.statuses.iter().any(|(_, n)| *n > 0)
    }
}

/// One coloured part of a bar (SVG units).
pub struct Segment {
    /// Top.
    pub y: f64,
    /// Height.
    pub height: f64,
    /// CSS class (its colour).
    pub class: &'static str,
}

/// One day's bar.
pub struct Bar {
    /// Left edge.
    pub x: f64,
    /// Its parts, bottom up.
    pub segments: Vec<Segment>,
    /// Exact numbers, shown on hover.
    pub title: String,
    /// A date under some bars.
    pub label: Option<String>,
    /// The counts.
    pub counts: DayCounts,
}

/// The overview's chart: messages per day for 30 days, stacked by outcome; drawn on the
/// server as SVG.
pub struct Chart {
    /// Bars, oldest first.
    pub bars: Vec<Bar>,
    /// The busiest day's count (the scale's top).
    pub max: String,
}

impl Chart {
    /// Width of the drawing.
    pub const WIDTH: f64 = 720.0;
    /// Height of the bars' area.
    pub const HEIGHT: f64 = 160.0;
    /// Width of one bar.
    pub const BAR: f64 = 18.0;

    /// Lays out the bars.
    pub fn new(days: &[DayCounts]) -> Self {
        let max = days.iter().map(DayCounts::total).max().unwrap_or(0).max(1);
        let step = Self::WIDTH / days.len().max(1) as f64;
        let bars = days
            .iter()
            .enumerate()
            .map(|(i, day)| {
                let mut top = Self::HEIGHT;
                let segments = [
                    (day.sent, "bar-sent"),
                    (day.failed, "bar-failed"),
                    (day.waiting, "bar-waiting"),
                    (day.cancelled, "bar-cancelled"),
                ]
                .into_iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, class)| {
                    let height = (n as f64 / max as f64 * Self::HEIGHT).max(1.0);
                    top -= height;
                    Segment {
                        y: top,
                        height,
                        class,
                    }
                })
                .collect();
                Bar {
                    x: i as f64 * step + (step - Self::BAR) / 2.0,
                    segments,
                    title: format!(
                        "{}: {} messages — {} sent, {} failed, {} waiting, {} cancelled",
                        day.day.format("%Y-%m-%d"),
                        count(day.total()),
                        count(day.sent),
                        count(day.failed),
                        count(day.waiting),
                        count(day.cancelled)
                    ),
                    label: (i % 7 == 2 || i + 1 == days.len())
                        .then(|| day.day.format("%b %-d").to_string()),
                    counts: day.clone(),
                }
            })
            .collect();
        Self {
            bars,
            max: count(max),
        }
    }
}

/// A row of the members table.
pub struct MemberRow {
    /// Account id.
    pub user_id: i64,
    /// Address.
    pub email: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// `active`, `invited` or `disabled`.
    pub status: &'static str,
    /// When they joined (UTC).
    pub joined: chrono::NaiveDateTime,
    /// Whether this is the signed-in user.
    pub is_self: bool,
}

/// A one-time set-password link, shown once after it is made.
pub struct OneTimeLink {
    /// For whom.
    pub email: String,
    /// The full URL.
    pub url: String,
    /// What it does, in words.
    pub what: &'static str,
}

/// Values of the add-member form.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(default)]
pub struct AddMemberForm {
    /// Address.
    pub email: String,
    /// Role.
    pub role: String,
}

/// `GET /w/{slug}/members`.
#[derive(Template)]
#[template(path = "workspaces/members.html")]
pub struct MembersPage {
    /// Frame.
    pub frame: Frame,
    /// Members by address.
    pub members: Vec<MemberRow>,
    /// Every role, for the selects.
    pub roles: [Role; 4],
    /// The add-member form's values.
    pub form: AddMemberForm,
    /// Its errors.
    pub errors: FieldErrors,
    /// A link made by the last action, shown once.
    pub link: Option<OneTimeLink>,
}

/// `GET /w/{slug}/settings`.
#[derive(Template)]
#[template(path = "workspaces/settings.html")]
pub struct SettingsPage {
    /// Frame.
    pub frame: Frame,
    /// URL name (fixed).
    pub slug: String,
    /// Name.
    pub name: String,
    /// Subject prefix.
    pub site_name: String,
    /// Errors by field.
    pub errors: FieldErrors,
}
