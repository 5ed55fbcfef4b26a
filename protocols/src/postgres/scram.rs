//! SCRAM-SHA-256 client (RFC 5802 / RFC 7677) for logging in to the upstream.
//!
//! Sans-IO: the caller passes the nonce (randomness is an argument) and moves the
//! messages in `SASLInitialResponse`/`SASLResponse` frames. Channel binding is not
//! used (`n,,`), so `SCRAM-SHA-256-PLUS` is never chosen.
//!
//! ```
//! use sluice_protocols::postgres::scram::ScramClient;
//! let mut c = ScramClient::new("pencil", "rOprNGfwEbeRWgbNEkqO");
//! assert_eq!(c.client_first(), "n,,n=,r=rOprNGfwEbeRWgbNEkqO");
//! ```

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

pub const MECHANISM: &str = "SCRAM-SHA-256";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM server message")]
    Malformed,
    #[error("server nonce does not extend ours")]
    Nonce,
    #[error("iteration count out of range")]
    Iterations,
    #[error("server signature does not match: the server does not know the password")]
    ServerSignature,
    #[error("server error: {0}")]
    Server(String),
    #[error("SCRAM messages out of order")]
    State,
}

enum State {
    Initial,
    SentFirst,
    SentFinal { server_signature: [u8; 32] },
    Done,
}

pub struct ScramClient {
    password: String,
    nonce: String,
    state: State,
    client_first_bare: String,
}

impl ScramClient {
    /// `nonce` must be fresh and unpredictable (printable ASCII, no comma).
    pub fn new(password: &str, nonce: &str) -> Self {
        ScramClient {
            password: password.to_owned(),
            nonce: nonce.to_owned(),
            state: State::Initial,
            client_first_bare: String::new(),
        }
    }

    /// The client-first message. PostgreSQL ignores the SCRAM user name (it uses the
    /// startup user), so it is left empty as libpq does.
    pub fn client_first(&mut self) -> String {
        self.client_first_bare = format!("n=,r={}", self.nonce);
        self.state = State::SentFirst;
        format!("n,,{}", self.client_first_bare)
    }

    /// Takes server-first, returns client-final.
    pub fn handle_server_first(&mut self, server_first: &[u8]) -> Result<String, ScramError> {
        if !matches!(self.state, State::SentFirst) {
            return Err(ScramError::State);
        }
        let server_first = std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed)?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in server_first.split(',') {
            match attr.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = Some(B64.decode(v).map_err(|_| ScramError::Malformed)?),
                Some(("i=", v)) => {
                    iterations = Some(v.parse::<u32>().map_err(|_| ScramError::Malformed)?)
                }
                Some(("e=", v)) => return Err(ScramError::Server(v.to_owned())),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(ScramError::Malformed);
        };
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Nonce);
        }
        if iterations == 0 || iterations > 10_000_000 {
            return Err(ScramError::Iterations);
        }
        let salted = hi(self.password.as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(client_signature.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac(&salted, b"Server Key");
        let server_signature = hmac(&server_key, auth_message.as_bytes());
        self.state = State::SentFinal { server_signature };
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks server-final: proves the server knew the password too.
    pub fn handle_server_final(&mut self, server_final: &[u8]) -> Result<(), ScramError> {
        let State::SentFinal { server_signature } = self.state else {
            return Err(ScramError::State);
        };
        let text = std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed)?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ScramError::Server(e.to_owned()));
        }
        let v = text
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or(ScramError::Malformed)?;
        let got = B64.decode(v).map_err(|_| ScramError::Malformed)?;
        if got != server_signature {
            return Err(ScramError::ServerSignature);
        }
        self.state = State::Done;
        Ok(())
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one output block (RFC 5802's `Hi`).
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mac = HmacSha256::new_from_slice(password).expect("HMAC takes any key length");
    let mut m = mac.clone();
    m.update(salt);
    m.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = m.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        let mut m = mac.clone();
        m.update(&u);
        u = m.finalize().into_bytes().into();
        out.iter_mut().zip(u.iter()).for_each(|(o, x)| *o ^= x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3 test vector (user "user", password "pencil"); PostgreSQL
    /// leaves `n=` empty, so the vector's exchange is replayed with its own bare.
    #[test]
    fn rfc7677_vector() {
        let mut c = ScramClient::new("pencil", "rOprNGfwEbeRWgbNEkqO");
        c.client_first();
        c.client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO".to_owned();
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let fin = c.handle_server_first(server_first).unwrap();
        assert_eq!(
            fin,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.handle_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
    }

    #[test]
    fn rejects_a_wrong_server_signature_and_foreign_nonce() {
        let mut c = ScramClient::new("pencil", "abc");
        c.client_first();
        assert_eq!(
            c.handle_server_first(b"r=xyz1,s=AAAA,i=4096"),
            Err(ScramError::Nonce)
        );
        let mut c = ScramClient::new("pencil", "abc");
        c.client_first();
        c.handle_server_first(b"r=abcdef,s=AAAA,i=16").unwrap();
        assert_eq!(
            c.handle_server_final(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(ScramError::ServerSignature)
        );
    }
}
