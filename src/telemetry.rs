//! Process plumbing shared by the subcommands: JSON logs, the shutdown signal, and the HTTP
//! server that answers health and metrics paths (each subcommand routes its own paths).

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
use tracing_subscriber::EnvFilter;

/// Content type of the plain-text answers (`/healthz`, `/readyz`, errors).
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
/// Content type of `/metrics` (the OpenMetrics text prometheus-client encodes).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one request path answers: status, content type and body.
pub type Reply = (StatusCode, &'static str, String);

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

/// JSON logs on stdout, filtered by `filter` (e.g. `info` or `info,rtu_operator=debug`);
/// `RUST_LOG` overrides it.
pub fn init_logs(filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().json().with_env_filter(filter).with_current_span(false).init();
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the engine");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutdown signal received");
}

/// Listens on `host:port` (port 0: any free port) and answers every HTTP/1 request with what
/// `respond` returns for its path, until the process ends; returns the bound address.
pub async fn serve_http<R>(host: &str, port: u16, respond: R) -> Result<SocketAddr, ServeError>
where
    R: Fn(&str) -> Reply + Send + Sync + 'static,
{
    let addr = format!("{host}:{port}");
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| ServeError::Bind { addr: addr.clone(), source })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
    info!(addr = %bound, "telemetry listening (/healthz, /readyz, /metrics)");
    tokio::spawn(accept_loop(listener, Arc::new(respond)));
    Ok(bound)
}

async fn accept_loop<R>(listener: TcpListener, respond: Arc<R>)
where
    R: Fn(&str) -> Reply + Send + Sync + 'static,
{
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "telemetry accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let respond = Arc::clone(&respond);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let (status, content_type, body) = respond(req.uri().path());
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
