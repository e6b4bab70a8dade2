//! The background re-check: every domain's records are looked up again once a day, and a
//! domain found failing is looked at again an hour later (a definite failure seen twice
//! an hour apart ends its authentication; timeouts and SERVFAIL change nothing).

use std::time::Duration;

use chrono::TimeDelta;

use super::{handlers, queries, service};
use crate::error::AppError;
use crate::state::AppState;

/// How often the loop looks for due domains.
pub const EVERY: Duration = Duration::from_secs(300);

/// Domains checked per round at most (the rest wait for the next).
const PER_ROUND: i64 = 100;

/// Checks the domains that are due; returns how many were checked.
pub async fn due(state: &AppState) -> Result<usize, AppError> {
    let now = crate::db::now();
    let (daily, again) = (now - TimeDelta::days(1), now - service::GRACE);
    let due = state
        .db
        .run(move |conn| Ok(queries::due_for_check(conn, daily, again, PER_ROUND)?))
        .await?;
    let mut checked = 0;
    for (workspace, id) in due {
        let found = state
            .db
            .run(move |conn| {
                Ok((
                    crate::workspaces::queries::find_by_id(conn, workspace)?,
                    queries::find(conn, workspace, id)?,
                ))
            })
            .await?;
        let (Some(workspace), Some(domain)) = found else {
            continue; // deleted meanwhile
        };
        // One domain that cannot be recorded (deleted or rotated meanwhile) does not stop
        // the others.
        match handlers::check_and_record(state, &workspace, None, &domain).await {
            Ok((change, _)) if change != service::Change::None => {
                tracing::info!(domain = %domain.name, ?change, "a domain's state changed at its re-check");
            }
            Ok(_) => {}
            Err(e) => {
                state
                    .db
                    .warn_unless_fault(&e, "a domain's re-check could not be recorded");
            }
        }
        checked += 1;
    }
    Ok(checked)
}

/// Runs [`due`] every [`EVERY`], for as long as the server runs.
pub async fn run(state: actix_web::web::Data<AppState>) {
    let mut every = actix_web::rt::time::interval(EVERY);
    loop {
        every.tick().await;
        if let Err(e) = due(&state).await {
            state.db.warn_unless_fault(&e, "re-checking domains failed");
        }
    }
}
