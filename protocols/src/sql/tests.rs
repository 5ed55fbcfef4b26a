//! The classifier against a corpus of statements with known verdicts, every trick
//! of the guardrails issue included, plus invariance properties.

use super::*;

/// Flags as letters: `u` unbounded, `w` writes, `o` opaque, `r` sets the role,
/// `p` sets the search path; a client encoding set to `8` UTF-8, `e` another safe
/// one, `E` an unsafe or unknown one.
fn flags(s: &Statement) -> String {
    use crate::postgres::encoding::Class;
    let f = s.flags;
    [
        (f.unbounded, 'u'),
        (f.writes, 'w'),
        (f.opaque, 'o'),
        (s.has(Kind::SetRole), 'r'),
        (s.has(Kind::SetSearchPath), 'p'),
        (f.encoding == Some(Class::Utf8), '8'),
        (f.encoding == Some(Class::Safe), 'e'),
        (f.encoding == Some(Class::Unsafe), 'E'),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, c)| *c)
    .collect()
}

fn verdicts(sql: &str, d: Dialect) -> Vec<(String, String)> {
    classify(sql.as_bytes(), d)
        .iter()
        .map(|s| (s.kind.as_str().to_owned(), flags(s)))
        .collect()
}

/// `(sql, "kind flags; kind flags")` for PostgreSQL.
const PG: &[(&str, &str)] = &[
    // Plain reads.
    ("SELECT 1", "select"),
    ("select * from orders where id = $1", "select"),
    ("  \n\tSELECT\n1  ", "select"),
    ("(SELECT 1) UNION (SELECT 2)", "select"),
    ("VALUES (1), (2)", "select"),
    ("TABLE orders", "select"),
    ("SELECT * FROM orders FOR UPDATE", "select"),
    ("SELECT * FROM orders FOR NO KEY UPDATE SKIP LOCKED", "select"),
    ("WITH x AS (SELECT 1) SELECT * FROM x", "select"),
    ("WITH RECURSIVE t(n) AS (VALUES (1) UNION ALL SELECT n+1 FROM t WHERE n < 5) SELECT * FROM t", "select"),
    ("SELECT count(*) FROM (SELECT * FROM orders) sub", "select"),
    ("SELECT 'DELETE FROM orders'", "select"),
    ("SELECT $$DROP TABLE orders$$", "select"),
    ("SELECT $tag$ ; DROP TABLE orders; $tag$", "select"),
    ("SELECT \"delete\" FROM \"drop\"", "select"),
    ("SELECT 1 -- ; DROP TABLE orders", "select"),
    ("SELECT 1 /* ; DROP TABLE orders */", "select"),
    ("SELECT 1 /* nested /* ; DROP TABLE t */ still comment */", "select"),
    ("SELECT E'\\'; DROP TABLE orders; --'", "select"),
    ("SELECT 'it''s; DROP TABLE t'", "select"),
    ("SELECT U&'d\\0061t\\+000061'", "select"),
    ("SELECT U&\"d;rop\" FROM t", "select"),
    ("SELECT U&'!0061' UESCAPE '!'", "select"),
    ("SELECT a$$b FROM t", "select"),
    ("SELECT x'DEAD', b'1010', n'text'", "select"),
    ("SELECT 1.5e10, .5, 0x1F", "select"),
    ("SHOW search_path", "show"),
    ("EXPLAIN SELECT 1", "explain"),
    ("EXPLAIN DELETE FROM orders", "explain"),
    ("explain (costs off) update orders set x = 1", "explain"),
    // Writes.
    ("INSERT INTO orders VALUES (1)", "insert w"),
    ("INSERT INTO orders SELECT * FROM staging", "insert w"),
    ("INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET v = 2", "insert w"),
    ("UPDATE orders SET paid = true WHERE id = 1", "update w"),
    ("UPDATE orders SET paid = true", "update uw"),
    ("update orders set note = (select note from x where y = 1)", "update uw"),
    ("UPDATE orders SET paid = true WHERE CURRENT OF c", "update w"),
    ("DELETE FROM orders WHERE id = 1", "delete w"),
    ("DELETE FROM orders", "delete uw"),
    ("delete from orders using customers", "delete uw"),
    ("DeLeTe FrOm orders", "delete uw"),
    ("DELETE/**/FROM orders", "delete uw"),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", "delete w"),
    ("MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id)", "insert w"),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED AND s.x THEN UPDATE SET a = 1 WHEN NOT MATCHED THEN INSERT VALUES (1)", "update w"),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = 1 WHEN MATCHED THEN DELETE", "delete w"),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DO NOTHING", "merge w"),
    ("MERGE INTO t USING (SELECT 'THEN DELETE' AS x) s ON true WHEN MATCHED THEN DO NOTHING", "merge w"),
    ("WITH s AS (SELECT 1 AS id) MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", "delete w"),
    // Hidden writes: the most dangerous kind anywhere wins.
    ("WITH x AS (DELETE FROM orders RETURNING *) SELECT * FROM x", "delete uw"),
    ("WITH x AS (DELETE FROM orders WHERE id = 1 RETURNING *) SELECT * FROM x", "delete w"),
    ("WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT 1", "update uw"),
    ("WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT * FROM x", "insert w"),
    ("WITH a AS (SELECT 1), b AS (DELETE FROM t WHERE x RETURNING 1) SELECT * FROM a, b", "delete w"),
    ("WITH x AS (SELECT 1) DELETE FROM orders", "delete uw"),
    ("WITH x AS (SELECT id FROM t) UPDATE orders SET a = 1 WHERE id IN (SELECT id FROM x)", "update w"),
    ("WITH x AS NOT MATERIALIZED (DELETE FROM t RETURNING 1) SELECT 1", "delete uw"),
    ("EXPLAIN ANALYZE DELETE FROM orders", "delete uw"),
    ("EXPLAIN (ANALYZE, BUFFERS) UPDATE orders SET a = 1 WHERE id = 2", "update w"),
    ("explain analyse select 1", "explain"),
    ("SELECT * INTO backup FROM orders", "create w"),
    ("WITH x AS (SELECT 1) SELECT * INTO t2 FROM x", "create w"),
    ("CREATE TABLE t2 AS SELECT * FROM orders", "create w"),
    ("COPY (DELETE FROM orders RETURNING *) TO STDOUT", "delete uw"),
    ("COPY orders TO STDOUT", "copy"),
    ("COPY orders FROM STDIN", "copy w"),
    ("COPY orders TO PROGRAM 'curl evil'", "program wo"),
    ("COPY orders FROM PROGRAM 'rm -rf /'", "program wo"),
    ("COPY (SELECT 1) TO PROGRAM 'id'", "program wo"),
    ("PREPARE p AS DELETE FROM orders", "delete uw"),
    ("PREPARE p (int) AS SELECT * FROM orders WHERE id = $1", "prepare"),
    ("DECLARE c CURSOR FOR SELECT * FROM orders", "select"),
    // DDL and privileges.
    ("CREATE TABLE t (id int)", "create w"),
    ("CREATE INDEX CONCURRENTLY i ON t (a)", "create w"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ DELETE FROM t; SELECT 1 $$", "create uwo"),
    ("CREATE OR REPLACE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN EXECUTE x; END $$", "create wo"),
    ("CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", "create wo"),
    ("CREATE TABLE functions (id int)", "create w"),
    ("CREATE TABLE t2 (x) AS EXECUTE p", "create wo"),
    ("CREATE FOREIGN TABLE ft (a text) SERVER loop OPTIONS (table_name 'customers')", "create wo"),
    ("CREATE USER MAPPING FOR app SERVER loop", "create wo"),
    ("IMPORT FOREIGN SCHEMA public FROM SERVER loop INTO s", "alter wo"),
    ("COPY t FROM '/etc/passwd'", "copy wo"),
    ("CREATE TABLE t (rule text, program text, trigger int)", "create w"),
    ("CREATE OR REPLACE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql", "create wo"),
    ("CREATE CONSTRAINT TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", "create wo"),
    ("CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()", "create wo"),
    ("CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = f)", "create wo"),
    ("CREATE CAST (int AS text) WITH FUNCTION f(int)", "create wo"),
    ("COPY log (program) FROM STDIN", "copy w"),
    ("ALTER TABLE orders ADD COLUMN x int", "alter w"),
    ("ALTER SYSTEM SET fsync = off", "alter wo"),
    ("DROP TABLE orders", "drop w"),
    ("drop table if exists orders cascade", "drop w"),
    ("DROP/* hi */TABLE orders", "drop w"),
    ("TRUNCATE orders", "truncate w"),
    ("GRANT SELECT ON orders TO public", "grant w"),
    ("REVOKE ALL ON orders FROM bob", "revoke w"),
    ("REFRESH MATERIALIZED VIEW mv", "alter w"),
    // Sessions and transactions.
    ("BEGIN", "begin"),
    ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", "begin"),
    ("SAVEPOINT a", "begin"),
    ("COMMIT", "commit"),
    ("END", "commit"),
    ("RELEASE SAVEPOINT a", "commit"),
    ("ROLLBACK", "rollback"),
    ("ROLLBACK TO SAVEPOINT a", "rollback"),
    ("ABORT", "rollback"),
    ("PREPARE TRANSACTION 'x'", "commit"),
    ("SET statement_timeout = 0", "set"),
    ("SET search_path = evil, public", "set_search_path p"),
    ("set SESSION search_path to evil", "set_search_path p"),
    ("SET LOCAL search_path = x", "set_search_path p"),
    ("SET search_path TO DEFAULT", "set"),
    ("SET ROLE admin", "set_role r"),
    ("SET LOCAL ROLE 'admin'", "set_role r"),
    ("SET ROLE NONE", "set"),
    ("SET ROLE none", "set"),
    ("SET ROLE 'none'", "set"),
    ("SET ROLE 'NONE'", "set_role r"),
    ("SELECT set_config('role', 'None', false)", "set_role r"),
    ("UPDATE pg_settings SET setting = 'admin' WHERE name = 'role'", "set_role worpE"),
    ("update \"pg_settings\" set setting = 'SJIS' where name = 'client_encoding'", "set_role worpE"),
    ("SELECT name, setting FROM pg_settings WHERE name = 'role'", "select"),
    ("ALTER ROLE CURRENT_USER SET search_path = evil, public", "alter wp"),
    ("ALTER DATABASE d SET client_encoding = 'SJIS'", "alter wE"),
    ("ALTER FUNCTION f() SET role = admin", "alter wr"),
    ("ALTER ROLE r SET statement_timeout = '5s'", "alter w"),
    ("ALTER TABLE t SET SCHEMA s", "alter w"),
    ("ALTER FUNCTION f(set text) SET search_path = evil", "alter wp"),
    ("SELECT set_config('rol\\e', 'admin', false)", "set_role orpE"),
    ("UPDATE U&\"pg\\005fsettings\" SET setting = 'x' WHERE name = 'role'", "set_role worpE"),
    ("CREATE SCHEMA s CREATE TABLE t (a int) CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", "create wo"),
    ("CREATE EXTENSION hstore", "create wo"),
    ("CREATE SCHEMA s CREATE TABLE t (a int)", "create w"),
    ("SET local_preload_libraries = 'x'", "set o"),
    ("SELECT * FROM ts_stat('SELECT to_tsvector(set_config(''role'',''admin'',false))')", "select wo"),
    ("SELECT E'\\x81\\x5c'", "select"),
    ("SELECT E'caf\u{e9}\\n'", "select o"),
    ("SET SESSION AUTHORIZATION postgres", "set_role r"),
    ("SET SESSION SESSION AUTHORIZATION postgres", "set_role r"),
    ("SET SESSION AUTHORIZATION DEFAULT", "set"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", "set"),
    ("SET SCHEMA 'evil'", "set_search_path p"),
    ("SET TRANSACTION READ ONLY", "set"),
    ("SET TIME ZONE 'UTC'", "set"),
    ("RESET ROLE", "set"),
    ("RESET search_path", "set"),
    ("RESET ALL", "set"),
    ("SET application_name = 'names'", "set"),
    ("SET my.names = 'client_encoding'", "set"),
    ("SET client_encoding TO UTF8", "set 8"),
    ("SET client_encoding = 'latin1'", "set e"),
    ("SET client_encoding = 'windows936'", "set E"),
    ("SET client_encoding = DEFAULT", "set"),
    ("SET client_encoding = E'SJIS'", "set E"),
    ("SET NAMES 'SJIS'", "set E"),
    ("SET NAMES 'UTF8'", "set 8"),
    ("SET NAMES", "set"),
    ("SET \"client_encoding\" = 'BIG5'", "set E"),
    ("SELECT set_config('search_path', 'evil', false)", "set_search_path p"),
    ("SELECT pg_catalog.set_config('role', 'x', true)", "set_role r"),
    ("SELECT set_config('TimeZone', 'UTC', false)", "set"),
    ("SELECT set_config('client_encoding', 'SJIS', false)", "set E"),
    ("SELECT set_config('client_encoding', $1, false)", "set E"),
    ("SELECT set_config('app.tenant', $1, true)", "set"),
    ("SELECT set_config($1, 'x', false)", "set_role orpE"),
    ("SELECT set_config('search' || '_path', 'x', false)", "set_role orpE"),
    ("SELECT set_config(E'role', 'x', false)", "set_role orpE"),
    ("DEALLOCATE ALL", "deallocate"),
    ("DISCARD ALL", "other w"),
    ("LISTEN jobs", "listen"),
    ("UNLISTEN *", "listen"),
    ("NOTIFY jobs, 'x'", "notify"),
    ("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE", "lock"),
    ("VACUUM ANALYZE orders", "vacuum w"),
    ("ANALYZE orders", "vacuum w"),
    ("CHECKPOINT", "vacuum w"),
    // Code the gateway cannot see.
    ("DO $$ BEGIN EXECUTE 'DROP TABLE orders'; END $$", "drop wo"),
    ("EXECUTE p", "execute wo"),
    ("CALL cleanup()", "call wo"),
    ("SELECT dblink_exec('dbname=x', 'DROP TABLE t')", "select wo"),
    ("SELECT * FROM dblink('x', 'select 1') AS t(a int)", "select wo"),
    ("SELECT query_to_xml('delete from t', true, true, '')", "select wo"),
    ("SELECT lo_import('/etc/passwd')", "select wo"),
    ("SELECT \"set_config\"('search_path', 'x', false)", "set_search_path p"),
    ("SELECT nextval('s')", "select wo"),
    ("SELECT pg_read_binary_file('/etc/shadow')", "select wo"),
    ("SELECT * FROM pg_ls_logdir()", "select wo"),
    ("SELECT dblink_connect('x')", "select wo"),
    ("SELECT lo_export(1, '/tmp/x')", "select wo"),
    ("SELECT pg_create_logical_replication_slot('s', 'p')", "select wo"),
    ("SELECT pg_terminate_backend(42)", "select wo"),
    ("SELECT pg_reload_conf()", "select wo"),
    ("SELECT lower(name), count(*) FROM t GROUP BY 1", "select"),
    ("LOAD 'evil.so'", "other wo"),
    ("FROBNICATE everything", "other wo"),
    ("SELECT 'unterminated", "other wo"),
    ("SELECT 1 /* unterminated", "other wo"),
    ("SELECT $x$ unterminated", "other wo"),
    ("SELECT \"unterminated", "other wo"),
    ("42", "other wo"),
    // standard_conforming_strings ambiguity: backslash-quote could end the string.
    ("SELECT 'a\\'; DROP TABLE orders; --'", "other wo"),
    // Found in review: CR ends a `--` comment; quoted EXPLAIN options; a column
    // named `key` before a DML; quoted SET targets; U& function names.
    ("SELECT 1 --\r; DROP TABLE t", "select; drop w"),
    ("--\rDROP TABLE t", "drop w"),
    ("EXPLAIN (\"analyze\") DELETE FROM t", "delete uw"),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r WHERE n<2) SEARCH DEPTH FIRST BY n SET key DELETE FROM victims", "delete uw"),
    ("SET \"role\" TO admin", "set_role r"),
    ("SET U&\"\\0072ole\" TO admin", "set_role orpE"),
    ("SET session_authorization = 'x'", "set_role r"),
    ("SELECT U&\"set_config\"('role','admin',false)", "set_role worpE"),
    ("SELECT U&\"\\0073et_config\"('role','admin',false)", "set_role worpE"),
    // Multiple statements are judged one by one.
    ("SELECT 1; DROP TABLE orders", "select; drop w"),
    ("SELECT 1;;; SELECT 2;", "select; select"),
    ("BEGIN; DELETE FROM orders WHERE id = 1; COMMIT", "begin; delete w; commit"),
    ("SELECT ';'; DELETE FROM t", "select; delete uw"),
    ("/* only a comment */", ""),
    ("", ""),
    (";", ""),
];

/// MySQL dialect specifics.
const MY: &[(&str, &str)] = &[
    ("SELECT 1", "select"),
    ("SELECT `delete` FROM `drop`", "select"),
    ("SELECT 1 # ; DROP TABLE t", "select"),
    ("SELECT 1 -- ; DROP TABLE t", "select"),
    ("SELECT 1 --1; DROP TABLE t", "select; drop w"),
    ("SELECT 'a\\'; DROP TABLE t; -- '", "select"),
    ("SELECT \"a\\\"; DROP TABLE t\"", "select"),
    ("SELECT 1 /*! ; DROP TABLE t */", "select; drop w"),
    ("/*!50000 DROP TABLE t */", "drop w"),
    ("SELECT /*+ MAX_EXECUTION_TIME(1) */ 1", "select"),
    ("REPLACE INTO t VALUES (1)", "insert w"),
    ("DELETE FROM t", "delete uw"),
    ("UPDATE t SET a = 1 WHERE id = ?", "update w"),
    ("USE otherdb", "set_search_path p"),
    ("SELECT * FROM t INTO OUTFILE '/tmp/x'", "select wo"),
    ("PREPARE s FROM @sql", "prepare o"),
    ("DESCRIBE t", "explain"),
    ("SELECT SLEEP(10)", "select wo"),
];

fn expected(s: &str) -> Vec<(String, String)> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split("; ")
        .map(|v| {
            let mut it = v.split(' ');
            let kind = it.next().unwrap().to_owned();
            (kind, it.next().unwrap_or("").to_owned())
        })
        .collect()
}

#[test]
fn postgres_corpus() {
    let mut failures = Vec::new();
    for (sql, want) in PG {
        let got = verdicts(sql, Dialect::Postgres);
        if got != expected(want) {
            failures.push(format!("{sql:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} wrong:\n{}",
        failures.len(),
        PG.len(),
        failures.join("\n")
    );
}

#[test]
fn mysql_corpus() {
    let mut failures = Vec::new();
    for (sql, want) in MY {
        let got = verdicts(sql, Dialect::Mysql);
        if got != expected(want) {
            failures.push(format!("{sql:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} wrong:\n{}",
        failures.len(),
        MY.len(),
        failures.join("\n")
    );
}

/// Deterministic xorshift for the property tests (no external RNG).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// Rewrites the whitespace between tokens with random whitespace and comments
/// and flips the case of keywords; the verdict must not change.
fn disguise(sql: &str, rng: &mut Rng) -> String {
    let mut toks = Vec::new();
    lexer::lex(
        sql.as_bytes(),
        lexer::Options::new(Dialect::Postgres),
        &mut toks,
    )
    .unwrap();
    let fillers = [
        " ",
        "\n",
        "\t ",
        " /* c */ ",
        "/**/",
        " -- line\n",
        " /* /* nested */ */ ",
    ];
    let mut out = String::new();
    for (i, t) in toks.iter().enumerate() {
        if i > 0 {
            out.push_str(rng.pick(&fillers));
        }
        let text = &sql[t.range()];
        if t.kind == lexer::TokenKind::Word {
            for c in text.chars() {
                if rng.next().is_multiple_of(2) {
                    out.extend(c.to_uppercase());
                } else {
                    out.extend(c.to_lowercase());
                }
            }
        } else {
            out.push_str(text);
        }
    }
    out
}

#[test]
fn comments_whitespace_and_case_never_change_the_verdict() {
    let mut rng = Rng(0x5eed_1234_abcd);
    for (sql, _) in PG {
        let mut toks = Vec::new();
        if lexer::lex(
            sql.as_bytes(),
            lexer::Options::new(Dialect::Postgres),
            &mut toks,
        )
        .is_err()
            || sql.contains('\\')
        {
            continue;
        }
        // Quoted identifiers keep their case; only words are flipped.
        let base = verdicts(sql, Dialect::Postgres);
        for _ in 0..20 {
            let d = disguise(sql, &mut rng);
            assert_eq!(
                verdicts(&d, Dialect::Postgres),
                base,
                "{sql:?} disguised as {d:?}"
            );
        }
    }
}

#[test]
fn lexer_is_total_on_every_prefix() {
    // Every prefix of every corpus entry lexes or errors; it never panics, and
    // the classifier always yields a verdict per non-empty statement.
    for (sql, _) in PG.iter().chain(MY) {
        for cut in 0..=sql.len() {
            let Some(prefix) = sql.get(..cut) else {
                continue;
            };
            for d in [Dialect::Postgres, Dialect::Mysql] {
                let _ = classify(prefix.as_bytes(), d);
            }
        }
    }
}

#[test]
fn parameters_are_written_in_as_plain_literals_or_left_unknown() {
    use crate::postgres::frontend::Param;
    let sql = b"SELECT set_config($1, $2, false), $3, $4, '$1', $10";
    let got = with_params(
        sql,
        &[
            Param::Text(b"client_encoding"),
            Param::Text(b"it's"),
            Param::Null,
            Param::Binary(&[0, 0, 0, 1]),
        ],
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(got).unwrap(),
        "SELECT set_config('client_encoding', 'it''s', false), NULL, $4, '$1', $10"
    );
    // A value the lexer might read otherwise stays a parameter.
    let got = with_params(b"SELECT $1", &[Param::Text(b"a\\'; DROP TABLE t; --")]).unwrap();
    assert_eq!(got, b"SELECT $1");
    // Classified with the values, a parameterised setting is judged exactly.
    let st = |params: &[Param]| {
        classify(
            &with_params(b"SELECT set_config('client_encoding', $1, false)", params).unwrap(),
            Dialect::Postgres,
        )[0]
    };
    use crate::postgres::encoding::Class;
    assert_eq!(
        st(&[Param::Text(b"UTF8")]).flags.encoding,
        Some(Class::Utf8)
    );
    assert_eq!(
        st(&[Param::Text(b"latin1")]).flags.encoding,
        Some(Class::Safe)
    );
    assert_eq!(
        st(&[Param::Text(b"SJIS")]).flags.encoding,
        Some(Class::Unsafe)
    );
    assert_eq!(
        st(&[Param::Binary(b"big5")]).flags.encoding,
        Some(Class::Unsafe)
    );
    assert_eq!(
        st(&[Param::Binary(b"UTF8")]).flags.encoding,
        Some(Class::Utf8)
    );
    assert_eq!(
        st(&[Param::Binary(&[0xff])]).flags.encoding,
        Some(Class::Unsafe)
    );
    let raw = classify(
        b"SELECT set_config('client_encoding', $1, false)",
        Dialect::Postgres,
    )[0];
    assert!(raw.flags.bound_setting);
    assert!(
        classify(b"SELECT set_config($1, $2, false)", Dialect::Postgres)[0]
            .flags
            .bound_setting
    );
    assert!(
        !classify(b"SELECT set_config('app.x', $1, false)", Dialect::Postgres)[0]
            .flags
            .bound_setting
    );
}

#[test]
fn code_bodies_take_the_kinds_of_what_they_run() {
    let one = |sql: &str| classify(sql.as_bytes(), Dialect::Postgres)[0];
    // A DO block is `do` and every statement in it, wherever it starts.
    let s = one("DO $$ BEGIN DELETE FROM t; END $$");
    assert_eq!(s.kind, Kind::Do);
    assert!(
        s.has(Kind::Delete) && s.flags.unbounded && s.flags.opaque,
        "{s:?}"
    );
    let s =
        one("DO 'DECLARE n int; BEGIN IF true THEN UPDATE t SET a = 1 WHERE id = 2; END IF; END'");
    assert!(s.has(Kind::Update) && !s.flags.unbounded, "{s:?}");
    // `EXECUTE 'literal'` is read; anything computed is opaque.
    let s = one("DO $$ BEGIN EXECUTE 'drop table t'; END $$");
    assert!(s.has(Kind::Drop), "{s:?}");
    let s = one("DO $x$ BEGIN EXECUTE $y$TRUNCATE t$y$; END $x$");
    assert!(s.has(Kind::Truncate), "{s:?}");
    let s = one("DO $$ BEGIN EXECUTE 'drop ' || 'table t'; END $$");
    assert!(s.flags.opaque && !s.has(Kind::Drop), "{s:?}");
    // A function's body counts at its creation (and creating code stays opaque).
    let s = one("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ DELETE FROM t $$");
    assert!(
        s.has(Kind::Create) && s.has(Kind::Delete) && s.flags.unbounded && s.flags.opaque,
        "{s:?}"
    );
    let s = one(
        "CREATE OR REPLACE PROCEDURE p() LANGUAGE plpgsql AS 'BEGIN GRANT ALL ON t TO public; END'",
    );
    assert!(s.has(Kind::Grant), "{s:?}");
    let s = one("CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN PERFORM dblink_exec('x', 'y'); RETURN 1; END $$");
    assert!(s.flags.opaque, "{s:?}");
    // Nesting too deep to follow is opaque, not a stack overflow.
    let mut sql = "DELETE FROM t".to_string();
    for depth in 0..64 {
        sql = format!("DO $d{depth}$ BEGIN EXECUTE $e{depth}${sql}$e{depth}$; END $d{depth}$");
    }
    let s = one(&sql);
    assert!(s.flags.opaque, "{s:?}");
    // Look-alikes: the words inside plain strings of a SELECT stay data.
    let s = one("SELECT 'DO $$ BEGIN DELETE FROM t; END $$'");
    assert!(!s.has(Kind::Delete) && !s.flags.opaque, "{s:?}");
    // Reading a body costs once per token, however it is built.
    let body = "a ".repeat(200_000);
    let s = one(&format!("DO $$ {body} $$"));
    assert_eq!(s.kind, Kind::Do);
    let body = "SELECT ".repeat(100_000);
    let s = one(&format!("DO $$ {body} $$"));
    assert_eq!(s.kind, Kind::Do);
    let body = "(SELECT ".repeat(50_000);
    let s = one(&format!("DO $$ {body} $$"));
    assert!(s.flags.opaque, "too deep to follow");
    // A statement ends where PL/pgSQL takes over: the WHERE after LOOP is not the DELETE's.
    let s = one("DO $$ BEGIN FOR r IN DELETE FROM t RETURNING id LOOP PERFORM 1 FROM u WHERE true; END LOOP; END $$");
    assert!(s.has(Kind::Delete) && s.flags.unbounded, "{s:?}");
    let s = one("SELECT table_to_xml('customers', true, false, '')");
    assert!(s.flags.opaque, "{s:?}");
}

#[test]
fn calls_of_listed_functions_are_found() {
    let f = vec![
        ("public".to_string(), "wipe".to_string()),
        ("app".to_string(), "leak".to_string()),
    ];
    let c = |sql: &str| calls(sql.as_bytes(), &f);
    assert_eq!(c("SELECT wipe()").as_deref(), Some("wipe"));
    assert_eq!(
        c("SELECT x FROM t WHERE id = public.WIPE(1)").as_deref(),
        Some("public.wipe")
    );
    assert_eq!(c("SELECT \"leak\"(ssn) FROM t").as_deref(), Some("leak"));
    assert_eq!(c("SELECT * FROM app.leak(1)").as_deref(), Some("app.leak"));
    assert!(c("SELECT U&\"\\0077ipe\"()").is_some());
    // Other schemas, other functions, names that are not calls.
    assert_eq!(c("SELECT other.wipe()"), None);
    assert_eq!(
        c("SELECT lower(x), count(*) FROM t WHERE a IN (1, 2)"),
        None
    );
    assert_eq!(c("DROP FUNCTION wipe(int)"), None);
    assert_eq!(c("SELECT 'wipe()'"), None);
    // Attribute notation calls the function with the row.
    assert_eq!(c("SELECT o.wipe FROM orders o").as_deref(), Some("wipe"));
    assert_eq!(
        c("SELECT o.leak, o.id FROM orders o").as_deref(),
        Some("leak")
    );
    assert_eq!(c("SELECT o.id FROM orders o"), None);
    // Unknown functions: every call counts.
    let any = vec![("*".to_string(), "*".to_string())];
    assert!(calls(b"SELECT lower('A')", &any).is_some());
    assert_eq!(calls(b"SELECT a FROM t WHERE b IN (1)", &any), None);
}

#[test]
fn deep_nesting_costs_once_per_token() {
    let sql = "SELECT ".to_string() + &"(SELECT ".repeat(50_000);
    let s = classify(sql.as_bytes(), Dialect::Postgres);
    assert!(!s.is_empty());
    let sql = "SELECT 1 WHERE ".to_string() + &"(".repeat(100_000);
    assert!(!classify(sql.as_bytes(), Dialect::Postgres).is_empty());
    let sql = "PREPARE a AS ".repeat(10_000) + "SELECT 1";
    assert!(classify(sql.as_bytes(), Dialect::Postgres)[0].flags.opaque);
    let sql = "DECLARE c CURSOR FOR ".repeat(10_000) + "SELECT 1";
    assert!(classify(sql.as_bytes(), Dialect::Postgres)[0].flags.opaque);
}

#[test]
fn only_plain_reads_are_proven_read_only() {
    let mut c = Classifier::new();
    let mut out = Vec::new();
    let mut read_only = |sql: &str| {
        c.classify(sql.as_bytes(), Dialect::Postgres, &mut out);
        !out.is_empty() && out.iter().all(Statement::read_only)
    };
    for sql in [
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
        "select count(*), max(x), coalesce(a, b) from t where y in (1, 2) and exists (select 1)",
        "SHOW work_mem",
        "SELECT lower(name) FROM t ORDER BY 1 LIMIT 5",
    ] {
        assert!(read_only(sql), "{sql}");
    }
    for sql in [
        "SELECT my_function()",
        "SELECT nextval('s')",
        "SELECT \"count\"(x) FROM t",
        "SELECT * FROM t FOR UPDATE; DELETE FROM t WHERE id = 1",
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "SELECT set_config('role', 'x', false)",
        "SELECT pg_terminate_backend(1)",
        "EXPLAIN ANALYZE DELETE FROM t",
        "BEGIN",
        "INSERT INTO t VALUES (1)",
        "SELECT * FROM generate_series(1, 3) g(x), my_table_function(1)",
        "SELECT evil.lower('x')",
        "SELECT \"evil\".lower(x) FROM t",
        "SELECT date(1)",
    ] {
        assert!(!read_only(sql), "{sql}");
    }
}
