//! Client bytes: startup packets, then tagged messages. Nothing may panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_protocols::postgres::{frame, frontend};
use sluice_protocols::Status;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    if let Ok(Status::Complete(_, n)) = frontend::parse_startup(rest, 10_000) {
        rest = &rest[n..];
    }
    while let Ok(Some(f)) = frame(rest, 1 << 20) {
        if rest.len() < f.len {
            break;
        }
        let _ = frontend::parse(f.tag, &rest[f.body()]);
        rest = &rest[f.len..];
    }
});
