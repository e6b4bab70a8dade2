//! The states and kinds a message has (status, origin, tab, channel, direction, the field
//! its address came from), each stored as text and read back strictly.

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Sent by a person in the console.
    Web,
    /// Sent by another system through the API.
    Sys,
    /// Mailroom's own mail (alerts to admins): the only mail that may go through the
    /// operator's system provider. Never inferred from a missing provider, which is what a
    /// deleted provider leaves behind too.
    Alert,
}

impl Origin {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Web => "web",
            Origin::Sys => "sys",
            Origin::Alert => "alert",
        }
    }
}

/// A History tab (seed 001: Web = messages sent by hand, Sys = automatic ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// Sent in the console.
    Web,
    /// Sent through the API, and Mailroom's own alerts.
    Sys,
}

impl Tab {
    /// The stored origins the tab shows.
    pub fn origins(self) -> &'static [&'static str] {
        match self {
            Tab::Web => &["web"],
            Tab::Sys => &["sys", "alert"],
        }
    }
}

/// Text columns that hold one of an enum's stored forms: written as `as_str()`, read back
/// with `parse()`. A value the enum does not know is an error when read, never a guess.
macro_rules! text_enum {
    ($t:ty) => {
        impl<DB> diesel::serialize::ToSql<diesel::sql_types::Text, DB> for $t
        where
            DB: diesel::backend::Backend,
            str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
        {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, DB>,
            ) -> diesel::serialize::Result {
                self.as_str().to_sql(out)
            }
        }

        impl<DB> diesel::deserialize::FromSql<diesel::sql_types::Text, DB> for $t
        where
            DB: diesel::backend::Backend,
            String: diesel::deserialize::FromSql<diesel::sql_types::Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> diesel::deserialize::Result<Self> {
                let value = String::from_sql(bytes)?;
                <$t>::parse(&value).ok_or_else(|| {
                    format!("{value:?} is not a {} the code knows", stringify!($t)).into()
                })
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A message's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::AsExpression, diesel::FromSqlRow)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub enum Status {
    /// Waiting for its send-at time.
    Scheduled,
    /// Due (or waiting for a retry).
    Queued,
    /// Claimed by a node, being sent.
    Sending,
    /// Accepted by the provider (2xx).
    Sent,
    /// Refused (5xx), or out of retries.
    Failed,
    /// Accepted, then given back by the receiving side (a delivery status notification).
    Bounced,
    /// Cancelled before it was sent.
    Cancelled,
    /// Waiting for its provider to sign in again (or its mailing to resume).
    Held,
    /// An inbound message that arrived (receiving).
    Received,
}

text_enum!(Status);

impl Status {
    /// Every status, in the order a filter lists them.
    pub const ALL: [Status; 9] = [
        Status::Scheduled,
        Status::Queued,
        Status::Sending,
        Status::Sent,
        Status::Failed,
        Status::Bounced,
        Status::Cancelled,
        Status::Held,
        Status::Received,
    ];

    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Failed => "failed",
            Status::Bounced => "bounced",
            Status::Cancelled => "cancelled",
            Status::Held => "held",
            Status::Received => "received",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Badge colour class (UI.md: scheduled grey, queued/sending blue, sent green,
    /// failed red, held amber, cancelled grey struck).
    pub fn badge(self) -> &'static str {
        match self {
            Status::Scheduled => "grey",
            Status::Queued => "blue",
            Status::Sending => "blue sending",
            Status::Sent => "green",
            Status::Failed => "red",
            Status::Bounced => "red",
            Status::Cancelled => "grey struck",
            Status::Held => "amber",
            Status::Received => "green",
        }
    }

    /// Whether the message is done: nothing more happens to it unless someone acts.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Sent | Status::Failed | Status::Bounced | Status::Cancelled | Status::Received
        )
    }

    /// Whether the message may still change by itself (the page polls while it does).
    pub fn is_moving(self) -> bool {
        matches!(self, Status::Queued | Status::Sending | Status::Scheduled)
    }
}

/// A message's channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, diesel::AsExpression, diesel::FromSqlRow)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub enum Channel {
    /// Email.
    Email,
    /// SMS (a later issue).
    Sms,
}

text_enum!(Channel);

impl Channel {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Channel> {
        [Channel::Email, Channel::Sms]
            .into_iter()
            .find(|c| c.as_str() == value)
    }
}

/// Whether a message goes out or came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::AsExpression, diesel::FromSqlRow)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub enum Direction {
    /// Sent by Mailroom.
    Outbound,
    /// Received (a later issue).
    Inbound,
}

text_enum!(Direction);

impl Direction {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Direction> {
        [Direction::Outbound, Direction::Inbound]
            .into_iter()
            .find(|d| d.as_str() == value)
    }
}

/// The field of the send a message's address came from: each address gets one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::AsExpression, diesel::FromSqlRow)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub enum RecipientKind {
    /// To.
    To,
    /// Cc.
    Cc,
    /// Bcc (never in a header).
    Bcc,
}

text_enum!(RecipientKind);

impl RecipientKind {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientKind::To => "to",
            RecipientKind::Cc => "cc",
            RecipientKind::Bcc => "bcc",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<RecipientKind> {
        [RecipientKind::To, RecipientKind::Cc, RecipientKind::Bcc]
            .into_iter()
            .find(|k| k.as_str() == value)
    }

    /// As a header name reads it.
    pub fn label(self) -> &'static str {
        match self {
            RecipientKind::To => "To",
            RecipientKind::Cc => "Cc",
            RecipientKind::Bcc => "Bcc",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Status;

    #[test]
    fn a_status_the_code_does_not_know_is_an_error() {
        assert_eq!(Status::parse("sent"), Some(Status::Sent));
        assert_eq!(Status::parse("received"), Some(Status::Received));
        assert_eq!(Status::parse("paused"), None);
    }
}
