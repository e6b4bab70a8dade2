//! The test harness: the real application on port 0 against a fresh database per test
//! (a temp SQLite file, or a fresh PostgreSQL database), and cookie-keeping browsers.

use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use figment::Figment;
use figment::providers::Serialized;
use mailroom::config::Settings;
use mailroom::startup::Application;
use reqwest::StatusCode;
use reqwest::cookie::{CookieStore, Jar};

/// What tests return.
pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The password every test account gets.
pub const PASSWORD: &str = "correct horse battery staple";
/// The first admin's address.
pub const ADMIN: &str = "admin@example.com";
/// The first workspace's slug.
pub const SLUG: &str = "acme";

/// A time half a year ahead, as the compose form takes it: a scheduled send that stays
/// scheduled for the test's life (a send may be scheduled at most a year ahead).
pub static LATER_FORM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    (mailroom::db::now() + chrono::Duration::days(180))
        .format("%Y-%m-%dT%H:%M")
        .to_string()
});

/// The same time as the API takes it (RFC 3339).
pub static LATER_RFC3339: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    (mailroom::db::now() + chrono::Duration::days(180))
        .and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
});

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A temp SQLite file.
    Sqlite,
    /// A fresh database on `MAILROOM_TEST_PG_URL`.
    Postgres,
}

/// Whether CI demands every test run (no SKIP allowed).
pub fn require_all() -> bool {
    std::env::var("MAILROOM_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// The PostgreSQL server tests create their databases on.
///
/// Without an `sslmode` in it, TLS is turned off: the tests talk to a local server, and
/// libpq's OpenSSL clean-up at process exit can crash (SIGSEGV) while another test thread
/// still holds a TLS connection (seen once in three full runs).
pub fn pg_admin_url() -> String {
    let url = std::env::var("MAILROOM_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    if url.contains("sslmode=") {
        url
    } else if url.contains('?') {
        format!("{url}&sslmode=disable")
    } else {
        format!("{url}?sslmode=disable")
    }
}

/// Whether PostgreSQL can be reached; prints one SKIP line when not (and fails under
/// `MAILROOM_REQUIRE_ALL=1`).
pub fn postgres_or_skip(test: &str) -> bool {
    match PgConnection::establish(&pg_admin_url()) {
        Ok(_) => true,
        Err(e) => {
            if require_all() {
                panic!(
                    "PostgreSQL is required (MAILROOM_REQUIRE_ALL=1) but {} is unreachable: {e}",
                    pg_admin_url()
                );
            }
            println!(
                "SKIP {test} on postgres: {} unreachable ({})",
                pg_admin_url(),
                e.to_string().trim()
            );
            false
        }
    }
}

/// Runs a test body on both backends: `both!(name)` makes `name::sqlite` and
/// `name::postgres` from `async fn name(backend: Backend) -> TestResult`.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[actix_web::test]
            async fn sqlite() -> $crate::helpers::TestResult {
                super::$name($crate::helpers::Backend::Sqlite).await
            }

            #[actix_web::test]
            async fn postgres() -> $crate::helpers::TestResult {
                if !$crate::helpers::postgres_or_skip(stringify!($name)) {
                    return Ok(());
                }
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    };
}

/// A fresh database's guard: drops a PostgreSQL database when the test ends.
pub struct PgDatabase {
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(mut conn) = PgConnection::establish(&pg_admin_url()) {
                let _ =
                    conn.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
            }
        })
        .join();
    }
}

/// A fresh, empty database of the backend; returns its URL and what cleans it up.
pub fn fresh_database(backend: Backend, dir: &std::path::Path) -> (String, Option<PgDatabase>) {
    match backend {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.join("mailroom.db").display()),
            None,
        ),
        Backend::Postgres => {
            let name = format!("mailroom_test_{}", hex::encode(rand::random::<[u8; 8]>()));
            let mut conn = PgConnection::establish(&pg_admin_url()).expect("PostgreSQL reachable");
            conn.batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .expect("create test database");
            let mut url = url::Url::parse(&pg_admin_url()).expect("valid MAILROOM_TEST_PG_URL");
            url.set_path(&name);
            (url.to_string(), Some(PgDatabase { name }))
        }
    }
}

/// A running application.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The one-time setup token.
    pub setup_token: String,
    /// The database URL.
    pub database_url: String,
    /// The data directory (kept for the test's life).
    pub dir: tempfile::TempDir,
    /// The delivery engine, stopped when the test ends.
    pub engine: mailroom::delivery::EngineHandle,
    /// The application's state (for background work a test runs itself).
    pub state: actix_web::web::Data<mailroom::state::AppState>,
    _pg: Option<PgDatabase>,
}

impl TestApp {
    /// Starts the application on a fresh database.
    pub async fn spawn(backend: Backend) -> Result<Self, Box<dyn std::error::Error>> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts the application on a fresh database with adjusted settings.
    pub async fn spawn_with(
        backend: Backend,
        adjust: impl FnOnce(&mut Settings),
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (database_url, pg) = fresh_database(backend, dir.path());
        let mut settings = Settings {
            bind: "127.0.0.1:0".into(),
            database_url: Some(database_url.clone()),
            data_dir: dir.path().to_path_buf(),
            workers: 1,
            pool_size: 4,
            log: "warn".into(),
            // The test SMTP server listens on loopback, which the policy refuses by default.
            egress_allow: "127.0.0.1/32".into(),
            smtp_timeout_secs: 5,
            ..Settings::default()
        };
        adjust(&mut settings);
        let settings = Settings::from_figment(Figment::from(Serialized::defaults(settings)))?;
        let app = Application::build(settings).await?;
        let base = format!("http://127.0.0.1:{}", app.port());
        let setup_token = app.setup_token();
        let engine = app.engine();
        let state = app.state();
        actix_web::rt::spawn(app.run_until_stopped());
        Ok(Self {
            base,
            setup_token,
            database_url,
            dir,
            engine,
            state,
            _pg: pg,
        })
    }

    /// Lets the engine work until it finds nothing it may send now, with nothing in flight
    /// and every outcome recorded (`EngineHandle::until_idle`): what "nothing was sent"
    /// waits for, instead of a sleep.
    pub async fn run_queue_until_empty(&self) -> Result<(), Box<dyn std::error::Error>> {
        self.engine
            .until_idle(std::time::Duration::from_secs(30))
            .await
            .ok_or_else(|| "the engine still had work after 30 s".into())
    }

    /// Starts the application and completes setup: `admin@example.com` administers `acme`.
    /// Returns the app and the admin's signed-in browser.
    pub async fn with_admin(
        backend: Backend,
    ) -> Result<(Self, Browser), Box<dyn std::error::Error>> {
        let app = Self::spawn(backend).await?;
        let admin = app.setup().await?;
        Ok((app, admin))
    }

    /// Completes setup (`admin@example.com` administers `acme`); returns the admin's
    /// signed-in browser.
    pub async fn setup(&self) -> Result<Browser, Box<dyn std::error::Error>> {
        let admin = self.browser();
        let response = admin
            .post_form(
                "/setup",
                &[
                    ("setup_token", self.setup_token.as_str()),
                    ("name", "Ada Admin"),
                    ("email", ADMIN),
                    ("password", PASSWORD),
                    ("workspace_name", "Acme"),
                    ("slug", SLUG),
                    ("site_name", "Acme"),
                ],
            )
            .await?;
        assert_eq!(
            response.status(),
            StatusCode::SEE_OTHER,
            "setup should succeed"
        );
        Ok(admin)
    }

    /// A new browser with its own cookie jar.
    pub fn browser(&self) -> Browser {
        Browser::new(&self.base)
    }

    /// Adds `email` with `role` to `acme` through the members page and lets them set their
    /// password through the one-time link; returns their signed-in browser.
    pub async fn member(
        &self,
        admin: &Browser,
        email: &str,
        role: &str,
    ) -> Result<Browser, Box<dyn std::error::Error>> {
        let page = admin
            .post_form(
                &format!("/w/{SLUG}/members"),
                &[("email", email), ("role", role)],
            )
            .await?;
        assert_eq!(
            page.status(),
            StatusCode::OK,
            "adding a member shows the one-time link"
        );
        let link = one_time_link(&page.text().await?).ok_or("no one-time link on the page")?;
        let browser = self.browser();
        browser.set_password_with_link(&link, PASSWORD).await?;
        let response = browser.login(email, PASSWORD).await?;
        assert_eq!(
            response.status(),
            StatusCode::SEE_OTHER,
            "the new member signs in"
        );
        Ok(browser)
    }

    /// Opens the database directly, for arranging what the console cannot (a second workspace).
    pub fn db(&self) -> mailroom::db::Db {
        mailroom::db::Db::open(&self.database_url, 2).expect("database opens")
    }

    /// Creates another workspace `slug` with `email` as its admin (as `mailroom user add` does).
    pub async fn other_workspace(
        &self,
        slug: &str,
        email: &str,
    ) -> Result<Browser, Box<dyn std::error::Error>> {
        let db = self.db();
        let spec = mailroom::workspaces::operator::AddUser {
            email,
            workspace: slug,
            role: "admin",
            name: "",
        };
        let (db2, spec_email, spec_slug) =
            (db.clone(), spec.email.to_owned(), spec.workspace.to_owned());
        actix_web::web::block(move || {
            let spec = mailroom::workspaces::operator::AddUser {
                email: &spec_email,
                workspace: &spec_slug,
                role: "admin",
                name: "",
            };
            mailroom::workspaces::operator::add_user(&db2, &spec, || Ok(PASSWORD.to_owned()))
        })
        .await??;
        let browser = self.browser();
        let response = browser.login(email, PASSWORD).await?;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        Ok(browser)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.engine.stop_now();
    }
}

/// The one-time link shown on the members page.
pub fn one_time_link(html: &str) -> Option<String> {
    let start = html.find("id=\"one-time-link\">")? + "id=\"one-time-link\">".len();
    let end = html[start..].find('<')? + start;
    Some(html[start..end].replace("&amp;", "&"))
}

/// The CSRF token embedded in a page.
pub fn csrf_in(html: &str) -> Option<String> {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_owned())
}

/// A cookie-keeping HTTP client that does not follow redirects (tests assert them).
pub struct Browser {
    /// Base URL.
    pub base: String,
    /// The cookie jar.
    pub jar: Arc<Jar>,
    /// The client.
    pub client: reqwest::Client,
}

impl Browser {
    /// A browser for a server this harness did not start.
    pub fn new_at(base: &str) -> Self {
        Self::new(base)
    }

    fn new(base: &str) -> Self {
        let jar = Arc::new(Jar::default());
        let client = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client builds");
        Self {
            base: base.to_owned(),
            jar,
            client,
        }
    }

    /// The `Cookie` header this browser would send.
    pub fn cookie_header(&self) -> String {
        self.jar
            .cookies(&self.base.parse().expect("url"))
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Result<reqwest::Response> {
        self.client.get(format!("{}{path}", self.base)).send().await
    }

    /// `GET path`, returning the status and body.
    pub async fn page(&self, path: &str) -> reqwest::Result<(StatusCode, String)> {
        let response = self.get(path).await?;
        let status = response.status();
        Ok((status, response.text().await?))
    }

    /// The session's CSRF token (from the sign-in page, which every session can see, or
    /// the setup page before setup).
    pub async fn csrf(&self) -> reqwest::Result<String> {
        let (mut status, mut html) = self.page("/login").await?;
        if status == StatusCode::SEE_OTHER {
            (status, html) = self.page("/setup").await?;
        }
        assert_eq!(status, StatusCode::OK, "a page with a CSRF token");
        Ok(csrf_in(&html).expect("the sign-in page carries a CSRF token"))
    }

    /// Posts a form with the session's CSRF token.
    pub async fn post_form(
        &self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Result<reqwest::Response> {
        let token = self.csrf().await?;
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        all.push(("csrf_token", &token));
        self.client
            .post(format!("{}{path}", self.base))
            .form(&all)
            .send()
            .await
    }

    /// Posts a form without any CSRF token.
    pub async fn post_form_without_csrf(
        &self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Result<reqwest::Response> {
        self.client
            .post(format!("{}{path}", self.base))
            .form(fields)
            .send()
            .await
    }

    /// Signs in.
    pub async fn login(&self, email: &str, password: &str) -> reqwest::Result<reqwest::Response> {
        self.post_form("/login", &[("email", email), ("password", password)])
            .await
    }

    /// Sets a password through a one-time link.
    pub async fn set_password_with_link(
        &self,
        link: &str,
        password: &str,
    ) -> Result<reqwest::Response, Box<dyn std::error::Error>> {
        let token = link
            .split("token=")
            .nth(1)
            .ok_or("link without token")?
            .to_owned();
        let response = self
            .post_form(
                "/password/set",
                &[
                    ("token", &token),
                    ("password", password),
                    ("confirm", password),
                ],
            )
            .await?;
        Ok(response)
    }
}

/// The `Location` header of a redirect.
pub fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A change to the settings before the start.
type Adjust = Box<dyn FnOnce(&mut Settings)>;

/// What a test needs, said in one line:
/// `TestApp::build(backend).with_user("editor").with_provider().with_messages(3).start()`.
pub struct TestAppBuilder {
    backend: Backend,
    adjust: Vec<Adjust>,
    users: Vec<&'static str>,
    provider: bool,
    messages: usize,
}

/// A started [`TestAppBuilder`]: the app, its admin, one member per role asked for
/// (`<role>@example.com`), and the provider with its SMTP server when asked for.
pub struct Built {
    /// The application.
    pub app: TestApp,
    /// `admin@example.com`, signed in.
    pub admin: Browser,
    /// Each member asked for, signed in, by role.
    pub users: std::collections::HashMap<&'static str, Browser>,
    /// The provider's SMTP server (it asks for the test credentials).
    pub smtp: Option<crate::smtp_server::SmtpServer>,
    /// The provider's id.
    pub provider: Option<String>,
}

impl Built {
    /// The signed-in member with `role`.
    pub fn user(&self, role: &str) -> &Browser {
        &self.users[role]
    }
}

impl TestApp {
    /// A builder for an app with members, a provider and sent messages.
    pub fn build(backend: Backend) -> TestAppBuilder {
        TestAppBuilder {
            backend,
            adjust: Vec::new(),
            users: Vec::new(),
            provider: false,
            messages: 0,
        }
    }
}

impl TestAppBuilder {
    /// Adjusts the settings before the start.
    pub fn with_settings(mut self, adjust: impl FnOnce(&mut Settings) + 'static) -> Self {
        self.adjust.push(Box::new(adjust));
        self
    }

    /// A member with `role` (`editor`, `reviewer`, `viewer`, `admin`), as `<role>@example.com`.
    pub fn with_user(mut self, role: &'static str) -> Self {
        self.users.push(role);
        self
    }

    /// A green SMTP provider ("Ops SMTP") on a test SMTP server.
    pub fn with_provider(mut self) -> Self {
        self.provider = true;
        self
    }

    /// `n` messages composed by the admin through the provider, sent before `start`
    /// returns (implies `with_provider`).
    pub fn with_messages(mut self, n: usize) -> Self {
        self.provider = true;
        self.messages = n;
        self
    }

    /// Starts it all.
    pub async fn start(self) -> Result<Built, Box<dyn std::error::Error>> {
        let adjust = self.adjust;
        let app = TestApp::spawn_with(self.backend, move |settings| {
            for f in adjust {
                f(settings);
            }
        })
        .await?;
        let admin = app.setup().await?;
        let mut users = std::collections::HashMap::new();
        for role in self.users {
            let browser = app
                .member(&admin, &format!("{role}@example.com"), role)
                .await?;
            users.insert(role, browser);
        }
        let (smtp, provider) = if self.provider {
            let server = crate::smtp_server::SmtpServer::start().await?;
            server
                .require_credentials(crate::providers::SMTP_USER, crate::providers::SMTP_PASSWORD);
            let page =
                crate::providers::add_provider(&admin, &server, crate::providers::SMTP_PASSWORD)
                    .await?;
            let id = page.rsplit('/').next().ok_or("provider id")?.to_owned();
            (Some(server), Some(id))
        } else {
            (None, None)
        };
        if let Some(provider) = &provider {
            for i in 0..self.messages {
                let to = format!("reader{i}@example.com");
                let response = crate::delivery::compose_at(
                    &admin,
                    SLUG,
                    provider,
                    &[("to", to.as_str())],
                    &[],
                )
                .await?;
                assert!(
                    response.status().is_success() || response.status().is_redirection(),
                    "compose: {}",
                    response.status()
                );
            }
            app.run_queue_until_empty().await?;
        }
        Ok(Built {
            app,
            admin,
            users,
            smtp,
            provider,
        })
    }
}
