//! Waiting briefly for writers who are about to commit again, so that a busy
//! database puts one WAL object for all of them instead of one per cohort.
//!
//! Without it, writers committing back to back on a fast store split into
//! cohorts: while one group's put is in flight the others queue, and when it
//! lands the queued cohort's put starts at once — without the writers just
//! answered, who come back a moment later and wait for the next put. Eight
//! writers then make groups of four, and every commit costs half a put.
//!
//! So the committer measures how long the writers it answers take to commit
//! again (the return time: from a put landing to the last of its writers'
//! next commits arriving; a moving average). When the last put in flight
//! lands and writers typically return within [`EngineConfig::commit_gather`]
//! and within half a put's time (so waiting for them costs less than the put
//! it saves), the next put waits — at most twice that — until as many commits joined it
//! as the last round had (the group just answered plus those that queued
//! behind it). The commits are validated and applied (their row locks
//! released) as they arrive; only the put waits. Clients with think time
//! between commits return slowly and are never waited for. PostgreSQL's
//! `commit_delay` is the fixed, off-by-default form of the same idea.
//!
//! [`EngineConfig::commit_gather`]: super::config::EngineConfig::commit_gather

use std::time::{Duration, Instant};

use super::commit::CommitJob;

/// The committer's gathering state.
pub(crate) struct Gather {
    /// Writers returning within this are waited for (zero: never).
    limit: Duration,
    round: Option<Round>,
    /// Moving average of the return time.
    return_time: Option<Duration>,
    /// Moving average of a put's time.
    put_time: Option<Duration>,
}

/// The writers answered when the last put in flight landed.
struct Round {
    landed: Instant,
    /// How many of them have not committed again yet.
    awaiting: usize,
}

impl Gather {
    /// Gathering for writers that return within `limit` (zero: never waits).
    pub fn new(limit: Duration) -> Self {
        Gather { limit, round: None, return_time: None, put_time: None }
    }

    /// How long a put may wait for the writers.
    pub fn wait(&self) -> Duration {
        self.limit * 2
    }

    /// A put took `took`.
    pub fn put_took(&mut self, took: Duration) {
        self.put_time = Some(average(self.put_time, took));
    }

    /// The last put in flight landed and answered `answered` commits while
    /// `queued` others waited: how many commits the next put should wait
    /// for, if the writers usually return quickly.
    pub fn landed(&mut self, answered: usize, queued: usize) -> Option<usize> {
        let now = Instant::now();
        if let Some(r) = self.round.take()
            && r.awaiting > 0
        {
            // Not all back before the next put landed: too slow to wait
            // for, however soon that put landed.
            self.record((now - r.landed).max(self.wait()));
        }
        self.round = Some(Round { landed: now, awaiting: answered });
        let quick = !self.limit.is_zero()
            && self.return_time.is_some_and(|t| t <= self.limit && self.put_time.is_some_and(|p| t * 2 <= p));
        quick.then_some(answered + queued)
    }

    /// Notes commits taken from the queue (every group's).
    pub fn observe(&mut self, jobs: &[CommitJob]) {
        for job in jobs {
            self.returned(job.queued_at);
        }
    }

    fn returned(&mut self, queued_at: Instant) {
        let Some(r) = self.round.as_mut() else { return };
        if r.awaiting == 0 || queued_at < r.landed {
            return;
        }
        r.awaiting -= 1;
        if r.awaiting == 0 {
            let took = queued_at - r.landed;
            self.record(took);
        }
    }

    fn record(&mut self, took: Duration) {
        self.return_time = Some(average(self.return_time, took));
    }
}

/// A moving average with `sample` added.
fn average(avg: Option<Duration>, sample: Duration) -> Duration {
    match avg {
        Some(avg) => avg.mul_f64(0.75) + sample.mul_f64(0.25),
        None => sample,
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;

    fn queued_now() -> CommitJob {
        let (reply, _) = oneshot::channel();
        CommitJob { snapshot_ts: 0, writes: Vec::new(), dropped_tables: Vec::new(), table_versions: Vec::new(), prepare: None, reply, held: None, queued_at: Instant::now() }
    }

    /// A put lands answering `answered` writers, who commit again after
    /// `think`: what the next put is told to wait for.
    fn round(gather: &mut Gather, answered: usize, think: Duration) -> Option<usize> {
        gather.put_took(Duration::from_millis(20));
        let expect = gather.landed(answered, 1);
        std::thread::sleep(think);
        let back: Vec<_> = (0..answered).map(|_| queued_now()).collect();
        gather.observe(&back);
        expect
    }

    #[test]
    fn writers_that_return_quickly_are_waited_for() {
        let mut gather = Gather::new(Duration::from_millis(200));
        assert_eq!(round(&mut gather, 4, Duration::from_millis(1)), None, "no return time known yet");
        assert_eq!(round(&mut gather, 4, Duration::from_millis(1)), Some(5), "the answered and the queued");
    }

    #[test]
    fn writers_with_think_time_are_not_waited_for() {
        let mut gather = Gather::new(Duration::from_millis(5));
        for _ in 0..3 {
            assert_eq!(round(&mut gather, 2, Duration::from_millis(20)), None);
        }
    }

    #[test]
    fn writers_that_do_not_come_back_before_the_next_put_count_as_slow() {
        let mut gather = Gather::new(Duration::from_millis(5));
        gather.landed(1, 0);
        std::thread::sleep(Duration::from_millis(20));
        // The next put lands before the writer returned.
        assert_eq!(gather.landed(1, 0), None);
        assert!(gather.return_time.is_some_and(|t| t >= Duration::from_millis(20)));
    }

    #[test]
    fn puts_landing_in_quick_succession_before_the_writers_return_mean_slow_writers() {
        let mut gather = Gather::new(Duration::from_millis(50));
        assert_eq!(round(&mut gather, 2, Duration::from_millis(1)), None);
        assert!(gather.return_time.is_some_and(|t| t <= Duration::from_millis(50)), "quick so far");
        // Puts land back to back while the writers answered are away: each
        // such round counts as slower than a wait, and soon nobody is waited for.
        gather.landed(2, 0);
        let rounds = (0..8).take_while(|_| gather.landed(2, 0).is_some()).count();
        assert!(rounds < 8, "still waiting after 8 such rounds");
    }

    #[test]
    fn writers_slower_than_half_a_put_are_not_waited_for() {
        let mut gather = Gather::new(Duration::from_millis(200));
        for _ in 0..3 {
            gather.put_took(Duration::from_millis(4));
            gather.landed(1, 0);
            std::thread::sleep(Duration::from_millis(5));
            gather.observe(&[queued_now()]);
        }
        assert!(gather.return_time.is_some_and(|t| t <= Duration::from_millis(200)), "within the limit");
        assert_eq!(gather.landed(1, 1), None, "but waiting would cost more than the put it saves");
    }

    #[test]
    fn a_disabled_gather_never_waits() {
        let mut gather = Gather::new(Duration::ZERO);
        for _ in 0..3 {
            assert_eq!(round(&mut gather, 4, Duration::ZERO), None);
        }
    }
}
