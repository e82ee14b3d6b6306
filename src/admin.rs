//! The admin port: `/metrics` (Prometheus text format), `/healthz` (liveness) and
//! `/readyz` (readiness), over plain HTTP/1.1. Knows nothing of Beats or outputs beyond
//! the [`Status`] they report into.
//!
//! Liveness and readiness answer different questions, as Kubernetes uses them:
//! `/healthz` fails only when restarting the process would help (one of its tasks has
//! stopped although no shutdown was asked for); `/readyz` fails whenever new clients
//! should go elsewhere (not listening yet, the output unreachable, shutting down).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The admin port's settings (`[admin]`), typed and checked by `config`.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// `None` when `listen = ""`: no admin port.
    pub listen: Option<SocketAddr>,
    /// Scrapers and probes served at once.
    pub max_connections: usize,
    /// A connection without complete request headers this long is closed.
    pub header_timeout: Duration,
}

/// What the health endpoints report: set by the parts of lumberd as they start and stop.
pub struct Status {
    listening: AtomicBool,
    output_up: prometheus::IntGauge,
    shutdown: CancellationToken,
    tasks: Mutex<Vec<(&'static str, Arc<AtomicBool>)>>,
    ready_gauge: prometheus::IntGauge,
}

/// Held by a long-running task; dropping it (the task ended or panicked) marks the task
/// stopped.
pub struct TaskGuard(Arc<AtomicBool>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Status {
    pub fn new(metrics: &Metrics, shutdown: CancellationToken) -> Arc<Status> {
        Arc::new(Status {
            listening: AtomicBool::new(false),
            output_up: metrics.output.up.clone(),
            shutdown,
            tasks: Mutex::new(Vec::new()),
            ready_gauge: metrics.ready.clone(),
        })
    }

    /// The Beats port is bound and accepting.
    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
    }

    /// Registers a task that must run for as long as lumberd does.
    pub fn task(&self, name: &'static str) -> TaskGuard {
        let alive = Arc::new(AtomicBool::new(true));
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push((name, alive.clone()));
        }
        TaskGuard(alive)
    }

    /// `Err` names the tasks that stopped while no shutdown was asked for.
    pub fn live(&self) -> Result<(), String> {
        if self.shutdown.is_cancelled() {
            // Draining: tasks end on purpose, and a liveness failure now would only
            // have the kubelet kill the drain.
            return Ok(());
        }
        let tasks = self.tasks.lock().map_err(|_| "status lock poisoned")?;
        let stopped: Vec<&str> = tasks
            .iter()
            .filter(|(_, alive)| !alive.load(Ordering::Acquire))
            .map(|(name, _)| *name)
            .collect();
        if stopped.is_empty() {
            Ok(())
        } else {
            Err(format!("stopped: {}", stopped.join(", ")))
        }
    }

    /// `Err` says why new clients should go elsewhere.
    pub fn ready(&self) -> Result<(), String> {
        let mut why = Vec::new();
        if self.shutdown.is_cancelled() {
            why.push("shutting down".to_string());
        } else if !self.listening.load(Ordering::Acquire) {
            why.push("not listening yet".to_string());
        }
        if self.output_up.get() != 1 {
            why.push("output unreachable".to_string());
        }
        if let Err(e) = self.live() {
            why.push(e);
        }
        let ready = why.is_empty();
        self.ready_gauge.set(i64::from(ready));
        if ready {
            Ok(())
        } else {
            Err(why.join("; "))
        }
    }
}

/// The bound admin port.
pub struct Admin {
    listener: TcpListener,
}

impl Admin {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Admin> {
        Ok(Admin {
            listener: TcpListener::bind(addr).await?,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` is cancelled (after the drain: readiness and metrics stay
    /// visible while lumberd shuts down). At most `admin.max_connections` at once; others
    /// wait in the kernel's backlog.
    pub async fn run(
        self,
        metrics: Arc<Metrics>,
        status: Arc<Status>,
        settings: AdminSettings,
        stop: CancellationToken,
    ) {
        let slots = Arc::new(Semaphore::new(settings.max_connections));
        let header_timeout = settings.header_timeout;
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, _) = tokio::select! {
                a = self.listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin port: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.cancelled() => return,
            };
            let metrics = metrics.clone();
            let status = status.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let r = respond(&req, &metrics, &status);
                    async move { Ok::<_, Infallible>(r) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    // A scraper's broken connection is its own business: not logged.
                    _ = conn.as_mut() => {}
                    _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
                }
                drop(permit);
            });
        }
    }
}

fn respond(req: &Request<Incoming>, metrics: &Metrics, status: &Status) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => match status.live() {
            Ok(()) => text(StatusCode::OK, "ok\n".into()),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        },
        "/readyz" => match status.ready() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
        },
        "/" => text(
            StatusCode::OK,
            "lumberd admin: /metrics /healthz /readyz\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn text(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_listening_an_up_output_and_no_shutdown() {
        let metrics = Metrics::new().unwrap();
        let shutdown = CancellationToken::new();
        let s = Status::new(&metrics, shutdown.clone());
        assert_eq!(
            s.ready(),
            Err("not listening yet; output unreachable".into())
        );
        s.set_listening(true);
        metrics.output.up.set(1);
        assert_eq!(s.ready(), Ok(()));
        assert_eq!(metrics.ready.get(), 1);
        metrics.output.up.set(0);
        assert_eq!(s.ready(), Err("output unreachable".into()));
        metrics.output.up.set(1);
        shutdown.cancel();
        assert_eq!(s.ready(), Err("shutting down".into()));
        assert_eq!(metrics.ready.get(), 0);
    }

    #[test]
    fn a_stopped_task_fails_liveness_and_readiness_but_not_during_shutdown() {
        let metrics = Metrics::new().unwrap();
        let shutdown = CancellationToken::new();
        let s = Status::new(&metrics, shutdown.clone());
        s.set_listening(true);
        metrics.output.up.set(1);
        let accept = s.task("accept loop");
        let output = s.task("output");
        assert_eq!(s.live(), Ok(()));
        drop(output);
        assert_eq!(s.live(), Err("stopped: output".into()));
        assert!(s.ready().unwrap_err().contains("stopped: output"));
        shutdown.cancel();
        drop(accept);
        assert_eq!(s.live(), Ok(()), "a drain must not fail liveness");
    }
}
