//! The JSON API: keys, bearer auth, sending and reading back, problem documents, scopes,
//! workspaces, rate limits — on both backends.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both;
use crate::helpers::*;
use crate::providers::{SMTP_PASSWORD, SMTP_USER, add_provider};
use crate::smtp_server::SmtpServer;

/// The key shown once on the page that created it.
fn shown_key(html: &str) -> Option<String> {
    let start = html.find("id=\"new-key\">")? + "id=\"new-key\">".len();
    let end = html[start..].find('<')? + start;
    Some(html[start..end].to_owned())
}

/// Creates a key in the console; returns it.
pub async fn create_key(
    admin: &Browser,
    slug: &str,
    name: &str,
    scope: &str,
    per_minute: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let response = admin
        .post_form(
            &format!("/w/{slug}/api-keys"),
            &[("name", name), ("scope", scope), ("per_minute", per_minute)],
        )
        .await?;
    assert_eq!(response.status(), StatusCode::CREATED);
    let html = response.text().await?;
    Ok(shown_key(&html).ok_or("the new key is on the page")?)
}

/// A client with no cookies that speaks to the API with `key`.
pub struct Api {
    base: String,
    key: String,
    client: reqwest::Client,
}

impl Api {
    pub fn new(app: &TestApp, key: &str) -> Self {
        Self {
            base: format!("{}/api/v1", app.base),
            key: key.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Result<(StatusCode, Value)> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await?;
        Ok((
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        ))
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Result<(StatusCode, Value)> {
        self.post_raw(path, body.to_string()).await
    }

    pub async fn post_raw(&self, path: &str, body: String) -> reqwest::Result<(StatusCode, Value)> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await?;
        Ok((
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        ))
    }

    /// Waits (at most 15 s) until a message is sent or failed; returns its record.
    pub async fn settled(&self, id: i64) -> Result<Value, Box<dyn std::error::Error>> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, record) = self.get(&format!("/messages/{id}")).await?;
            assert_eq!(status, StatusCode::OK, "{record}");
            if record["status"] == "sent" || record["status"] == "failed" {
                return Ok(record);
            }
            if Instant::now() > deadline {
                return Err(format!("message {id} did not settle: {record}").into());
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An app with an admin, a green provider "Ops SMTP" and a `send+read` key.
async fn api_app(
    backend: Backend,
) -> Result<(TestApp, Browser, SmtpServer, Api), Box<dyn std::error::Error>> {
    api_app_with(backend, |_| {}).await
}

/// The same with adjusted settings.
pub async fn api_app_with(
    backend: Backend,
    adjust: impl FnOnce(&mut mailroom::config::Settings),
) -> Result<(TestApp, Browser, SmtpServer, Api), Box<dyn std::error::Error>> {
    let app = TestApp::spawn_with(backend, adjust).await?;
    let admin = app.setup().await?;
    let server = SmtpServer::start().await?;
    server.require_credentials(SMTP_USER, SMTP_PASSWORD);
    add_provider(&admin, &server, SMTP_PASSWORD).await?;
    let key = create_key(&admin, "acme", "Help desk", "send+read", "").await?;
    let api = Api::new(&app, &key);
    Ok((app, admin, server, api))
}

pub fn field_of(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn keys_are_shown_once_stored_hashed_and_revoked(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let key = create_key(&admin, "acme", "Help desk", "send", "").await?;
    assert!(key.starts_with("mr_") && key.len() > 40, "{key}");
    // Listed by prefix afterwards; the key itself is never shown again.
    let (status, html) = admin.page("/w/acme/api-keys").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Help desk"));
    assert!(html.contains(&key[..11]), "the visible prefix");
    assert!(!html.contains(&key), "the key is shown only once");
    let stored: Vec<String> = app
        .db()
        .run(|conn| {
            use diesel::prelude::*;
            use mailroom::db::schema::api_keys::dsl::*;
            Ok(api_keys.select(secret_hash).load(conn)?)
        })
        .await?;
    assert_eq!(stored, vec![mailroom::api::service::hash(&key)]);
    assert!(!stored[0].contains(&key[12..]), "only a hash is stored");

    let api = Api::new(&app, &key);
    assert_eq!(api.get("/providers").await?.0, StatusCode::OK);
    // Names are checked like every form field, and an editor cannot manage keys.
    let response = admin
        .post_form("/w/acme/api-keys", &[("name", ""), ("scope", "root")])
        .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text().await?;
    assert!(html.contains("Give the key a name"));
    assert!(html.contains("Choose send, or send and read"));
    let editor = app.member(&admin, "ed@example.com", "editor").await?;
    assert_eq!(
        editor.page("/w/acme/api-keys").await?.0,
        StatusCode::FORBIDDEN
    );
    let response = editor
        .post_form("/w/acme/api-keys", &[("name", "x"), ("scope", "send")])
        .await?;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let id: i64 = app
        .db()
        .run(|conn| {
            use diesel::prelude::*;
            use mailroom::db::schema::api_keys::dsl::*;
            Ok(api_keys.select(id).first(conn)?)
        })
        .await?;
    let response = admin
        .post_form(&format!("/w/acme/api-keys/{id}/revoke"), &[])
        .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (status, problem) = api.get("/providers").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoked key: {problem}");
    let (_, audit) = admin.page("/w/acme/audit").await?;
    assert!(audit.contains("api_key.created") && audit.contains("api_key.revoked"));
    Ok(())
}
both!(keys_are_shown_once_stored_hashed_and_revoked);

async fn only_a_valid_bearer_key_authorizes(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let key = create_key(&admin, "acme", "Flows", "send+read", "").await?;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/providers", app.base);
    let wrong = format!("{}{}", &key[..key.len() - 4], "AAAA");
    for (what, header) in [
        ("no key", None),
        ("a wrong key", Some(format!("Bearer {wrong}"))),
        ("a malformed key", Some("Bearer nope".to_owned())),
        ("another scheme", Some(format!("Basic {key}"))),
    ] {
        let mut request = client.get(&url);
        if let Some(value) = header {
            request = request.header("Authorization", value);
        }
        let response = request.send().await?;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{what}");
        let problem: Value = response.json().await?;
        assert_eq!(problem["status"], 401, "{what}");
    }
    // A signed-in browser's session cookie is not an API credential, and no CSRF token is
    // needed (or accepted in place of a key).
    let response = admin.client.get(&url).send().await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = admin
        .client
        .post(format!("{}/api/v1/messages", app.base))
        .header("X-CSRF-Token", admin.csrf().await?)
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = Api::new(&app, &key).get("/providers").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["providers"], json!([]));
    Ok(())
}
both!(only_a_valid_bearer_key_authorizes);

async fn a_sent_message_is_read_back_with_every_field(backend: Backend) -> TestResult {
    let (app, _admin, server, api) = api_app(backend).await?;
    let (status, providers) = api.get("/providers").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(providers["providers"][0]["name"], "Ops SMTP");
    assert_eq!(providers["providers"][0]["status"], "active");
    let (status, accepted) = api
        .post(
            "/messages",
            &json!({
                "to": ["ann@example.com", "bob@example.com"],
                "cc": ["boss@example.com"],
                "bcc": ["audit@example.com"],
                "subject": "Your ticket #42",
                "from": "ops@example.com",
                "provider": "Ops SMTP", "from": "ops@example.com",
                "text": "We are on it.\n.\nBye",
                "html": "<p>We are on it.</p>",
                "contact_ids": [7, "crm-19"],
                "retry_count": 2
            }),
        )
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let list = accepted["messages"].as_array().ok_or("messages")?;
    let to: Vec<&str> = list.iter().filter_map(|m| m["to"].as_str()).collect();
    assert_eq!(
        to,
        [
            "ann@example.com",
            "bob@example.com",
            "boss@example.com",
            "audit@example.com"
        ],
        "one message per address"
    );
    assert_eq!(list[0]["to"], "ann@example.com");
    assert_eq!(list[0]["status"], "queued");
    let id = list[0]["id"].as_i64().ok_or("id")?;
    assert_eq!(list[0]["url"], format!("/api/v1/messages/{id}"));

    let record = api.settled(id).await?;
    assert_eq!(record["status"], "sent", "{record}");
    assert_eq!(record["successful"], true);
    assert_eq!(record["smtp_code"], 250);
    assert_eq!(record["smtp_enhanced"], "2.0.0");
    assert_eq!(record["to"], "ann@example.com");
    assert_eq!(record["recipient_kind"], "to");
    assert_eq!(
        record["to_all"],
        json!(["ann@example.com", "bob@example.com"])
    );
    assert_eq!(record["cc"], json!(["boss@example.com"]));
    assert_eq!(record["bcc"], json!(["audit@example.com"]));
    assert_eq!(record["from"], "ops@example.com");
    assert_eq!(record["origin"], "sys");
    assert_eq!(record["source"], "Help desk");
    assert_eq!(record["max_attempts"], 3);
    assert_eq!(record["contact_ids"], json!([7, "crm-19"]));
    assert!(record["owner"].is_i64(), "the key's creator owns it");
    assert!(record["sent_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(
        record["events"].as_array().is_some_and(|e| e
            .iter()
            .any(|e| e["kind"] == "sent" && e["smtp_code"] == 250)),
        "{record}"
    );
    for copy in &list[1..] {
        api.settled(copy["id"].as_i64().ok_or("id")?).await?;
    }
    let (_, bcc_copy) = api
        .get(&format!(
            "/messages/{}",
            list[3]["id"].as_i64().ok_or("id")?
        ))
        .await?;
    assert_eq!(bcc_copy["recipient_kind"], "bcc");
    let captured = server.messages();
    assert_eq!(captured.len(), 4, "one copy to each address");
    let mail = captured
        .iter()
        .find(|m| m.to == vec!["audit@example.com".to_owned()])
        .ok_or("the BCC copy")?;
    for mail in &captured {
        assert!(
            !mail.data.contains("audit@example.com"),
            "a BCC address is never in a header"
        );
    }
    assert!(
        mail.data.contains("\r\n.\r\n")
            || mail.data.contains("\r\n..\r\n")
            || mail.data.contains("Bye")
    );
    // It is in the history under Sys, with the key's name.
    let (_, html) = _admin.page("/w/acme/messages?tab=sys").await?;
    assert!(html.contains("Your ticket #42"), "listed under Sys");
    assert!(
        html.contains("API · Help desk"),
        "with the key's name as its origin"
    );
    let _ = app;
    Ok(())
}
both!(a_sent_message_is_read_back_with_every_field);

async fn a_reply_threads_under_the_original(backend: Backend) -> TestResult {
    let (_app, _admin, server, api) = api_app(backend).await?;
    let send = |extra: Value| {
        let mut body = json!({
            "to": ["ann@example.com"], "subject": "Re: help", "provider": "Ops SMTP", "from": "ops@example.com", "text": "Hi"
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    let (_, first) = api.post("/messages", &send(json!({}))).await?;
    let first_id = first["messages"][0]["id"].as_i64().ok_or("id")?;
    let original = api.settled(first_id).await?;
    let (status, second) = api
        .post("/messages", &send(json!({ "in_reply_to": first_id })))
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{second}");
    let second_id = second["messages"][0]["id"].as_i64().ok_or("id")?;
    let reply = api.settled(second_id).await?;
    let (_, third) = api
        .post("/messages", &send(json!({ "in_reply_to": second_id })))
        .await?;
    api.settled(third["messages"][0]["id"].as_i64().ok_or("id")?)
        .await?;
    let parent = original["message_id"].as_str().ok_or("message id")?;
    let child = reply["message_id"].as_str().ok_or("message id")?;
    assert_eq!(reply["in_reply_to"], parent);
    // Long headers may be folded onto continuation lines (RFC 5322 §2.2.3): unfold them.
    let captured: Vec<String> = server
        .messages()
        .into_iter()
        .map(|m| m.data.replace("\r\n ", " ").replace("\r\n\t", " "))
        .collect();
    assert_eq!(captured.len(), 3);
    assert!(
        captured[1].contains(&format!("In-Reply-To: {parent}")),
        "{}",
        captured[1]
    );
    assert!(captured[1].contains(&format!("References: {parent}")));
    assert!(captured[2].contains(&format!("In-Reply-To: {child}")));
    assert!(
        captured[2].contains(&format!("References: {parent} {child}")),
        "the whole thread: {}",
        captured[2]
    );
    // Only a message of this workspace can be answered.
    let (status, problem) = api
        .post("/messages", &send(json!({ "in_reply_to": 999_999 })))
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_of(&problem), vec!["in_reply_to"]);
    Ok(())
}
both!(a_reply_threads_under_the_original);

async fn bad_input_gets_a_problem_document_naming_the_field(backend: Backend) -> TestResult {
    let (app, _admin, server, api) = api_app(backend).await?;
    let valid = json!({
        "to": ["ann@example.com"], "subject": "Hello", "provider": "Ops SMTP", "from": "ops@example.com", "text": "Hi"
    });
    let with = |key: &str, value: Value| {
        let mut body = valid.clone();
        body[key] = value;
        body
    };
    let (status, problem) = api
        .post_raw("/messages", "{\n  \"to\": [\"a@example.com\",\n}".into())
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["line"], 3);
    assert!(problem["column"].as_u64().is_some());
    assert_eq!(problem["status"], 400);
    for (body, field) in [
        (
            with("subject", json!("Hi\r\nBcc: x@evil.example")),
            "subject",
        ),
        (with("subject", json!("Hi%0d%0aBcc: x@evil.example")), ""),
        (
            with("to", json!(["a@example.com\r\nBcc: x@evil.example"])),
            "to[0]",
        ),
        (with("cc", json!(["not an address"])), "cc[0]"),
        (with("to", json!([])), "to"),
        (
            with("from", json!("ops@example.com\r\nBcc: x@evil.example")),
            "from",
        ),
        (with("from", json!("someone@else.example")), "from"),
        (with("provider", json!("No such")), "provider"),
        (with("provider", json!(123_456)), "provider"),
        (with("retry_count", json!(11)), "retry_count"),
        (with("send_at", json!("tomorrow")), "send_at"),
        (with("subject", json!(5)), "subject"),
        (with("owner", json!(999_999)), "owner"),
        (with("surprise", json!(true)), "surprise"),
        (
            json!({"to": ["a@example.com"], "provider": "Ops SMTP", "from": "ops@example.com", "text": "x"}),
            "subject",
        ),
    ] {
        let (status, problem) = api.post("/messages", &body).await?;
        if field.is_empty() {
            // Encoded line breaks are just text: accepted as typed, never decoded.
            assert_eq!(status, StatusCode::ACCEPTED, "{problem}");
            continue;
        }
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {problem}"
        );
        assert_eq!(field_of(&problem), vec![field.to_owned()], "{problem}");
        assert!(
            problem["errors"][0]["detail"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
        );
    }
    // Too large: 413, still a problem document.
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/messages", app.base))
        .bearer_auth(&api.key)
        .header("Content-Type", "application/json")
        .body(format!(
            "{{\"to\":[\"a@example.com\"],\"subject\":\"x\",\"provider\":1,\"text\":\"{}\"}}",
            "x".repeat(11 * 1024 * 1024)
        ))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let (status, problem) = api.get("/no-such-thing").await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["status"], 404);
    // Only the one well-formed send above went out.
    app.run_queue_until_empty().await?;
    assert_eq!(server.messages().len(), 1);
    Ok(())
}
both!(bad_input_gets_a_problem_document_naming_the_field);

async fn a_key_reaches_only_its_workspace_and_its_scope(backend: Backend) -> TestResult {
    let (app, admin, _server, api) = api_app(backend).await?;
    let (_, accepted) = api
        .post(
            "/messages",
            &json!({"to": ["ann@example.com"], "subject": "Hi", "provider": "Ops SMTP", "from": "ops@example.com", "text": "Hi"}),
        )
        .await?;
    let id = accepted["messages"][0]["id"].as_i64().ok_or("id")?;
    // A key of another workspace: 404 for this workspace's ids, and its providers only.
    let other_admin = app.other_workspace("globex", "boss@globex.example").await?;
    let other = Api::new(
        &app,
        &create_key(&other_admin, "globex", "G", "send+read", "").await?,
    );
    let (status, _) = other.get(&format!("/messages/{id}")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(other.get("/providers").await?.1["providers"], json!([]));
    let (status, problem) = other
        .post(
            "/messages",
            &json!({"to": ["a@example.com"], "subject": "Hi", "provider": "Ops SMTP", "from": "ops@example.com", "text": "x"}),
        )
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "not its sender");
    assert_eq!(field_of(&problem), vec!["from"]);
    // A send-only key reads back what it sent, not what other keys sent.
    let sender = Api::new(
        &app,
        &create_key(&admin, "acme", "Flows", "send", "").await?,
    );
    assert_eq!(
        sender.get(&format!("/messages/{id}")).await?.0,
        StatusCode::NOT_FOUND
    );
    let (_, mine) = sender
        .post(
            "/messages",
            &json!({"to": ["b@example.com"], "subject": "Hi", "provider": "Ops SMTP", "from": "ops@example.com", "text": "x"}),
        )
        .await?;
    let mine = mine["messages"][0]["id"].as_i64().ok_or("id")?;
    assert_eq!(
        sender.get(&format!("/messages/{mine}")).await?.0,
        StatusCode::OK
    );
    assert_eq!(
        api.get(&format!("/messages/{mine}")).await?.0,
        StatusCode::OK
    );
    Ok(())
}
both!(a_key_reaches_only_its_workspace_and_its_scope);

async fn over_its_rate_limit_a_key_gets_429_with_retry_after(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let key = create_key(&admin, "acme", "Limited", "send", "2").await?;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/providers", app.base);
    for _ in 0..2 {
        let response = client.get(&url).bearer_auth(&key).send().await?;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = client.get(&url).bearer_auth(&key).send().await?;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = response.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=60).contains(&wait), "{wait}");
    let problem: Value = response.json().await?;
    assert_eq!(problem["status"], 429);
    // Another key is not affected.
    let free = create_key(&admin, "acme", "Free", "send", "").await?;
    let response = client.get(&url).bearer_auth(&free).send().await?;
    assert_eq!(response.status(), StatusCode::OK);
    Ok(())
}
both!(over_its_rate_limit_a_key_gets_429_with_retry_after);

async fn a_held_message_is_stored_but_not_sent(backend: Backend) -> TestResult {
    let (app, _admin, server, api) = api_app(backend).await?;
    let (status, accepted) = api
        .post(
            "/messages",
            &json!({"to": ["ann@example.com"], "subject": "Later", "provider": "Ops SMTP", "from": "ops@example.com", "text": "x", "hold": true}),
        )
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(accepted["messages"][0]["status"], "held");
    let id = accepted["messages"][0]["id"].as_i64().ok_or("id")?;
    app.run_queue_until_empty().await?;
    let (_, record) = api.get(&format!("/messages/{id}")).await?;
    assert_eq!(record["status"], "held");
    assert!(server.messages().is_empty());
    Ok(())
}
both!(a_held_message_is_stored_but_not_sent);

async fn messages_are_listed_cancelled_and_released(backend: Backend) -> TestResult {
    let (_app, admin, server, api) = api_app(backend).await?;
    let body = |to: &str, extra: Value| {
        let mut body = json!({"to": [to], "subject": "S", "provider": "Ops SMTP", "from": "ops@example.com", "text": "x"});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    let mut ids = Vec::new();
    for (to, extra) in [
        ("a@example.com", json!({"hold": true})),
        ("b@example.com", json!({"hold": true})),
        ("c@example.com", json!({"send_at": LATER_RFC3339.as_str()})),
    ] {
        let (status, accepted) = api.post("/messages", &body(to, extra)).await?;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        ids.push(accepted["messages"][0]["id"].as_i64().ok_or("id")?);
    }
    // Pages of two, newest first, with a cursor; filters by status.
    let (status, page) = api.get("/messages?limit=2").await?;
    assert_eq!(status, StatusCode::OK, "{page}");
    let first: Vec<i64> = page["messages"]
        .as_array()
        .ok_or("messages")?
        .iter()
        .filter_map(|m| m["id"].as_i64())
        .collect();
    assert_eq!(first, vec![ids[2], ids[1]]);
    let cursor = page["next_cursor"].as_str().ok_or("a next page")?;
    let (_, rest) = api
        .get(&format!("/messages?limit=2&cursor={cursor}"))
        .await?;
    assert_eq!(rest["messages"][0]["id"], ids[0]);
    assert!(rest.get("next_cursor").is_none(), "the last page");
    let (_, held) = api.get("/messages?status=held").await?;
    assert_eq!(held["messages"].as_array().map(Vec::len), Some(2));
    let (_, recent) = api.get("/messages?since=2999-01-01T00:00:00Z").await?;
    assert_eq!(recent["messages"], json!([]));
    for (query, field) in [
        ("status=lost", "status"),
        ("since=yesterday", "since"),
        ("limit=0", "limit"),
        ("cursor=abc", "cursor"),
        ("colour=red", "colour"),
    ] {
        let (status, problem) = api.get(&format!("/messages?{query}")).await?;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {problem}"
        );
        assert_eq!(field_of(&problem), vec![field.to_owned()], "{query}");
    }

    // Release sends a held message; cancel stops one; neither applies twice.
    let (status, released) = api
        .post(&format!("/messages/{}/release", ids[0]), &json!({}))
        .await?;
    assert_eq!(status, StatusCode::OK, "{released}");
    assert_eq!(api.settled(ids[0]).await?["status"], "sent");
    assert_eq!(server.messages().len(), 1);
    let (status, _) = api
        .post(&format!("/messages/{}/release", ids[0]), &json!({}))
        .await?;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, cancelled) = api
        .post(&format!("/messages/{}/cancel", ids[1]), &json!({}))
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["status"], "cancelled");
    assert!(
        cancelled["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "cancelled"
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("Help desk")))),
        "{cancelled}"
    );
    let (status, _) = api
        .post(&format!("/messages/{}/release", ids[1]), &json!({}))
        .await?;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a cancelled message is not released"
    );
    let (status, scheduled) = api
        .post(&format!("/messages/{}/cancel", ids[2]), &json!({}))
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(scheduled["status"], "cancelled");
    // Another key with send scope cannot touch them.
    let other = Api::new(
        &_app,
        &create_key(&admin, "acme", "Other", "send", "").await?,
    );
    let (status, _) = other
        .post(&format!("/messages/{}/cancel", ids[0]), &json!({}))
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(other.get("/messages").await?.1["messages"], json!([]));
    Ok(())
}
both!(messages_are_listed_cancelled_and_released);

async fn wait_answers_with_the_final_reply_code_and_text(backend: Backend) -> TestResult {
    use crate::smtp_server::{Fault, Stage};
    let (_app, _admin, server, api) = api_app(backend).await?;
    let body = json!({"to": ["gone@example.com"], "subject": "S", "provider": "Ops SMTP", "from": "ops@example.com", "text": "x"});
    server.fail(
        Stage::Rcpt,
        Fault::Reply("550 5.1.1 <gone@example.com>: Recipient address rejected".into()),
        1,
    );
    let (status, answer) = api.post("/messages?wait=10", &body).await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let message = &answer["messages"][0];
    assert_eq!(message["status"], "failed");
    assert_eq!(message["smtp_code"], 550);
    assert_eq!(message["smtp_enhanced"], "5.1.1");
    assert!(
        message["result"]
            .as_str()
            .is_some_and(|r| r.contains("Recipient address rejected")),
        "{answer}"
    );
    let (status, answer) = api.post("/messages?wait=10", &body).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["messages"][0]["status"], "sent");
    assert_eq!(answer["messages"][0]["smtp_code"], 250);
    // A held message never becomes final: the wait ends with what is known, as 202.
    let mut held = body.clone();
    held["hold"] = json!(true);
    let (status, answer) = api.post("/messages?wait=1", &held).await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(answer["messages"][0]["status"], "held");
    let (status, problem) = api.post("/messages?wait=31", &body).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_of(&problem), vec!["wait"]);
    Ok(())
}
both!(wait_answers_with_the_final_reply_code_and_text);

async fn an_idempotency_key_makes_a_retry_safe(backend: Backend) -> TestResult {
    let (app, _admin, server, api) = api_app(backend).await?;
    let client = reqwest::Client::new();
    let post = |key: &'static str, body: Value, query: &'static str| {
        client
            .post(format!("{}/api/v1/messages{query}", app.base))
            .bearer_auth(&api.key)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let body = json!({"to": ["ann@example.com"], "subject": "Once", "provider": "Ops SMTP", "from": "ops@example.com", "text": "x"});
    let first = post("order-1", body.clone(), "").await?;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await?;
    let again = post("order-1", body.clone(), "").await?;
    assert_eq!(again.status(), StatusCode::ACCEPTED, "a replay");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await?, first, "the original answer");
    let id = first["messages"][0]["id"].as_i64().ok_or("id")?;
    api.settled(id).await?;
    assert_eq!(server.messages().len(), 1, "sent once");
    let (_, listed) = api.get("/messages").await?;
    assert_eq!(
        listed["messages"].as_array().map(Vec::len),
        Some(1),
        "stored once"
    );

    // The same key with another body: 422 naming the header.
    let mut other = body.clone();
    other["subject"] = json!("Twice?");
    let response = post("order-1", other, "").await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_of(&response.json().await?), vec!["Idempotency-Key"]);

    // A duplicate while the first is still being served (waiting on a slow server): 409;
    // afterwards, the waited answer is replayed.
    server.delay_each(Duration::from_millis(1_500));
    let slow = post("order-2", body.clone(), "?wait=10");
    let duplicate = async {
        actix_web::rt::time::sleep(Duration::from_millis(400)).await;
        post("order-2", body.clone(), "?wait=10").await
    };
    let (slow, duplicate) = futures_util::future::join(slow, duplicate).await;
    let (slow, duplicate) = (slow?, duplicate?);
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);
    assert_eq!(slow.status(), StatusCode::OK);
    let waited: Value = slow.json().await?;
    assert_eq!(waited["messages"][0]["smtp_code"], 250);
    let replayed = post("order-2", body.clone(), "?wait=10").await?;
    assert_eq!(replayed.status(), StatusCode::OK);
    assert_eq!(replayed.json::<Value>().await?, waited);
    assert_eq!(server.messages().len(), 2);
    // Keys are per API key: another key's "order-1" is a new request.
    let other_key = create_key(&_admin, "acme", "Other", "send", "").await?;
    let response = client
        .post(format!("{}/api/v1/messages", app.base))
        .bearer_auth(&other_key)
        .header("Idempotency-Key", "order-1")
        .json(&body)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(response.headers().get("idempotent-replayed").is_none());
    let response = post("", body.clone(), "").await?;
    assert_eq!(
        response.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "an empty key"
    );
    Ok(())
}
both!(an_idempotency_key_makes_a_retry_safe);

async fn files_are_uploaded_once_and_attached_by_id(backend: Backend) -> TestResult {
    let (app, _admin, server, api) = api_app(backend).await?;
    let client = reqwest::Client::new();
    let upload = |name: &'static str, data: &'static [u8]| {
        let part = reqwest::multipart::Part::bytes(data)
            .file_name(name)
            .mime_str("text/csv")
            .expect("valid type");
        client
            .post(format!("{}/api/v1/files", app.base))
            .bearer_auth(&api.key)
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
    };
    let response = upload("../report.csv", b"a,b\n1,2\n").await?;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{}",
        response.text().await?
    );
    let file: Value = response.json().await?;
    let id = file["id"].as_i64().ok_or("id")?;
    assert_eq!(file["name"], "report.csv", "a safe name");
    assert_eq!(file["size"], 8);
    let (status, info) = api.get(&format!("/files/{id}")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["content_type"], "text/csv");
    // The part `file` and nothing else (the document says so too): an extra field is
    // refused, not silently dropped.
    let response = client
        .post(format!("{}/api/v1/files", app.base))
        .bearer_auth(&api.key)
        .multipart(
            reqwest::multipart::Form::new()
                .part(
                    "file",
                    reqwest::multipart::Part::bytes(&b"x"[..]).file_name("x.txt"),
                )
                .text("note", "extra"),
        )
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let (status, _) = api.get(&format!("/files/{}", id + 1)).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing stored");
    // Without the part `file` (another name only): refused too.
    let response = client
        .post(format!("{}/api/v1/files", app.base))
        .bearer_auth(&api.key)
        .multipart(reqwest::multipart::Form::new().part(
            "upload",
            reqwest::multipart::Part::bytes(&b"x"[..]).file_name("x.txt"),
        ))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let (status, _) = api.get(&format!("/files/{}", id + 1)).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "still nothing stored");

    let body = json!({
        "to": ["ann@example.com", "bob@example.com"], "subject": "Report", "provider": "Ops SMTP", "from": "ops@example.com",
        "text": "Attached.", "attachments": [id]
    });
    let (status, accepted) = api.post("/messages?wait=10", &body).await?;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    let captured = server.messages();
    assert_eq!(captured.len(), 2);
    for mail in &captured {
        assert!(
            mail.data.contains("filename=\"report.csv\""),
            "{}",
            mail.data
        );
    }
    // Unknown ids and other workspaces' files are refused by name.
    let mut unknown = body.clone();
    unknown["attachments"] = json!([id, 999_999]);
    let (status, problem) = api.post("/messages", &unknown).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_of(&problem), vec!["attachments"]);
    let other_admin = app.other_workspace("globex", "boss@globex.example").await?;
    let other = Api::new(
        &app,
        &create_key(&other_admin, "globex", "G", "send+read", "").await?,
    );
    assert_eq!(
        other.get(&format!("/files/{id}")).await?.0,
        StatusCode::NOT_FOUND
    );
    // Deleted: gone for later sends; what was sent keeps its copy.
    let response = client
        .delete(format!("{}/api/v1/files/{id}", app.base))
        .bearer_auth(&api.key)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        api.get(&format!("/files/{id}")).await?.0,
        StatusCode::NOT_FOUND
    );
    let (status, _) = api.post("/messages", &body).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // An upload without its part is a problem document too.
    let response = client
        .post(format!("{}/api/v1/files", app.base))
        .bearer_auth(&api.key)
        .multipart(reqwest::multipart::Form::new().text("other", "x"))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    Ok(())
}
both!(files_are_uploaded_once_and_attached_by_id);

async fn the_openapi_document_describes_every_endpoint(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let response = reqwest::get(format!("{}/api/v1/openapi.json", app.base)).await?;
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await?;
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1"))
    );
    // Every operation the document names is served: without a key it answers 401 (a
    // problem document), and a method the document does not give its path answers 405
    // with `Allow` naming exactly the document's methods. The list is the document's.
    let client = reqwest::Client::new();
    let paths = document["paths"].as_object().ok_or("paths")?;
    assert!(paths.len() >= 6, "{paths:?}");
    for (path, item) in paths {
        let concrete = path.replace("{id}", "1");
        let mut methods = Vec::new();
        for (method, operation) in item.as_object().ok_or("path item")? {
            assert!(
                operation["responses"]["401"].is_object(),
                "{method} {path}: 401"
            );
            methods.push(method.to_uppercase());
            let response = client
                .request(
                    method.to_uppercase().parse()?,
                    format!("{}{concrete}", app.base),
                )
                .send()
                .await?;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} without a key"
            );
        }
        let response = client
            .request(reqwest::Method::TRACE, format!("{}{concrete}", app.base))
            .send()
            .await?;
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "TRACE {path}"
        );
        let allow: Vec<String> = response.headers()["allow"]
            .to_str()?
            .split(", ")
            .map(str::to_owned)
            .collect();
        let mut expected = methods.clone();
        expected.sort();
        let mut got = allow.clone();
        got.sort();
        assert_eq!(got, expected, "Allow of {path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    // The rules the handlers enforce are stated, so a generated client never sends what
    // the API refuses (schemathesis checks the rest in CI).
    let schemas = &document["components"]["schemas"];
    assert_eq!(schemas["SendRequest"]["properties"]["to"]["minItems"], 1);
    assert_eq!(schemas["SendRequest"]["properties"]["to"]["maxItems"], 50);
    assert_eq!(
        schemas["SendRequest"]["properties"]["subject"]["maxLength"],
        900
    );
    assert_eq!(
        schemas["SendRequest"]["properties"]["retry_count"]["maximum"],
        10
    );
    let list = &document["paths"]["/api/v1/messages"]["get"]["parameters"];
    let limit = list
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == "limit"))
        .ok_or("limit")?;
    assert_eq!(
        limit["schema"],
        json!({"type": "integer", "minimum": 1, "maximum": 200})
    );
    let upload = &document["paths"]["/api/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]
        ["schema"];
    assert_eq!(upload["additionalProperties"], false);
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let send = &document["components"]["schemas"]["SendRequest"];
    assert!(
        send["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("to"))),
        "{send}"
    );
    // The console shows it.
    let (status, html) = admin.page("/w/acme/api-reference").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("/api/v1/messages/{id}/release"));
    assert!(html.contains("/api/v1/openapi.json"));
    assert!(
        html.contains("No key, or a wrong or revoked one"),
        "shared answers are described"
    );
    Ok(())
}
both!(the_openapi_document_describes_every_endpoint);

/// Settings that let per-request SMTP reach the test servers (loopback, high ports).
fn per_request_to_test_servers(settings: &mut mailroom::config::Settings) {
    settings.per_request_smtp_allow = "127.0.0.1/32".into();
    settings.per_request_smtp_ports = "1024-65535".into();
}

async fn a_call_may_bring_its_own_smtp_server_when_the_workspace_allows(
    backend: Backend,
) -> TestResult {
    let (app, admin, _provider_server, api) =
        api_app_with(backend, per_request_to_test_servers).await?;
    let own = SmtpServer::start().await?;
    own.require_credentials("flow-user", "flow-secret-password");
    let body = json!({
        "to": ["ann@example.com"], "subject": "Own server", "from": "ops@example.com", "text": "x",
        "smtp": {"server": "127.0.0.1", "port": own.port, "tls": "none",
                 "user": "flow-user", "password": "flow-secret-password"}
    });
    // Off by default.
    let (status, problem) = api.post("/messages", &body).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_of(&problem), vec!["smtp"]);
    let response = admin
        .post_form("/w/acme/api-keys/smtp", &[("on", "true")])
        .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);

    let (status, answer) = api.post("/messages?wait=10", &body).await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["messages"][0]["status"], "sent");
    let captured = own.messages();
    assert_eq!(captured.len(), 1);
    assert_eq!(captured[0].from, "ops@example.com", "from the sender");
    // A second call reuses the settings; a new password replaces the sealed one.
    own.require_credentials("flow-user", "rotated-password");
    let mut rotated = body.clone();
    rotated["smtp"]["password"] = json!("rotated-password");
    let (status, answer) = api.post("/messages?wait=10", &rotated).await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["messages"][0]["status"], "sent", "{answer}");
    let secrets: Vec<(bool, Option<String>)> = app
        .db()
        .run(|conn| {
            use diesel::prelude::*;
            use mailroom::db::schema::providers::dsl::*;
            Ok(providers.select((per_request, secret)).load(conn)?)
        })
        .await?;
    let hidden: Vec<_> = secrets.iter().filter(|(p, _)| *p).collect();
    assert_eq!(hidden.len(), 1, "one hidden provider for the same settings");
    let sealed = hidden[0].1.clone().ok_or("a sealed password")?;
    assert!(!sealed.contains("rotated-password") && !sealed.contains("flow-secret"));
    // Hidden from the provider lists.
    let (_, listed) = api.get("/providers").await?;
    assert_eq!(listed["providers"].as_array().map(Vec::len), Some(1));
    let (_, page) = admin.page("/w/acme/providers").await?;
    assert!(!page.contains("API SMTP"));

    // Always under the egress policy, and checked like every field.
    let mut metadata = body.clone();
    metadata["smtp"]["server"] = json!("169.254.169.254");
    let (status, problem) = api.post("/messages", &metadata).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(field_of(&problem), vec!["smtp.server"]);
    for (key, value, field) in [
        (
            "user",
            json!("x\r\nMAIL FROM:<evil@example.com>"),
            "smtp.user",
        ),
        ("tls", json!("ssl3"), "smtp.tls"),
        ("port", json!(0), "smtp.port"),
    ] {
        let mut bad = body.clone();
        bad["smtp"][key] = value;
        let (status, problem) = api.post("/messages", &bad).await?;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{key}");
        assert_eq!(field_of(&problem), vec![field.to_owned()], "{problem}");
    }
    let mut both = body.clone();
    both["provider"] = json!("Ops SMTP");
    let (status, problem) = api.post("/messages", &both).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_of(&problem), vec!["smtp"]);
    Ok(())
}
both!(a_call_may_bring_its_own_smtp_server_when_the_workspace_allows);

/// Security review, item 2 (SMTP smuggling): whatever bytes a caller puts in any part of a
/// message, the server (lenient: a lone dot ends DATA after a bare LF too) receives exactly
/// one message per send, every line ends in CRLF, and files decode to the uploaded bytes.
async fn no_part_of_a_message_can_end_data_early_or_put_a_bare_line_end_on_the_wire(
    backend: Backend,
) -> TestResult {
    let (app, _admin, server, api) = api_app(backend).await?;
    let client = reqwest::Client::new();
    let long_line = "x".repeat(10_000);
    let hostile: Vec<(&str, String)> = vec![
        ("bare LF", "one\ntwo\n".into()),
        ("bare CR", "one\rtwo\r".into()),
        ("LF dot LF", "hello\n.\nMAIL FROM:<ceo@victim.test>\n".into()),
        ("CRLF dot CRLF", "hello\r\n.\r\nMAIL FROM:<ceo@victim.test>\r\n".into()),
        (
            "LF dot CRLF",
            "hello\n.\r\nMAIL FROM:<ceo@victim.test>\r\nRCPT TO:<x@victim.test>\r\nDATA\r\nsmuggled\r\n.\r\n".into(),
        ),
        ("NUL", "a\0b".into()),
        ("long line", long_line.clone()),
    ];
    let mut sent = 0;
    let mut uploads: Vec<Vec<u8>> = Vec::new();
    let upload = |name: String, data: Vec<u8>| {
        let part = reqwest::multipart::Part::bytes(data)
            .file_name(name)
            .mime_str("text/plain")
            .expect("valid type");
        client
            .post(format!("{}/api/v1/files", app.base))
            .bearer_auth(&api.key)
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
    };
    for (what, input) in &hostile {
        // The input as a file's bytes…
        let response = upload("notes.txt".into(), input.clone().into_bytes()).await?;
        assert_eq!(response.status(), StatusCode::CREATED, "{what}");
        let file: Value = response.json().await?;
        uploads.push(input.clone().into_bytes());
        let mut parts = vec![
            ("text", json!(input)),
            ("html", json!(format!("<p>{input}</p>"))),
            ("attachments", json!([file["id"]])),
            ("subject", json!(input)),
        ];
        // …and as its name: refused as a malformed upload, or stored made safe.
        let named = upload(format!("{input}.txt"), b"named".to_vec()).await?;
        if named.status() == StatusCode::CREATED {
            let file: Value = named.json().await?;
            uploads.push(b"named".to_vec());
            parts.push(("attachments", json!([file["id"]])));
        } else {
            assert!(
                named.status().is_client_error(),
                "{what}: {}",
                named.status()
            );
        }
        for (field, value) in parts {
            let mut body = json!({
                "to": ["ann@example.com"], "subject": "Hostile", "provider": "Ops SMTP", "from": "ops@example.com",
                "text": "Plain."
            });
            body[field] = value;
            let (status, answer) = api.post("/messages?wait=10", &body).await?;
            if status == StatusCode::UNPROCESSABLE_ENTITY
                && (field == "subject" || input.contains('\0'))
            {
                // A header field refuses what it cannot carry, as does every field a NUL
                // (which neither a message nor PostgreSQL's text can hold), and says so.
                assert_eq!(field_of(&answer), vec![field], "{what}: {answer}");
                continue;
            }
            assert_eq!(status, StatusCode::OK, "{what} in {field}: {answer}");
            assert_eq!(
                answer["messages"][0]["status"], "sent",
                "{what} in {field}: {answer}"
            );
            sent += 1;
        }
    }
    let captured = server.messages();
    assert_eq!(captured.len(), sent, "exactly one message per send");
    for mail in &captured {
        assert_eq!(mail.from, "ops@example.com", "no smuggled MAIL FROM");
        let raw = &mail.raw;
        for (i, byte) in raw.iter().enumerate() {
            match byte {
                b'\r' => assert_eq!(raw.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
                b'\n' => assert!(i > 0 && raw[i - 1] == b'\r', "bare LF at {i}"),
                0 => panic!("NUL at {i}"),
                _ => {}
            }
        }
        assert!(raw.split(|b| *b == b'\n').all(|line| line.len() <= 1000));
    }
    // Every file decodes to exactly the bytes uploaded.
    let mut decoded = Vec::new();
    for mail in &captured {
        let parsed = mail_parser::MessageParser::default()
            .parse(mail.data.as_bytes())
            .ok_or("a parsable message")?;
        for attachment in parsed.attachments() {
            decoded.push(attachment.contents().to_vec());
        }
    }
    assert_eq!(decoded, uploads, "each file, byte for byte");
    Ok(())
}
both!(no_part_of_a_message_can_end_data_early_or_put_a_bare_line_end_on_the_wire);

/// Security review, item 4: per-request SMTP cannot reach private networks or ports other
/// than SMTP's unless the operator allows them, its errors name no resolved address, and
/// a workspace's hidden providers are bounded.
async fn per_request_smtp_stays_on_public_smtp_servers(backend: Backend) -> TestResult {
    let (_app, admin, _server, api) = api_app(backend).await?;
    admin
        .post_form("/w/acme/api-keys/smtp", &[("on", "true")])
        .await?;
    let body = |server: &str, port: u16| {
        json!({
            "to": ["ann@example.com"], "subject": "Own server", "from": "ops@example.com",
            "text": "x", "smtp": {"server": server, "port": port, "tls": "none"}
        })
    };
    // Private, shared, unique-local and loopback (which MAILROOM_EGRESS_ALLOW allows the
    // providers of this test app) are refused; the answer names no address, nor which kind
    // of range it is in: it reads the same for every refused host.
    let mut answers = std::collections::BTreeSet::new();
    for server in [
        "10.1.2.3",
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",
        "fd00::1",
        "127.0.0.1",
        "localhost",
    ] {
        let (status, problem) = api.post("/messages", &body(server, 25)).await?;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{server}: {problem}"
        );
        assert_eq!(field_of(&problem), vec!["smtp.server"], "{server}");
        let said = problem.to_string();
        if server == "localhost" {
            assert!(
                !said.contains("127.0.0.1") && !said.contains("::1"),
                "{said}"
            );
        }
        answers.insert(said.replace(server, "HOST"));
    }
    assert_eq!(answers.len(), 1, "{answers:?}");
    // Only SMTP ports: no port scanner.
    for port in [22, 80, 6379, 5432] {
        let (status, problem) = api.post("/messages", &body("203.0.113.5", port)).await?;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{port}");
        assert_eq!(field_of(&problem), vec!["smtp.port"], "{port}: {problem}");
    }
    Ok(())
}
both!(per_request_smtp_stays_on_public_smtp_servers);

async fn a_workspace_has_a_bounded_number_of_per_request_smtp_servers(
    backend: Backend,
) -> TestResult {
    let (app, admin, _server, api) = api_app_with(backend, |s| {
        per_request_to_test_servers(s);
        s.per_request_smtp_limit = 2;
    })
    .await?;
    admin
        .post_form("/w/acme/api-keys/smtp", &[("on", "true")])
        .await?;
    let mut servers = Vec::new();
    for _ in 0..4 {
        servers.push(SmtpServer::start().await?);
    }
    let body = |server: &SmtpServer, hold: bool| {
        json!({
            "to": ["ann@example.com"], "subject": "Own server", "from": "ops@example.com",
            "text": "x", "hold": hold,
            "smtp": {"server": "127.0.0.1", "port": server.port, "tls": "none"}
        })
    };
    let hidden = || async {
        app.db()
            .run(|conn| {
                use diesel::prelude::*;
                use mailroom::db::schema::providers::dsl::*;
                Ok(providers
                    .filter(per_request.eq(true))
                    .select(port)
                    .order(port.asc())
                    .load::<i32>(conn)?)
            })
            .await
    };
    // Two servers: two hidden providers; both sent their mail.
    for server in &servers[..2] {
        let (status, answer) = api.post("/messages?wait=10", &body(server, false)).await?;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["messages"][0]["status"], "sent");
    }
    assert_eq!(hidden().await?.len(), 2);
    // A third replaces one with nothing left to send.
    let (status, answer) = api
        .post("/messages?wait=10", &body(&servers[2], false))
        .await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["messages"][0]["status"], "sent");
    let now = hidden().await?;
    assert_eq!(now.len(), 2, "still at the limit: {now:?}");
    assert!(now.contains(&i32::from(servers[2].port)));
    // With mail waiting on both, a fourth is refused, naming the limit.
    for server in [
        &servers[2],
        &servers[if now.contains(&i32::from(servers[0].port)) {
            0
        } else {
            1
        }],
    ] {
        let (status, answer) = api.post("/messages", &body(server, true)).await?;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
    let (status, problem) = api.post("/messages", &body(&servers[3], false)).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("2 per-request SMTP servers")
    );
    assert_eq!(hidden().await?.len(), 2);
    assert!(servers[3].messages().is_empty());
    // Every server got exactly the mail sent to it: none moved to another one.
    for server in &servers[..3] {
        assert_eq!(server.messages().len(), 1);
    }
    Ok(())
}
both!(a_workspace_has_a_bounded_number_of_per_request_smtp_servers);

/// Addresses as people write them: quoted display names (with a comma), names travelling
/// into the headers, a Reply-To; one entry is one address.
async fn addresses_with_display_names_and_a_reply_to_travel_into_the_headers(
    backend: Backend,
) -> TestResult {
    let (_app, _admin, server, api) = api_app(backend).await?;
    let (status, answer) = api
        .post(
            "/messages?wait=10",
            &json!({
                "to": ["\"Lee, Ann\" <ann@example.test>", "Bo Chen <bo@example.test>"],
                "cc": ["Cy <cy@example.test>"],
                "reply_to": "Help Desk <desk@example.test>",
                "subject": "Names", "provider": "Ops SMTP", "from": "ops@example.com", "text": "Hi."
            }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let captured = server.messages();
    assert_eq!(captured.len(), 3);
    let mut envelope: Vec<String> = captured.iter().flat_map(|m| m.to.clone()).collect();
    envelope.sort();
    assert_eq!(
        envelope,
        ["ann@example.test", "bo@example.test", "cy@example.test"]
    );
    let named = |list: Option<&mail_parser::Address>| -> Vec<(String, String)> {
        list.map(|l| {
            l.iter()
                .map(|a| {
                    (
                        a.name().unwrap_or_default().to_owned(),
                        a.address().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
    };
    let pair = |n: &str, a: &str| (n.to_owned(), a.to_owned());
    for mail in &captured {
        let parsed = mail_parser::MessageParser::default()
            .parse(mail.data.as_bytes())
            .ok_or("a message")?;
        assert_eq!(
            named(parsed.to()),
            [
                pair("Lee, Ann", "ann@example.test"),
                pair("Bo Chen", "bo@example.test")
            ],
            "{}",
            mail.data
        );
        assert_eq!(named(parsed.cc()), [pair("Cy", "cy@example.test")]);
        assert_eq!(
            named(parsed.reply_to()),
            [pair("Help Desk", "desk@example.test")]
        );
    }
    let id = answer["messages"][0]["id"].as_i64().ok_or("id")?;
    let (_, record) = api.get(&format!("/messages/{id}")).await?;
    assert_eq!(record["reply_to"], "Help Desk <desk@example.test>");
    assert_eq!(record["to"], "\"Lee, Ann\" <ann@example.test>");
    // One entry is one address; a wrong Reply-To is named.
    let (status, problem) = api
        .post(
            "/messages",
            &json!({
                "to": ["a@example.test, b@example.test"], "reply_to": "not an address",
                "subject": "S", "provider": "Ops SMTP", "from": "ops@example.com", "text": "x"
            }),
        )
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_of(&problem), vec!["to[0]", "reply_to"]);
    Ok(())
}
both!(addresses_with_display_names_and_a_reply_to_travel_into_the_headers);
