//! What a channel's sender is to the claimer: it takes claimed messages and sends one
//! outcome for each to the recorder. Email goes through `smtp_sender`; a channel plugs in
//! here without touching the claimer or the recorder.

use std::collections::HashSet;
use std::sync::Arc;

use crate::messages::model::{Attachment, Message, Send};
use crate::providers::model::{Provider, ProviderId};

/// A claimed message and its content, on its way to a connection.
pub(crate) struct Job {
    pub(crate) message: Message,
    pub(crate) body: Arc<Send>,
    pub(crate) files: Arc<Vec<Attachment>>,
    /// The key it is DKIM-signed with, when its From address is on an authenticated
    /// domain.
    pub(crate) signer: Option<Arc<crate::domains::sign::Signer>>,
    /// Built and handed to the signing threads ahead of its connection (`presign`), or
    /// why it could not be built.
    pub(crate) prepared: Option<Prepared>,
}

/// A message built ahead, its signature on the way.
pub(crate) type Prepared = Result<
    (
        lettre::address::Envelope,
        tokio::sync::oneshot::Receiver<(Vec<u8>, Result<String, String>)>,
    ),
    String,
>;

/// Delivers one channel's claimed messages. Every job it takes yields exactly one outcome
/// (now, or once its attempt ends).
pub(crate) trait ChannelSender {
    /// Takes a claimed message; `provider` is its provider as read after the claim
    /// (`None`: Mailroom's own alert, which goes through the system provider).
    fn take(&mut self, job: Job, provider: Option<&Provider>);

    /// Lets go of the pools of providers that are no longer active (or were deleted):
    /// their workers finish what they hold, then close.
    fn keep_only(&mut self, active: &HashSet<ProviderId>);

    /// The providers this sender holds pools for.
    fn providers(&self) -> Vec<ProviderId>;
}
