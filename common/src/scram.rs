//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL uses it: the stored
//! verifier `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`
//! (compute writes it for `CREATE ROLE … PASSWORD`) and the server side of
//! the exchange (the proxy runs it). Channel binding is not offered.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Iterations for new verifiers (PostgreSQL's default).
pub const ITERATIONS: u32 = 4096;
/// The mechanism name.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// A stored password verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

/// A malformed verifier or exchange message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM verifier")]
    BadVerifier,
    #[error("malformed SCRAM message: {0}")]
    BadMessage(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("password authentication failed")]
    WrongPassword,
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(data);
    m.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// PBKDF2-HMAC-SHA256 with one output block (RFC 5802's `Hi`).
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

impl Verifier {
    /// A verifier for `password` with a fresh random salt.
    pub fn new(password: &str) -> Self {
        let salt: [u8; 16] = rand::random();
        Self::with_salt(password, &salt, ITERATIONS)
    }

    /// A verifier no password matches, for a role that does not exist or
    /// has none. The exchange then runs as for a real role — the same salt
    /// for the same name within this process, as PostgreSQL's mock salt —
    /// without the PBKDF2 work, so unknown names cost no CPU and a client
    /// cannot tell them apart.
    pub fn mock(name: &str) -> Self {
        static SECRET: std::sync::LazyLock<[u8; 32]> = std::sync::LazyLock::new(rand::random);
        let salt = hmac(&*SECRET, name.as_bytes())[..16].to_vec();
        let server_key: [u8; 32] = rand::random();
        let client_key: [u8; 32] = rand::random();
        Self { iterations: ITERATIONS, salt, stored_key: sha256(&client_key), server_key }
    }

    /// A verifier for `password` with the given salt and iterations.
    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = hi(password.as_bytes(), salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        Self { iterations, salt: salt.to_vec(), stored_key: sha256(&client_key), server_key: hmac(&salted, b"Server Key") }
    }

    /// Parses PostgreSQL's text form.
    pub fn parse(s: &str) -> Result<Self, ScramError> {
        let rest = s.strip_prefix("SCRAM-SHA-256$").ok_or(ScramError::BadVerifier)?;
        let (params, keys) = rest.split_once('$').ok_or(ScramError::BadVerifier)?;
        let (iters, salt) = params.split_once(':').ok_or(ScramError::BadVerifier)?;
        let (stored, server) = keys.split_once(':').ok_or(ScramError::BadVerifier)?;
        let key = |k: &str| -> Result<[u8; 32], ScramError> {
            B64.decode(k).ok().and_then(|v| v.try_into().ok()).ok_or(ScramError::BadVerifier)
        };
        Ok(Self {
            iterations: iters.parse().map_err(|_| ScramError::BadVerifier)?,
            salt: B64.decode(salt).map_err(|_| ScramError::BadVerifier)?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// PostgreSQL's text form.
    pub fn to_text(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

/// The server side of one exchange, between the client's first and final
/// messages.
#[derive(Debug)]
pub struct ServerExchange {
    verifier: Verifier,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    gs2_header: String,
}

impl ServerExchange {
    /// Reads the client-first-message and returns the exchange with the
    /// server-first-message to send.
    pub fn start(verifier: Verifier, client_first: &str) -> Result<(Self, String), ScramError> {
        // gs2-header: "n,," or "y,," (client supports binding, server offered none); "p=…" is binding.
        let (cbind, rest) = client_first.split_once(',').ok_or(ScramError::BadMessage("no GS2 header"))?;
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::BadMessage("bad channel-binding flag")),
        }
        let (_authzid, bare) = rest.split_once(',').ok_or(ScramError::BadMessage("no GS2 header"))?;
        let gs2_header = format!("{cbind},{_authzid},");
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::BadMessage("no client nonce"))?;
        let server_nonce: [u8; 18] = rand::random();
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&verifier.salt), verifier.iterations);
        let ex = Self { verifier, client_first_bare: bare.to_string(), server_first: server_first.clone(), nonce, gs2_header };
        Ok((ex, server_first))
    }

    /// Checks the client-final-message; returns the server-final-message.
    pub fn finish(self, client_final: &str) -> Result<String, ScramError> {
        let (without_proof, proof) = client_final.rsplit_once(",p=").ok_or(ScramError::BadMessage("no proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                binding = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            }
        }
        if binding != Some(B64.encode(self.gs2_header.as_bytes()).as_str()) {
            return Err(ScramError::BadMessage("channel binding data does not match"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::BadMessage("nonce does not match"));
        }
        let proof: [u8; 32] = B64.decode(proof).ok().and_then(|p| p.try_into().ok()).ok_or(ScramError::BadMessage("bad proof"))?;
        let auth_message = format!("{},{},{}", self.client_first_bare, self.server_first, without_proof);
        let signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ signature[i];
        }
        // Constant-time comparison of the derived StoredKey.
        let diff = sha256(&client_key).iter().zip(self.verifier.stored_key.iter()).fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff != 0 {
            return Err(ScramError::WrongPassword);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

/// The client side, for tests.
pub mod client {
    use super::*;

    /// The client-final-message for `password` after `server_first`.
    pub fn final_message(password: &str, client_first_bare: &str, server_first: &str) -> String {
        let attr = |k: &str| server_first.split(',').find_map(|a| a.strip_prefix(k)).unwrap_or_default().to_string();
        let (nonce, salt, iters) = (attr("r="), B64.decode(attr("s=")).unwrap_or_default(), attr("i=").parse().unwrap_or(ITERATIONS));
        let salted = hi(password.as_bytes(), &salt, iters);
        let client_key = hmac(&salted, b"Client Key");
        let without_proof = format!("c={},r={nonce}", B64.encode(b"n,,"));
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = hmac(&sha256(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(sig.iter()).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_mock_verifier_keeps_its_salt_per_name_and_matches_no_password() {
        let a = Verifier::mock("nobody");
        assert_eq!(a.salt, Verifier::mock("nobody").salt, "same salt for the same name");
        assert_ne!(a.salt, Verifier::mock("someone").salt);
        assert_eq!(a.iterations, ITERATIONS);
        for password in ["", "nobody", "password"] {
            let real = Verifier::with_salt(password, &a.salt, a.iterations);
            assert_ne!(real.stored_key, a.stored_key);
        }
    }

    use super::*;

    #[test]
    fn verifiers_round_trip_and_match_rfc7677() {
        // RFC 7677's example: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations.
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = Verifier::with_salt("pencil", &salt, 4096);
        let (mut ex, server_first) = ServerExchange::start(v.clone(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        // Replace the random server nonce with the RFC's to check the proof and signature.
        let rfc_nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        ex.nonce = rfc_nonce.into();
        ex.server_first = format!("r={rfc_nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        assert!(server_first.starts_with("r=rOprNGfwEbeRWgbNEkqO"));
        let final_msg = format!("c=biws,r={rfc_nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert_eq!(ex.finish(&final_msg).unwrap(), "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        assert_eq!(Verifier::parse(&v.to_text()).unwrap(), v);
        assert_eq!(Verifier::parse("md5abc"), Err(ScramError::BadVerifier));
    }

    #[test]
    fn a_wrong_password_fails_and_binding_is_refused() {
        let v = Verifier::new("right");
        let (ex, server_first) = ServerExchange::start(v.clone(), "n,,n=,r=abc").unwrap();
        let wrong = client::final_message("wrong", "n=,r=abc", &server_first);
        assert_eq!(ex.finish(&wrong), Err(ScramError::WrongPassword));
        let (ex, server_first) = ServerExchange::start(v.clone(), "n,,n=,r=abc").unwrap();
        assert!(ex.finish(&client::final_message("right", "n=,r=abc", &server_first)).is_ok());
        assert_eq!(ServerExchange::start(v, "p=tls-server-end-point,,n=,r=x").unwrap_err(), ScramError::ChannelBinding);
    }
}
