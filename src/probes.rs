//! The HTTP probe server of the engine and the operator: one router answers `/healthz`
//! (alive), `/readyz` (ready, or why not) and `/metrics` (OpenMetrics text), with the
//! `/-/healthz`, `/-/ready` and `/-/metrics` aliases, for whatever implements [`Probes`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Content type of the plain-text answers (`/healthz`, `/readyz`, errors).
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
/// Content type of `/metrics` (the OpenMetrics text prometheus-client encodes).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one request path answers: status, content type and body.
pub type Reply = (StatusCode, &'static str, String);

/// What a process tells its probes.
pub trait Probes: Send + Sync + 'static {
    /// Ready, with a one-line summary; or not, with why.
    fn readiness(&self) -> Result<String, String>;
    /// The OpenMetrics text of every metric family.
    fn metrics(&self) -> String;
}

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is not usable.
    #[error("telemetry: cannot listen on {addr}: {source}")]
    Bind {
        /// Where it tried.
        addr: String,
        /// Why not.
        source: std::io::Error,
    },
}

/// What `path` answers: liveness is the process answering at all; readiness and metrics come
/// from `probes`.
pub fn route(probes: &impl Probes, path: &str) -> Reply {
    match path {
        "/healthz" | "/-/healthz" => (StatusCode::OK, TEXT_PLAIN, "ok\n".into()),
        "/readyz" | "/-/ready" => match probes.readiness() {
            Ok(summary) => (StatusCode::OK, TEXT_PLAIN, format!("{summary}\n")),
            Err(why) => {
                (StatusCode::SERVICE_UNAVAILABLE, TEXT_PLAIN, format!("not ready: {why}\n"))
            }
        },
        "/metrics" | "/-/metrics" => (StatusCode::OK, OPENMETRICS, probes.metrics()),
        _ => (
            StatusCode::NOT_FOUND,
            TEXT_PLAIN,
            "not found; try /healthz, /readyz or /metrics\n".into(),
        ),
    }
}

/// Listens on `host:port` (port 0: any free port) and answers every HTTP/1 request with
/// [`route`] until the process ends; returns the bound address.
pub async fn serve<P: Probes>(
    host: &str,
    port: u16,
    probes: Arc<P>,
) -> Result<SocketAddr, ServeError> {
    let addr = format!("{host}:{port}");
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| ServeError::Bind { addr: addr.clone(), source })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
    info!(addr = %bound, "telemetry listening (/healthz, /readyz, /metrics)");
    tokio::spawn(accept_loop(listener, probes));
    Ok(bound)
}

async fn accept_loop<P: Probes>(listener: TcpListener, probes: Arc<P>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "telemetry accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let probes = Arc::clone(&probes);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let (status, content_type, body) = route(&*probes, req.uri().path());
                let mut response = Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = status;
                response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) =
                http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
            {
                warn!(error = %e, "telemetry connection failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Result<String, String>);

    impl Probes for Fixed {
        fn readiness(&self) -> Result<String, String> {
            self.0.clone()
        }
        fn metrics(&self) -> String {
            "# EOF\n".into()
        }
    }

    #[test]
    fn one_router_for_every_path_and_alias() {
        let ready = Fixed(Ok("ready: 3 partition(s) assigned".into()));
        let not = Fixed(Err("starting".into()));
        for path in ["/healthz", "/-/healthz"] {
            assert_eq!(route(&not, path), (StatusCode::OK, TEXT_PLAIN, "ok\n".into()));
        }
        for path in ["/readyz", "/-/ready"] {
            assert_eq!(route(&ready, path).2, "ready: 3 partition(s) assigned\n");
            assert_eq!(
                route(&not, path),
                (StatusCode::SERVICE_UNAVAILABLE, TEXT_PLAIN, "not ready: starting\n".into())
            );
        }
        for path in ["/metrics", "/-/metrics"] {
            assert_eq!(route(&ready, path), (StatusCode::OK, OPENMETRICS, "# EOF\n".into()));
        }
        assert_eq!(route(&ready, "/nope").0, StatusCode::NOT_FOUND);
    }
}
