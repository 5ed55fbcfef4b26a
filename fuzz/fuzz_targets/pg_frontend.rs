//! Client bytes: startup packets, then tagged messages. Nothing may panic, and
//! every `Bind` parameter lies inside its message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_protocols::postgres::frontend::{self, Frontend, Param};
use sluice_protocols::postgres::{frame, Framed};
use sluice_protocols::Status;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    if let Ok(Status::Complete(_, n)) = frontend::parse_startup(rest, 10_000) {
        rest = &rest[n..];
    }
    while let Ok(Framed::Complete(f)) = frame(rest, 1 << 20) {
        let body = &rest[f.body()];
        if let Ok(Frontend::Bind(bind)) = frontend::parse(f.tag, body) {
            for p in bind.params() {
                match p {
                    Ok(Param::Text(v) | Param::Binary(v)) => {
                        let at = v.as_ptr() as usize - body.as_ptr() as usize;
                        assert!(at + v.len() <= body.len());
                    }
                    Ok(Param::Null) => {}
                    Err(_) => break,
                }
            }
        }
        rest = &rest[f.len..];
    }
});
