//! Signals: graceful drain, the drain timeout, a second signal, SIGHUP reload.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

fn round_trip(c: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    c.write_all(msg).unwrap();
    let mut buf = vec![0u8; msg.len()];
    c.read_exact(&mut buf).unwrap();
    buf
}

fn config(drain: &str, targets: &str) -> String {
    format!("[gateway]\nshards = 2\ndrain_timeout = \"{drain}\"\n\n{targets}")
}

#[test]
fn sigterm_stops_accepting_lets_open_sessions_finish_then_exits_0() {
    let listen = free_addr();
    let mut sluice = Sluice::start(&config("30s", &tcp_target("t", listen, echo_server())));
    let mut open = TcpStream::connect(listen).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(round_trip(&mut open, b"before"), b"before");

    sluice.signal(libc::SIGTERM);
    assert!(
        sluice.wait_log("event=draining", Duration::from_secs(10)),
        "drain starts"
    );
    // New connections are refused: the listeners are closed.
    let refused = wait_for(Duration::from_secs(5), || TcpStream::connect(listen).err());
    assert!(refused.is_some(), "new connections refused while draining");
    // The open session keeps working while draining.
    assert_eq!(round_trip(&mut open, b"during"), b"during");
    assert!(
        sluice.wait_exit(Duration::from_millis(300)).is_none(),
        "waits for the session"
    );
    drop(open);
    let status = sluice
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the last session");
    assert_eq!(status.code(), Some(0));
    assert!(sluice.logs().contains("event=stopped"));
}

#[test]
fn drain_timeout_bounds_the_wait() {
    let listen = free_addr();
    let mut sluice = Sluice::start(&config("500ms", &tcp_target("t", listen, echo_server())));
    let mut open = TcpStream::connect(listen).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(round_trip(&mut open, b"x"), b"x");
    sluice.signal(libc::SIGINT);
    let status = sluice
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the drain timeout");
    assert_eq!(status.code(), Some(0));
    assert!(sluice.logs().contains("event=drain_timeout"));
}

#[test]
fn second_signal_exits_at_once() {
    let listen = free_addr();
    let mut sluice = Sluice::start(&config("60s", &tcp_target("t", listen, echo_server())));
    let mut open = TcpStream::connect(listen).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(round_trip(&mut open, b"x"), b"x");
    sluice.signal(libc::SIGTERM);
    assert!(sluice.wait_log("event=draining", Duration::from_secs(10)));
    sluice.signal(libc::SIGTERM);
    let status = sluice
        .wait_exit(Duration::from_secs(5))
        .expect("exits at once, not after 60 s");
    assert_eq!(status.code(), Some(130));
    assert!(sluice.logs().contains("event=exiting_now"));
}

#[test]
fn sighup_with_a_broken_config_keeps_the_running_one() {
    let listen = free_addr();
    let upstream = echo_server();
    let sluice = Sluice::start(&config("5s", &tcp_target("t", listen, upstream)));
    sluice.rewrite_config("[gateway]\nshards = \"many\"\n");
    sluice.signal(libc::SIGHUP);
    assert!(sluice.wait_log("event=reload_failed", Duration::from_secs(10)));
    let logs = sluice.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("event=reload_failed"))
        .unwrap();
    assert!(line.contains("sluice.toml:2:10: wrong type"), "{line}");
    assert!(line.contains("keeping=\"running configuration\""), "{line}");
    let mut c = TcpStream::connect(listen).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(round_trip(&mut c, b"still up"), b"still up");
}

#[test]
fn sighup_with_a_valid_config_applies_to_new_sessions() {
    let listen = free_addr();
    let first = echo_server();
    let (second, _) = greet_then_count_server();
    let sluice = Sluice::start(&config("5s", &tcp_target("t", listen, first)));
    let mut old = TcpStream::connect(listen).unwrap();
    old.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(round_trip(&mut old, b"one"), b"one");

    sluice.rewrite_config(&config("5s", &tcp_target("t", listen, second)));
    sluice.signal(libc::SIGHUP);
    assert!(sluice.wait_log("event=reloaded", Duration::from_secs(10)));
    // New sessions go to the new upstream (which greets) ...
    let greeted = wait_for(Duration::from_secs(5), || {
        let mut c = TcpStream::connect(listen).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut g = [0u8; 5];
        c.read_exact(&mut g).ok()?;
        (&g == b"hello").then_some(())
    });
    assert!(greeted.is_some(), "new sessions use the reloaded upstream");
    // ... while the open session was not dropped.
    assert_eq!(round_trip(&mut old, b"two"), b"two");
}

#[test]
fn a_port_in_use_fails_start_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap();
    // SO_REUSEPORT only shares with sockets that also set it; this one did not.
    let logs = Sluice::try_start(&config("5s", &tcp_target("t", listen, echo_server())), &[])
        .err()
        .expect("start must fail");
    assert!(logs.contains("event=fatal"), "{logs}");
    assert!(
        logs.contains(&format!("target `t`: cannot listen on {listen}")),
        "{logs}"
    );
}
