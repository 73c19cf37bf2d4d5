//! Sessions and in-flight queries per compute, counted by the proxy from
//! protocol message boundaries. The controller samples them to scale and to
//! notice idle databases.

use std::collections::HashMap;
use std::sync::Mutex;

/// Load of one compute as the proxy sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComputeLoad {
    /// Database the compute serves.
    pub database: String,
    /// Open client sessions relayed to it.
    pub sessions: u64,
    /// Queries sent and not yet answered with ReadyForQuery.
    pub in_flight: u64,
}

/// Counters for every compute with sessions.
#[derive(Debug, Default)]
pub struct LoadTable {
    computes: Mutex<HashMap<String, ComputeLoad>>,
}

impl LoadTable {
    fn with<R>(&self, compute: &str, f: impl FnOnce(&mut ComputeLoad) -> R) -> Option<R> {
        let mut map = self.computes.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(compute).map(f)
    }

    /// A session to `compute` began.
    pub fn session_opened(&self, compute: &str, database: &str) {
        let mut map = self.computes.lock().unwrap_or_else(|p| p.into_inner());
        let e = map.entry(compute.to_string()).or_insert_with(|| ComputeLoad { database: database.into(), ..Default::default() });
        e.sessions += 1;
    }

    /// A session to `compute` ended, with `unanswered` queries still open.
    /// A compute without sessions leaves the table (computes come and go).
    pub fn session_closed(&self, compute: &str, unanswered: u64) {
        let mut map = self.computes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = map.get_mut(compute) {
            l.sessions = l.sessions.saturating_sub(1);
            l.in_flight = l.in_flight.saturating_sub(unanswered);
            if l.sessions == 0 {
                map.remove(compute);
            }
        }
    }

    /// The client sent a query (`Q`) or a Sync (`S`).
    pub fn query_sent(&self, compute: &str) {
        self.with(compute, |l| l.in_flight += 1);
    }

    /// The compute answered with ReadyForQuery.
    pub fn query_answered(&self, compute: &str) {
        self.with(compute, |l| l.in_flight = l.in_flight.saturating_sub(1));
    }

    /// A copy of every compute's counters.
    pub fn snapshot(&self) -> HashMap<String, ComputeLoad> {
        self.computes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sessions_and_queries_and_forgets_idle_computes() {
        let t = LoadTable::default();
        t.session_opened("c1", "app");
        t.session_opened("c1", "app");
        t.query_sent("c1");
        t.query_sent("c1");
        t.query_answered("c1");
        assert_eq!(t.snapshot()["c1"], ComputeLoad { database: "app".into(), sessions: 2, in_flight: 1 });
        t.session_closed("c1", 1);
        assert_eq!(t.snapshot()["c1"].in_flight, 0);
        t.session_closed("c1", 0);
        assert!(t.snapshot().is_empty(), "a compute without sessions is forgotten");
    }
}
