//! The harness's own servers work, with real clients through a tcp target.

mod support;

use support::*;

#[test]
fn postgres_cluster_serves_psql_through_a_tcp_target() {
    let pg = PgCluster::start();
    assert_eq!(pg.psql("SELECT 40 + 2"), "42");
    let listen = free_addr();
    let _sluice = Sluice::start(&format!(
        "[gateway]\nshards = 2\n\n{}",
        tcp_target("pg", listen, pg.addr())
    ));
    pg.psql("CREATE TABLE t (id int primary key, note text)");
    let out = psql(
        listen,
        "postgres",
        "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g RETURNING 1",
    )
    .expect("psql through sluice");
    assert_eq!(out.lines().count(), 5000);
    assert_eq!(
        psql(listen, "postgres", "SELECT count(*) FROM t").unwrap(),
        "5000"
    );
}

#[test]
fn mariadb_serves_its_client_through_a_tcp_target() {
    let db = MariaDb::start();
    let listen = free_addr();
    let _sluice = Sluice::start(&format!(
        "[gateway]\nshards = 1\n\n{}",
        tcp_target("maria", listen, db.addr())
    ));
    assert_eq!(
        mariadb_query(listen, "SELECT 6 * 7").expect("mariadb through sluice"),
        "42"
    );
}

#[test]
fn pgbench_runs_through_a_tcp_target() {
    let pg = PgCluster::start();
    let listen = free_addr();
    let _sluice = Sluice::start(&format!(
        "[gateway]\nshards = 2\n\n{}",
        tcp_target("pg", listen, pg.addr())
    ));
    let pgbench = |args: &[&str]| {
        std::process::Command::new("pgbench")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &listen.port().to_string(),
                "-U",
                "postgres",
            ])
            .args(args)
            .arg("postgres")
            .output()
            .expect("pgbench")
    };
    let init = pgbench(&["-i", "-s", "1", "-q"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let run = pgbench(&["-c", "8", "-j", "2", "-t", "200", "-S", "-M", "extended"]);
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        out.contains("number of transactions actually processed: 1600/1600"),
        "{out}"
    );
}
