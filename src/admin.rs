//! The admin port: `/metrics` (Prometheus text format), `/healthz` (liveness) and
//! `/readyz` (readiness), over plain HTTP/1.1. Knows nothing of Beats or outputs beyond
//! the [`Status`] they report into.
//!
//! Liveness and readiness answer different questions, as Kubernetes uses them:
//! `/healthz` fails only when restarting the process would help (one of its tasks has
//! stopped although no shutdown was asked for); `/readyz` fails whenever new clients
//! should go elsewhere (not listening yet, the output unreachable, shutting down, the
//! spool over its high-water mark). With the spool on, an unreachable Elasticsearch is
//! not a reason: the spool takes the windows meanwhile.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Gauges, Metrics, NotReadyReason};

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
    not_ready: Gauges<NotReadyReason>,
    backlog: OnceLock<(Backlog, Mutex<BacklogState>)>,
    /// Set when the spool runs: says why it should take no new clients (over its
    /// high-water mark), and makes an unreachable output no reason to.
    spool: OnceLock<SpoolCheck>,
}

/// When the output counts as behind, for readiness: the in-flight bytes (read live, not
/// from the scraped gauge) against `server.ready_high_water` of the budget.
pub struct Backlog {
    pub used: Box<dyn Fn() -> u64 + Send + Sync>,
    /// Above this for `grace`: behind.
    pub high: u64,
    /// Behind until back at or under this (hysteresis).
    pub low: u64,
    pub grace: Duration,
}

#[derive(Default)]
struct BacklogState {
    above_since: Option<Instant>,
    behind: bool,
}

/// `Some(reason)` while the spool should take no new clients.
pub type SpoolCheck = Box<dyn Fn() -> Option<String> + Send + Sync>;

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
            not_ready: metrics.not_ready.clone(),
            backlog: OnceLock::new(),
            spool: OnceLock::new(),
        })
    }

    /// The Beats port is bound and accepting.
    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
    }

    /// The spool runs in front of the output: readiness follows its fill, not the
    /// output's reachability.
    pub fn set_spool(&self, check: SpoolCheck) {
        let _ = self.spool.set(check);
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

    /// Readiness also fails while the output is behind ([`Status::behind`]).
    pub fn shed_when_behind(&self, backlog: Backlog) {
        let _ = self.backlog.set((backlog, Mutex::default()));
    }

    /// Not ready while the output is behind: in-flight bytes above the high-water mark
    /// for longer than the grace (a bulk flush that fills the budget for a moment is not
    /// behind); ready again only once they are back at the low-water mark, so that a
    /// replica hovering at the mark does not flap in and out of the Service. Measured
    /// when asked (the kubelet's probes, scrapes): the grace starts at the first probe
    /// that sees the backlog.
    fn behind(&self) -> Option<String> {
        let (b, state) = self.backlog.get()?;
        let used = (b.used)();
        let mut s = state.lock().ok()?;
        if used > b.high {
            let since = *s.above_since.get_or_insert_with(Instant::now);
            s.behind |= since.elapsed() >= b.grace;
        } else {
            s.above_since = None;
            s.behind &= used > b.low;
        }
        s.behind.then(|| {
            format!(
                "output behind ({used} bytes in flight; ready again at {})",
                b.low
            )
        })
    }

    /// `Err` says why new clients should go elsewhere.
    pub fn ready(&self) -> Result<(), String> {
        let mut why = Vec::new();
        if self.shutdown.is_cancelled() {
            why.push((NotReadyReason::ShuttingDown, "shutting down".to_string()));
        } else if !self.listening.load(Ordering::Acquire) {
            why.push((
                NotReadyReason::NotListening,
                "not listening yet".to_string(),
            ));
        }
        // With the spool on, it takes the windows while Elasticsearch is away: only its
        // own fill is a reason (issue 15: an outage is not "behind" until the spool is).
        let output_down = self.spool.get().is_none() && self.output_up.get() != 1;
        if let Some(over_high_water) = self.spool.get() {
            why.extend(over_high_water().map(|w| (NotReadyReason::SpoolHighWater, w)));
        }
        if output_down {
            why.push((NotReadyReason::OutputDown, "output unreachable".to_string()));
        } else if let Some(behind) = self.behind() {
            why.push((NotReadyReason::OutputBehind, behind));
        }
        if let Err(e) = self.live() {
            why.push((NotReadyReason::TaskStopped, e));
        }
        for reason in NotReadyReason::ALL {
            self.not_ready
                .set(reason, why.iter().any(|(r, _)| *r == reason));
        }
        let why: Vec<String> = why.into_iter().map(|(_, w)| w).collect();
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
    fn with_the_spool_readiness_follows_its_high_water_mark_not_the_output() {
        let metrics = Metrics::new().unwrap();
        let s = Status::new(&metrics, CancellationToken::new());
        s.set_listening(true);
        let over = Arc::new(AtomicBool::new(false));
        let o = over.clone();
        s.set_spool(Box::new(move || {
            o.load(Ordering::Acquire)
                .then(|| "spool over its high-water mark".to_string())
        }));
        metrics.output.up.set(0);
        assert_eq!(
            s.ready(),
            Ok(()),
            "the spool takes windows while the output is down"
        );
        let series = |r: NotReadyReason| metrics.not_ready.series[r as usize].get();
        assert_eq!(series(NotReadyReason::OutputDown), 0, "not output_down");
        over.store(true, Ordering::Release);
        assert_eq!(s.ready(), Err("spool over its high-water mark".into()));
        assert_eq!(series(NotReadyReason::SpoolHighWater), 1);
        assert_eq!(series(NotReadyReason::OutputDown), 0);
        over.store(false, Ordering::Release);
        assert_eq!(s.ready(), Ok(()));
        assert_eq!(series(NotReadyReason::SpoolHighWater), 0);
    }

    #[test]
    fn with_the_spool_a_full_budget_is_still_behind() {
        // The spool releases a window's budget once it is fsynced: a budget that stays
        // full means the spool itself cannot keep up (a slow or full disk).
        let metrics = Metrics::new().unwrap();
        let s = Status::new(&metrics, CancellationToken::new());
        s.set_listening(true);
        s.set_spool(Box::new(|| None));
        s.shed_when_behind(Backlog {
            used: Box::new(|| 100),
            high: 80,
            low: 40,
            grace: Duration::ZERO,
        });
        metrics.output.up.set(0);
        assert!(s.ready().unwrap_err().contains("output behind"));
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

    #[test]
    fn behind_after_the_grace_above_high_water_and_ready_again_only_at_low_water() {
        use std::sync::atomic::AtomicU64;
        let metrics = Metrics::new().unwrap();
        let s = Status::new(&metrics, CancellationToken::new());
        s.set_listening(true);
        metrics.output.up.set(1);
        let used = Arc::new(AtomicU64::new(0));
        let backlog = |grace| {
            let used = used.clone();
            Backlog {
                used: Box::new(move || used.load(Ordering::Relaxed)),
                high: 80,
                low: 40,
                grace,
            }
        };
        s.shed_when_behind(backlog(Duration::ZERO));
        assert_eq!(s.ready(), Ok(()));
        used.store(81, Ordering::Relaxed);
        assert!(s.ready().unwrap_err().contains("output behind"));
        assert_eq!(
            metrics.not_ready.series[NotReadyReason::OutputBehind as usize].get(),
            1
        );
        used.store(60, Ordering::Relaxed);
        assert!(s.ready().is_err(), "between the marks it stays not ready");
        used.store(40, Ordering::Relaxed);
        assert_eq!(s.ready(), Ok(()));
        assert_eq!(
            metrics.not_ready.series[NotReadyReason::OutputBehind as usize].get(),
            0
        );

        let waits = Status::new(&metrics, CancellationToken::new());
        waits.set_listening(true);
        waits.shed_when_behind(backlog(Duration::from_secs(3600)));
        used.store(100, Ordering::Relaxed);
        assert_eq!(
            waits.ready(),
            Ok(()),
            "a backlog younger than the grace is not behind"
        );
    }
}
