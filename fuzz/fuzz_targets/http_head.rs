//! Any bytes as an HTTP request head: complete, partial or a typed error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_protocols::{http, Status};

fuzz_target!(|data: &[u8]| {
    let mut headers = [http::Header::EMPTY; 32];
    if let Ok(Status::Complete(req, n)) = http::parse_request(data, &mut headers, 8192) {
        assert!(n <= data.len());
        let _ = (req.path(), req.query(), req.header("host"));
    }
});
