//! Server bytes: tagged messages; DataRow ranges and FunctionCallResponse
//! values must stay in bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_protocols::postgres::backend::{self, Backend};
use sluice_protocols::postgres::{frame, Framed};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Framed::Complete(f)) = frame(rest, 1 << 20) {
        let body = &rest[f.body()];
        match backend::parse(f.tag, body) {
            Ok(Backend::DataRow(row)) => {
                for r in row.ranges().flatten() {
                    assert!(r.end <= body.len());
                }
            }
            Ok(Backend::RowDescription(d)) => {
                let _ = d.columns().count();
            }
            Ok(Backend::FunctionCallResponse(r)) => {
                if let Some(range) = r.value_range() {
                    assert!(range.end <= body.len());
                    assert_eq!(r.value(), Some(&body[range]));
                }
            }
            Ok(Backend::ErrorResponse(f)) | Ok(Backend::NoticeResponse(f)) => {
                for (_, r) in f.value_ranges() {
                    assert!(r.end <= body.len());
                }
            }
            _ => {}
        }
        rest = &rest[f.len..];
    }
});
