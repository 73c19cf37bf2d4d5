//! The byte form of a row's key: `'d' | table id (u32 BE) | memcomparable
//! primary key`. Storage keys its rows by it (storage's `keys` module adds
//! the version suffix and the other value types); compute keys its row
//! cache by it, because storage's row-change watch names changed rows in
//! these bytes. One encoding, here, so the two cannot drift apart.

/// Prefix byte of versioned data (and catalog) keys.
pub const DATA_PREFIX: u8 = b'd';

/// The key prefix of every row of a table: `'d' | table id`.
pub fn table_prefix(table_id: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    k.push(DATA_PREFIX);
    k.extend_from_slice(&table_id.to_be_bytes());
    k
}

/// The table id of a user key (`'d' | table id | pk`).
pub fn table_of(user_key: &[u8]) -> Option<u32> {
    if user_key.len() < 5 || user_key[0] != DATA_PREFIX {
        return None;
    }
    Some(u32::from_be_bytes([user_key[1], user_key[2], user_key[3], user_key[4]]))
}

/// Appends a `smallint` key value.
pub fn encode_i16(v: i16, out: &mut Vec<u8>) {
    out.extend_from_slice(&((v as u16) ^ 0x8000).to_be_bytes());
}

/// Appends an `integer` (or `date`) key value.
pub fn encode_i32(v: i32, out: &mut Vec<u8>) {
    out.extend_from_slice(&((v as u32) ^ 0x8000_0000).to_be_bytes());
}

/// Appends a `bigint` (or `timestamp`) key value.
pub fn encode_i64(v: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
}

/// Appends a text or bytes key value: 0x00 escaped as 0x00 0xFF and a
/// 0x00 0x01 terminator, which keeps byte order and makes encodings
/// prefix-free.
pub fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    for &c in b {
        out.push(c);
        if c == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_keep_their_order() {
        let enc = |v: i64| {
            let mut out = Vec::new();
            encode_i64(v, &mut out);
            out
        };
        let vals = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        assert!(vals.windows(2).all(|w| enc(w[0]) < enc(w[1])));
        let mut k = table_prefix(42);
        encode_i32(-1, &mut k);
        assert_eq!(table_of(&k), Some(42));
        assert_eq!(table_of(b"m1234"), None);
    }
}
