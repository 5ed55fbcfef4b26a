//! A small blocking PostgreSQL client on `sluice-protocols`: startup, trust /
//! cleartext / MD5 / SCRAM login, simple and extended queries. Enough to drive
//! load without measuring a driver's own overhead.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Result};
use sluice_protocols::postgres::backend::{self, Auth, Backend};
use sluice_protocols::postgres::scram::{ScramClient, MECHANISM};
use sluice_protocols::postgres::{encode, frame, Framed};

pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    out: Vec<u8>,
}

/// What a query returned.
#[derive(Debug, Default)]
pub struct Outcome {
    pub rows: u64,
    pub bytes: u64,
    pub error: Option<String>,
}

impl Conn {
    pub fn connect(addr: SocketAddr, user: &str, db: &str, password: &str) -> Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut c = Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            out: Vec::with_capacity(4096),
        };
        encode::startup_message(
            &mut c.out,
            &[
                ("user", user),
                ("database", db),
                ("application_name", "sluice-loadtest"),
            ],
        );
        c.flush()?;
        let mut scram: Option<ScramClient> = None;
        loop {
            let (tag, body) = c.next()?;
            match backend::parse(tag, &body)? {
                Backend::Authentication(Auth::Ok) => {}
                Backend::Authentication(Auth::CleartextPassword) => {
                    encode::password(&mut c.out, password.as_bytes())
                }
                Backend::Authentication(Auth::Md5Password { salt }) => encode::password(
                    &mut c.out,
                    encode::md5_password(user, password, salt).as_bytes(),
                ),
                Backend::Authentication(Auth::Sasl(_)) => {
                    let mut nonce = [0u8; 18];
                    getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("random: {e}"))?;
                    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
                    let mut s = ScramClient::new(password, &nonce);
                    encode::sasl_initial_response(
                        &mut c.out,
                        MECHANISM,
                        s.client_first().as_bytes(),
                    );
                    scram = Some(s);
                }
                Backend::Authentication(Auth::SaslContinue(d)) => {
                    let fin = scram
                        .as_mut()
                        .ok_or_else(|| anyhow::anyhow!("no SASL"))?
                        .handle_server_first(d)?;
                    encode::sasl_response(&mut c.out, fin.as_bytes());
                }
                Backend::Authentication(Auth::SaslFinal(d)) => scram
                    .as_mut()
                    .ok_or_else(|| anyhow::anyhow!("no SASL"))?
                    .handle_server_final(d)?,
                Backend::Authentication(other) => bail!("unsupported authentication {other:?}"),
                Backend::ErrorResponse(f) => bail!(
                    "login refused: {}",
                    String::from_utf8_lossy(f.get(b'M').unwrap_or_default())
                ),
                Backend::ReadyForQuery(_) => return Ok(c),
                _ => {}
            }
            if !c.out.is_empty() {
                c.flush()?;
            }
        }
    }

    fn flush(&mut self) -> Result<()> {
        self.stream.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// The next whole message.
    fn next(&mut self) -> Result<(u8, Vec<u8>)> {
        loop {
            if let Framed::Complete(f) = frame(&self.buf, 1 << 30)? {
                let body = self.buf[f.body()].to_vec();
                self.buf.drain(..f.len);
                return Ok((f.tag, body));
            }
            let mut chunk = [0u8; 32 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!("connection closed");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads to `ReadyForQuery`, counting rows and keeping the first error.
    fn collect(&mut self) -> Result<Outcome> {
        let mut o = Outcome::default();
        loop {
            let (tag, body) = self.next()?;
            match tag {
                b'D' => {
                    o.rows += 1;
                    o.bytes += body.len() as u64;
                }
                b'E' if o.error.is_none() => {
                    if let Ok(Backend::ErrorResponse(f)) = backend::parse(tag, &body) {
                        o.error = Some(
                            String::from_utf8_lossy(f.get(b'M').unwrap_or_default()).into_owned(),
                        );
                    }
                }
                b'Z' => return Ok(o),
                _ => {}
            }
        }
    }

    pub fn simple(&mut self, sql: &str) -> Result<Outcome> {
        encode::query(&mut self.out, sql.as_bytes());
        self.flush()?;
        self.collect()
    }

    /// Parses a named statement once.
    pub fn prepare(&mut self, name: &str, sql: &str) -> Result<()> {
        encode::parse(&mut self.out, name.as_bytes(), sql.as_bytes(), &[]);
        self.out.extend_from_slice(b"S\0\0\0\x04");
        self.flush()?;
        let o = self.collect()?;
        match o.error {
            Some(e) => bail!("prepare failed: {e}"),
            None => Ok(()),
        }
    }

    /// Bind (text parameters) + Execute + Sync of a prepared statement.
    pub fn execute(&mut self, name: &str, params: &[&str]) -> Result<Outcome> {
        encode::message(&mut self.out, b'B', |o| {
            o.push(0);
            o.extend_from_slice(name.as_bytes());
            o.push(0);
            o.extend_from_slice(&0i16.to_be_bytes());
            o.extend_from_slice(&(params.len() as i16).to_be_bytes());
            for p in params {
                o.extend_from_slice(&(p.len() as i32).to_be_bytes());
                o.extend_from_slice(p.as_bytes());
            }
            o.extend_from_slice(&0i16.to_be_bytes());
        });
        encode::message(&mut self.out, b'E', |o| {
            o.push(0);
            o.extend_from_slice(&0i32.to_be_bytes());
        });
        self.out.extend_from_slice(b"S\0\0\0\x04");
        self.flush()?;
        self.collect()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut out = Vec::new();
        encode::terminate(&mut out);
        let _ = self.stream.write_all(&out);
    }
}
