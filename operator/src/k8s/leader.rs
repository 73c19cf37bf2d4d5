//! One active operator at a time: a coordination.k8s.io Lease. The holder
//! renews it; a standby takes it over only once it saw the record unchanged
//! for the lease duration (timed on its own clock, as client-go does, so
//! clock skew between nodes does not matter), with a resourceVersion-
//! conditional replace, so two standbys cannot both win. An operator that
//! cannot renew in time steps down (the process exits and restarts as a
//! standby); every API call here has a deadline, so a hung request cannot
//! keep a stale leader acting.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

/// Seconds a lease stays valid without renewal.
pub const LEASE_SECONDS: i32 = 15;
/// How often a standby looks at the lease.
const RETRY_EVERY: Duration = Duration::from_secs(2);

/// What to do about a lease (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    /// We hold it: renew.
    Renew,
    /// Nobody valid holds it: take it.
    Take,
    /// Someone else holds a valid lease.
    Wait,
}

/// Decides what `me` does about `spec`, which this operator has seen
/// unchanged for `unchanged_for`.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, unchanged_for: Duration) -> LeaseAction {
    let Some(spec) = spec else { return LeaseAction::Take };
    match spec.holder_identity.as_deref() {
        Some(h) if h == me => LeaseAction::Renew,
        None | Some("") => LeaseAction::Take,
        Some(_) => {
            let seconds = spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS).max(1) as u64;
            if unchanged_for >= Duration::from_secs(seconds) { LeaseAction::Take } else { LeaseAction::Wait }
        }
    }
}

fn held_by(me: &str, seconds: i32, transitions: i32, acquired: Timestamp, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(me.into()),
        lease_duration_seconds: Some(seconds),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// Holds the Lease `name` in `namespace` as `me`.
pub struct Leader {
    api: Api<Lease>,
    name: String,
    me: String,
    seconds: i32,
    /// The lease record's resourceVersion when it last changed, and when
    /// this operator saw that (its own clock).
    observed: Mutex<Option<(String, Instant)>>,
}

impl Leader {
    /// A would-be holder of lease `namespace/name`, valid [`LEASE_SECONDS`].
    pub fn new(client: kube::Client, namespace: &str, name: &str, me: &str) -> Self {
        Self { api: Api::namespaced(client, namespace), name: name.into(), me: me.into(), seconds: LEASE_SECONDS, observed: Mutex::new(None) }
    }

    /// The same with leases valid `seconds` (tests use short ones).
    pub fn with_lease_seconds(mut self, seconds: i32) -> Self {
        self.seconds = seconds.max(1);
        self
    }

    /// How often the holder renews: a third of the lease.
    fn renew_every(&self) -> Duration {
        Duration::from_secs(self.seconds as u64) / 3
    }

    /// How long the record has looked the same to this operator.
    fn unchanged_for(&self, lease: &Lease) -> Duration {
        let rv = lease.resource_version().unwrap_or_default();
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        match observed.as_ref() {
            Some((seen, at)) if *seen == rv => at.elapsed(),
            _ => {
                *observed = Some((rv, Instant::now()));
                Duration::ZERO
            }
        }
    }

    /// One attempt, bounded by a deadline: whether `me` holds the lease afterwards.
    pub async fn try_hold(&self) -> Result<bool, kube::Error> {
        let deadline = self.renew_every().max(Duration::from_secs(1));
        match tokio::time::timeout(deadline, self.try_hold_once()).await {
            Ok(r) => r,
            Err(_) => Err(kube::Error::Service(format!("the lease request took over {deadline:?}").into())),
        }
    }

    async fn try_hold_once(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(held_by(&self.me, self.seconds, 0, now, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let next = match decide(Some(&spec), &self.me, self.unchanged_for(&lease)) {
            LeaseAction::Wait => return Ok(false),
            LeaseAction::Renew => {
                held_by(&self.me, self.seconds, spec.lease_transitions.unwrap_or(0), spec.acquire_time.map_or(now, |t| t.0), now)
            }
            LeaseAction::Take => held_by(&self.me, self.seconds, spec.lease_transitions.unwrap_or(0) + 1, now, now),
        };
        lease.spec = Some(next);
        // `replace` sends the resourceVersion we read: a concurrent writer makes it 409.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until `me` holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_hold().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, holder = %self.me, "leading");
                    return;
                }
                Ok(false) => tracing::debug!(lease = %self.name, "another operator leads; standing by"),
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "reading the lease failed"),
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Gives the lease up (clean shutdown), so a standby takes over at its
    /// next look instead of after the lease expires.
    pub async fn release(&self) -> Result<(), kube::Error> {
        match tokio::time::timeout(Duration::from_secs(5), self.release_once()).await {
            Ok(r) => r,
            Err(_) => Err(kube::Error::Service("releasing the lease took over 5s".into())),
        }
    }

    async fn release_once(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else { return Ok(()) };
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.me.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => {
                tracing::info!(lease = %self.name, "released the lease");
                Ok(())
            }
            // Someone else changed it meanwhile: it is not ours to release.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Renews the lease until a renewal cannot be made before it would
    /// expire; returns then (the caller must stop acting as leader).
    pub async fn keep(&self) {
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_every()).await;
            match self.try_hold().await {
                Ok(true) => last = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.name, "another operator took the lease");
                    return;
                }
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "renewing the lease failed"),
            }
            // Step down a little before others may take over.
            if last.elapsed() >= Duration::from_secs(self.seconds as u64) - self.renew_every() {
                tracing::error!(lease = %self.name, "could not renew the lease in time; stepping down");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str) -> LeaseSpec {
        LeaseSpec { holder_identity: Some(holder.into()), lease_duration_seconds: Some(15), ..LeaseSpec::default() }
    }

    #[test]
    fn a_lease_seen_unchanged_for_its_duration_is_taken() {
        let s = Duration::from_secs;
        assert_eq!(decide(None, "a", s(0)), LeaseAction::Take);
        assert_eq!(decide(Some(&spec("a")), "a", s(100)), LeaseAction::Renew);
        assert_eq!(decide(Some(&spec("b")), "a", s(3)), LeaseAction::Wait);
        assert_eq!(decide(Some(&spec("b")), "a", s(14)), LeaseAction::Wait);
        assert_eq!(decide(Some(&spec("b")), "a", s(15)), LeaseAction::Take);
        assert_eq!(decide(Some(&spec("")), "a", s(0)), LeaseAction::Take);
    }
}
