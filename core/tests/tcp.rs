//! The L4 pass-through, end to end through the real binary.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use support::*;

fn config(shards: usize, admin: std::net::SocketAddr, targets: &str) -> String {
    format!(
        "[gateway]\nshards = {shards}\nadmin = \"{admin}\"\ndrain_timeout = \"5s\"\n\n{targets}"
    )
}

/// Deterministic, non-repeating-looking bytes so a shifted or dropped chunk is caught.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn relays_100_mib_both_ways_byte_exact() {
    let upstream = echo_server();
    let listen = free_addr();
    let admin = free_addr();
    let _sluice = Sluice::start(&config(2, admin, &tcp_target("echo", listen, upstream)));

    const LEN: usize = 100 << 20;
    let data = pattern(LEN, 0x5eed);
    let mut client = TcpStream::connect(listen).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut writer = client.try_clone().unwrap();
    let to_send = data.clone();
    let sender = thread::spawn(move || {
        for chunk in to_send.chunks(256 * 1024) {
            writer.write_all(chunk).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut echoed = Vec::with_capacity(LEN);
    client.read_to_end(&mut echoed).unwrap();
    sender.join().unwrap();
    assert_eq!(echoed.len(), LEN, "every byte came back");
    let first_diff = echoed.iter().zip(&data).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "bytes differ from offset {first_diff:?}");

    let metrics = wait_for(Duration::from_secs(5), || {
        let (_, m) = http_get(admin, "/metrics");
        let total: f64 = (0..2)
            .filter_map(|s| metric(&m, &format!("sluice_bytes_total{{target=\"echo\",shard=\"{s}\",direction=\"client_to_upstream\"}}")))
            .sum();
        (total == LEN as f64).then_some(m)
    });
    assert!(metrics.is_some(), "bytes_total counts the 100 MiB");
}

#[test]
fn client_half_close_reaches_upstream_and_reply_still_arrives() {
    let upstream = reply_after_eof_server();
    let listen = free_addr();
    let _sluice = Sluice::start(&config(1, free_addr(), &tcp_target("t", listen, upstream)));
    let mut c = TcpStream::connect(listen).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(&[7u8; 12345]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "got 12345 bytes");
}

#[test]
fn upstream_half_close_reaches_client_and_client_can_keep_sending() {
    let (upstream, counted) = greet_then_count_server();
    let listen = free_addr();
    let _sluice = Sluice::start(&config(1, free_addr(), &tcp_target("t", listen, upstream)));
    let mut c = TcpStream::connect(listen).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut greeting = Vec::new();
    c.read_to_end(&mut greeting).unwrap(); // EOF arrives: the upstream's FIN passed through
    assert_eq!(greeting, b"hello");
    c.write_all(&[1u8; 70_000]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let got = wait_for(Duration::from_secs(10), || {
        let n = counted.load(Ordering::SeqCst);
        (n != u64::MAX).then_some(n)
    });
    assert_eq!(got, Some(70_000));
}

#[test]
fn thousand_concurrent_connections_are_served_on_every_shard() {
    const N: usize = 1000;
    const SHARDS: usize = 4;
    let upstream = echo_server();
    let listen = free_addr();
    let admin = free_addr();
    let _sluice = Sluice::start(&config(
        SHARDS,
        admin,
        &tcp_target("fleet", listen, upstream),
    ));

    let mut conns: Vec<TcpStream> = (0..N)
        .map(|i| {
            let c = TcpStream::connect(listen).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            c
        })
        .collect();
    // All N are open at once; each now round-trips its own message.
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(format!("conn-{i:04}").as_bytes()).unwrap();
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let mut buf = [0u8; 9];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, format!("conn-{i:04}").as_bytes());
    }
    let (_, m) = http_get(admin, "/metrics");
    let per_shard: Vec<f64> = (0..SHARDS)
        .map(|s| {
            metric(
                &m,
                &format!("sluice_connections_open{{target=\"fleet\",shard=\"{s}\"}}"),
            )
            .unwrap()
        })
        .collect();
    assert_eq!(
        per_shard.iter().sum::<f64>(),
        N as f64,
        "all open at once: {per_shard:?}"
    );
    assert!(
        per_shard.iter().all(|&n| n > 0.0),
        "every shard serves some: {per_shard:?}"
    );
    drop(conns);
    let closed = wait_for(Duration::from_secs(10), || {
        let (_, m) = http_get(admin, "/metrics");
        let open: f64 = (0..SHARDS)
            .filter_map(|s| {
                metric(
                    &m,
                    &format!("sluice_connections_open{{target=\"fleet\",shard=\"{s}\"}}"),
                )
            })
            .sum();
        (open == 0.0).then_some(())
    });
    assert!(closed.is_some(), "connections_open returns to 0");
}

#[test]
fn unreachable_upstream_closes_the_client_and_counts_an_error() {
    let dead = free_addr(); // nothing listens here
    let listen = free_addr();
    let admin = free_addr();
    let sluice = Sluice::start(&config(1, admin, &tcp_target("dead", listen, dead)));
    let mut c = TcpStream::connect(listen).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let n = c.read_to_end(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without data");
    assert!(sluice.wait_log(
        "event=upstream_connect_failed target=dead",
        Duration::from_secs(5)
    ));
    let (_, m) = http_get(admin, "/metrics");
    assert_eq!(
        metric(
            &m,
            "sluice_errors_total{kind=\"upstream_connect\",source=\"upstream\",shard=\"0\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn epoll_driver_relays_too() {
    let upstream = echo_server();
    let listen = free_addr();
    let cfg = config(2, free_addr(), &tcp_target("t", listen, upstream))
        .replace("[gateway]\n", "[gateway]\nio = \"epoll\"\n");
    let sluice = Sluice::start(&cfg);
    assert!(sluice.logs().contains("driver=epoll"));
    let mut c = TcpStream::connect(listen).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let data = pattern(3 << 20, 9);
    let mut w = c.try_clone().unwrap();
    let d2 = data.clone();
    let t = thread::spawn(move || {
        w.write_all(&d2).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    t.join().unwrap();
    assert!(back == data);
}

#[test]
fn admin_answers_health_and_json_errors() {
    let admin = free_addr();
    let _sluice = Sluice::start(&config(
        2,
        admin,
        &tcp_target("t", free_addr(), echo_server()),
    ));
    assert_eq!(
        http_get(admin, "/healthz"),
        (200, r#"{"status":"ok"}"#.to_owned())
    );
    let (status, body) = http_get(admin, "/nope");
    assert_eq!((status, body.as_str()), (404, r#"{"error":"not found"}"#));
    let (status, _) = http_request(admin, "POST", "/metrics");
    assert_eq!(status, 405);
    let (status, m) = http_get(admin, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(metric(&m, "sluice_shards"), Some(2.0));
    assert!(m.contains("sluice_session_duration_seconds{quantile=\"0.99\"}"));
    // Garbage gets a JSON 400, not a hang or a crash.
    let (_, out) = http_exchange(admin, "GET / HTTP/1.1\nHost: x\n\n");
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    assert!(
        out.ends_with(r#"{"error":"bare CR or LF in the request head"}"#),
        "{out}"
    );
}
