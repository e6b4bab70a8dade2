//! Pages of the messages slice. Live parts are blocks of their page's template, polled by
//! htmx while something moves.

use askama::Template;

use super::compose::ComposeForm;
use super::model::{Message, MessageEvent, Send, Status};
use super::search::Piece;
use crate::providers::model::Provider;
use crate::web::forms::FieldErrors;
use crate::web::frame::Frame;

/// `GET /w/{slug}/compose`.
#[derive(Template)]
#[template(path = "messages/compose.html")]
pub struct ComposePage {
    /// Frame.
    pub frame: Frame,
    /// The ready senders, each with its provider.
    pub senders: Vec<(crate::senders::model::Sender, Provider)>,
    /// Values.
    pub form: ComposeForm,
    /// Errors.
    pub errors: FieldErrors,
    /// The subject prefix.
    pub site_name: String,
    /// Attachment limit in MB.
    pub attachment_limit_mb: usize,
}

/// A row of the history; the shown texts in pieces, the matches of a search marked.
pub struct Row {
    /// The message.
    pub message: Message,
    /// Its provider's name.
    pub provider: String,
    /// Its subject.
    pub subject: Vec<Piece>,
    /// The start of its text, or the part around the first match.
    pub preview: Vec<Piece>,
    /// Its recipient.
    pub recipient: Vec<Piece>,
    /// Its sender address.
    pub from: Vec<Piece>,
    /// Where it came from: the console, an API key (by name), or Mailroom itself.
    pub origin: String,
}

impl Row {
    /// Status.
    pub fn status(&self) -> Status {
        self.message.status()
    }
}

/// Messages per tab (from the tallies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TabCounts {
    /// Every origin.
    pub all: i64,
    /// Sent in the console.
    pub web: i64,
    /// Sent by Mailroom and the API.
    pub sys: i64,
}

impl TabCounts {
    /// Sums `(origin, count)` rows.
    pub fn from_rows(rows: &[(String, i64)]) -> Self {
        let mut counts = Self::default();
        for (origin, n) in rows {
            match origin.as_str() {
                "web" => counts.web += n,
                _ => counts.sys += n,
            }
            counts.all += n;
        }
        counts
    }

    /// The count of a tab, with thousands separated.
    pub fn of(&self, tab: &str) -> String {
        crate::web::fmt::count(match tab {
            "web" => self.web,
            "sys" => self.sys,
            _ => self.all,
        })
    }
}

/// `GET /w/{slug}/messages`. Its table is a block of the same template, rendered alone
/// for htmx; the page reads the table's fields through `Deref`.
#[derive(Template)]
#[template(path = "messages/index.html")]
pub struct HistoryPage {
    /// Frame.
    pub frame: Frame,
    /// `all`, `web` or `sys`.
    pub tab: &'static str,
    /// The table.
    pub table: HistoryTable,
    /// The filters as given (the form shows them).
    pub query: super::handlers::HistoryQuery,
    /// The filters as a query string (kept by the tabs).
    pub filters: String,
    /// Wrong filters.
    pub errors: FieldErrors,
    /// Messages per tab, when the filters allow counting them.
    pub counts: Option<TabCounts>,
    /// Providers to filter by: (id, name).
    pub providers: Vec<(i64, String)>,
    /// Statuses to filter by.
    pub statuses: [Status; 9],
}

impl std::ops::Deref for HistoryPage {
    type Target = HistoryTable;

    fn deref(&self) -> &HistoryTable {
        &self.table
    }
}

impl HistoryPage {
    /// Whether any filter is set.
    pub fn filtered(&self) -> bool {
        !self.filters.is_empty()
    }
}

/// The table of the history, for polling and search-as-you-type.
#[derive(Template)]
#[template(path = "messages/index.html", block = "table")]
pub struct HistoryTable {
    /// Rows.
    pub rows: Vec<Row>,
    /// Link to older rows.
    pub older: Option<String>,
    /// Polled URL.
    pub here: String,
    /// Whether to keep polling.
    pub moving: bool,
    /// The workspace slug.
    pub slug: String,
    /// Whether these are the results of a search.
    pub searching: bool,
    /// Whether the search found more than it shows.
    pub capped: bool,
    /// What is wrong with the search or the filters, to show in place of results.
    pub problems: Vec<String>,
}

/// `GET /w/{slug}/messages/{id}`: the frame around the live part, whose fields the page
/// reads through `Deref`.
#[derive(Template)]
#[template(path = "messages/show.html")]
pub struct MessagePage {
    /// Frame.
    pub frame: Frame,
    /// Everything but the frame.
    pub live: MessageLive,
}

impl std::ops::Deref for MessagePage {
    type Target = MessageLive;

    fn deref(&self) -> &MessageLive {
        &self.live
    }
}

impl ComposePage {
    /// Help under the subject.
    pub fn subject_help(&self) -> String {
        match self.site_name.trim() {
            "" => "No prefix is set for this workspace.".into(),
            site => format!("Sent as \"[{site}] your subject\"."),
        }
    }
}

impl MessageLive {
    /// The CSRF token for the action forms.
    pub fn csrf_token(&self) -> &str {
        &self.csrf
    }

    /// The send record's "Result": `Successful` when it was; otherwise the last answer
    /// (every answer stays in the timeline).
    pub fn result(&self) -> &str {
        if self.message.successful() {
            "Successful"
        } else if self.message.result.is_empty() {
            "—"
        } else {
            &self.message.result
        }
    }

    /// The send record's "Sent at": when the last attempt ended, successful or not.
    pub fn last_attempt_at(&self) -> Option<chrono::NaiveDateTime> {
        self.events
            .iter()
            .rev()
            .find(|e| matches!(e.kind.as_str(), "sent" | "failed" | "retry"))
            .map(|e| e.created_at)
            .or(self.message.sent_at)
    }

    /// Where it came from, in words.
    pub fn origin(&self) -> &'static str {
        match self.message.origin.as_str() {
            "web" => "Web (console)",
            "alert" => "Sys (Mailroom's own alert)",
            _ => "Sys (API)",
        }
    }
}

/// The live part of the message page (status, timeline, send record), for polling.
#[derive(Template)]
#[template(path = "messages/show.html", block = "live")]
pub struct MessageLive {
    /// The message.
    pub message: Message,
    /// Events.
    pub events: Vec<MessageEvent>,
    /// Its send: who, how, what.
    pub send: Send,
    /// Attached files: name, type, size.
    pub files: Vec<(String, String, i64)>,
    /// Provider name.
    pub provider: String,
    /// Who sent it.
    pub sender: String,
    /// Whether the viewer may act.
    pub can_act: bool,
    /// This URL.
    pub here: String,
    /// The workspace slug.
    pub slug: String,
    /// CSRF token for the action forms.
    pub csrf: String,
}

/// A one-line preview of a text: whitespace folded, at most 80 characters.
pub fn preview(text: &str) -> String {
    let mut preview = String::new();
    let (mut count, mut cut) = (0, false);
    for word in text.split_whitespace() {
        if count > 0 {
            if count == 80 {
                cut = true;
                break;
            }
            preview.push(' ');
            count += 1;
        }
        for c in word.chars() {
            if count == 80 {
                cut = true;
                break;
            }
            preview.push(c);
            count += 1;
        }
        if cut {
            break;
        }
    }
    if cut {
        preview.push('…');
    }
    preview
}

#[cfg(test)]
mod tests {
    use super::preview;

    #[test]
    fn a_preview_folds_whitespace_and_cuts_at_80_characters() {
        assert_eq!(preview("  Hello\n\n  world  "), "Hello world");
        let long = "word ".repeat(40);
        let shown = preview(&long);
        assert_eq!(shown.chars().count(), 81, "80 characters and the ellipsis");
        assert!(shown.ends_with('…'));
        assert_eq!(
            preview(&"x".repeat(80)),
            "x".repeat(80),
            "no ellipsis at exactly 80"
        );
        assert_eq!(
            preview(&format!("{} y", "x".repeat(79))),
            format!("{} …", "x".repeat(79))
        );
    }
}
