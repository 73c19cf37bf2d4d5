//! The Prometheus `/metrics` HTTP endpoint (and `/healthz`).

use std::future::Future;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

/// Serves `registry` at `/metrics`, and `/healthz` (answers `ok` while the
/// process runs: for liveness probes), until `shutdown` resolves.
pub async fn serve(listener: TcpListener, registry: Registry, shutdown: impl Future<Output = ()> + Send + 'static) {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { render(&registry) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "metrics endpoint failed");
    }
}

fn render(registry: &Registry) -> axum::response::Response {
    let encoder = TextEncoder::new();
    let mut buf = Vec::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut buf) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    ([(CONTENT_TYPE, encoder.format_type().to_string())], buf).into_response()
}
