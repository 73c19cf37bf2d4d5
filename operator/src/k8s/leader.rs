//! One active operator at a time: a coordination.k8s.io Lease. The holder
//! renews it; a standby takes it over only once it expired, with a
//! resourceVersion-conditional replace, so two standbys cannot both win.
//! An operator that cannot renew in time steps down (the process exits and
//! restarts as a standby).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;

/// Seconds a lease stays valid without renewal.
pub const LEASE_SECONDS: i32 = 15;
/// How often the holder renews.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
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

/// Decides what `me` does about `spec` at `now`.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> LeaseAction {
    let Some(spec) = spec else { return LeaseAction::Take };
    match spec.holder_identity.as_deref() {
        Some(h) if h == me => LeaseAction::Renew,
        None | Some("") => LeaseAction::Take,
        Some(_) => {
            let seconds = spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS) as i64;
            let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
            match renewed {
                Some(t) if t + SignedDuration::from_secs(seconds) > now => LeaseAction::Wait,
                _ => LeaseAction::Take,
            }
        }
    }
}

fn held_by(me: &str, transitions: i32, acquired: Timestamp, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(me.into()),
        lease_duration_seconds: Some(LEASE_SECONDS),
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
}

impl Leader {
    /// A would-be holder of lease `namespace/name`.
    pub fn new(client: kube::Client, namespace: &str, name: &str, me: &str) -> Self {
        Self { api: Api::namespaced(client, namespace), name: name.into(), me: me.into() }
    }

    /// One attempt: whether `me` holds the lease afterwards.
    pub async fn try_hold(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(held_by(&self.me, 0, now, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let next = match decide(Some(&spec), &self.me, now) {
            LeaseAction::Wait => return Ok(false),
            LeaseAction::Renew => held_by(&self.me, spec.lease_transitions.unwrap_or(0), spec.acquire_time.map_or(now, |t| t.0), now),
            LeaseAction::Take => held_by(&self.me, spec.lease_transitions.unwrap_or(0) + 1, now, now),
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
            tokio::time::sleep(RENEW_EVERY).await;
            match self.try_hold().await {
                Ok(true) => last = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.name, "another operator took the lease");
                    return;
                }
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "renewing the lease failed"),
            }
            // Step down a little before others may take over.
            if last.elapsed() >= Duration::from_secs(LEASE_SECONDS as u64) - RENEW_EVERY {
                tracing::error!(lease = %self.name, "could not renew the lease in time; stepping down");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed_secs_ago: i64, now: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_valid_lease_of_another_is_respected_and_an_expired_one_taken() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        assert_eq!(decide(None, "a", now), LeaseAction::Take);
        assert_eq!(decide(Some(&spec("a", 3, now)), "a", now), LeaseAction::Renew);
        assert_eq!(decide(Some(&spec("b", 3, now)), "a", now), LeaseAction::Wait);
        assert_eq!(decide(Some(&spec("b", 14, now)), "a", now), LeaseAction::Wait);
        assert_eq!(decide(Some(&spec("b", 16, now)), "a", now), LeaseAction::Take);
        assert_eq!(decide(Some(&spec("", 1, now)), "a", now), LeaseAction::Take);
    }
}
