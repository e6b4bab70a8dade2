//! The one write path for new messages (DESIGN, "Ingest"): callers hand over a job; one
//! writer commits every job that arrived meanwhile in a single transaction (group commit),
//! each job in its own savepoint so one bad job fails alone, and answers each caller once
//! the commit is durable. Many concurrent requests thus share one fsync (SQLite
//! `synchronous=FULL`) or one PostgreSQL commit.

use tokio::sync::{mpsc, oneshot};

use super::model::MessageId;
use crate::db::{self, Db, DbConn};
use crate::delivery::EngineHandle;
use crate::error::AppError;

/// Work that stores messages; runs inside the writer's transaction.
pub type Job = Box<dyn FnOnce(&mut DbConn) -> Result<Vec<MessageId>, AppError> + Send>;

struct Request {
    job: Job,
    reply: oneshot::Sender<Result<Vec<MessageId>, AppError>>,
}

/// Most jobs committed together.
const MAX_BATCH: usize = 512;

/// A handle to the writer.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::UnboundedSender<Request>,
}

impl Ingest {
    /// Starts the writer on the current actix system; it wakes `engine` after each commit.
    pub fn start(db: Db, engine: EngineHandle) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        actix_web::rt::spawn(writer(db, engine, rx));
        Self { tx }
    }

    /// Runs `job` in the next group commit; returns once its messages are durable.
    pub async fn submit(
        &self,
        job: impl FnOnce(&mut DbConn) -> Result<Vec<MessageId>, AppError> + Send + 'static,
    ) -> Result<Vec<MessageId>, AppError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request {
                job: Box::new(job),
                reply,
            })
            .map_err(|_| AppError::Unexpected(anyhow::anyhow!("the ingest writer stopped")))?;
        answer
            .await
            .map_err(|_| AppError::Unexpected(anyhow::anyhow!("the ingest writer stopped")))?
    }
}

async fn writer(db: Db, engine: EngineHandle, mut rx: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = rx.recv().await {
        // Everything that queued up while the previous batch committed goes together.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (jobs, replies): (Vec<Job>, Vec<_>) =
            batch.into_iter().map(|r| (r.job, r.reply)).unzip();
        let committed = db
            .run(move |conn| {
                db::write(conn, |conn| -> Result<_, AppError> {
                    Ok(jobs
                        .into_iter()
                        .map(|job| {
                            use diesel::Connection;
                            conn.transaction::<_, AppError, _>(|c| job(c))
                        })
                        .collect::<Vec<_>>())
                })
            })
            .await;
        match committed {
            Ok(results) => {
                if results.iter().any(Result::is_ok) {
                    engine.wake();
                }
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                let why = e.to_string();
                tracing::error!(error = %why, jobs = replies.len(), "ingest commit failed");
                for reply in replies {
                    let _ = reply.send(Err(AppError::Unexpected(anyhow::anyhow!(
                        "the messages could not be stored: {why}"
                    ))));
                }
            }
        }
    }
}
