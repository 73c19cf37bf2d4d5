//! Prometheus metrics of one compute — the figures its control service's
//! `stats` reports: sessions, statements in flight, the database it is
//! bound to, whether it drains — and its row cache's hits, misses,
//! invalidations and size. Served with `--metrics-listen`.

use std::sync::Arc;

use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};

use crate::binding::Binding;
use crate::row_watch::RowCaches;

/// The compute's gauges.
pub struct ComputeMetrics {
    sessions: IntGauge,
    in_flight: IntGauge,
    bound: IntGaugeVec,
    draining: IntGauge,
    row_cache_bytes: IntGauge,
    row_caches: Arc<RowCaches>,
}

impl ComputeMetrics {
    /// Registers the metrics in `registry` (the row caches' counters too).
    pub fn new(registry: &Registry, row_caches: Arc<RowCaches>) -> prometheus::Result<Self> {
        let m = Self {
            sessions: IntGauge::new("ebb_compute_sessions", "Open client sessions")?,
            in_flight: IntGauge::new("ebb_compute_in_flight_statements", "Statements being executed")?,
            bound: IntGaugeVec::new(Opts::new("ebb_compute_bound", "1 for the database this compute serves (none while unbound)"), &["database"])?,
            draining: IntGauge::new("ebb_compute_draining", "1 while the compute takes no new sessions")?,
            row_cache_bytes: IntGauge::new("ebb_compute_row_cache_bytes", "Bytes of rows the row cache holds")?,
            row_caches,
        };
        let counters = m.row_caches.counters();
        for c in [&counters.hits, &counters.misses, &counters.invalidations, &counters.own_row_reads] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(m.row_cache_bytes.clone()))?;
        registry.register(Box::new(m.sessions.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.bound.clone()))?;
        registry.register(Box::new(m.draining.clone()))?;
        Ok(m)
    }

    /// Takes one sample.
    pub fn sample(&self, binding: &Binding) {
        self.sessions.set(binding.connections() as i64);
        self.in_flight.set(binding.in_flight() as i64);
        self.draining.set(binding.is_draining() as i64);
        self.row_cache_bytes.set(self.row_caches.bytes() as i64);
        self.bound.reset();
        if let Some(db) = binding.database() {
            self.bound.with_label_values(&[db.as_str()]).set(1);
        }
    }
}
