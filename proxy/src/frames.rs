//! Message boundaries on a relayed byte stream. After startup every
//! PostgreSQL message is a type byte and a 4-byte length; the tracker
//! follows them chunk by chunk without buffering bodies, so the relay can
//! count queries (`Q`, `S` from the client; `Z` from the server) and knows
//! whether it may inject a message of its own.

/// A length field that cannot be right.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid message length {0} for message type {1:?}")]
pub struct BadFrame(pub u32, pub char);

/// Follows message boundaries across chunks.
#[derive(Debug, Default)]
pub struct FrameTracker {
    header: [u8; 5],
    have: usize,
    remaining: usize,
}

impl FrameTracker {
    /// Feeds the next chunk; calls `on_message(type)` as each message's
    /// header completes.
    pub fn feed(&mut self, mut data: &[u8], mut on_message: impl FnMut(u8)) -> Result<(), BadFrame> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                let len = u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]);
                if len < 4 {
                    return Err(BadFrame(len, self.header[0] as char));
                }
                self.have = 0;
                self.remaining = len as usize - 4;
                on_message(self.header[0]);
            }
        }
        Ok(())
    }

    /// Whether the stream is between two messages.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(t: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![t];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn finds_messages_split_anywhere() {
        let mut stream = msg(b'Q', b"select 1\0");
        stream.extend(msg(b'S', b""));
        stream.extend(msg(b'X', b""));
        for split in 0..stream.len() {
            let mut t = FrameTracker::default();
            let mut seen = Vec::new();
            t.feed(&stream[..split], |m| seen.push(m)).unwrap();
            t.feed(&stream[split..], |m| seen.push(m)).unwrap();
            assert_eq!(seen, b"QSX", "split at {split}");
            assert!(t.at_boundary());
        }
        let mut t = FrameTracker::default();
        t.feed(&stream[..3], |_| {}).unwrap();
        assert!(!t.at_boundary());
    }

    #[test]
    fn a_bad_length_is_an_error() {
        let mut t = FrameTracker::default();
        assert_eq!(t.feed(&[b'Q', 0, 0, 0, 2], |_| {}), Err(BadFrame(2, 'Q')));
    }
}
