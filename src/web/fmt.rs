//! Formatting helpers for templates.

use chrono::NaiveDateTime;

/// A past time relative to now, in words: "just now", "3 min ago", "2 h ago", "5 days ago",
/// or the date when older than a month.
pub fn ago(at: &NaiveDateTime) -> String {
    let seconds = (crate::db::now() - *at).num_seconds();
    match seconds {
        s if s < 45 => "just now".into(),
        s if s < 3_600 => format!("{} min ago", (s + 30) / 60),
        s if s < 86_400 => format!("{} h ago", s / 3_600),
        s if s < 30 * 86_400 => match s / 86_400 {
            1 => "yesterday".into(),
            d => format!("{d} days ago"),
        },
        _ => at.format("%Y-%m-%d").to_string(),
    }
}

/// A count with thousands separated by commas: 1,234,567.
pub fn count(n: impl std::borrow::Borrow<i64>) -> String {
    let n = *n.borrow();
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
