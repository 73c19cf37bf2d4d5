//! How many computes a database should have, modelled on Knative's KPA: a
//! pure function of load samples and a caller-supplied clock. Load is the
//! number of concurrent sessions (each pinned to one compute).
//!
//! - Stable mode: the average load over the stable window (60 s) divided by
//!   the target load per compute.
//! - Panic mode: entered when the average over the panic window (6 s) asks
//!   for at least `panic_threshold` × the ready computes; while panicking the
//!   recommendation follows the panic window but never goes down. It ends
//!   once a whole stable window passed without reaching the threshold.
//! - Scale-down is rate-limited: at most `1 / max_scale_down_rate` of the
//!   ready computes go per decision.
//! - Scale to zero is not decided here: the controller does it after the
//!   idle timeout, so the recommendation is at least 1 (and `min_replicas`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Autoscaler settings of one database.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscalerConfig {
    /// Target concurrent sessions per compute.
    pub target: f64,
    pub stable_window: Duration,
    pub panic_window: Duration,
    /// Panic when the panic window asks for this many times the ready computes.
    pub panic_threshold: f64,
    /// At most `ready / max_scale_down_rate` computes remain after a scale-down.
    pub max_scale_down_rate: f64,
    pub min_replicas: u32,
    pub max_replicas: u32,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        Self {
            target: 8.0,
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            max_scale_down_rate: 2.0,
            min_replicas: 1,
            max_replicas: 4,
        }
    }
}

/// The scaling state of one database.
#[derive(Debug)]
pub struct Autoscaler {
    cfg: AutoscalerConfig,
    samples: VecDeque<(Instant, f64)>,
    panic_since: Option<Instant>,
    /// The highest recommendation made during the current panic.
    panic_peak: u32,
}

impl Autoscaler {
    /// A fresh autoscaler.
    pub fn new(cfg: AutoscalerConfig) -> Self {
        Self { cfg, samples: VecDeque::new(), panic_since: None, panic_peak: 0 }
    }

    /// Records the load observed at `now`.
    pub fn record(&mut self, now: Instant, load: f64) {
        self.samples.push_back((now, load));
        while let Some((t, _)) = self.samples.front() {
            if now.duration_since(*t) > self.cfg.stable_window {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    fn average(&self, now: Instant, window: Duration) -> f64 {
        let recent: Vec<f64> = self.samples.iter().filter(|(t, _)| now.duration_since(*t) <= window).map(|(_, l)| *l).collect();
        if recent.is_empty() { 0.0 } else { recent.iter().sum::<f64>() / recent.len() as f64 }
    }

    /// The number of computes the database should have at `now`, given
    /// `ready` computes serving it.
    pub fn desired(&mut self, now: Instant, ready: u32) -> u32 {
        let per = |load: f64| (load / self.cfg.target).ceil() as u32;
        let stable = per(self.average(now, self.cfg.stable_window));
        let panic = per(self.average(now, self.cfg.panic_window));
        let over_threshold = ready > 0 && panic as f64 >= self.cfg.panic_threshold * ready as f64;
        if over_threshold {
            if self.panic_since.is_none() {
                tracing::info!(ready, wanted = panic, "autoscaler: panic mode");
            }
            self.panic_since = Some(now);
        } else if let Some(since) = self.panic_since
            && now.duration_since(since) >= self.cfg.stable_window
        {
            self.panic_since = None;
            self.panic_peak = 0;
        }
        let mut want = if self.panic_since.is_some() {
            self.panic_peak = self.panic_peak.max(panic).max(ready);
            self.panic_peak
        } else {
            stable
        };
        if want < ready {
            let floor = (ready as f64 / self.cfg.max_scale_down_rate).ceil() as u32;
            want = want.max(floor);
        }
        want.clamp(self.cfg.min_replicas.max(1), self.cfg.max_replicas.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(a: &mut Autoscaler, start: Instant, from_s: u64, to_s: u64, load: f64, ready: &mut u32) -> Vec<u32> {
        (from_s..to_s)
            .map(|s| {
                let now = start + Duration::from_secs(s);
                a.record(now, load);
                *ready = a.desired(now, *ready);
                *ready
            })
            .collect()
    }

    #[test]
    fn steady_load_settles_at_load_over_target() {
        let mut a = Autoscaler::new(AutoscalerConfig { max_replicas: 10, ..Default::default() });
        let t0 = Instant::now();
        let mut ready = 1;
        let got = run(&mut a, t0, 0, 120, 20.0, &mut ready);
        assert_eq!(*got.last().unwrap(), 3, "20 sessions at 8 per compute");
    }

    #[test]
    fn a_burst_panics_up_at_once_and_comes_down_slowly() {
        let mut a = Autoscaler::new(AutoscalerConfig::default());
        let t0 = Instant::now();
        let mut ready = 1;
        run(&mut a, t0, 0, 60, 2.0, &mut ready);
        assert_eq!(ready, 1);
        // 32 sessions arrive: the panic window's average climbs and the
        // recommendation with it, reaching max_replicas within the window
        // (the stable window alone would take a minute).
        let burst = run(&mut a, t0, 60, 67, 32.0, &mut ready);
        assert!(burst.windows(2).all(|w| w[0] <= w[1]), "only up while panicking: {burst:?}");
        assert_eq!(*burst.last().unwrap(), 4, "capped at max_replicas: {burst:?}");
        run(&mut a, t0, 67, 90, 32.0, &mut ready);
        // The burst ends: no scale-down while panicking, which lasts a
        // stable window after the last sample over the threshold (t = 6x s).
        let after = run(&mut a, t0, 90, 120, 0.0, &mut ready);
        assert!(after.iter().all(|&r| r == 4), "held while panicking: {after:?}");
        let later = run(&mut a, t0, 120, 260, 0.0, &mut ready);
        assert_eq!(*later.last().unwrap(), 1);
        // Never more than halving per decision.
        let mut prev = 4;
        for r in later {
            assert!(r * 2 >= prev, "{prev} -> {r}");
            prev = r;
        }
    }

    #[test]
    fn load_below_twice_the_capacity_scales_through_the_stable_window() {
        let mut a = Autoscaler::new(AutoscalerConfig::default());
        let t0 = Instant::now();
        let mut ready = 2;
        run(&mut a, t0, 0, 60, 16.0, &mut ready);
        assert_eq!(ready, 2);
        // 24 sessions want 3 computes: 1.5x, no panic; the stable average
        // asks for the third as soon as it exceeds two computes' worth.
        let got = run(&mut a, t0, 60, 200, 24.0, &mut ready);
        assert!(got.iter().all(|&r| r == 3), "{got:?}");
        assert!(a.panic_since.is_none());
    }
}
