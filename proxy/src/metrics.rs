//! Prometheus gauges of the proxy: sessions and in-flight queries per
//! database, sampled from its load table.

use prometheus::{IntGaugeVec, Opts, Registry};

use crate::Proxy;

/// The proxy's gauges.
pub struct ProxyMetrics {
    connections: IntGaugeVec,
    in_flight: IntGaugeVec,
}

impl ProxyMetrics {
    /// Registers the gauges in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            connections: IntGaugeVec::new(Opts::new("ebb_proxy_connections", "Client sessions relayed by the proxy"), &["database"])?,
            in_flight: IntGaugeVec::new(Opts::new("ebb_proxy_in_flight_queries", "Queries sent and not yet answered"), &["database"])?,
        };
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        Ok(m)
    }

    /// Takes one sample of `proxy`'s load.
    pub fn sample(&self, proxy: &Proxy) {
        self.connections.reset();
        self.in_flight.reset();
        for load in proxy.load().snapshot().values() {
            self.connections.with_label_values(&[load.database.as_str()]).add(load.sessions as i64);
            self.in_flight.with_label_values(&[load.database.as_str()]).add(load.in_flight as i64);
        }
    }
}
