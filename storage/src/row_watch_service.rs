//! The `WatchRows` call: one compute's row-change watch (see
//! `engine::row_watch`) kept alive — acknowledgements read as they come,
//! a ping every quarter lease — and ended when the compute says goodbye,
//! goes away, stops acknowledging, or this node stops owning the database.

use std::sync::Arc;

use ebb_proto::storage::{RowChanges, WatchRowsRequest};
use tokio::sync::mpsc;

use crate::engine::Database;
use crate::engine::row_watch::Ending;

/// Opens a watch on `db` acknowledged by `acks`; its messages arrive on
/// the returned channel, which closes when the watch ends.
pub fn serve(db: Arc<Database>, mut acks: tonic::Streaming<WatchRowsRequest>) -> mpsc::UnboundedReceiver<RowChanges> {
    let (watch, rx) = db.row_watches.open();
    // (A lease configured at zero must not make a zero ping period.)
    let every = (db.cfg.row_watch_lease / 4).max(std::time::Duration::from_millis(1));
    tokio::spawn(async move {
        let mut ping = tokio::time::interval(every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ending = loop {
            tokio::select! {
                // Acknowledgements first: after a stall of this task (a busy
                // runtime) an ack that arrived meanwhile must count before
                // the tick checks the lease.
                biased;
                ack = acks.message() => match ack {
                    Ok(Some(a)) => {
                        if !watch.ack(a.acked) {
                            tracing::warn!(database = %db.name, acked = a.acked, "a row watch acknowledged messages never sent; ended");
                            break Ending::Abrupt;
                        }
                        if a.bye {
                            break Ending::Goodbye;
                        }
                    }
                    Ok(None) => break Ending::Abrupt,
                    Err(e) => {
                        tracing::debug!(database = %db.name, error = %e, "row watch broken");
                        break Ending::Abrupt;
                    }
                },
                _ = ping.tick() => {
                    // A node that no longer owns the database commits
                    // nothing more: its watches end (their computes' reads
                    // fail over to storage, which refuses them).
                    if db.check_owned().is_err() || !db.row_watches.ping(&watch) {
                        break Ending::Abrupt;
                    }
                }
            }
        };
        db.row_watches.close(&watch, ending);
    });
    rx
}
