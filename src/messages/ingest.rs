//! The one write path for new messages (DESIGN, "Ingest"). A request prepares its rows
//! (reads and checks happen in the request, in parallel across requests); one writer
//! takes everything that arrived meanwhile and stores it in one transaction with one
//! multi-row INSERT for all contents and one for all messages (group commit), then
//! answers each caller once the commit is durable. If the batch fails (say a provider was
//! deleted in between), each request is stored again on its own, so one bad request fails
//! alone. Many concurrent requests thus share one fsync (SQLite `synchronous=FULL`) or one
//! PostgreSQL commit, and a handful of statements.

use tokio::sync::{mpsc, oneshot};

use super::model::{Attachment, MessageId, NewMessage, NewSend, SendId};
use super::queries;
use crate::db::{self, Db, DbConn};
use crate::delivery::EngineHandle;
use crate::error::AppError;

/// Runs after a request's messages are inserted, in the same transaction (e.g. remembering
/// an Idempotency-Key with the answer); `Ok(false)` undoes the request's messages and
/// answers it with a conflict. May run twice (batch, then alone).
pub type After = Box<dyn Fn(&mut DbConn, &[MessageId]) -> Result<bool, AppError> + Send>;

/// What one request stores: a send, its files, a message per recipient.
pub struct Prepared {
    /// The send.
    pub send: NewSend,
    /// Files: (name, MIME type, bytes).
    pub files: Vec<(String, String, Vec<u8>)>,
    /// The messages (their `send_id` is filled in by the writer).
    pub rows: Vec<NewMessage>,
    /// Work in the same transaction once the ids are known.
    pub after: Option<After>,
}

type Answer = Result<Vec<MessageId>, AppError>;

struct Request {
    prepared: Prepared,
    reply: oneshot::Sender<Answer>,
}

/// Most requests committed together.
const MAX_BATCH: usize = 512;

/// A handle to the writer.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::UnboundedSender<Request>,
}

impl Ingest {
    /// Starts `writers` writers on the current actix system; each wakes `engine` after
    /// its commits. One suits SQLite (one writer at a time anyway); on PostgreSQL a second
    /// one gathers and stores the next batch while the first commits (the search index
    /// makes each batch's work in the server larger than its round trips).
    pub fn start(db: Db, engine: EngineHandle, writers: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..writers.max(1) {
            actix_web::rt::spawn(writer(db.clone(), engine.clone(), rx.clone()));
        }
        Self { tx }
    }

    /// Stores `prepared` in the next group commit; returns the message ids once durable.
    pub async fn submit(&self, prepared: Prepared) -> Answer {
        let (reply, answer) = oneshot::channel();
        let stopped = || AppError::Unexpected(anyhow::anyhow!("the ingest writer stopped"));
        self.tx
            .send(Request { prepared, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn writer(
    db: Db,
    engine: EngineHandle,
    rx: std::sync::Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Request>>>,
) {
    loop {
        // Everything that queued up while the previous batch committed goes together.
        let batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        let (prepared, replies): (Vec<Prepared>, Vec<_>) =
            batch.into_iter().map(|r| (r.prepared, r.reply)).unzip();
        let answers = db
            .run(move |conn| {
                db::with_journals_in_memory(conn, |conn| {
                    match db::write(conn, |conn| store(conn, &prepared)) {
                        Ok(answers) => Ok(answers),
                        // The database itself refused (full, down): every request hears so.
                        Err(AppError::Unavailable(fault)) => Err(AppError::Unavailable(fault)),
                        // One bad request must not fail the others: each alone.
                        Err(_) if prepared.len() > 1 => Ok(prepared
                            .iter()
                            .map(|one| {
                                db::write(conn, |conn| store(conn, std::slice::from_ref(one)))
                                    .and_then(|mut answers| {
                                        answers.pop().unwrap_or_else(|| Err(AppError::NotFound))
                                    })
                            })
                            .collect()),
                        Err(e) => Ok(vec![Err(e)]),
                    }
                })
            })
            .await;
        match answers {
            Ok(answers) => {
                if answers.iter().any(Result::is_ok) {
                    engine.wake();
                }
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            }
            Err(AppError::Unavailable(fault)) => {
                for reply in replies {
                    let _ = reply.send(Err(AppError::Unavailable(fault)));
                }
            }
            Err(e) => {
                let why = e.to_string();
                tracing::error!(error = %why, requests = replies.len(), "ingest failed");
                for reply in replies {
                    let _ = reply.send(Err(AppError::Unexpected(anyhow::anyhow!(
                        "the messages could not be stored: {why}"
                    ))));
                }
            }
        }
    }
}

/// Stores requests with one INSERT for the sends and one for the messages; answers each
/// (a request whose `after` says no is undone and answered with a conflict).
fn store(conn: &mut DbConn, batch: &[Prepared]) -> Result<Vec<Answer>, AppError> {
    let sends: Vec<NewSend> = batch.iter().map(|p| p.send.clone()).collect();
    let send_ids = queries::insert_sends(conn, &sends)?;
    let files: Vec<Attachment> = batch
        .iter()
        .zip(&send_ids)
        .flat_map(|(p, send_id)| {
            p.files.iter().map(|(name, content_type, data)| Attachment {
                send_id: *send_id,
                file_name: name.clone(),
                content_type: content_type.clone(),
                size: i64::try_from(data.len()).unwrap_or(i64::MAX),
                data: data.clone(),
            })
        })
        .collect();
    queries::insert_attachments(conn, &files)?;
    let rows: Vec<NewMessage> = batch
        .iter()
        .zip(&send_ids)
        .flat_map(|(p, send_id)| {
            p.rows.iter().map(|row| NewMessage {
                send_id: *send_id,
                ..row.clone()
            })
        })
        .collect();
    let mut ids = queries::insert_batch(conn, &rows)?.into_iter();
    let mut answers = Vec::with_capacity(batch.len());
    for (p, send_id) in batch.iter().zip(&send_ids) {
        let mine: Vec<MessageId> = ids.by_ref().take(p.rows.len()).collect();
        let kept = match &p.after {
            Some(after) => after(conn, &mine)?,
            None => true,
        };
        if kept {
            answers.push(Ok(mine));
        } else {
            queries::delete_unsent(conn, &mine, *send_id)?;
            answers.push(Err(AppError::Conflict(
                "Another request with this Idempotency-Key was served meanwhile; retry to get its answer."
                    .into(),
            )));
        }
    }
    Ok(answers)
}

/// The id a message row carries until the writer knows its send's.
pub const UNSTORED: SendId = SendId(0);
