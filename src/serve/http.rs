//! The node's HTTP listener (axum): the control API, metrics, health, the status page
//! and push ingest.
//!
//! Every route but `/healthz`, `/readyz`, the page and the OpenAPI document takes a
//! bearer token once tokens are set: read routes a read (or admin) token, control
//! routes an admin token, `POST /ingest/<table>` an ingest (or admin) token. An unknown
//! token is a `401`, a known one without the scope a `403`. Every route has a request
//! timeout and a body limit; pushes are also rate-limited per client address.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::config::{Access, Scope, Tokens};
use super::ingest::Ingests;
use super::metrics::Exporter;
use super::queries::{ControlError, Queries};
use crate::engine::control::EndOfInput;
use crate::source::http_push::PushRefusal;
use crate::sync::Syncer;

/// Seconds a client is told to wait after a 503 or 429.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// Limits of the HTTP routes.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Longest a request may take, body included (`408` after).
    pub request_timeout: Duration,
    /// Largest body of an API request (push tables have their own `max_body`).
    pub max_api_body: usize,
    /// Push requests per second per client address (`429` past it); `None`: no limit.
    pub ingest_per_client: Option<NonZeroU32>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            request_timeout: Duration::from_secs(30),
            max_api_body: 1 << 20,
            ingest_per_client: NonZeroU32::new(200),
        }
    }
}

type ClientLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The node's queries.
    pub queries: Arc<Queries>,
    /// The node's ingests.
    pub ingests: Arc<Ingests>,
    /// Bearer tokens.
    pub tokens: Tokens,
    /// Set once the queries have started, cleared while the node stops.
    pub ready: Arc<AtomicBool>,
    /// The sync, if the node syncs.
    pub syncer: Option<Arc<Syncer>>,
    /// The Prometheus exporter.
    pub metrics: Exporter,
    /// Route limits.
    pub limits: HttpLimits,
}

#[derive(Clone)]
struct Shared {
    app: AppState,
    limiter: Option<Arc<ClientLimiter>>,
    /// Pushes checked by the limiter, to prune it now and then.
    limited: Arc<std::sync::atomic::AtomicU64>,
}

/// The limiter forgets clients idle for long every this many pushes, so one entry per
/// client address ever seen does not pile up.
const PRUNE_EVERY: u64 = 4096;

/// The routes.
pub fn router(state: AppState) -> Router {
    let limits = state.limits.clone();
    let limiter = limits.ingest_per_client.map(|per_second| {
        Arc::new(governor::RateLimiter::keyed(
            governor::Quota::per_second(per_second).allow_burst(
                per_second.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN)),
            ),
        ))
    });
    let shared = Shared {
        app: state,
        limiter,
        limited: Arc::default(),
    };
    // Each push table reads the body up to its own `max_body`.
    let ingest = Router::new()
        .route("/ingest/{table}", post(ingest))
        .layer(DefaultBodyLimit::disable());
    let api = Router::new()
        .route("/", get(super::page::index))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(super::openapi::document))
        .route("/api/v1/ingest", get(ingest_status))
        .route("/api/v1/node", get(node_status))
        .route("/api/v1/queries", get(list).post(add))
        .route("/api/v1/queries/{name}", get(detail).delete(remove))
        .layer(DefaultBodyLimit::max(limits.max_api_body));
    // Start and stop take no body and answer once the query runs or its windows are
    // written, which may take longer than any request timeout: a timeout would answer
    // 408 for a stop that goes on.
    let lifecycle = Router::new()
        .route("/api/v1/queries/{name}/start", post(start))
        .route("/api/v1/queries/{name}/stop", post(stop));
    ingest
        .merge(api)
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such route; see /api/v1/openapi.json",
            )
        })
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .merge(lifecycle)
        .with_state(shared)
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

/// `None` if the request's token grants `scope`, else the `401` or `403` to answer.
fn denied(tokens: &Tokens, headers: &HeaderMap, scope: Scope) -> Option<Response> {
    match tokens.check(bearer(headers), scope) {
        Access::Granted => None,
        Access::Unknown => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token: send Authorization: Bearer <token>",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"edgeflow\""),
            );
            Some(response)
        }
        Access::Forbidden => Some(error(
            StatusCode::FORBIDDEN,
            match scope {
                Scope::Admin => "this route needs an admin token",
                Scope::Read => "this route needs a read or admin token",
                Scope::Ingest => "this route needs an ingest or admin token",
            },
        )),
    }
}

fn control_error(e: ControlError) -> Response {
    match e {
        ControlError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        ControlError::Conflict(_) => error(StatusCode::CONFLICT, e.to_string()),
        ControlError::Invalid {
            message,
            line,
            column,
        } => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": message, "line": line, "column": column })),
        )
            .into_response(),
        ControlError::Failed(_) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        ControlError::Stopping => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Runs a control call off the async threads (stopping a query waits for its windows
/// to be written).
async fn blocking<T: serde::Serialize + Send + 'static>(
    status: StatusCode,
    call: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(call).await {
        Ok(Ok(value)) => (status, axum::Json(value)).into_response(),
        Ok(Err(e)) => control_error(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Why the node is not ready, if it is not.
fn not_ready(state: &AppState) -> Option<String> {
    if !state.ready.load(Ordering::Relaxed) {
        return Some("starting or stopping".into());
    }
    let disconnected = state.ingests.disconnected();
    if !disconnected.is_empty() {
        return Some(format!(
            "sources not connected: {}",
            disconnected.join(", ")
        ));
    }
    if let Some(syncer) = &state.syncer
        && let Some(why) = syncer.halted()
    {
        return Some(format!("sync halted: {why}"));
    }
    None
}

async fn ready(State(shared): State<Shared>) -> Response {
    match not_ready(&shared.app) {
        None => (StatusCode::OK, "ready").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn metrics(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&shared.app.tokens, &headers, Scope::Read) {
        return denied;
    }
    let app = shared.app.clone();
    match tokio::task::spawn_blocking(move || {
        app.metrics
            .render(&app.queries, &app.ingests, app.syncer.as_deref())
    })
    .await
    {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Readings received per table since the node started.
async fn ingest_status(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&shared.app.tokens, &headers, Scope::Read) {
        return denied;
    }
    axum::Json(json!({ "tables": shared.app.ingests.status() })).into_response()
}

/// The node at a glance: readiness, tables, sync.
async fn node_status(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&shared.app.tokens, &headers, Scope::Read) {
        return denied;
    }
    let app = &shared.app;
    let sync = app.syncer.as_ref().map(|s| s.report());
    axum::Json(json!({
        "ready": not_ready(app).is_none(),
        "not_ready": not_ready(app),
        "tables": app.ingests.status(),
        "sync": sync,
        "cluster": app.queries.cluster().map(|(process, processes)| json!({
            "process": process,
            "processes": processes,
            "leads": process == 0,
        })),
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

async fn list(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&shared.app.tokens, &headers, Scope::Read) {
        return denied;
    }
    axum::Json(json!({ "queries": shared.app.queries.list() })).into_response()
}

async fn detail(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = denied(&shared.app.tokens, &headers, Scope::Read) {
        return denied;
    }
    let queries = shared.app.queries.clone();
    blocking(StatusCode::OK, move || queries.detail(&name)).await
}

/// `POST /api/v1/queries`: `{"name": ..., "sql": ..., "start": true}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewQuery {
    name: String,
    sql: String,
    #[serde(default = "yes")]
    start: bool,
}

fn yes() -> bool {
    true
}

async fn add(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(denied) = denied(&shared.app.tokens, &headers, Scope::Admin) {
        return denied;
    }
    let request: NewQuery = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected a JSON object {{\"name\": \"...\", \"sql\": \"...\", \"start\": true}}: {e}"
                ),
            );
        }
    };
    let queries = shared.app.queries.clone();
    blocking(StatusCode::CREATED, move || {
        queries.add(&request.name, &request.sql, request.start)
    })
    .await
}

async fn start(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = denied(&shared.app.tokens, &headers, Scope::Admin) {
        return denied;
    }
    let queries = shared.app.queries.clone();
    blocking(StatusCode::OK, move || queries.start(&name)).await
}

#[derive(Deserialize)]
struct StopParams {
    windows: Option<String>,
}

async fn stop(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    Query(params): Query<StopParams>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = denied(&shared.app.tokens, &headers, Scope::Admin) {
        return denied;
    }
    let Some(windows) = params.windows else {
        return error(
            StatusCode::BAD_REQUEST,
            "say what becomes of the open windows: ?windows=close (write them as final), keep (write them and resume them at the next start) or discard",
        );
    };
    let windows: EndOfInput = match windows.parse() {
        Ok(w) => w,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let queries = shared.app.queries.clone();
    blocking(StatusCode::OK, move || queries.stop(&name, windows)).await
}

async fn remove(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = denied(&shared.app.tokens, &headers, Scope::Admin) {
        return denied;
    }
    let queries = shared.app.queries.clone();
    let removed = name.clone();
    blocking(StatusCode::OK, move || {
        queries
            .remove(&name)
            .map(|()| json!({ "removed": removed }))
    })
    .await
}

async fn ingest(
    State(shared): State<Shared>,
    Path(table): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if let Some(denied) = denied(&shared.app.tokens, &headers, Scope::Ingest) {
        return denied;
    }
    if let Some(limiter) = &shared.limiter
        && shared
            .limited
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % PRUNE_EVERY
            == PRUNE_EVERY - 1
    {
        limiter.retain_recent();
    }
    if let Some(limiter) = &shared.limiter
        && limiter.check_key(&peer.ip()).is_err()
    {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many pushes from {}: slow down", peer.ip()),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        return response;
    }
    // Starting (queries not started yet) or stopping: a table that takes pushes once
    // the node runs must not look unknown to a client that retries.
    if !shared.app.ready.load(std::sync::atomic::Ordering::Relaxed) {
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is starting or stopping: retry later",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        return response;
    }
    let Some(target) = shared.app.ingests.push_table(&table) else {
        let known = shared.app.ingests.push_tables();
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no running query reads table `{table}` over http_push here; tables that take pushes now: {}",
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
    let key = text(HeaderName::from_static("idempotency-key"));
    let limit = target.max_body();
    let body = match axum::body::to_bytes(body, limit.saturating_add(1)).await {
        Ok(body) if body.len() <= limit => body,
        Ok(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                PushRefusal::TooLarge { limit }.to_string(),
            );
        }
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body over the table's limit of {limit} bytes, or cut short: {e}"),
            );
        }
    };
    let origin = format!("POST /ingest/{table} from {peer}");
    // Decoding a large batch is CPU work: off the async threads.
    let outcome = tokio::task::spawn_blocking(move || {
        target.ingest_once(
            key.as_deref(),
            content_type.as_deref(),
            encoding.as_deref(),
            &body,
            &origin,
        )
    })
    .await;
    match outcome {
        Ok(Ok((outcome, replayed))) => {
            let mut response = (StatusCode::OK, axum::Json(outcome)).into_response();
            if replayed {
                response.headers_mut().insert(
                    HeaderName::from_static("idempotent-replayed"),
                    HeaderValue::from_static("true"),
                );
            }
            response
        }
        Ok(Err(refusal)) => {
            let status = match refusal {
                PushRefusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                PushRefusal::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                PushRefusal::Busy | PushRefusal::NotLogged(_) => StatusCode::SERVICE_UNAVAILABLE,
                PushRefusal::KeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
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
