//! PostgreSQL's own regression suite, run exactly as `pg_regress` runs it (its
//! `PGOPTIONS` included), directly against one throw-away cluster and through a
//! Sluice target with no guardrails and no masking against another. Any test
//! that fails only through the gateway, or fails differently, fails this test.
//!
//! The suite (test files and built test libraries) lives outside the repository
//! in `../shared/conformance/` (or `SLUICE_CONFORMANCE_DIR`), and `pg_regress`
//! comes with Debian's `postgresql-server-dev-15`: `./test.sh` installs it and
//! runs this test when the suite is there (`cargo test --test conformance --
//! --ignored`).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sluice::localserver::{as_user, is_root};
use support::pg::*;
use support::*;

fn suite_dir() -> PathBuf {
    std::env::var_os("SLUICE_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance"))
}

/// What one `pg_regress` run reported.
struct Run {
    ran: usize,
    failed: BTreeSet<String>,
    out: PathBuf,
    seconds: f64,
}

fn pg_regress(tree: &Path, out: &Path, port: u16, password: Option<&str>) -> Run {
    let bindir = pg_bin("psql").expect("psql").parent().unwrap().to_owned();
    let regress = bindir.join("../lib/pgxs/src/test/regress/pg_regress");
    assert!(
        regress.exists(),
        "{} is missing: apt-get install postgresql-server-dev-15 (./test.sh does)",
        regress.display()
    );
    std::fs::create_dir_all(out).unwrap();
    chown_postgres(out);
    let mut cmd = as_user("postgres", &regress);
    if let Some(p) = password {
        // runuser keeps the environment, so the token reaches psql.
        cmd.env("PGPASSWORD", p);
    }
    let started = Instant::now();
    let o = cmd
        .arg("--host=127.0.0.1")
        .arg(format!("--port={port}"))
        .args([
            "--user=postgres",
            "--dbname=regression",
            "--no-locale",
            "--max-connections=4",
        ])
        .arg(format!(
            "--schedule={}",
            tree.join("regress/parallel_schedule").display()
        ))
        .arg(format!("--inputdir={}", tree.join("regress").display()))
        .arg(format!("--outputdir={}", out.display()))
        .arg(format!("--dlpath={}", tree.join("lib").display()))
        .arg(format!("--bindir={}", bindir.display()))
        .env("PGCONNECT_TIMEOUT", "20")
        .output()
        .expect("run pg_regress");
    let seconds = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut ran = 0;
    let mut failed = BTreeSet::new();
    for line in text.lines() {
        // `test name ... ok 12 ms`, `     name ... FAILED 40 ms` (also in groups).
        let Some((name, verdict)) = line.split_once(" ... ") else {
            continue;
        };
        let name = name.trim().trim_start_matches("test ").trim().to_owned();
        ran += 1;
        if !verdict.trim_start().starts_with("ok") {
            failed.insert(name);
        }
    }
    assert!(
        ran >= 200,
        "pg_regress ran only {ran} tests:\n{text}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    Run {
        ran,
        failed,
        out: out.to_owned(),
        seconds,
    }
}

fn chown_postgres(path: &Path) {
    if is_root() {
        let ok = Command::new("chown")
            .arg("-R")
            .arg("postgres:")
            .arg(path)
            .status()
            .expect("chown")
            .success();
        assert!(ok, "chown {}", path.display());
    }
}

#[test]
#[ignore = "needs ../shared/conformance; ./test.sh runs it when present"]
fn postgresql_regression_suite_passes_through_the_gateway_as_directly() {
    let suite = suite_dir();
    let tests = suite.join("pg-regress-15.18.tar.xz");
    let libs = suite.join("pg-regress-15.18-libs-x86_64.tar.xz");
    assert!(
        tests.exists() && libs.exists(),
        "the regression suite is not at {} (set SLUICE_CONFORMANCE_DIR)",
        suite.display()
    );
    // The server reads the suite's data files: a tree the postgres user owns.
    let tree = tempfile::Builder::new()
        .prefix("sluice-regress-")
        .tempdir()
        .unwrap();
    for archive in [&tests, &libs] {
        let ok = Command::new("tar")
            .arg("-xJf")
            .arg(archive)
            .arg("-C")
            .arg(tree.path())
            .status()
            .expect("tar")
            .success();
        assert!(ok, "unpack {}", archive.display());
    }
    chown_postgres(tree.path());

    let direct_pg = PgCluster::start();
    let direct = pg_regress(
        tree.path(),
        &tree.path().join("direct"),
        direct_pg.port,
        None,
    );
    drop(direct_pg);

    let gw_pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let addr = free_addr();
    let config = format!(
        "[gateway]\nshards = 2\n{}\n[audit]\ndir = \"{}\"\ndurability = \"batched\"\n\n{}",
        keys.identity_block(),
        dir.path().join("audit").display(),
        pg_target("regress", addr, gw_pg.addr(), "")
    );
    let _sluice = Sluice::start(&config);
    let now = sluice::identity::unix_now();
    let token = keys.key.sign(&serde_json::json!({
        "iss": ISSUER, "aud": "sluice", "sub": "pg_regress", "groups": ["agents"],
        "iat": now, "nbf": now, "exp": now + 3600,
    }));
    let through = pg_regress(
        tree.path(),
        &tree.path().join("gateway"),
        addr.port(),
        Some(&token),
    );

    // Tests failing both ways (the files are 15.18, the server may be a later
    // 15.x) must fail the same way.
    let mut only_gateway: Vec<String> =
        through.failed.difference(&direct.failed).cloned().collect();
    for name in through.failed.intersection(&direct.failed) {
        let result = |run: &Run| std::fs::read(run.out.join("results").join(format!("{name}.out")));
        if result(&direct).ok() != result(&through).ok() {
            only_gateway.push(format!("{name} (fails differently)"));
        }
    }
    eprintln!(
        "conformance: {} tests; direct {} failed in {:.0}s ({:?}); through Sluice {} failed in {:.0}s; gateway-only: {:?}",
        direct.ran,
        direct.failed.len(),
        direct.seconds,
        direct.failed,
        through.failed.len(),
        through.seconds,
        only_gateway
    );
    assert_eq!(direct.ran, through.ran, "both runs ran the whole schedule");
    if !only_gateway.is_empty() {
        let diffs =
            std::fs::read_to_string(through.out.join("regression.diffs")).unwrap_or_default();
        panic!(
            "tests failing only through the gateway: {only_gateway:?}\n{}",
            &diffs[..diffs.len().min(20_000)]
        );
    }
}
