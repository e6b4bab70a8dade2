//! The rules `/api/v1` enforces that its Rust types cannot state (lengths, ranges, formats,
//! "text or HTML"), written into the OpenAPI document so a client generated from it never
//! sends what the API refuses. Each rule names the check it mirrors; the unit test below
//! fails when a rule points at a field the document no longer has.
//!
//! Rules no schema can state (a provider, owner, answered message or file that must exist
//! in the caller's workspace) are documented answers of the operation: 422 naming the field.

use serde_json::{Value, json};

/// No control character (Rust's `char::is_control`: C0, DEL and C1).
const NO_CONTROL: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// One line with something on it: no control character, not only blanks
/// (`compose::parse_subject`).
const ONE_LINE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// A host: no blank, no control character (`request::validate`, `smtp.server`).
const HOST: &str = "^[^\\s\\u0000-\\u001f\\u007f-\\u009f]+$";

/// Writes every rule into `document` (the one `ApiDoc` generates).
pub fn state(document: &mut Value) {
    for (pointer, rule) in rules() {
        if let Some(target) = document.pointer_mut(&pointer) {
            merge(target, rule);
        } else {
            tracing::error!(pointer, "an OpenAPI rule points at nothing");
        }
    }
}

/// (JSON pointer into the document, what to merge there).
fn rules() -> Vec<(String, Value)> {
    let send = "/components/schemas/SendRequest";
    let address = json!({"type": "string", "format": "email", "maxLength": 254});
    let mut all = vec![
        // request::validate: 1–50 To, at most MAX_COPIES Cc and Bcc, one address each.
        (
            format!("{send}/properties/to"),
            json!({"minItems": 1, "maxItems": 50, "items": address}),
        ),
        (
            format!("{send}/properties/cc"),
            json!({"maxItems": crate::messages::compose::MAX_COPIES, "items": address}),
        ),
        (
            format!("{send}/properties/bcc"),
            json!({"maxItems": crate::messages::compose::MAX_COPIES, "items": address}),
        ),
        (
            format!("{send}/properties/reply_to"),
            json!({"format": "email", "maxLength": 254}),
        ),
        (
            format!("{send}/properties/from"),
            json!({"format": "email", "maxLength": 254}),
        ),
        // compose::parse_subject.
        (
            format!("{send}/properties/subject"),
            json!({"minLength": 1, "maxLength": 900, "pattern": ONE_LINE}),
        ),
        // compose::Bodies::parse: no NUL; text or HTML (below).
        (
            format!("{send}/properties/text"),
            json!({"pattern": "^[^\\u0000]*$"}),
        ),
        (
            format!("{send}/properties/html"),
            json!({"pattern": "^[^\\u0000]*$"}),
        ),
        // compose::retries.
        (
            format!("{send}/properties/retry_count"),
            json!({"minimum": 0, "maximum": 10}),
        ),
        (
            format!("{send}/properties/send_at"),
            json!({"format": "date-time"}),
        ),
        (
            format!("{send}/properties/contact_ids"),
            json!({"maxItems": 1000}),
        ),
        // A provider or `smtp` settings (not both); and a text or an HTML body that is
        // not blank.
        (
            send.to_owned(),
            json!({
                "oneOf": [
                    {"required": ["provider"],
                     "properties": {"provider": {"$ref": "#/components/schemas/ProviderRef"}}},
                    {"required": ["smtp"],
                     "properties": {"smtp": {"$ref": "#/components/schemas/SmtpOverride"}}}
                ],
                "allOf": [{"anyOf": [
                    {"required": ["text"],
                     "properties": {"text": {"type": "string", "pattern": "\\S"}}},
                    {"required": ["html"],
                     "properties": {"html": {"type": "string", "pattern": "\\S"}}}
                ]}]
            }),
        ),
        (
            "/components/schemas/ProviderRef/oneOf/1".into(),
            json!({"minLength": 1, "maxLength": 100, "pattern": ONE_LINE}),
        ),
        (
            "/components/schemas/ContactId/oneOf/1".into(),
            json!({"minLength": 1, "maxLength": 100, "pattern": NO_CONTROL}),
        ),
        (
            "/components/schemas/SmtpOverride/properties/server".into(),
            json!({"minLength": 1, "maxLength": 253, "pattern": HOST}),
        ),
        (
            "/components/schemas/SmtpOverride/properties/port".into(),
            json!({"minimum": 1, "maximum": 65535}),
        ),
        (
            "/components/schemas/SmtpOverride/properties/tls".into(),
            json!({"enum": ["starttls", "tls", "none", null]}),
        ),
        (
            "/components/schemas/SmtpOverride/properties/user".into(),
            json!({"maxLength": 500, "pattern": NO_CONTROL}),
        ),
        (
            "/components/schemas/SmtpOverride/properties/password".into(),
            json!({"maxLength": 500, "pattern": NO_CONTROL}),
        ),
        // files::upload reads the part `file` and nothing else.
        (
            "/paths/~1api~1v1~1files/post/requestBody/content/multipart~1form-data/schema".into(),
            json!({"additionalProperties": false}),
        ),
    ];
    // Query and header parameters are strings on the wire; these say which strings.
    let list = "/paths/~1api~1v1~1messages/get/parameters";
    let send_op = "/paths/~1api~1v1~1messages/post/parameters";
    let statuses: Vec<&str> = crate::messages::model::Status::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    for (index, schema) in [
        (0, json!({"type": "string", "enum": statuses})),
        (1, json!({"type": "string", "format": "date-time"})),
        (
            2,
            json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": i64::MAX}),
        ),
        (3, json!({"type": "integer", "minimum": 1, "maximum": 200})),
    ] {
        all.push((format!("{list}/{index}/schema"), schema));
    }
    all.push((
        format!("{send_op}/0/schema"),
        json!({"type": "integer", "minimum": 0, "maximum": super::super::endpoints::MAX_WAIT}),
    ));
    all.push((
        format!("{send_op}/1/schema"),
        // send::idempotency_key: 1–255 visible ASCII characters.
        json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}),
    ));
    all
}

/// Merges `rule` into `target`: objects key by key (a rule's key replaces the target's),
/// anything else replaced whole.
fn merge(target: &mut Value, rule: Value) {
    match (target, rule) {
        (Value::Object(target), Value::Object(rule)) => {
            for (key, value) in rule {
                target.insert(key, value);
            }
        }
        (target, rule) => *target = rule,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_points_at_a_field_the_document_has() {
        let document = serde_json::to_value(<super::super::ApiDoc as utoipa::OpenApi>::openapi())
            .expect("the document serializes");
        for (pointer, _) in rules() {
            assert!(
                document.pointer(&pointer).is_some(),
                "{pointer} is not in the document"
            );
        }
        // The parameters are found by position: make sure the positions are the names.
        let names = |pointer: &str| -> Vec<String> {
            document
                .pointer(pointer)
                .and_then(Value::as_array)
                .map_or_else(Vec::new, |all| {
                    all.iter()
                        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
                        .collect()
                })
        };
        assert_eq!(
            names("/paths/~1api~1v1~1messages/get/parameters"),
            ["status", "since", "cursor", "limit"]
        );
        assert_eq!(
            names("/paths/~1api~1v1~1messages/post/parameters"),
            ["wait", "Idempotency-Key"]
        );
    }
}
