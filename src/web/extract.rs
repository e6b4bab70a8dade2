//! Extractors: the signed-in user, and the workspace of a `/w/{slug}/…` URL with the user's
//! role in it. A workspace the user is not a member of answers 404, never 403, so its
//! existence does not leak.

use actix_session::SessionExt;
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

use super::AppState;
use crate::accounts::model::User;
use crate::accounts::queries as accounts;
use crate::accounts::session_store::{PUBLIC_ID_KEY, SIGNED_IN_AT_KEY, USER_KEY};
use crate::error::AppError;
use crate::workspaces::model::{Role, Workspace};
use crate::workspaces::queries as workspaces;
use crate::workspaces::service::Actor;

/// The signed-in user and the public id of their session.
pub struct CurrentUser {
    /// The account (never disabled).
    pub user: User,
    /// The session's public id (recorded on what the user does; never the cookie value).
    pub session_id: String,
    /// Client address.
    pub ip: String,
}

impl CurrentUser {
    /// The user as the actor of a change.
    pub fn actor(&self) -> Actor<'_> {
        Actor {
            user: &self.user,
            ip: &self.ip,
        }
    }
}

/// The client's address: the TCP peer, or, behind a trusted reverse proxy
/// (`trust_forwarded_for`, with the peer one of `trusted_proxies`), the rightmost
/// `X-Forwarded-For` address that is not a trusted proxy, as nginx's realip module does
/// with `real_ip_recursive on`. Everything left of that is whatever the client wrote, so
/// the leftmost value is never believed. Sign-in throttling and the audit log key on it.
pub fn client_ip(req: &HttpRequest) -> String {
    let peer = req.peer_addr().map(|a| a.ip());
    let proxies = req
        .app_data::<web::Data<AppState>>()
        .filter(|s| s.settings.trust_forwarded_for)
        .map(|s| s.trusted_proxies.as_slice());
    // Every header line, byte for byte: a line that is not text (a client's junk left of
    // the proxy's entry) must not hide the entry the proxy appended to it.
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(",");
    let client = match (peer, proxies) {
        (Some(peer), Some(proxies)) => forwarded_client(peer, &forwarded, proxies),
        (peer, _) => peer.map(|ip| ip.to_canonical()),
    };
    client.map_or_else(|| "unknown".into(), |ip| ip.to_string())
}

/// The client behind a chain of proxies: walking `X-Forwarded-For` from the right (the
/// entry the nearest proxy appended) past every trusted proxy. An entry that is not an
/// address ends the walk at the last trusted hop: it cannot be a key to throttle by.
fn forwarded_client(
    peer: std::net::IpAddr,
    forwarded: &str,
    proxies: &[ipnet::IpNet],
) -> Option<std::net::IpAddr> {
    let trusted = |ip: &std::net::IpAddr| proxies.iter().any(|net| net.contains(ip));
    // A server listening on `[::]` sees an IPv4 peer as `::ffff:a.b.c.d`.
    let mut client = peer.to_canonical();
    if !trusted(&client) {
        return Some(client);
    }
    for entry in forwarded
        .rsplit(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let Some(hop) = parse_hop(entry) else {
            break;
        };
        client = hop;
        if !trusted(&client) {
            break;
        }
    }
    Some(client)
}

/// An `X-Forwarded-For` entry: an address, possibly bracketed or with a port
/// (`203.0.113.7:5123`, `[2001:db8::1]`, `[2001:db8::1]:443`), IPv4-mapped IPv6 as IPv4.
fn parse_hop(entry: &str) -> Option<std::net::IpAddr> {
    entry
        .parse::<std::net::IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })
        .map(|ip: std::net::IpAddr| ip.to_canonical())
}

async fn current_user(req: HttpRequest) -> Result<CurrentUser, AppError> {
    let session = req.get_session();
    let user_id = session.get::<i64>(USER_KEY).ok().flatten();
    let session_id = session.get::<String>(PUBLIC_ID_KEY).ok().flatten();
    let signed_in_at = session
        .get::<chrono::NaiveDateTime>(SIGNED_IN_AT_KEY)
        .ok()
        .flatten();
    let (Some(user_id), Some(session_id), Some(signed_in_at)) = (user_id, session_id, signed_in_at)
    else {
        return Err(AppError::Unauthenticated);
    };
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("application state missing")))?;
    let user = state
        .db
        .run(move |conn| {
            Ok(accounts::find_user_by_id(
                conn,
                crate::accounts::model::UserId(user_id),
            )?)
        })
        .await?;
    match user {
        Some(user) if !user.is_disabled() && user.accepts_session_from(signed_in_at) => {
            Ok(CurrentUser {
                user,
                session_id,
                ip: client_ip(&req),
            })
        }
        _ => {
            session.purge();
            Err(AppError::Unauthenticated)
        }
    }
}

impl FromRequest for CurrentUser {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(current_user(req.clone()))
    }
}

/// A workspace page's context: who, where, with which role.
pub struct WorkspaceCtx {
    /// The signed-in user.
    pub user: User,
    /// The session's public id.
    pub session_id: String,
    /// Client address.
    pub ip: String,
    /// The workspace of the URL.
    pub workspace: Workspace,
    /// The user's role in it.
    pub role: Role,
    /// All of the user's workspaces with their roles, for the switcher.
    pub workspaces: Vec<(Workspace, Role)>,
}

impl WorkspaceCtx {
    /// 403 unless the user administers the workspace.
    pub fn require_admin(&self) -> Result<(), AppError> {
        if self.role.is_admin() {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }

    /// The user as the actor of a change.
    pub fn actor(&self) -> Actor<'_> {
        Actor {
            user: &self.user,
            ip: &self.ip,
        }
    }

    /// Runs a write transaction as this user in this workspace: `f` gets the workspace and
    /// the actor (for the audit log) without the caller cloning them into the closure.
    pub async fn write_as<T, F>(&self, db: &crate::db::Db, f: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut crate::db::DbConn, &Workspace, &Actor<'_>) -> Result<T, AppError>
            + Send
            + 'static,
        T: Send + 'static,
    {
        let (workspace, user, ip) = (self.workspace.clone(), self.user.clone(), self.ip.clone());
        db.write(move |conn| {
            f(
                conn,
                &workspace,
                &Actor {
                    user: &user,
                    ip: &ip,
                },
            )
        })
        .await
    }

    /// 403 unless the user may compose and send (editors and admins).
    pub fn require_composer(&self) -> Result<(), AppError> {
        if self.role.can_compose() {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }

    /// A path inside the workspace: `path("/members")` → `/w/{slug}/members`.
    pub fn path(&self, rest: &str) -> String {
        format!("/w/{}{rest}", self.workspace.slug)
    }
}

impl FromRequest for WorkspaceCtx {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let slug = req
                .match_info()
                .get("slug")
                .ok_or(AppError::NotFound)?
                .to_owned();
            let current = current_user(req.clone()).await?;
            let state = req.app_data::<web::Data<AppState>>().ok_or_else(|| {
                AppError::Unexpected(anyhow::anyhow!("application state missing"))
            })?;
            let user_id = current.user.id;
            let all = state
                .db
                .run(move |conn| Ok(workspaces::list_for_user(conn, user_id)?))
                .await?;
            let all: Vec<(Workspace, Role)> = all.into_iter().map(|(w, m)| (w, m.role())).collect();
            let (workspace, role) = all
                .iter()
                .find(|(w, _)| w.slug == slug)
                .cloned()
                .ok_or(AppError::NotFound)?;
            Ok(WorkspaceCtx {
                user: current.user,
                session_id: current.session_id,
                ip: current.ip,
                workspace,
                role,
                workspaces: all,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::forwarded_client;

    #[test]
    fn the_client_is_the_rightmost_address_that_is_not_a_trusted_proxy() {
        let proxies: Vec<ipnet::IpNet> = vec![
            "127.0.0.0/8".parse().expect("net"),
            "10.0.0.0/8".parse().expect("net"),
        ];
        let at = |peer: &str, header: &str| {
            forwarded_client(peer.parse().expect("ip"), header, &proxies)
                .map(|ip| ip.to_string())
                .unwrap_or_default()
        };
        // The client wrote the leftmost entries; the proxy appended the real address.
        assert_eq!(at("127.0.0.1", "6.6.6.6, 203.0.113.7"), "203.0.113.7");
        assert_eq!(
            at("127.0.0.1", "6.6.6.6, 203.0.113.7, 10.1.1.1"),
            "203.0.113.7"
        );
        assert_eq!(at("127.0.0.1", "203.0.113.7:5123"), "203.0.113.7");
        assert_eq!(at("127.0.0.1", "[2001:db8::1]:443"), "2001:db8::1");
        // A peer that is not a trusted proxy is the client, whatever it says.
        assert_eq!(at("198.51.100.1", "203.0.113.7"), "198.51.100.1");
        // Nothing forwarded, or all of it trusted: the last hop known.
        assert_eq!(at("127.0.0.1", ""), "127.0.0.1");
        assert_eq!(at("127.0.0.1", "10.2.2.2"), "10.2.2.2");
        // Garbage stops at the last trusted hop.
        assert_eq!(at("127.0.0.1", "203.0.113.7, not-an-ip"), "127.0.0.1");
        // A proxy seen through an IPv6 socket, brackets without a port, mapped entries.
        assert_eq!(at("::ffff:10.0.0.5", "6.6.6.6, 203.0.113.7"), "203.0.113.7");
        assert_eq!(at("127.0.0.1", "[2001:db8::1]"), "2001:db8::1");
        assert_eq!(at("127.0.0.1", "::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(at("127.0.0.1", "6.6.6.6, ::ffff:10.1.1.1"), "6.6.6.6");
        // A peer that is not a proxy, seen mapped, is the client as IPv4.
        assert_eq!(at("::ffff:198.51.100.1", "203.0.113.7"), "198.51.100.1");
    }
}
