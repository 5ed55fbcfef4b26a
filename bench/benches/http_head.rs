//! HTTP/1.1 request-head parsing: `sluice_protocols::http` against `httparse` on the
//! same heads (both zero-copy, both filling a caller-provided header array).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sluice_protocols::{http, Status};

const SMALL: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:9470\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";
const TYPICAL: &[u8] = b"POST /v1/customers/4711/notes?expand=owner HTTP/1.1\r\n\
Host: api.internal.example.com\r\n\
User-Agent: agent-fleet/2.3 (+https://example.com)\r\n\
Accept: application/json\r\n\
Accept-Encoding: gzip, deflate\r\n\
Content-Type: application/json\r\n\
Content-Length: 128\r\n\
Authorization: Bearer eyJhbGciOiJFZERTQSIsImtpZCI6ImRldiJ9.eyJzdWIiOiJhZ2VudC0xIiwiZ3JvdXBzIjpbImFnZW50cyJdfQ.c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl\r\n\
X-Request-Id: 3f1c2a9e-5b7d-4c1e-9a8f-2b6d4e8c0a1f\r\n\
Connection: keep-alive\r\n\r\n";

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("http_request_head");
    for (name, input) in [("small", SMALL), ("typical", TYPICAL)] {
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(format!("sluice/{name}"), |b| {
            b.iter(|| {
                let mut headers = [http::Header::EMPTY; 32];
                match http::parse_request(black_box(input), &mut headers, 16 * 1024) {
                    Ok(Status::Complete(r, n)) => black_box((r.headers.len(), n)),
                    _ => unreachable!("benchmark input is a complete head"),
                }
            })
        });
        g.bench_function(format!("httparse/{name}"), |b| {
            b.iter(|| {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(black_box(input)) {
                    Ok(httparse::Status::Complete(n)) => black_box((req.headers.len(), n)),
                    _ => unreachable!("benchmark input is a complete head"),
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
