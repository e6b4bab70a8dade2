//! The generated log of `mailroom bench search`: a vocabulary ranked like real mail, the
//! messages written from it, and the loader that stores them in chunks.
use std::collections::HashSet;
use std::sync::mpsc;

use chrono::NaiveDateTime;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::db::{self, Db, DbConn};
use crate::messages::model::{NewMessage, NewSend, Origin, Status};
use crate::messages::queries::{self as messages};
use crate::providers::model::ProviderId;
use crate::workspaces::model::WorkspaceId;

/// Messages written per transaction while loading.
pub(super) const CHUNK: usize = 10_000;
/// Days the generated log spans (ending now).
pub(super) const DAYS: i64 = 90;

/// Words frequent in mail, at the top of the ranking.
pub(super) const COMMON: &[&str] = &[
    "the", "to", "and", "of", "a", "you", "your", "in", "for", "is", "we", "on", "this", "with",
    "our", "be", "it", "please", "order", "account", "that", "are", "will", "can", "invoice",
    "payment", "team", "thanks", "update", "today", "new", "from", "at", "have", "as", "if", "not",
    "by", "all", "more", "report", "meeting", "delivery", "week", "customer",
];
pub(super) const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "bri", "cha", "dor", "fen", "gla", "hu",
    "jin", "kre", "lum", "mor", "nis", "pra", "quo", "sel", "tam", "ul", "ven", "wex", "yor",
    "zan", "ast", "ber", "cor", "dil", "eph", "for", "gri", "hol", "ist", "jun", "kel",
];
pub(super) const FIRST: &[&str] = &[
    "ann", "ben", "carla", "dan", "eve", "frank", "gina", "hugo", "ines", "jo", "karl", "lena",
    "max", "nora", "omar", "pia", "quinn", "rosa", "sam", "tara", "uma", "victor", "wendy",
    "xavier", "yara", "zoe", "alex", "bea", "chris", "dora",
];
pub(super) const LAST: &[&str] = &[
    "smith", "jones", "miller", "garcia", "brown", "davis", "martin", "lopez", "wilson", "moore",
    "taylor", "thomas", "white", "harris", "clark", "lewis", "walker", "hall", "young", "king",
    "wright", "scott", "green", "baker", "adams", "nelson", "hill", "campbell", "mitchell",
    "roberts",
];

/// A vocabulary ranked by frequency with a Zipf-like distribution (s = 1.07).
pub(super) struct Corpus {
    pub(super) words: Vec<String>,
    pub(super) cumulative: Vec<f64>,
    pub(super) domains: Vec<String>,
}

impl Corpus {
    pub(super) fn new(rng: &mut StdRng, size: usize) -> Self {
        let mut seen: HashSet<String> = COMMON.iter().map(|w| (*w).to_owned()).collect();
        let mut words: Vec<String> = COMMON.iter().map(|w| (*w).to_owned()).collect();
        while words.len() < size {
            let syllables = rng.random_range(2..=4);
            let word: String = (0..syllables)
                .map(|_| SYLLABLES[rng.random_range(0..SYLLABLES.len())])
                .collect();
            if seen.insert(word.clone()) {
                words.push(word);
            }
        }
        let mut total = 0.0;
        let mut cumulative: Vec<f64> = (1..=words.len())
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(1.07);
                total
            })
            .collect();
        for c in &mut cumulative {
            *c /= total;
        }
        let domains = (0..200)
            .map(|i| format!("{}{}.example", words[200 + i * 7], words[300 + i * 11]))
            .collect();
        Self {
            words,
            cumulative,
            domains,
        }
    }

    pub(super) fn word(&self, rng: &mut StdRng) -> &str {
        let u: f64 = rng.random();
        let rank = self.cumulative.partition_point(|c| *c < u);
        &self.words[rank.min(self.words.len() - 1)]
    }

    pub(super) fn address(&self, rng: &mut StdRng) -> String {
        format!(
            "{}.{}{}@{}",
            FIRST[rng.random_range(0..FIRST.len())],
            LAST[rng.random_range(0..LAST.len())],
            rng.random_range(0..100),
            self.domains[rng.random_range(0..self.domains.len())]
        )
    }

    pub(super) fn subject(&self, rng: &mut StdRng) -> String {
        let n = rng.random_range(3..=8);
        let mut subject = String::new();
        for i in 0..n {
            let word = self.word(rng);
            if i == 0 {
                let mut chars = word.chars();
                if let Some(c) = chars.next() {
                    subject.extend(c.to_uppercase());
                    subject.push_str(chars.as_str());
                }
            } else {
                subject.push(' ');
                subject.push_str(word);
            }
        }
        subject
    }

    /// A text of 200–2,000 bytes: sentences of Zipf-distributed words, in paragraphs.
    pub(super) fn body(&self, rng: &mut StdRng) -> String {
        let size = rng.random_range(200..=2_000);
        let mut text = String::with_capacity(size + 32);
        let mut in_sentence = 0;
        while text.len() < size {
            let word = self.word(rng);
            if in_sentence == 0 {
                let mut chars = word.chars();
                if let Some(c) = chars.next() {
                    text.extend(c.to_uppercase());
                    text.push_str(chars.as_str());
                }
            } else {
                text.push(' ');
                text.push_str(word);
            }
            in_sentence += 1;
            if in_sentence >= rng.random_range(8..=16) {
                text.push_str(if rng.random_range(0..5) == 0 {
                    ".\n\n"
                } else {
                    ". "
                });
                in_sentence = 0;
            }
        }
        text
    }
}

/// One chunk of generated messages, ready to insert.
pub(super) struct Chunk {
    pub(super) sends: Vec<NewSend>,
    pub(super) messages: Vec<NewMessage>,
}

/// Status of a generated message: mostly sent, some failed, a few still moving.
pub(super) fn status(rng: &mut StdRng) -> Status {
    match rng.random_range(0..1_000) {
        0..850 => Status::Sent,
        850..900 => Status::Failed,
        900..930 => Status::Queued,
        930..950 => Status::Held,
        950..970 => Status::Scheduled,
        970..990 => Status::Cancelled,
        _ => Status::Sending,
    }
}

/// The senders of the generated workspace.
pub(super) const SENDERS: &[(&str, &str)] = &[
    ("news@acme.example", "Acme News"),
    ("billing@acme.example", "Acme Billing"),
    ("support@acme.example", "Acme Support"),
    ("ops@acme.example", "Acme Ops"),
    ("hr@acme.example", "Acme People"),
];

pub(super) fn generate(
    corpus: &Corpus,
    workspace: WorkspaceId,
    providers: &[ProviderId],
    total: usize,
    sender: &mpsc::SyncSender<Chunk>,
) {
    let mut rng = StdRng::seed_from_u64(7);
    let start = db::now() - chrono::Duration::days(DAYS);
    let span = (DAYS * 86_400_000) as f64;
    for first in (0..total).step_by(CHUNK) {
        let last = (first + CHUNK).min(total);
        let mut sends = Vec::with_capacity(last - first);
        let mut rows = Vec::with_capacity(last - first);
        for i in first..last {
            let at: NaiveDateTime =
                start + chrono::Duration::milliseconds((span * i as f64 / total as f64) as i64);
            let text = corpus.body(&mut rng);
            let (from_address, from_name) = SENDERS[rng.random_range(0..SENDERS.len())];
            let status = status(&mut rng);
            let final_ = matches!(status, Status::Sent | Status::Failed);
            let origin = if rng.random_range(0..10) < 3 {
                Origin::Web
            } else {
                Origin::Sys
            };
            let provider = providers[rng.random_range(0..providers.len())];
            let recipient = corpus.address(&mut rng);
            sends.push(NewSend {
                from_name: from_name.into(),
                ..NewSend::new(workspace, from_address, corpus.subject(&mut rng), text, at)
            });
            rows.push(NewMessage {
                provider_id: Some(provider),
                message_id: format!("<bench.{}.{i}@acme.example>", workspace.0),
                status,
                hold_reason: (status == Status::Held).then(|| "paused".into()),
                attempts: i32::from(final_),
                result: if status == Status::Failed {
                    "550 5.1.1 mailbox unavailable".into()
                } else {
                    String::new()
                },
                ..NewMessage::email(
                    workspace,
                    crate::messages::ingest::UNSTORED,
                    origin,
                    from_address,
                    recipient,
                    at,
                )
            });
        }
        if sender
            .send(Chunk {
                sends,
                messages: rows,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Loads the generated log: one thread generates; `writers` threads store chunks, each
/// in its own transaction (two on PostgreSQL, as concurrent API traffic would; one on
/// SQLite, which has one writer anyway).
pub(super) fn load(
    database: &Db,
    corpus: std::sync::Arc<Corpus>,
    workspace: WorkspaceId,
    providers: Vec<ProviderId>,
    total: usize,
    writers: usize,
) -> anyhow::Result<()> {
    let (sender, receiver) = mpsc::sync_channel::<Chunk>(writers + 1);
    let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
    let generator =
        std::thread::spawn(move || generate(&corpus, workspace, &providers, total, &sender));
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let (database, receiver) = (database.clone(), receiver.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut conn = database.get().map_err(|e| anyhow::anyhow!("{e}"))?;
                loop {
                    let next = receiver
                        .lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .recv();
                    let Ok(Chunk {
                        sends,
                        mut messages,
                    }) = next
                    else {
                        return Ok(());
                    };
                    db::write(&mut conn, |conn: &mut DbConn| {
                        let ids = messages::insert_sends(conn, &sends)?;
                        for (message, id) in messages.iter_mut().zip(ids) {
                            message.send_id = id;
                        }
                        messages::insert_batch(conn, &messages).map(|_| ())
                    })?;
                }
            })
        })
        .collect();
    for handle in handles {
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("a writer failed"))??;
    }
    generator
        .join()
        .map_err(|_| anyhow::anyhow!("the generator failed"))?;
    Ok(())
}
