//! The `WatchRows` call: one compute's row-change watch (see
//! `engine::row_watch`) kept alive — acknowledgements read as they come,
//! a ping every quarter lease — and ended when the compute goes away or
//! stops acknowledging.

use std::sync::Arc;

use ebb_proto::storage::{RowChanges, WatchRowsRequest};
use tokio::sync::mpsc;

use crate::engine::Database;

/// Opens a watch on `db` acknowledged by `acks`; its messages arrive on
/// the returned channel, which closes when the watch ends.
pub fn serve(db: Arc<Database>, mut acks: tonic::Streaming<WatchRowsRequest>) -> mpsc::UnboundedReceiver<RowChanges> {
    let (watch, rx) = db.row_watches.open();
    let every = db.cfg.row_watch_lease / 4;
    tokio::spawn(async move {
        let mut ping = tokio::time::interval(every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ack = acks.message() => match ack {
                    Ok(Some(a)) => watch.ack(a.acked),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(database = %db.name, error = %e, "row watch ended by its compute");
                        break;
                    }
                },
                _ = ping.tick() => {
                    if !db.row_watches.ping(&watch) {
                        break;
                    }
                }
            }
        }
        db.row_watches.close(&watch);
    });
    rx
}
