//! Device tokens over the API (`/api/v1/tokens`): the same operations as
//! `terrierd token create/list/revoke`, on the same token store. A token's
//! full text is returned once, by `create`; the store keeps only its hash.
//! A revoked token's devices are disconnected within `auth.refresh_interval`.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::reply::{error, json, read_json, store_error};
use super::Admin;
use crate::auth::token::{self, Kind, Scope, TokenRecord};
use crate::ingress::Body;

/// A token as the API lists it (never the secret or its hash).
#[derive(Debug, Serialize)]
pub struct TokenView {
    /// Public id.
    pub id: String,
    /// The one device name it may register, for a device token.
    pub name: Option<String>,
    /// The name prefix it may register, for a fleet token.
    pub prefix: Option<String>,
    /// When it was made, Unix ms.
    pub created_ms: u64,
    /// The operator's note.
    pub note: String,
    /// `device` (registers devices) or `visitor` (visits them).
    pub kind: Kind,
}

impl From<&TokenRecord> for TokenView {
    fn from(t: &TokenRecord) -> Self {
        let (name, prefix) = match &t.scope {
            Scope::Name(n) => (Some(n.clone()), None),
            Scope::Prefix(p) => (None, Some(p.clone())),
        };
        Self { id: t.id.clone(), name, prefix, created_ms: t.created_ms, note: t.note.clone(), kind: t.kind }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: Option<String>,
    prefix: Option<String>,
    #[serde(default)]
    note: String,
    #[serde(default)]
    kind: Kind,
}

/// `GET /api/v1/tokens`, oldest first.
pub async fn list(admin: &Admin) -> Response<Body> {
    match admin.auth.book.store().load().await {
        Ok(mut tokens) => {
            tokens.sort_by_key(|t| t.created_ms);
            let views: Vec<TokenView> = tokens.iter().map(TokenView::from).collect();
            json(StatusCode::OK, &serde_json::json!({ "tokens": views }))
        }
        Err(e) => store_error(e),
    }
}

/// `POST /api/v1/tokens` with `{"name": ...}` or `{"prefix": ...}` and an optional `note`.
pub async fn create(admin: &Admin, req: Request<Incoming>) -> Response<Body> {
    let Ok(body) = read_json::<CreateBody>(req).await else {
        return error(StatusCode::BAD_REQUEST, "expected JSON {\"name\": \"device\"} or {\"prefix\": \"fleet-\"}");
    };
    let scope = match Scope::from_parts(body.name, body.prefix) {
        Ok(scope) => scope,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    if let Err(reason) = token::check_note(&body.note) {
        return error(StatusCode::BAD_REQUEST, &reason);
    }
    let minted = token::mint_kind(scope, body.kind, &body.note, crate::store::now_ms());
    if let Err(e) = admin.auth.book.store().insert(&minted.record).await {
        return store_error(e);
    }
    tracing::info!(token = %minted.record.id, scope = %minted.record.scope, kind = ?minted.record.kind, "token created (admin API)");
    let mut view = serde_json::to_value(TokenView::from(&minted.record)).unwrap_or_default();
    view["token"] = serde_json::Value::String(minted.token);
    json(StatusCode::CREATED, &view)
}

/// `DELETE /api/v1/tokens/{id}`.
pub async fn revoke(admin: &Admin, id: &str) -> Response<Body> {
    match admin.auth.book.store().revoke(id).await {
        Ok(true) => {
            tracing::info!(token = id, "device token revoked (admin API)");
            Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(http_body_util::Either::Right(Default::default()))
                .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "response"))
        }
        Ok(false) => error(StatusCode::NOT_FOUND, "no token with this id"),
        Err(e) => store_error(e),
    }
}
