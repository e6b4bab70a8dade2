//! DKIM signing for delivery: RSA signatures are CPU work (a third of a millisecond each),
//! so they are made on threads of their own, one per core, never on the engine's async
//! thread; and the signers of the workspaces' authenticated domains, opened from their
//! sealed keys once and kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};

use base64::Engine as _;

use crate::crypto::Sealer;
use crate::domains::model::{Domain, DomainId, SigningDomain};
use crate::domains::sign::Signer;

struct Task {
    signer: Arc<Signer>,
    message: Vec<u8>,
    timestamp: i64,
    done: tokio::sync::oneshot::Sender<(Vec<u8>, Result<String, String>)>,
}

/// A pool of signing threads.
pub(crate) struct SigningPool {
    tx: Mutex<Option<mpsc::Sender<Task>>>,
}

impl SigningPool {
    /// One thread per core.
    pub(crate) fn start() -> Self {
        let (tx, rx) = mpsc::channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("dkim-{i}"))
                .spawn(move || {
                    loop {
                        let task = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(task) = task else { return };
                        let signed = task
                            .signer
                            .sign(&task.message, task.timestamp)
                            .map_err(|e| e.to_string());
                        let _ = task.done.send((task.message, signed));
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a DKIM signing thread");
            }
        }
        Self {
            tx: Mutex::new(Some(tx)),
        }
    }

    /// Signs `message` on a signing thread; gives the message back with the
    /// `DKIM-Signature` header, or why it could not be signed.
    pub(crate) async fn sign(
        &self,
        signer: Arc<Signer>,
        message: Vec<u8>,
        timestamp: i64,
    ) -> (Vec<u8>, Result<String, String>) {
        self.submit(signer, message, timestamp)
            .await
            .unwrap_or_else(|_| (Vec::new(), Err("the signing thread stopped".into())))
    }

    /// Hands `message` to the signing threads; the answer comes on the receiver.
    pub(crate) fn submit(
        &self,
        signer: Arc<Signer>,
        message: Vec<u8>,
        timestamp: i64,
    ) -> tokio::sync::oneshot::Receiver<(Vec<u8>, Result<String, String>)> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let task = Task {
            signer,
            message,
            timestamp,
            done,
        };
        let tx = self.tx.lock().ok().and_then(|tx| tx.as_ref().cloned());
        let refused = match tx {
            Some(tx) => tx.send(task).err().map(|mpsc::SendError(task)| task),
            None => Some(task),
        };
        if let Some(task) = refused {
            let _ = task
                .done
                .send((task.message, Err("signing has stopped".into())));
        }
        answer
    }
}

impl Drop for SigningPool {
    fn drop(&mut self) {
        // Closing the channel ends the threads once they finish what they hold.
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
    }
}

/// Signers by the key they sign with (a rotation makes a new one).
#[derive(Default)]
pub(crate) struct Signers {
    open: Mutex<HashMap<(DomainId, String, String), Arc<Signer>>>,
}

impl Signers {
    /// The signer of `domain`'s active key, opened from its sealed private key the first
    /// time (CPU work: call it off the async threads).
    pub(crate) fn of(
        &self,
        sealer: &Sealer,
        domain: &SigningDomain,
    ) -> Result<Arc<Signer>, String> {
        let key = (
            domain.id,
            domain.active_selector.clone(),
            domain.active_public.clone(),
        );
        if let Some(found) = self.open.lock().map_err(|_| "lock")?.get(&key) {
            return Ok(found.clone());
        }
        let context = Domain::seal_context(domain.workspace_id, &domain.name);
        let encoded = zeroize::Zeroizing::new(
            sealer
                .open(&domain.active_private, &context)
                .map_err(|e| e.to_string())?,
        );
        let pkcs8 = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|_| "a stored DKIM key is not base64".to_owned())?,
        );
        let signer = Arc::new(
            Signer::new(&domain.name, &domain.active_selector, &pkcs8)
                .map_err(|e| e.to_string())?,
        );
        let mut open = self.open.lock().map_err(|_| "lock")?;
        // Keys of this domain from before a rotation are not needed again.
        open.retain(|(id, _, _), _| *id != domain.id);
        open.insert(key, signer.clone());
        Ok(signer)
    }
}
