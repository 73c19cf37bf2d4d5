//! Prometheus metrics of `ebb local`: its controller's (cluster `local`)
//! and its proxy's, sampled once a second; storage registers its own into
//! the same registry.

use ebb_operator::Controller;
use ebb_operator::metrics::ControllerMetrics;
use ebb_proxy::Proxy;
use ebb_proxy::metrics::ProxyMetrics;
use prometheus::Registry;

/// The controller's and the proxy's metrics.
pub struct LocalMetrics {
    controller: ControllerMetrics,
    proxy: ProxyMetrics,
}

impl LocalMetrics {
    /// Registers every metric in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        Ok(Self { controller: ControllerMetrics::new(registry)?, proxy: ProxyMetrics::new(registry)? })
    }

    /// Takes one sample.
    pub fn sample(&self, controller: &Controller, proxy: &Proxy) {
        self.controller.sample([("local", controller)]);
        self.proxy.sample(proxy);
    }
}
