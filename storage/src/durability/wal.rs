//! WAL objects: the commit log in the object store.
//!
//! Each object `wal/<seq>` holds one group of commits. Objects are written
//! create-only, so a sequence number can be taken exactly once: when a new
//! owner writes a fencing object at the next free number, the old owner's
//! next write collides with it and the old owner learns it was fenced.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message;

use super::objects::{CreateOutcome, Objects};
use crate::error::{Result, StorageError};

const MAGIC: &[u8; 8] = b"EBBWAL1\n";

/// How many WAL puts one owner keeps in flight at most; it starts the put at
/// sequence `n` only once the put at `n - WAL_PIPELINE_DEPTH` has landed. An
/// opening owner claims this many sequence numbers in a row past the newest
/// object it finds, which is what keeps a previous owner that is still
/// running from landing anything after them. Part of the on-store protocol:
/// raising it needs every opener to claim at least as many.
pub const WAL_PIPELINE_DEPTH: usize = 4;

/// One WAL object: a group of commits written by one owner.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WalObject {
    /// Fencing epoch of the writer.
    #[prost(uint64, tag = "1")]
    pub epoch: u64,
    /// Unique id of the writing process.
    #[prost(string, tag = "2")]
    pub writer_id: String,
    /// Sequence number (also the object name).
    #[prost(uint64, tag = "3")]
    pub seq: u64,
    /// Commits in timestamp order.
    #[prost(message, repeated, tag = "4")]
    pub commits: Vec<WalCommit>,
}

/// One committed transaction.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WalCommit {
    #[prost(uint64, tag = "1")]
    pub commit_ts: u64,
    #[prost(message, repeated, tag = "2")]
    pub ops: Vec<WalOp>,
    /// Tables whose data is removed by this commit (DROP TABLE).
    #[prost(uint32, repeated, tag = "3")]
    pub dropped_tables: Vec<u32>,
}

/// One key written by a commit.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WalOp {
    /// The user key (without version suffix).
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The new row; absent for a delete.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub value: Option<Vec<u8>>,
}

impl WalObject {
    /// Serialises the object.
    pub fn encode_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(MAGIC.len() + self.encoded_len());
        out.extend_from_slice(MAGIC);
        self.encode(&mut out).expect("a Vec grows as needed");
        Bytes::from(out)
    }

    /// Parses an object read from the store.
    pub fn decode_bytes(b: &[u8]) -> Result<Self> {
        let body = b
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| StorageError::Corrupt("WAL object has no ebb header".into()))?;
        WalObject::decode(body).map_err(|e| StorageError::Corrupt(format!("WAL object: {e}")))
    }

    /// The newest commit timestamp in this object (0 if it has none).
    pub fn max_ts(&self) -> u64 {
        self.commits.iter().map(|c| c.commit_ts).max().unwrap_or(0)
    }
}

/// Object name of a WAL sequence number.
pub fn wal_key(seq: u64) -> String {
    format!("wal/{seq:020}")
}

/// Sequence numbers of the WAL objects present, ascending.
pub async fn list_wal(objects: &Objects) -> Result<Vec<u64>> {
    let mut seqs: Vec<u64> = objects.list("wal").await?.iter().filter_map(|(n, _)| n.parse().ok()).collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// Reads one WAL object; `None` if it was deleted meanwhile.
pub async fn read_wal(objects: &Objects, seq: u64) -> Result<Option<WalObject>> {
    match objects.get(&wal_key(seq)).await? {
        Some(b) => Ok(Some(WalObject::decode_bytes(&b)?)),
        None => Ok(None),
    }
}

/// Appends WAL objects for the owner of a database.
pub struct WalWriter {
    objects: Objects,
    database: String,
    writer_id: String,
    epoch: u64,
    next_seq: u64,
    /// seq → newest commit timestamp, for every object known to exist.
    index: BTreeMap<u64, u64>,
}

/// What a failed append means.
#[derive(Debug)]
pub enum AppendError {
    /// Another node owns the database now. Final.
    Fenced,
    /// The store failed; the same append may be retried.
    Store(StorageError),
}

impl WalWriter {
    /// A writer that continues after `index` (objects already present).
    pub fn new(
        objects: Objects,
        database: String,
        writer_id: String,
        epoch: u64,
        index: BTreeMap<u64, u64>,
    ) -> Self {
        let next_seq = index.keys().next_back().map(|s| s + 1).unwrap_or(1);
        Self { objects, database, writer_id, epoch, next_seq, index }
    }

    /// The writer id stamped into every object.
    pub fn writer_id(&self) -> &str {
        &self.writer_id
    }

    /// The next sequence number to be written.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// WAL objects known to exist.
    pub fn object_count(&self) -> usize {
        self.index.len()
    }

    /// A handle that puts objects at reserved sequence numbers without
    /// holding the writer (the commit pipeline keeps several puts in flight).
    pub fn putter(&self) -> WalPutter {
        WalPutter { objects: self.objects.clone(), writer_id: self.writer_id.clone(), epoch: self.epoch }
    }

    /// Takes the next sequence number for a put that is about to start.
    /// Objects must be [`record`](Self::record)ed in sequence order once they exist.
    pub fn reserve(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Notes that the object at `seq` exists and holds commits up to `max_ts`.
    pub fn record(&mut self, seq: u64, max_ts: u64) {
        self.index.insert(seq, max_ts);
        self.next_seq = self.next_seq.max(seq + 1);
    }

    /// Writes `commits` as the next object. On `Store` errors nothing is
    /// consumed and the call may be repeated with the same commits.
    pub async fn append(&mut self, commits: Vec<WalCommit>) -> Result<u64, AppendError> {
        let seq = self.next_seq;
        let max_ts = self.putter().put(seq, commits).await?;
        self.record(seq, max_ts);
        Ok(seq)
    }

    /// The oldest WAL objects whose commits are all at or below
    /// `applied_ts` (they are covered by a checkpoint), oldest first, up to
    /// the first object that is still needed, so that deleting them opens no
    /// gap in the sequence. The newest object is never among them: it marks
    /// the highest sequence number taken, which fencing relies on. Deleting
    /// them ([`Covered::delete`]) needs no hold on the writer, which the
    /// commit pipeline needs for every put; [`forget`](Self::forget) those
    /// deleted afterwards.
    pub fn covered(&self, applied_ts: u64) -> Covered {
        let newest = self.index.keys().next_back().copied();
        let seqs = self.index.iter().take_while(|(seq, max)| **max <= applied_ts && Some(**seq) != newest).map(|(s, _)| *s).collect();
        Covered { objects: self.objects.clone(), database: self.database.clone(), seqs }
    }

    /// Forgets objects that were deleted.
    pub fn forget(&mut self, deleted: &[u64]) {
        for seq in deleted {
            self.index.remove(seq);
        }
    }
}

/// WAL objects a checkpoint covers (see [`WalWriter::covered`]).
pub struct Covered {
    objects: Objects,
    database: String,
    /// Their sequence numbers, oldest first.
    pub seqs: Vec<u64>,
}

impl Covered {
    /// Deletes them oldest first and stops at the first failure, so that no
    /// gap opens; returns how many it deleted, and the failure.
    pub async fn delete(&self) -> (usize, Result<()>) {
        for (done, seq) in self.seqs.iter().enumerate() {
            if let Err(e) = self.objects.delete(&wal_key(*seq)).await {
                return (done, Err(e));
            }
        }
        if !self.seqs.is_empty() {
            tracing::debug!(database = %self.database, deleted = self.seqs.len(), "truncated WAL");
        }
        (self.seqs.len(), Ok(()))
    }
}

/// Puts WAL objects for one writer at sequence numbers it reserved.
#[derive(Clone)]
pub struct WalPutter {
    objects: Objects,
    writer_id: String,
    epoch: u64,
}

impl WalPutter {
    /// Writes `commits` at `seq`, create-only; returns the newest commit
    /// timestamp written. Finding our own object there (an earlier attempt
    /// landed) is success; finding somebody else's means we were fenced.
    /// On `Store` errors the same call may be repeated.
    pub async fn put(&self, seq: u64, commits: Vec<WalCommit>) -> Result<u64, AppendError> {
        let obj = WalObject { epoch: self.epoch, writer_id: self.writer_id.clone(), seq, commits };
        let max_ts = obj.max_ts();
        match self.objects.put_if_absent(&wal_key(seq), obj.encode_bytes()).await {
            Ok(CreateOutcome::Created) => Ok(max_ts),
            Ok(CreateOutcome::AlreadyExists) => match read_wal(&self.objects, seq).await {
                Ok(Some(existing)) if existing.writer_id == self.writer_id => Ok(max_ts),
                Ok(_) => Err(AppendError::Fenced),
                Err(e) => Err(AppendError::Store(e)),
            },
            Err(e) => Err(AppendError::Store(e)),
        }
    }
}
