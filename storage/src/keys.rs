//! Key layout of the per-database RocksDB instance.
//!
//! ```text
//! data row     'd' | table id (u32 BE) | memcomparable primary key | !commit_ts (u64 BE)
//! catalog      'd' | 0u32              | table id (u32 BE)         | !commit_ts
//! index entry  'd' | index id (u32 BE) | index values | [row key]  | !commit_ts
//! meta         'm' | name                                            (unversioned)
//! outbox       'o' | commit_ts (u64 BE)                              (local durability)
//! ```
//!
//! An index entry's value is the row's primary key (its data key without
//! the table prefix). Each indexed value is `0x00` for NULL or `0x01` and
//! its memcomparable encoding. The row key follows the values except in a
//! unique index whose values hold no NULL: two rows with the same values
//! then write the same key, so first-committer-wins and the row locks
//! catch the duplicate.
//!
//! Inverting the timestamp makes the newest version of a key sort first, so a
//! reader at snapshot `s` seeks to `pk | !s` and takes the first entry.

use crate::types::Datum;

pub use ebb_proto::row_keys::{DATA_PREFIX, table_of, table_prefix};
use ebb_proto::row_keys::{encode_bytes, encode_i16, encode_i32, encode_i64};

/// Prefix byte of unversioned metadata keys.
pub const META_PREFIX: u8 = b'm';
/// Prefix byte of the local-durability outbox.
pub const OUTBOX_PREFIX: u8 = b'o';
/// Table id of the catalog itself.
pub const CATALOG_TABLE_ID: u32 = 0;
/// First table id handed to user tables.
pub const FIRST_USER_TABLE_ID: u32 = 16;
/// Length of the timestamp suffix of a versioned key.
pub const TS_LEN: usize = 8;

/// The catalog key of a table definition.
pub fn catalog_key(table_id: u32) -> Vec<u8> {
    let mut k = table_prefix(CATALOG_TABLE_ID);
    k.extend_from_slice(&table_id.to_be_bytes());
    k
}

/// A metadata key.
pub fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![META_PREFIX];
    k.extend_from_slice(name.as_bytes());
    k
}

/// The outbox key of a commit (local durability mode).
pub fn outbox_key(commit_ts: u64) -> Vec<u8> {
    let mut k = vec![OUTBOX_PREFIX];
    k.extend_from_slice(&commit_ts.to_be_bytes());
    k
}

/// Appends the version suffix to a user key.
pub fn versioned(user_key: &[u8], ts: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(user_key.len() + TS_LEN);
    k.extend_from_slice(user_key);
    k.extend_from_slice(&(!ts).to_be_bytes());
    k
}

/// Splits a versioned key into its user key and commit timestamp.
pub fn split_versioned(key: &[u8]) -> Option<(&[u8], u64)> {
    if key.len() < TS_LEN + 5 {
        return None;
    }
    let (user, ts) = key.split_at(key.len() - TS_LEN);
    let mut b = [0u8; 8];
    b.copy_from_slice(ts);
    Some((user, !u64::from_be_bytes(b)))
}

/// The smallest byte string greater than every string that starts with `prefix`
/// (`None` if there is none, i.e. the prefix is all 0xFF).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut s = prefix.to_vec();
    while let Some(last) = s.pop() {
        if last != 0xFF {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

/// Appends the memcomparable encoding of a non-null key value: byte order of
/// the encoding equals the value order, and encodings are prefix-free.
pub fn encode_key_datum(d: &Datum, out: &mut Vec<u8>) {
    match d {
        Datum::Null => out.push(0),
        Datum::Bool(b) => out.push(*b as u8),
        Datum::I16(v) => encode_i16(*v, out),
        Datum::I32(v) | Datum::Date(v) => encode_i32(*v, out),
        Datum::I64(v) | Datum::Timestamp(v) => encode_i64(*v, out),
        Datum::Decimal(v) => out.extend_from_slice(&((*v as u128) ^ (1 << 127)).to_be_bytes()),
        Datum::F32(v) => {
            let v = if *v == 0.0 { 0.0f32 } else { *v };
            let bits = v.to_bits();
            let enc = if bits >> 31 == 1 { !bits } else { bits | (1 << 31) };
            out.extend_from_slice(&enc.to_be_bytes());
        }
        Datum::F64(v) => {
            let v = if *v == 0.0 { 0.0f64 } else { *v };
            let bits = v.to_bits();
            let enc = if bits >> 63 == 1 { !bits } else { bits | (1 << 63) };
            out.extend_from_slice(&enc.to_be_bytes());
        }
        Datum::Text(s) => encode_bytes(s.as_bytes(), out),
        Datum::Bytes(b) => encode_bytes(b, out),
    }
}

/// Appends one indexed value (see the module comment).
pub fn encode_index_datum(d: &Datum, out: &mut Vec<u8>) {
    if matches!(d, Datum::Null) {
        out.push(0);
    } else {
        out.push(1);
        encode_key_datum(d, out);
    }
}

/// The key of an index entry: `values` encoded after the index's prefix,
/// then `row_suffix` (the row's key without its table prefix) unless the
/// index is unique and no value is NULL.
pub fn index_entry_key(index_id: u32, values: &[&Datum], unique: bool, row_suffix: &[u8]) -> Vec<u8> {
    let mut k = table_prefix(index_id);
    for d in values {
        encode_index_datum(d, &mut k);
    }
    if !unique || values.iter().any(|d| matches!(d, Datum::Null)) {
        k.extend_from_slice(row_suffix);
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(d: Datum) -> Vec<u8> {
        let mut v = Vec::new();
        encode_key_datum(&d, &mut v);
        v
    }

    #[test]
    fn integer_order_is_preserved() {
        let vals = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        let encs: Vec<_> = vals.iter().map(|v| enc(Datum::I64(*v))).collect();
        assert!(encs.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn float_order_is_preserved() {
        let vals = [f64::NEG_INFINITY, -2.5, -0.0, 0.0, 1e-9, 3.0, f64::INFINITY];
        let encs: Vec<_> = vals.iter().map(|v| enc(Datum::F64(*v))).collect();
        assert!(encs.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(enc(Datum::F64(-0.0)), enc(Datum::F64(0.0)));
    }

    #[test]
    fn text_order_and_prefix_freedom() {
        let a = enc(Datum::Text("ab".into()));
        let b = enc(Datum::Text("ab\0".into()));
        let c = enc(Datum::Text("abc".into()));
        assert!(a < b && b < c);
        // A composite key (text, int) keeps text order first.
        let mut k1 = a.clone();
        encode_key_datum(&Datum::I32(99), &mut k1);
        let mut k2 = c.clone();
        encode_key_datum(&Datum::I32(-99), &mut k2);
        assert!(k1 < k2);
    }

    #[test]
    fn versions_sort_newest_first() {
        let k = b"dXXXXpk".to_vec();
        assert!(versioned(&k, 10) < versioned(&k, 9));
        assert_eq!(split_versioned(&versioned(&k, 42)), Some((&k[..], 42)));
    }

    #[test]
    fn unique_entries_collide_unless_null() {
        let (a, b) = (Datum::I32(7), Datum::Null);
        assert_eq!(index_entry_key(20, &[&a], true, b"r1"), index_entry_key(20, &[&a], true, b"r2"));
        assert_ne!(index_entry_key(20, &[&a], false, b"r1"), index_entry_key(20, &[&a], false, b"r2"));
        assert_ne!(index_entry_key(20, &[&a, &b], true, b"r1"), index_entry_key(20, &[&a, &b], true, b"r2"));
        // NULL sorts before every value.
        assert!(index_entry_key(20, &[&b], false, b"") < index_entry_key(20, &[&Datum::I32(i32::MIN)], false, b""));
    }

    #[test]
    fn successor() {
        assert_eq!(prefix_successor(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF]), None);
    }
}
