//! Status conditions as Kubernetes expects them: one per type, and
//! `lastTransitionTime` moves only when the status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition types ebb resources report.
pub const READY: &str = "Ready";
/// True while a database has no computes.
pub const SUSPENDED: &str = "Suspended";
/// True while computes are being added or drained.
pub const SCALING: &str = "Scaling";

/// Sets condition `type_` in `conditions`; returns whether anything changed.
pub fn set(conditions: &mut Vec<Condition>, type_: &str, status: bool, reason: &str, message: &str, generation: Option<i64>, now: Timestamp) -> bool {
    let status = if status { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == status && c.reason == reason && c.message == message && c.observed_generation == generation => false,
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message = message.into();
            c.observed_generation = generation;
            true
        }
        None => {
            conditions.push(Condition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message: message.into(),
                observed_generation: generation,
                last_transition_time: Time(now),
            });
            true
        }
    }
}

/// Whether condition `type_` is true.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let t2 = Timestamp::from_second(3_000).unwrap();
        let mut cs = Vec::new();
        assert!(set(&mut cs, READY, false, "Pending", "waiting", Some(1), t0));
        assert!(!set(&mut cs, READY, false, "Pending", "waiting", Some(1), t1), "same condition is no change");
        assert!(set(&mut cs, READY, false, "StorageNotReady", "storage starting", Some(1), t1));
        assert_eq!(cs[0].last_transition_time.0, t0, "reason changed, status did not");
        assert!(set(&mut cs, READY, true, "Ready", "serving", Some(2), t2));
        assert_eq!(cs[0].last_transition_time.0, t2);
        assert_eq!(cs.len(), 1);
        assert!(is_true(&cs, READY));
        assert!(!is_true(&cs, SCALING));
    }
}
