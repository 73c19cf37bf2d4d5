//! Prometheus metrics of controllers: resume latency (by how the compute
//! was found), replicas per database and the warm pool, labelled by cluster
//! (`local` for `ebb local`; `namespace/name` in Kubernetes). Sampled from
//! the controllers' status.

use prometheus::{HistogramOpts, HistogramVec, IntGaugeVec, Opts, Registry};

use crate::Controller;
use crate::controller::Resume;

/// The controllers' gauges and histograms.
pub struct ControllerMetrics {
    resume_seconds: HistogramVec,
    replicas: IntGaugeVec,
    pool_size: IntGaugeVec,
    pool_ready: IntGaugeVec,
}

impl ControllerMetrics {
    /// Registers every metric in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            resume_seconds: HistogramVec::new(
                HistogramOpts::new("ebb_resume_seconds", "Time from a session asking for a database without a compute to a compute attached")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                &["cluster", "outcome"],
            )?,
            replicas: IntGaugeVec::new(Opts::new("ebb_database_replicas", "Computes serving a database (not draining)"), &["cluster", "database"])?,
            pool_size: IntGaugeVec::new(Opts::new("ebb_pool_size", "Configured warm pool size"), &["cluster"])?,
            pool_ready: IntGaugeVec::new(Opts::new("ebb_pool_ready", "Unbound computes ready in the warm pool"), &["cluster"])?,
        };
        registry.register(Box::new(m.resume_seconds.clone()))?;
        registry.register(Box::new(m.replicas.clone()))?;
        registry.register(Box::new(m.pool_size.clone()))?;
        registry.register(Box::new(m.pool_ready.clone()))?;
        Ok(m)
    }

    /// Takes one sample of every controller, named by cluster.
    pub fn sample<'a>(&self, controllers: impl IntoIterator<Item = (&'a str, &'a Controller)>) {
        self.replicas.reset();
        self.pool_size.reset();
        self.pool_ready.reset();
        for (cluster, controller) in controllers {
            for (how, took) in controller.take_resumes() {
                let outcome = match how {
                    Resume::PoolHit => "pool_hit",
                    Resume::PoolMiss => "pool_miss",
                    Resume::Cold => "cold",
                };
                self.resume_seconds.with_label_values(&[cluster, outcome]).observe(took.as_secs_f64());
            }
            let status = controller.status();
            for d in &status.databases {
                self.replicas.with_label_values(&[cluster, d.name.as_str()]).set(d.replicas as i64);
            }
            self.pool_size.with_label_values(&[cluster]).set(status.pool_size as i64);
            self.pool_ready.with_label_values(&[cluster]).set(status.pool_ready as i64);
        }
    }
}
