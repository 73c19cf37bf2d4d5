//! Cancel keys: the compute hands each session a (pid, secret) pair in
//! BackendKeyData; the proxy notes which compute it came from, so that a
//! cancel request arriving on a new connection reaches that compute.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// Which compute each live session's cancel key belongs to.
#[derive(Debug, Default)]
pub struct CancelKeys {
    keys: Mutex<HashMap<(i32, Vec<u8>), SocketAddr>>,
}

impl CancelKeys {
    /// Records a session's key.
    pub fn insert(&self, pid: i32, secret: Vec<u8>, compute: SocketAddr) {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).insert((pid, secret), compute);
    }

    /// Forgets a key when its session ends.
    pub fn remove(&self, pid: i32, secret: &[u8]) {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).remove(&(pid, secret.to_vec()));
    }

    /// The compute of a key.
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<SocketAddr> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).get(&(pid, secret.to_vec())).copied()
    }
}
