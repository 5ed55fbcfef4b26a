//! Any bytes as an HTTP message: request or response head, its framing, and the
//! chunked body after it. Every outcome is complete, partial or a typed error,
//! and the chunked decoder never reports more data than it was given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_protocols::{http, Status};

fuzz_target!(|data: &[u8]| {
    let mut headers = [http::Header::EMPTY; 32];
    if let Ok(Status::Complete(req, n)) = http::parse_request(data, &mut headers, 8192) {
        assert!(n <= data.len());
        let _ = http::request_framing(&req, 1 << 20);
    }
    let mut headers = [http::Header::EMPTY; 32];
    if let Ok(Status::Complete(resp, n)) = http::parse_response(data, &mut headers, 8192) {
        assert!(n <= data.len());
        let _ = http::response_framing(&resp, "GET");
    }
    // The whole input as a chunked body, fed in two pieces split at its first byte's value.
    let split = data.first().map_or(0, |&b| b as usize).min(data.len());
    let mut d = http::ChunkedDecoder::new(1 << 20);
    let mut pending = Vec::new();
    let mut data_bytes = 0usize;
    for piece in [&data[..split], &data[split..]] {
        pending.extend_from_slice(piece);
        loop {
            match d.decode(&pending) {
                Ok(r) => {
                    assert!(r.consumed <= pending.len() && r.data.end <= r.consumed);
                    data_bytes += r.data.len();
                    pending.drain(..r.consumed);
                    if r.done || r.consumed == 0 {
                        break;
                    }
                }
                Err(_) => return,
            }
        }
    }
    assert!(data_bytes <= data.len());
    assert!(data_bytes as u64 <= d.total());
});
