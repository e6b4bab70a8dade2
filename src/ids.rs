//! Every row id Mailroom hands around, typed: a `MessageId` cannot be passed where a
//! `WorkspaceId` is wanted. Each is the row's `BIGINT` in both databases (diesel reads and
//! writes it as `i64`), and serializes as a plain number. The slices re-export theirs
//! (`messages::model::MessageId` is this `MessageId`).

use diesel_derive_newtype::DieselNewType;
use serde::{Deserialize, Serialize};

macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, DieselNewType, Serialize,
            Deserialize,
        )]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}

ids! {
    /// A workspace: the unit that owns providers, contacts, messages and members.
    WorkspaceId;
    /// An account.
    UserId;
    /// A provider (an SMTP server, Gmail, SES or Outlook account).
    ProviderId;
    /// An API key.
    ApiKeyId;
    /// A send: one compose, API call, alert or mailing content.
    SendId;
    /// A message: one recipient's delivery, the queue and the log row.
    MessageId;
    /// A contact (contacts come in a later issue; messages refer to them already).
    ContactId;
    /// A mailing (mailings come in a later issue; messages refer to them already).
    MailingId;
    /// A sending domain.
    DomainId;
    /// A sender: a name and address a workspace sends from.
    SenderId;
}
