//! actix-session's `SessionStore` over our own `sessions` table, so that sign-out, a
//! password change and disabling an account revoke sessions: a copied cookie replayed
//! afterwards finds no row and is an anonymous visitor.

use std::collections::HashMap;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration;

use super::model::{NewSession, UserId};
use super::queries;
use super::service::{hash_token, new_token};
use crate::db::{self, Db};

/// Session state key holding the signed-in user's id.
pub const USER_KEY: &str = "uid";
/// Session state key holding the session's public id.
pub const PUBLIC_ID_KEY: &str = "sid";
/// Session state key holding when the user signed in (checked against the account's
/// `sessions_revoked_at`).
pub const SIGNED_IN_AT_KEY: &str = "at";

type State = HashMap<String, String>;

/// Stores sessions in the database; the cookie carries a random key, the table its hash.
#[derive(Clone)]
pub struct DbSessionStore {
    db: Db,
}

impl DbSessionStore {
    /// A store over this database.
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

fn user_of(state: &State) -> Option<UserId> {
    state
        .get(USER_KEY)
        .and_then(|v| serde_json::from_str::<i64>(v).ok())
        .map(UserId)
}

fn public_id_of(state: &State) -> Option<String> {
    state
        .get(PUBLIC_ID_KEY)
        .and_then(|v| serde_json::from_str(v).ok())
}

fn expiry(ttl: &Duration) -> chrono::NaiveDateTime {
    db::now() + chrono::Duration::seconds(ttl.whole_seconds())
}

/// A new random public id for a session.
pub fn new_public_id() -> String {
    let bytes: [u8; 12] = rand::random();
    hex::encode(bytes)
}

fn insert(
    db: &Db,
    state: State,
    ttl: &Duration,
) -> impl Future<Output = anyhow::Result<SessionKey>> {
    let db = db.clone();
    let expires_at = expiry(ttl);
    async move {
        let key = new_token();
        let row = NewSession {
            public_id: public_id_of(&state).unwrap_or_else(new_public_id),
            key_hash: hash_token(&key),
            user_id: user_of(&state),
            state: serde_json::to_string(&state)?,
            created_at: db::now(),
            expires_at,
        };
        db.run(move |conn| Ok(queries::insert_session(conn, &row)?))
            .await?;
        SessionKey::try_from(key).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

impl SessionStore for DbSessionStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<State>, LoadError> {
        let key_hash = hash_token(session_key.as_ref());
        let row = self
            .db
            .run(move |conn| {
                Ok(queries::find_session_by_key_hash(
                    conn,
                    &key_hash,
                    db::now(),
                )?)
            })
            .await
            .map_err(|e| LoadError::Other(anyhow::anyhow!("{e}")))?;
        match row {
            None => Ok(None),
            Some(row) => serde_json::from_str(&row.state)
                .map(Some)
                .map_err(|e| LoadError::Deserialization(e.into())),
        }
    }

    async fn save(&self, session_state: State, ttl: &Duration) -> Result<SessionKey, SaveError> {
        insert(&self.db, session_state, ttl)
            .await
            .map_err(SaveError::Other)
    }

    async fn update(
        &self,
        session_key: SessionKey,
        mut session_state: State,
        ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        let key_hash = hash_token(session_key.as_ref());
        let user = user_of(&session_state);
        let json = serde_json::to_string(&session_state)
            .map_err(|e| UpdateError::Serialization(e.into()))?;
        let expires_at = expiry(ttl);
        let changed = self
            .db
            .run(move |conn| {
                Ok(queries::update_session(
                    conn, &key_hash, user, &json, expires_at,
                )?)
            })
            .await
            .map_err(|e| UpdateError::Other(anyhow::anyhow!("{e}")))?;
        if changed == 1 {
            return Ok(session_key);
        }
        // The session was revoked while this request ran: never bring it back signed in.
        session_state.remove(USER_KEY);
        session_state.remove(PUBLIC_ID_KEY);
        session_state.remove(SIGNED_IN_AT_KEY);
        insert(&self.db, session_state, ttl)
            .await
            .map_err(UpdateError::Other)
    }

    async fn update_ttl(&self, session_key: &SessionKey, ttl: &Duration) -> anyhow::Result<()> {
        let key_hash = hash_token(session_key.as_ref());
        let expires_at = expiry(ttl);
        self.db
            .run(move |conn| Ok(queries::update_session_expiry(conn, &key_hash, expires_at)?))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    async fn delete(&self, session_key: &SessionKey) -> anyhow::Result<()> {
        let key_hash = hash_token(session_key.as_ref());
        self.db
            .run(move |conn| Ok(queries::delete_session_by_key_hash(conn, &key_hash)?))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}
