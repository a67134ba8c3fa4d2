//! The node's HTTP listener (axum): push ingest and health.
//!
//! `POST /ingest/<table>` takes JSON lines or a JSON array (gzip accepted) for a table
//! declared with `connector = 'http_push'`; `GET /healthz` answers while the process
//! lives, `GET /readyz` while it takes readings; `GET /api/v1/ingest` gives the
//! readings each table received.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::config::Tokens;
use crate::source::http_push::{PushRefusal, PushTable};
use crate::source::live::Feed;

/// Seconds a client is told to wait after a 503.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Pushable tables by name.
    pub push: BTreeMap<String, Arc<PushTable>>,
    /// Bearer tokens.
    pub tokens: Tokens,
    /// Cleared while the node stops.
    pub ready: Arc<AtomicBool>,
    /// Every table's feed, for the ingest figures.
    pub feeds: BTreeMap<String, Arc<Feed>>,
    /// Every polled or subscribed table's source figures.
    pub sources: BTreeMap<String, SourceStatus>,
}

/// A source's figures now, as JSON.
pub type SourceStatus = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// The routes.
pub fn router(state: AppState) -> Router {
    // The largest body any table takes; each table checks its own limit.
    let limit = state
        .push
        .values()
        .map(|t| t.max_body())
        .max()
        .unwrap_or(1 << 20);
    Router::new()
        .route("/ingest/{table}", post(ingest))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/api/v1/ingest", get(ingest_status))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping").into_response()
    }
}

/// Readings received per table since the node started.
async fn ingest_status(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.tokens.may_read(bearer(&headers)) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let tables: serde_json::Map<String, serde_json::Value> = state
        .feeds
        .iter()
        .map(|(table, feed)| {
            let source = state.sources.get(table).map(|status| status());
            (
                table.clone(),
                json!({ "received": feed.published(), "source": source }),
            )
        })
        .collect();
    axum::Json(json!({ "tables": tables })).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn ingest(
    State(state): State<AppState>,
    Path(table): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !state.tokens.may_ingest(bearer(&headers)) {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token: send Authorization: Bearer <ingest or admin token>",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"edgeflow\""),
        );
        return response;
    }
    let Some(target) = state.push.get(&table).cloned() else {
        let known: Vec<&str> = state.push.keys().map(String::as_str).collect();
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no table `{table}` takes pushed readings here; tables with connector = 'http_push': {}",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ),
        );
    };
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = text(header::CONTENT_TYPE);
    let encoding = text(header::CONTENT_ENCODING);
    let origin = format!("POST /ingest/{table} from {peer}");
    // Decoding a large batch is CPU work: off the async threads.
    let outcome = tokio::task::spawn_blocking(move || {
        target.ingest(content_type.as_deref(), encoding.as_deref(), &body, &origin)
    })
    .await;
    match outcome {
        Ok(Ok(outcome)) => (StatusCode::OK, axum::Json(outcome)).into_response(),
        Ok(Err(refusal)) => {
            let status = match refusal {
                PushRefusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                PushRefusal::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                PushRefusal::Busy => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            };
            let mut response = error(status, refusal.to_string());
            if status == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            response
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("ingest failed: {e}"),
        ),
    }
}
