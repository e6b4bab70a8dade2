//! Faults of the database itself (a full disk, a server that is down, read-only or out of
//! connections), told apart from mistakes in a query. A request refused because of one is
//! answered `503` with `Retry-After`, never `500`; the log says so once per incident (when
//! it starts and when it ends, with the count), and `/metrics` counts refusals by cause.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What is wrong with the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The disk (or the server's disk, or SQLite's page limit) is full.
    DiskFull,
    /// The database accepts reads but refuses writes.
    ReadOnly,
    /// The server cannot be reached, closed the connection, or is shutting down.
    Unreachable,
    /// No connection could be had in time (all busy, or the server's slots are taken).
    Busy,
}

/// Every cause, in the order `/metrics` lists them.
pub const ALL: [Fault; 4] = [
    Fault::DiskFull,
    Fault::ReadOnly,
    Fault::Unreachable,
    Fault::Busy,
];

impl Fault {
    /// The label `/metrics` and the log use.
    pub fn label(self) -> &'static str {
        match self {
            Fault::DiskFull => "disk_full",
            Fault::ReadOnly => "read_only",
            Fault::Unreachable => "unreachable",
            Fault::Busy => "busy",
        }
    }

    /// What a person is told.
    pub fn describe(self) -> &'static str {
        match self {
            Fault::DiskFull => {
                "Mailroom cannot store anything right now: its database's disk is full. Nothing was saved; try again later."
            }
            Fault::ReadOnly => {
                "Mailroom cannot store anything right now: its database refuses writes. Nothing was saved; try again later."
            }
            Fault::Unreachable => {
                "Mailroom cannot reach its database right now. Nothing was saved; try again in a few seconds."
            }
            Fault::Busy => {
                "Mailroom's database is too busy to take this request. Nothing was saved; try again in a few seconds."
            }
        }
    }

    /// Seconds a client should wait before trying again.
    pub fn retry_after(self) -> u64 {
        match self {
            Fault::DiskFull | Fault::ReadOnly => 30,
            Fault::Unreachable | Fault::Busy => 5,
        }
    }

    /// The fault a database error stands for, if it is one (not a query's own mistake).
    pub fn of_diesel(e: &diesel::result::Error) -> Option<Fault> {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | Error::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _) => {
                Some(Fault::Unreachable)
            }
            Error::DatabaseError(DatabaseErrorKind::ReadOnlyTransaction, _) => {
                Some(Fault::ReadOnly)
            }
            Error::DatabaseError(_, info) => Self::of_message(info.message()),
            Error::BrokenTransactionManager => Some(Fault::Unreachable),
            _ => None,
        }
    }

    /// The fault a server's or driver's message names, if any (SQLite's result codes and
    /// PostgreSQL's messages for the same conditions).
    pub fn of_message(message: &str) -> Option<Fault> {
        let m = message.to_ascii_lowercase();
        let has = |needle: &str| m.contains(needle);
        if has("database or disk is full")
            || has("no space left on device")
            || has("could not extend file")
            || has("disk quota exceeded")
        {
            Some(Fault::DiskFull)
        } else if has("readonly database")
            || has("read-only transaction")
            || has("read-only file system")
        {
            Some(Fault::ReadOnly)
        } else if has("too many clients")
            || has("too many connections")
            || has("connection slots are reserved")
            || has("database is locked")
        {
            Some(Fault::Busy)
        } else if has("disk i/o error") {
            // SQLite reports a failed write of its journal this way when the disk fills.
            Some(Fault::DiskFull)
        } else if has("server closed the connection")
            || has("connection refused")
            || has("could not connect")
            || has("terminating connection")
            || has("is not currently accepting connections")
            || has("the database system is")
            || has("no connection to the server")
            || has("connection to server")
            || has("unable to open database file")
            || has("timed out waiting for connection")
        {
            Some(Fault::Unreachable)
        } else {
            None
        }
    }

    /// The fault behind a pool checkout that failed: the connect error when there was one,
    /// otherwise every connection was busy.
    pub fn of_pool(e: &r2d2::Error) -> Fault {
        let text = e.to_string();
        match text.split_once(": ") {
            Some((_, cause)) => Self::of_message(cause).unwrap_or(Fault::Unreachable),
            None => Fault::Busy,
        }
    }

    /// The fault anywhere in an error's chain.
    pub fn of_chain(e: &anyhow::Error) -> Option<Fault> {
        e.chain().find_map(|cause| {
            if let Some(d) = cause.downcast_ref::<diesel::result::Error>() {
                Self::of_diesel(d)
            } else if let Some(p) = cause.downcast_ref::<r2d2::Error>() {
                Some(Self::of_pool(p))
            } else if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                        Some(Fault::DiskFull)
                    }
                    std::io::ErrorKind::ReadOnlyFilesystem => Some(Fault::ReadOnly),
                    _ => None,
                }
            } else {
                None
            }
        })
    }
}

tokio::task_local! {
    static NOTED: Cell<Option<Fault>>;
}

/// Runs a request's future while remembering whether any database work inside it met a
/// fault (including work the request's middleware did, such as loading its session).
pub async fn scope<F: std::future::Future>(future: F) -> (F::Output, Option<Fault>) {
    NOTED
        .scope(Cell::new(None), async {
            let output = future.await;
            (output, NOTED.with(Cell::get))
        })
        .await
}

/// Remembers `fault` for the request running now (nothing outside a request's scope).
pub fn note(fault: Fault) {
    let _ = NOTED.try_with(|cell| cell.set(Some(fault)));
}

/// The open incident of one cause.
struct Incident {
    started: Instant,
    last: Instant,
    refused: u64,
    background: u64,
}

/// One database's incidents, the refusals counted since the process started, and the
/// last write probe (`/healthz`). Shared by every pool of the database ([`super::Db`]).
#[derive(Default)]
pub struct Faults {
    open: Mutex<[Option<Incident>; 4]>,
    refused_total: [AtomicU64; 4],
    /// When the last probe ran, and what it found.
    pub last_probe: Mutex<Option<(Instant, Result<(), String>)>>,
}

fn index(fault: Fault) -> usize {
    ALL.iter().position(|f| *f == fault).unwrap_or(0)
}

impl Faults {
    /// Counts one request refused because of `fault`; the first of an incident is
    /// logged (and `true` returned).
    pub fn refused(&self, fault: Fault) -> bool {
        self.refused_total[index(fault)].fetch_add(1, Ordering::Relaxed);
        self.met(fault, true, "requests are answered 503 until it recovers")
    }

    /// Background work (the delivery engine, the ingest writer) met `fault`; it retries
    /// by itself. Logged only when it starts an incident.
    pub fn met_in_background(&self, fault: Fault, what: &str) -> bool {
        self.met(fault, false, what)
    }

    /// Counts `fault` in its incident; opens (and logs) one if none is open.
    fn met(&self, fault: Fault, request: bool, what: &str) -> bool {
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut open[index(fault)];
        match slot {
            Some(incident) => {
                incident.last = now;
                if request {
                    incident.refused += 1;
                } else {
                    incident.background += 1;
                }
                false
            }
            None => {
                tracing::error!(
                    cause = fault.label(),
                    "database fault: {}; {what}",
                    fault.describe()
                );
                *slot = Some(Incident {
                    started: now,
                    last: now,
                    refused: u64::from(request),
                    background: u64::from(!request),
                });
                true
            }
        }
    }

    /// The fault of a refusal within `window`: the database is refusing work now.
    pub fn refusing_within(&self, window: Duration) -> Option<Fault> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.iter().zip(ALL).find_map(|(slot, fault)| {
            slot.as_ref()
                .filter(|incident| incident.last.elapsed() < window)
                .map(|_| fault)
        })
    }

    /// Closes every incident quiet for `quiet` after a write succeeded, logging each
    /// with its counts; returns how many it closed.
    pub fn recovered(&self, quiet: Duration) -> usize {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut closed = 0;
        for (slot, fault) in open.iter_mut().zip(ALL) {
            if slot.as_ref().is_some_and(|i| i.last.elapsed() >= quiet)
                && let Some(incident) = slot.take()
            {
                tracing::warn!(
                    cause = fault.label(),
                    seconds = incident.last.duration_since(incident.started).as_secs(),
                    refused = incident.refused,
                    background_failures = incident.background,
                    "database fault over: writes succeed again"
                );
                closed += 1;
            }
        }
        closed
    }

    /// Whether any incident is open.
    pub fn any_open(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.iter().any(Option::is_some)
    }

    /// Requests refused since the process started, by cause.
    pub fn refused_totals(&self) -> Vec<(Fault, u64)> {
        ALL.iter()
            .map(|f| (*f, self.refused_total[index(*f)].load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incident_is_logged_once_and_closed_once_quiet() {
        let faults = Faults::default();
        assert!(
            faults.refused(Fault::ReadOnly),
            "the first refusal opens it"
        );
        assert!(
            !faults.refused(Fault::ReadOnly),
            "later ones are only counted"
        );
        assert!(!faults.met_in_background(Fault::ReadOnly, "claim failed"));
        assert_eq!(faults.refused_totals()[index(Fault::ReadOnly)].1, 2);
        assert_eq!(faults.refused_totals()[index(Fault::DiskFull)].1, 0);
        assert_eq!(
            faults.refusing_within(Duration::from_secs(60)),
            Some(Fault::ReadOnly)
        );
        assert_eq!(
            faults.recovered(Duration::from_secs(60)),
            0,
            "not quiet yet"
        );
        assert!(faults.any_open());
        assert_eq!(faults.recovered(Duration::ZERO), 1);
        assert!(!faults.any_open());
        assert_eq!(faults.refusing_within(Duration::from_secs(60)), None);
        assert!(
            faults.refused(Fault::ReadOnly),
            "a new incident is logged again"
        );
    }

    #[test]
    fn messages_of_both_backends_name_their_fault() {
        let cases = [
            ("database or disk is full", Some(Fault::DiskFull)),
            (
                "could not extend file \"base/1/2\": No space left on device",
                Some(Fault::DiskFull),
            ),
            (
                "attempt to write a readonly database",
                Some(Fault::ReadOnly),
            ),
            (
                "cannot execute INSERT in a read-only transaction",
                Some(Fault::ReadOnly),
            ),
            ("sorry, too many clients already", Some(Fault::Busy)),
            ("database is locked", Some(Fault::Busy)),
            (
                "database \"x\" is not currently accepting connections",
                Some(Fault::Unreachable),
            ),
            (
                "terminating connection due to administrator command",
                Some(Fault::Unreachable),
            ),
            ("UNIQUE constraint failed: users.email", None),
            ("syntax error at or near \"SELEC\"", None),
        ];
        for (message, fault) in cases {
            assert_eq!(Fault::of_message(message), fault, "{message}");
        }
    }
}
