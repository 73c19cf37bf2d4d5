//! MVCC garbage collection: a RocksDB compaction filter that drops versions
//! no snapshot can see any more — everything older than the newest version at
//! or below the oldest live snapshot (`gc_ts`).

use std::ffi::{CStr, CString};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::CompactionDecision as Decision;
use rocksdb::compaction_filter::CompactionFilter;
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};

use crate::keys::{DATA_PREFIX, split_versioned};

/// Creates one `VersionFilter` per compaction.
pub struct VersionGcFactory {
    gc_ts: Arc<AtomicU64>,
    name: CString,
}

impl VersionGcFactory {
    /// A factory reading the GC horizon from `gc_ts`.
    pub fn new(gc_ts: Arc<AtomicU64>) -> Self {
        Self { gc_ts, name: CString::new("ebb-mvcc-gc").expect("no NUL in name") }
    }
}

impl CompactionFilterFactory for VersionGcFactory {
    type Filter = VersionFilter;

    fn create(&mut self, context: CompactionFilterContext) -> VersionFilter {
        VersionFilter {
            gc_ts: self.gc_ts.load(Ordering::SeqCst),
            full: context.is_full_compaction,
            current: Vec::new(),
            kept_visible: false,
            name: self.name.clone(),
        }
    }

    fn name(&self) -> &CStr {
        &self.name
    }
}

/// Sees the keys of one compaction in order: versions of a key newest first.
pub struct VersionFilter {
    gc_ts: u64,
    full: bool,
    current: Vec<u8>,
    kept_visible: bool,
    name: CString,
}

impl CompactionFilter for VersionFilter {
    fn filter(&mut self, _level: u32, key: &[u8], value: &[u8]) -> Decision {
        if key.first() != Some(&DATA_PREFIX) {
            return Decision::Keep;
        }
        let Some((user, ts)) = split_versioned(key) else { return Decision::Keep };
        if user != self.current.as_slice() {
            self.current.clear();
            self.current.extend_from_slice(user);
            self.kept_visible = false;
        }
        if ts > self.gc_ts {
            return Decision::Keep;
        }
        if !self.kept_visible {
            self.kept_visible = true;
            // The version a snapshot at gc_ts reads. A delete marker can go
            // only when this compaction sees every file (nothing older hides below).
            if value.is_empty() && self.full {
                return Decision::Remove;
            }
            return Decision::Keep;
        }
        Decision::Remove
    }

    fn name(&self) -> &CStr {
        &self.name
    }
}
