//! The command line: `serve` (default), `migrate`, `user add`.

use std::io::BufRead;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::db::{self, Db};
use crate::error::AppError;
use crate::startup::{Application, StartupError};
use crate::workspaces::operator::{AddUser, add_user};

/// Mailroom: a self-hosted console for sending email and SMS.
#[derive(Parser)]
#[command(name = "mailroom", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the console (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage API keys.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Measure (prints one final line of figures).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Start the server on a fresh database and post N messages (2 KB, held) through the
    /// JSON API from C concurrent clients.
    Api {
        /// Messages to post.
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// A database URL (default: a fresh temporary SQLite file).
        #[arg(long)]
        database: Option<String>,
    },
    /// Generate a log of N realistic messages, then time a fixed mix of 200 searches and
    /// 200 history pages.
    Search {
        /// Messages to generate.
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// A database URL (default: a fresh temporary SQLite file); give a fresh database.
        #[arg(long)]
        database: Option<String>,
        /// Time the mix on the log an earlier run loaded into `--database` instead of
        /// loading a new one (for trying query changes on a large log).
        #[arg(long, requires = "database")]
        reuse: bool,
        /// Messages of a small workspace beside the large one, whose searches are timed
        /// apart (0: none).
        #[arg(long, default_value_t = 1_000)]
        small: usize,
    },
    /// Generate a log of N messages (as `bench search` does), start the console with the
    /// engine sending to an SMTP server, and load the history page from C signed-in clients.
    Console {
        /// Messages in the log.
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// The SMTP server the engine sends to meanwhile, e.g. Postfix's
        /// `smtp-sink -c -u nobody 127.0.0.1:2526 1024`.
        #[arg(long)]
        smtp_addr: std::net::SocketAddr,
        /// A database URL (default: a fresh temporary SQLite file).
        #[arg(long)]
        database: Option<String>,
        /// Use the log an earlier `bench search` or `bench console` loaded into
        /// `--database`.
        #[arg(long, requires = "database")]
        reuse: bool,
        /// Concurrent clients, each asking again as soon as it is answered.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// How long the load lasts.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Messages per second the engine sends meanwhile.
        #[arg(long, default_value_t = 1_000)]
        send_rate: u32,
    },
    /// Enqueue N messages and deliver them through the real engine to an SMTP server.
    Delivery {
        /// Messages to deliver.
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        /// The SMTP server, e.g. Postfix's `smtp-sink -c -u nobody 127.0.0.1:2526 1024`.
        #[arg(long)]
        smtp_addr: std::net::SocketAddr,
        /// Database URL (default: a fresh temporary SQLite file).
        #[arg(long)]
        database: Option<String>,
        /// Body size in bytes.
        #[arg(long, default_value_t = 2_048)]
        size: usize,
        /// SMTP connections.
        #[arg(long, default_value_t = 8)]
        connections: u32,
        /// Send from an authenticated domain: every message DKIM-signed (RSA-2048), and
        /// the signing library's own rate measured beside it.
        #[arg(long)]
        dkim: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account (password read from the first line of stdin) and make it a member
    /// of a workspace, creating the workspace if it does not exist.
    Add {
        /// Sign-in address.
        #[arg(long)]
        email: String,
        /// Workspace URL name.
        #[arg(long)]
        workspace: String,
        /// admin, editor, reviewer or viewer.
        #[arg(long, default_value = "admin")]
        role: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
    },
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Create a key for a workspace (on behalf of its first active admin) and print the
    /// key alone on stdout.
    Create {
        /// Workspace URL name.
        #[arg(long)]
        workspace: String,
        /// A name for the key (the system that uses it).
        #[arg(long)]
        name: String,
        /// `send` or `send+read`.
        #[arg(long, default_value = "send")]
        scope: String,
        /// Requests per minute (no limit when absent).
        #[arg(long)]
        per_minute: Option<i32>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("mailroom: {e}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(&settings);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings),
        Command::Migrate => match Db::open(&settings.database_url(), 1) {
            Ok(_) => {
                println!("migrations are up to date");
                ExitCode::SUCCESS
            }
            Err(e) => fail(2, e),
        },
        Command::Bench {
            command:
                BenchCommand::Console {
                    messages,
                    smtp_addr,
                    database,
                    reuse,
                    concurrency,
                    seconds,
                    send_rate,
                },
        } => {
            let bench = crate::bench::console::ConsoleBench {
                messages,
                smtp_addr,
                database,
                reuse,
                concurrency,
                seconds,
                send_rate,
            };
            run_bench(crate::bench::console::console(bench))
        }
        Command::Bench {
            command:
                BenchCommand::Api {
                    messages,
                    concurrency,
                    database,
                },
        } => {
            let bench = crate::bench::ApiBench {
                messages,
                concurrency,
                database,
            };
            run_bench(crate::bench::api(bench))
        }
        Command::Bench {
            command:
                BenchCommand::Search {
                    messages,
                    database,
                    reuse,
                    small,
                },
        } => {
            let bench = crate::bench::search::SearchBench {
                messages,
                database,
                reuse,
                small,
            };
            run_bench(crate::bench::search::search(bench))
        }
        Command::Bench {
            command:
                BenchCommand::Delivery {
                    messages,
                    smtp_addr,
                    database,
                    size,
                    connections,
                    dkim,
                },
        } => {
            let bench = crate::bench::DeliveryBench {
                messages,
                smtp_addr,
                database,
                size,
                connections,
                dkim,
            };
            run_bench(crate::bench::delivery(bench))
        }
        Command::ApiKey {
            command:
                ApiKeyCommand::Create {
                    workspace,
                    name,
                    scope,
                    per_minute,
                },
        } => {
            let db = match Db::open(&settings.database_url(), 1) {
                Ok(db) => db,
                Err(e) => return fail(2, e),
            };
            let form = crate::api::model::KeyForm {
                name,
                scope,
                per_minute: per_minute.map(|n| n.to_string()).unwrap_or_default(),
            };
            match create_api_key(&db, &workspace, &form) {
                Ok(key) => {
                    println!("{key}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, e),
            }
        }
        Command::User {
            command:
                UserCommand::Add {
                    email,
                    workspace,
                    role,
                    name,
                },
        } => {
            let db = match Db::open(&settings.database_url(), 1) {
                Ok(db) => db,
                Err(e) => return fail(2, e),
            };
            let spec = AddUser {
                email: &email,
                workspace: &workspace,
                role: &role,
                name: &name,
            };
            match add_user(&db, &spec, read_password) {
                Ok(message) => {
                    println!("{message}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, e),
            }
        }
    }
}

fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading the password from stdin: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Runs a benchmark on its own actix system and prints its final line.
fn run_bench(bench: impl std::future::Future<Output = anyhow::Result<String>>) -> ExitCode {
    match actix_web::rt::System::new().block_on(bench) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, format!("{e:#}")),
    }
}

fn fail(code: u8, error: impl std::fmt::Display) -> ExitCode {
    eprintln!("mailroom: {error}");
    ExitCode::from(code)
}

fn serve(settings: Settings) -> ExitCode {
    let result = actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await?;
        tracing::info!(port = app.port(), "Mailroom is serving");
        app.run_until_stopped()
            .await
            .map_err(|e| StartupError::Other(e.into()))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(StartupError::Database(e)) => fail(2, e),
        Err(StartupError::Config(e)) => fail(2, e),
        Err(e) => fail(1, e),
    }
}

/// Creates an API key for the workspace with this slug; returns the key.
pub fn create_api_key(
    db: &Db,
    slug: &str,
    form: &crate::api::model::KeyForm,
) -> Result<String, String> {
    let mut errors = crate::web::forms::FieldErrors::new();
    let request = form.parse(&mut errors).ok_or_else(|| {
        errors
            .iter()
            .map(|(field, message)| format!("--{}: {message}", field.replace('_', "-")))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let mut conn = db.get().map_err(|e| e.to_string())?;
    db::write(&mut conn, |conn| -> Result<String, AppError> {
        let workspace = crate::workspaces::queries::find_by_slug(conn, slug)?
            .ok_or_else(|| AppError::Validation(format!("--workspace: no workspace {slug:?}")))?;
        let admin = crate::workspaces::queries::list_members(conn, workspace.id)?
            .into_iter()
            .filter(|(user, membership)| {
                membership.role().is_admin() && !user.is_disabled() && user.password_hash.is_some()
            })
            .map(|(user, _)| user.id)
            .min_by_key(|id| id.0)
            .ok_or_else(|| {
                AppError::Validation(format!("--workspace: {slug} has no active admin"))
            })?;
        let (_, key) = crate::api::service::create(
            conn,
            &workspace,
            &crate::api::service::Creator::Cli(admin),
            &request,
        )?;
        Ok(key)
    })
    .map_err(|e| e.to_string())
}
