//! Protocol drivers: each glues a client socket and an upstream socket to a codec
//! and asks policy, masking and audit along the way. Drivers hold no parsing of
//! their own; wire formats live in `sluice-protocols`.
//!
//! - [`http`]: HTTP/1.1 APIs behind bearer tokens (`protocol = "http"`).
//! - [`postgres`]: PostgreSQL protocol 3.0 (`protocol = "postgres"`).
//! - [`tcp`]: plain L4 pass-through (`protocol = "tcp"`).
//! - [`tls`]: rustls configurations for clients and upstreams.

pub mod http;

/// Extra work per request or read, only in a deliberately slowed build
/// (`--features bench-slowdown`): it proves the load-test gate catches a
/// regression (`SMOKE_FEATURES=sluice/bench-slowdown loadtest/smoke.sh`).
#[inline(always)]
pub fn bench_slowdown() {
    #[cfg(feature = "bench-slowdown")]
    {
        let v = vec![0x5au8; 2 << 20];
        std::hint::black_box(v.clone());
    }
}

pub mod postgres;
pub mod tcp;
pub mod tls;
pub mod upstream;

/// The target's masking profile (detectors and column rules), if it has one.
pub fn masking_profile(
    config: &sluice_config::Config,
    target: &sluice_config::Target,
) -> Result<Option<sluice_masking::Profile>, String> {
    let Some(name) = &target.masking else {
        return Ok(None);
    };
    let Some(p) = config.masking.get(name) else {
        return Ok(None);
    };
    let detectors: Vec<&str> = p.detectors.iter().map(String::as_str).collect();
    let columns: Vec<(&str, &str)> = p
        .columns
        .iter()
        .map(|(c, s)| (c.as_str(), s.as_str()))
        .collect();
    sluice_masking::Profile::with_key(&detectors, &columns, p.hash_key)
        .map(|profile| Some(profile.with_entities(p.entities.clone())))
}

/// The events (of `events`, plus hang-up and error) a socket has right now,
/// without waiting: how an idle session notices its peer without reading.
pub fn poll_now(fd: std::os::fd::RawFd, events: i16) -> i16 {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout; the caller owns the fd.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    if n > 0 {
        p.revents
    } else {
        0
    }
}
