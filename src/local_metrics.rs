//! Prometheus metrics of `ebb local`'s controller and proxy: resume latency
//! (by how the compute was found), replicas per database, the warm pool and
//! proxy connections. Sampled once a second from the controller's status
//! and the proxy's load table; storage registers its own into the same
//! registry.

use std::sync::Arc;

use ebb_operator::Controller;
use ebb_operator::controller::Resume;
use ebb_proxy::Proxy;
use prometheus::{HistogramOpts, HistogramVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The gauges and histograms.
pub struct LocalMetrics {
    resume_seconds: HistogramVec,
    replicas: IntGaugeVec,
    pool_size: IntGauge,
    pool_ready: IntGauge,
    proxy_connections: IntGaugeVec,
    proxy_in_flight: IntGaugeVec,
}

impl LocalMetrics {
    /// Registers every metric in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            resume_seconds: HistogramVec::new(
                HistogramOpts::new("ebb_resume_seconds", "Time from a session asking for a database without a compute to a compute attached")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                &["outcome"],
            )?,
            replicas: IntGaugeVec::new(Opts::new("ebb_database_replicas", "Computes serving a database (not draining)"), &["database"])?,
            pool_size: IntGauge::new("ebb_pool_size", "Configured warm pool size")?,
            pool_ready: IntGauge::new("ebb_pool_ready", "Unbound computes ready in the warm pool")?,
            proxy_connections: IntGaugeVec::new(Opts::new("ebb_proxy_connections", "Client sessions relayed by the proxy"), &["database"])?,
            proxy_in_flight: IntGaugeVec::new(Opts::new("ebb_proxy_in_flight_queries", "Queries sent and not yet answered"), &["database"])?,
        };
        registry.register(Box::new(m.resume_seconds.clone()))?;
        registry.register(Box::new(m.replicas.clone()))?;
        registry.register(Box::new(m.pool_size.clone()))?;
        registry.register(Box::new(m.pool_ready.clone()))?;
        registry.register(Box::new(m.proxy_connections.clone()))?;
        registry.register(Box::new(m.proxy_in_flight.clone()))?;
        Ok(m)
    }

    /// Takes one sample.
    pub fn sample(&self, controller: &Controller, proxy: &Arc<Proxy>) {
        for (how, took) in controller.take_resumes() {
            let outcome = match how {
                Resume::PoolHit => "pool_hit",
                Resume::PoolMiss => "pool_miss",
                Resume::Cold => "cold",
            };
            self.resume_seconds.with_label_values(&[outcome]).observe(took.as_secs_f64());
        }
        let status = controller.status();
        self.replicas.reset();
        for d in &status.databases {
            self.replicas.with_label_values(&[d.name.as_str()]).set(d.replicas as i64);
        }
        self.pool_size.set(status.pool_size as i64);
        self.pool_ready.set(status.pool_ready as i64);
        self.proxy_connections.reset();
        self.proxy_in_flight.reset();
        for load in proxy.load().snapshot().values() {
            self.proxy_connections.with_label_values(&[load.database.as_str()]).add(load.sessions as i64);
            self.proxy_in_flight.with_label_values(&[load.database.as_str()]).add(load.in_flight as i64);
        }
    }
}
