//! Deterministic fuzz smoke in the ordinary test run: mutated recordings and
//! random bytes through every decoder and the classifier; nothing may panic and
//! every range handed out must stay in bounds. (`fuzz/` has the libFuzzer targets.)

use sluice_protocols::postgres::backend::{self, Backend};
use sluice_protocols::postgres::frontend::{Frontend, Param};
use sluice_protocols::postgres::{frame, frontend, Framed};
use sluice_protocols::sql::{classify, Dialect};
use sluice_protocols::{http, Status};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn pg_all(data: &[u8]) {
    let mut rest = data;
    if let Ok(Status::Complete(_, n)) = frontend::parse_startup(rest, 10_000) {
        rest = &rest[n..];
    }
    let in_body = |body: &[u8], v: &[u8]| {
        let at = v.as_ptr() as usize - body.as_ptr() as usize;
        assert!(at + v.len() <= body.len());
    };
    while let Ok(Framed::Complete(f)) = frame(rest, 1 << 20) {
        let body = &rest[f.body()];
        if let Ok(Frontend::Bind(bind)) = frontend::parse(f.tag, body) {
            for p in bind.params() {
                match p {
                    Ok(Param::Text(v) | Param::Binary(v)) => in_body(body, v),
                    Ok(Param::Null) => {}
                    Err(_) => break,
                }
            }
        }
        match backend::parse(f.tag, body) {
            Ok(Backend::DataRow(row)) => {
                for r in row.ranges().flatten() {
                    assert!(r.end <= body.len());
                }
            }
            Ok(Backend::FunctionCallResponse(r)) => {
                if let Some(v) = r.value() {
                    in_body(body, v);
                }
            }
            _ => {}
        }
        rest = &rest[f.len..];
    }
}

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(8) {
        if v.is_empty() {
            break;
        }
        let i = rng.below(v.len());
        match rng.below(4) {
            0 => v[i] ^= 1 << rng.below(8),
            1 => v[i] = rng.next() as u8,
            2 => {
                v.remove(i);
            }
            _ => v.insert(i, rng.next() as u8),
        }
    }
    v
}

#[test]
fn mutated_recordings_never_panic() {
    let recordings: [&[u8]; 4] = [
        include_bytes!("../testdata/psql.frontend.bin"),
        include_bytes!("../testdata/psql.backend.bin"),
        include_bytes!("../testdata/pgbench.frontend.bin"),
        include_bytes!("../testdata/pgbench.backend.bin"),
    ];
    let mut rng = Rng(0xfeed_beef);
    for _ in 0..3000 {
        let base = recordings[rng.below(4)];
        pg_all(&mutate(&mut rng, base));
    }
}

#[test]
fn random_bytes_never_panic_any_parser() {
    let mut rng = Rng(0x1234_5678_9abc);
    let alphabet = b"SELECT DELETE FROM WHERE ( ) ; ' \" $ $$ -- /* */ # ` \\ E'x' U&' \n";
    for _ in 0..20_000 {
        let len = rng.below(64);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(2) == 0 {
                    rng.next() as u8
                } else {
                    alphabet[rng.below(alphabet.len())]
                }
            })
            .collect();
        pg_all(&bytes);
        for d in [Dialect::Postgres, Dialect::Mysql] {
            let _ = classify(&bytes, d);
        }
        let mut headers = [http::Header::EMPTY; 8];
        if let Ok(Status::Complete(_, n)) = http::parse_request(&bytes, &mut headers, 4096) {
            assert!(n <= bytes.len());
        }
    }
}

/// Shell lines as an SSH client may send them: any bytes, with the shell's
/// own syntax dense among them. Reading them never panics or loops.
#[test]
fn random_shell_lines_never_panic() {
    let mut rng = Rng(0x5eed_5e11);
    let alphabet =
        b"rm -rf / ; && || | & $( ) ` ' \" \\ < > << <( 2>&1 { } = sudo sh -c eval * ? \n";
    for _ in 0..20_000 {
        let len = rng.below(48);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(4) == 0 {
                    rng.next() as u8
                } else {
                    alphabet[rng.below(alphabet.len())]
                }
            })
            .collect();
        let line = String::from_utf8_lossy(&bytes);
        if let Ok(commands) = sluice_protocols::shell::simple_commands(&line) {
            assert!(commands.len() <= line.len() + 1);
        }
        let _ = sluice_protocols::shell::glob("a*b?c*", &line);
    }
}
