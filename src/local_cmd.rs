//! `ebb local`: all of ebb on one machine — storage, proxy and controller in
//! this process, computes as child processes (the `process` runtime), the
//! object store in a local directory. Writes `<data-dir>/status.json` every
//! quarter second for `ebb status`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use ebb_operator::autoscaler::AutoscalerConfig;
use ebb_operator::broker::{Broker, Single};
use ebb_operator::controller::{AcquireError, LoadSource};
use ebb_operator::process::ProcessRuntime;
use ebb_operator::{Controller, ControllerConfig};
use ebb_proxy::server::Auth as ProxyAuth;
use ebb_proxy::{Proxy, ProxyConfig, Route, RouteError, Router};
use ebb_storage::engine::EngineConfig;
use ebb_storage::server::ServerConfig;
use tokio::net::TcpListener;

use crate::client_flags::{Auth, TlsArgs};
use crate::local_metrics::LocalMetrics;
use crate::storage_roles::StorageRoles;
use crate::status_cmd::{self, StatusFile};

/// Flags of `ebb local`; each also reads an `EBB_*` variable.
#[derive(Args, Debug)]
pub struct LocalArgs {
    /// Directory for the object store and the local cache.
    #[arg(long, env = "EBB_DATA_DIR", default_value = "ebb-data")]
    data_dir: PathBuf,
    /// Where clients connect (the proxy).
    #[arg(long, env = "EBB_LISTEN", default_value = "127.0.0.1:5432")]
    listen: SocketAddr,
    /// Object store URL (default: file://<data-dir>/objects).
    #[arg(long, env = "EBB_OBJECT_STORE")]
    object_store: Option<String>,
    /// Unbound computes kept warm.
    #[arg(long, env = "EBB_POOL_SIZE", default_value_t = 2)]
    pool_size: usize,
    /// A database without sessions for this long scales to zero.
    #[arg(long, env = "EBB_IDLE_TIMEOUT", default_value = "300s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Most computes per database.
    #[arg(long, env = "EBB_MAX_REPLICAS", default_value_t = 4)]
    max_replicas: u32,
    /// Target concurrent sessions per compute (autoscaler).
    #[arg(long, env = "EBB_TARGET_SESSIONS", default_value_t = 8.0)]
    target_sessions: f64,
    /// Autoscaler stable window: scale decisions average the load over it.
    #[arg(long, env = "EBB_STABLE_WINDOW", default_value = "60s", value_parser = humantime::parse_duration)]
    stable_window: Duration,
    /// Autoscaler panic window: a burst of twice the capacity over it scales out at once.
    #[arg(long, env = "EBB_PANIC_WINDOW", default_value = "6s", value_parser = humantime::parse_duration)]
    panic_window: Duration,
    /// Prometheus /metrics listen address (storage, controller and proxy metrics).
    #[arg(long, env = "EBB_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// How long a client is held while its database wakes.
    #[arg(long, env = "EBB_WAKE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    wake_timeout: Duration,
    #[command(flatten)]
    tls: TlsArgs,
    /// Client authentication: trust (loopback only) or scram (SCRAM-SHA-256
    /// against the roles made with CREATE ROLE).
    #[arg(long, env = "EBB_AUTH", value_enum, default_value_t = Auth::Trust)]
    auth: Auth,
    /// Also serve the controller's broker here, so that `ebb proxy`
    /// processes (cluster `local`) can front the same computes; load then
    /// comes from the computes' own counts, which see every proxy.
    #[arg(long, env = "EBB_BROKER_LISTEN")]
    broker_listen: Option<SocketAddr>,
    /// Password of the `postgres` role when the first start creates it
    /// (otherwise one is generated and printed once).
    #[arg(long, env = "EBB_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

struct ControllerRouter(Arc<Controller>);

#[async_trait::async_trait]
impl Router for ControllerRouter {
    async fn acquire(&self, database: &str) -> Result<Route, RouteError> {
        match self.0.acquire(database).await {
            Ok(i) => Ok(Route { compute_id: i.id, addr: i.pg_addr }),
            Err(AcquireError::UnknownDatabase(d)) => Err(RouteError::UnknownDatabase(d)),
            Err(e) => Err(RouteError::Unavailable(e.to_string())),
        }
    }
}

struct ProxyLoad(Arc<Proxy>);

impl LoadSource for ProxyLoad {
    fn sessions(&self) -> HashMap<String, u64> {
        self.0.load().snapshot().into_iter().map(|(id, l)| (id, l.sessions)).collect()
    }
}

/// Runs `ebb local` until SIGTERM or Ctrl-C.
pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    args.auth.check(args.listen)?;
    let tls = args.tls.acceptor()?;
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let object_store = args.object_store.clone().unwrap_or_else(|| format!("file://{}", data_dir.join("objects").display()));
    let (stop, stopped) = ebb_common::shutdown::signal();

    let registry = prometheus::Registry::new();
    let metrics = LocalMetrics::new(&registry)?;
    // Storage, in this process, on a loopback port of its own.
    let storage_listener = TcpListener::bind("127.0.0.1:0").await?;
    let storage_url = format!("http://{}", storage_listener.local_addr()?);
    let storage_cfg = ServerConfig {
        listen: storage_listener.local_addr()?,
        object_store: object_store.clone(),
        cache_dir: data_dir.join("cache"),
        metrics_listen: None,
        engine: EngineConfig::default(),
        registry: Some(registry.clone()),
    };
    let storage = tokio::spawn(ebb_storage::server::run_on(storage_listener, storage_cfg, stopped.wait()));
    let roles = StorageRoles::connect(&storage_url).await?;
    roles.bootstrap(args.password.as_deref()).await?;

    // Controller with computes as child processes of this one.
    let program = std::env::current_exe().context("locating the ebb binary")?;
    let runtime = Arc::new(ProcessRuntime::new(program, storage_url.clone()));
    let controller = Controller::new(
        runtime,
        ControllerConfig {
            pool_size: args.pool_size,
            idle_timeout: args.idle_timeout,
            autoscaler: AutoscalerConfig {
                max_replicas: args.max_replicas,
                target: args.target_sessions,
                stable_window: args.stable_window,
                panic_window: args.panic_window,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let proxy = Proxy::new(Arc::new(ControllerRouter(controller.clone())), ProxyConfig {
        wake_timeout: args.wake_timeout,
        tls,
        auth: match args.auth {
            Auth::Trust => ProxyAuth::Trust,
            Auth::Scram => ProxyAuth::Scram(Arc::new(roles)),
        },
    });
    match args.broker_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, "broker listening (cluster \"local\")");
            let single = Arc::new(Single { name: "local".into(), controller: controller.clone() });
            let broker = tonic::transport::Server::builder()
                .add_service(Broker::service(single))
                .serve_with_incoming_shutdown(ebb_common::net::nodelay_incoming(l), stopped.wait());
            tokio::spawn(broker);
        }
        None => controller.set_load_source(Arc::new(ProxyLoad(proxy.clone()))),
    }
    let controller_task = tokio::spawn(controller.clone().run(stopped.wait()));
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let proxy_task = tokio::spawn(proxy.clone().serve(listener, stopped.wait()));
    if let Some(metrics_addr) = args.metrics_listen {
        let l = TcpListener::bind(metrics_addr).await.with_context(|| format!("cannot listen on {metrics_addr}"))?;
        tracing::info!(addr = %l.local_addr()?, "metrics on /metrics");
        tokio::spawn(ebb_common::metrics::serve(l, registry, stopped.wait()));
    }
    let status_task = tokio::spawn(observe(controller.clone(), proxy.clone(), metrics, data_dir.clone(), addr, stopped.wait()));

    tracing::info!(%addr, object_store = %object_store, pool_size = args.pool_size, "ebb local is up");
    let mut banner = format!("ebb local is running. Connect with:\n  psql \"postgresql://postgres@{}:{}/postgres\"", addr.ip(), addr.port());
    if args.auth == Auth::Scram {
        banner.push_str("\n  (SCRAM authentication: the postgres role's password was set on the first start)");
    }
    say(&banner);

    crate::shutdown_signal().await;
    stop.stop();
    let _ = proxy_task.await;
    let _ = controller_task.await; // stops every compute
    let _ = status_task.await;
    match storage.await {
        Ok(r) => r.context("storage failed")?,
        Err(e) => bail!("storage task failed: {e}"),
    }
    status_cmd::remove(&data_dir);
    say("ebb local stopped.");
    Ok(())
}

/// Prints a line for the person running `ebb local`. A standard output that
/// cannot be written (closed pipe, full disk) must not stop the server, as
/// `println!` would by panicking.
fn say(text: &str) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout(), "{text}") {
        tracing::warn!(error = %e, "cannot write to standard output");
    }
}

/// Four times a second until `stop`: samples the metrics and rewrites the status file.
async fn observe(
    controller: Arc<Controller>,
    proxy: Arc<Proxy>,
    metrics: LocalMetrics,
    data_dir: PathBuf,
    listen: SocketAddr,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        metrics.sample(&controller, &proxy);
        let file = StatusFile::new(std::process::id(), listen, &controller.status());
        if let Err(e) = status_cmd::write(&data_dir, &file) {
            tracing::warn!(error = %e, "cannot write the status file");
        }
    }
}

