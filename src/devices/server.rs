//! Serve mode: every device answers `GET /device/{id}` with its cumulative counters.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use tokio::sync::watch;

use super::log::LogSender;
use super::{Answer, DeviceName, DeviceState, DevicesError, Fleet};

/// Size of the body a `huge` device answers with.
const HUGE_BYTES: usize = 10 << 20;

/// How the server behaves beyond the fleet itself.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// How long slow devices take to answer (default 3 s).
    pub slow_delay: Duration,
}

/// Counts of one serving run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServeSummary {
    /// Readings answered with status 200 and a valid body.
    pub readings: u64,
}

struct Shared {
    fleet: Fleet,
    states: Vec<Mutex<DeviceState>>,
    started: Instant,
    slow_delay: Duration,
    log: Option<LogSender>,
    shutdown: watch::Receiver<bool>,
    huge: Bytes,
    served: std::sync::atomic::AtomicU64,
}

/// A bound, not yet running server.
pub struct Server {
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds the listen address. Readings served are sent to `log` when given.
    pub async fn bind(
        fleet: Fleet,
        config: &ServeConfig,
        log: Option<LogSender>,
    ) -> Result<Server, DevicesError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| DevicesError::Bind {
                addr: config.listen.to_string(),
                source,
            })?;
        let (stop, shutdown) = watch::channel(false);
        let states = (0..fleet.devices())
            .map(|d| Mutex::new(fleet.initial_state(d)))
            .collect();
        let huge = if fleet.profiles.iter().any(|p| p.answer == Answer::Huge) {
            huge_body()
        } else {
            Bytes::new()
        };
        let shared = Arc::new(Shared {
            fleet,
            states,
            started: Instant::now(),
            slow_delay: config.slow_delay,
            log,
            shutdown,
            huge,
            served: Default::default(),
        });
        Ok(Server {
            listener,
            shared,
            stop,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, DevicesError> {
        self.listener.local_addr().map_err(DevicesError::Serve)
    }

    /// Serves until `shutdown` completes, then stops accepting, lets requests in flight
    /// finish (a dead device's request is ended with 503) and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<ServeSummary, DevicesError> {
        let shared = Arc::clone(&self.shared);
        let app = Router::new()
            .route("/device/{id}", get(device))
            .route("/healthz", get(|| async { "ok" }))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "no such path") })
            .with_state(Arc::clone(&shared));
        let stop = self.stop;
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = stop.send(true);
            })
            .await
            .map_err(DevicesError::Serve)?;
        Ok(ServeSummary {
            readings: shared.served.load(std::sync::atomic::Ordering::Relaxed),
        })
    }
}

fn huge_body() -> Bytes {
    let mut body = Vec::with_capacity(HUGE_BYTES + 64);
    body.extend_from_slice(b"{\"padding\":\"");
    body.resize(HUGE_BYTES, b'x');
    body.extend_from_slice(b"\"}");
    Bytes::from(body)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

fn json(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn device(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let Some((device, profile)) = id
        .parse::<u64>()
        .ok()
        .and_then(|d| shared.fleet.profile(d).map(|p| (d, *p)))
    else {
        let message = format!(
            "no device {id:?}: devices are 0..{}",
            shared.fleet.devices() - 1
        );
        return error(StatusCode::NOT_FOUND, &message);
    };
    if profile.slow {
        tokio::time::sleep(shared.slow_delay).await;
    }
    match profile.answer {
        Answer::Reading => {
            let body = reading(&shared, device);
            if let Some(log) = &shared.log {
                log.reading(body.clone());
            }
            shared
                .served
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            json(body)
        }
        Answer::Dead => {
            let mut shutdown = shared.shutdown.clone();
            let _ = shutdown.wait_for(|stop| *stop).await;
            error(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
        }
        Answer::Status500 => error(StatusCode::INTERNAL_SERVER_ERROR, "device failure"),
        Answer::Html => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            format!(
                "<html><head><title>Router login</title></head>\
                 <body><h1>{}</h1><form><input name=\"password\"></form></body></html>",
                DeviceName(device)
            ),
        )
            .into_response(),
        Answer::Huge => json(shared.huge.clone()),
        Answer::Broken => json(Bytes::from(format!(
            "{{\"device_id\":\"{}\",\"ts\":17672256",
            DeviceName(device)
        ))),
    }
}

/// Advances the device and renders its reading. The device's lock is held only while
/// its counters move, never across an await.
fn reading(shared: &Shared, device: u64) -> Bytes {
    let now_us = u64::try_from(shared.started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let wall = wall_ms();
    let reading = usize::try_from(device)
        .ok()
        .and_then(|d| shared.states.get(d))
        .and_then(|state| {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            shared.fleet.poll(device, &mut state, now_us, wall)
        });
    let mut body = Vec::with_capacity(160);
    if let Some(r) = reading {
        shared.fleet.write_json(&r, &mut body);
    }
    Bytes::from(body)
}
