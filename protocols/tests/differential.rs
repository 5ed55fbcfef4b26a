//! Differential test against PostgreSQL's own parser (`pg_query`, libpg_query):
//! over a generated corpus of real-world-shaped SQL, our classifier must never
//! call a write a read, and its kind must agree with the server's parse tree or
//! be flagged `opaque`.

use pg_query::NodeRef;
use sluice_protocols::sql::{classify, Dialect, Kind, Statement};

/// What PostgreSQL's parser says about one statement.
struct Oracle {
    top: String,
    writes: bool,
    /// Kinds of DML nodes found anywhere (CTEs, EXPLAIN ANALYZE, COPY (...)).
    nested: Vec<Kind>,
}

fn oracle(sql: &str) -> Option<Vec<Oracle>> {
    let parsed = pg_query::parse(sql, 0).ok()?;
    let mut out = Vec::new();
    for raw in &parsed.protobuf.stmts {
        let node = raw.stmt.as_ref()?.node.as_ref()?;
        let mut top = format!("{:?}", node.to_ref()).split('(').next()?.to_owned();
        if let NodeRef::GrantStmt(g) = node.to_ref() {
            if !g.is_grant {
                top = "RevokeStmt".to_owned();
            }
        }
        let mut writes = false;
        let mut nested = Vec::new();
        let mut analyze = true;
        if let NodeRef::ExplainStmt(e) = node.to_ref() {
            analyze = e
                .options
                .iter()
                .any(|o| format!("{o:?}").contains("defname: \"analyze\""));
        }
        for (n, _, _, _) in node.nodes() {
            match n {
                NodeRef::InsertStmt(_) => nested.push(Kind::Insert),
                NodeRef::UpdateStmt(_) => nested.push(Kind::Update),
                NodeRef::DeleteStmt(_) => nested.push(Kind::Delete),
                NodeRef::MergeStmt(_) => nested.push(Kind::Merge),
                // A MERGE is the kinds of its actions (CmdType 3 update,
                // 4 insert, 5 delete).
                NodeRef::MergeWhenClause(c) => match c.command_type {
                    3 => nested.push(Kind::Update),
                    4 => nested.push(Kind::Insert),
                    5 => nested.push(Kind::Delete),
                    _ => {}
                },
                NodeRef::SelectStmt(s) if s.into_clause.is_some() => writes = true,
                _ => {}
            }
        }
        if !nested.is_empty() && (top != "ExplainStmt" || analyze) {
            writes = true;
        }
        let read_only = [
            "SelectStmt",
            "ExplainStmt",
            "VariableShowStmt",
            "TransactionStmt",
            "VariableSetStmt",
            "ListenStmt",
            "UnlistenStmt",
            "NotifyStmt",
            "PrepareStmt",
            "DeallocateStmt",
            "DeclareCursorStmt",
            "FetchStmt",
            "ClosePortalStmt",
            "LockStmt",
        ];
        match node.to_ref() {
            NodeRef::CopyStmt(c) => writes |= c.is_from,
            _ if !read_only.contains(&top.as_str()) => writes = true,
            _ => {}
        }
        out.push(Oracle {
            top,
            writes,
            nested,
        });
    }
    Some(out)
}

fn expected_kind(top: &str) -> Option<Kind> {
    Some(match top {
        "SelectStmt" => Kind::Select,
        "InsertStmt" => Kind::Insert,
        "UpdateStmt" => Kind::Update,
        "DeleteStmt" => Kind::Delete,
        "MergeStmt" => Kind::Merge,
        "CopyStmt" => Kind::Copy,
        "TruncateStmt" => Kind::Truncate,
        "DropStmt" => Kind::Drop,
        "GrantStmt" => Kind::Grant,
        "RevokeStmt" => Kind::Revoke,
        "VariableShowStmt" => Kind::Show,
        "ExplainStmt" => Kind::Explain,
        "ListenStmt" | "UnlistenStmt" => Kind::Listen,
        "NotifyStmt" => Kind::Notify,
        "LockStmt" => Kind::Lock,
        "DoStmt" => Kind::Do,
        "CallStmt" => Kind::Call,
        "ExecuteStmt" => Kind::Execute,
        "DeallocateStmt" => Kind::Deallocate,
        "VacuumStmt" => Kind::Vacuum,
        "CreateTableAsStmt" => Kind::Create,
        t if t.starts_with("Create") || t == "IndexStmt" || t == "ViewStmt" => Kind::Create,
        t if t.starts_with("Alter") || t == "RenameStmt" => Kind::Alter,
        _ => return None,
    })
}

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

/// Real-world-shaped statements: ORM queries, migrations, admin scripts, and the
/// tricks of the guardrails issue, with random tables, predicates and disguises.
fn corpus() -> Vec<String> {
    let mut rng = Rng(0xd1ff_5eed);
    let tables = [
        "orders",
        "public.customers",
        "\"Order Items\"",
        "billing.invoices",
        "t",
    ];
    let preds = [
        "id = 42",
        "id = $1",
        "created_at < now() - interval '30 days'",
        "status IN ('new', 'paid;x')",
        "email LIKE '%@example.com'",
        "id IN (SELECT id FROM stale)",
        "note = $$it's; DROP TABLE t$$",
        "EXISTS (SELECT 1 FROM other o WHERE o.id = t.id)",
    ];
    let comments = [
        "",
        " /* audit */",
        " -- trailing\n",
        " /* nested /* c */ */",
    ];
    let templates = [
        "SELECT * FROM {t} WHERE {p}",
        "SELECT count(*) FROM {t}",
        "SELECT a.id, b.total FROM {t} a JOIN other b ON b.id = a.id WHERE {p} ORDER BY 1 LIMIT 10",
        "SELECT * FROM {t} WHERE {p} FOR UPDATE SKIP LOCKED",
        "INSERT INTO {t} (id, note) VALUES (1, 'a;b'), (2, E'c\\'d')",
        "INSERT INTO {t} SELECT * FROM staging WHERE {p} RETURNING id",
        "INSERT INTO {t} (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET note = excluded.note",
        "UPDATE {t} SET note = 'x' WHERE {p}",
        "UPDATE {t} SET note = 'x'",
        "UPDATE {t} SET total = s.total FROM staging s WHERE s.id = {t}.id",
        "DELETE FROM {t} WHERE {p}",
        "DELETE FROM {t}",
        "DELETE FROM {t} USING other WHERE other.id = {t}.id",
        "WITH gone AS (DELETE FROM {t} WHERE {p} RETURNING *) SELECT count(*) FROM gone",
        "WITH gone AS (DELETE FROM {t} RETURNING *) INSERT INTO archive SELECT * FROM gone",
        "WITH x AS (SELECT * FROM {t} WHERE {p}) SELECT * FROM x",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT * FROM r",
        "WITH u AS (UPDATE {t} SET note = 'y' WHERE {p} RETURNING id) SELECT * FROM u",
        "MERGE INTO {t} d USING staging s ON d.id = s.id WHEN MATCHED THEN UPDATE SET note = s.note WHEN NOT MATCHED THEN INSERT (id) VALUES (s.id)",
        "EXPLAIN SELECT * FROM {t} WHERE {p}",
        "EXPLAIN DELETE FROM {t} WHERE {p}",
        "EXPLAIN ANALYZE DELETE FROM {t} WHERE {p}",
        "EXPLAIN (ANALYZE, BUFFERS) UPDATE {t} SET note = 'z'",
        "SELECT * INTO backup_{n} FROM {t}",
        "CREATE TABLE backup_{n} AS SELECT * FROM {t} WHERE {p}",
        "CREATE TABLE IF NOT EXISTS new_{n} (id bigserial PRIMARY KEY, note text NOT NULL DEFAULT '')",
        "CREATE INDEX CONCURRENTLY idx_{n} ON {t} (created_at)",
        "CREATE VIEW v_{n} AS SELECT * FROM {t} WHERE {p}",
        "ALTER TABLE {t} ADD COLUMN flag_{n} boolean DEFAULT false",
        "ALTER TABLE {t} RENAME COLUMN a TO b",
        "DROP TABLE IF EXISTS {t} CASCADE",
        "DROP INDEX idx_{n}",
        "TRUNCATE {t} RESTART IDENTITY",
        "GRANT SELECT, INSERT ON {t} TO app_{n}",
        "REVOKE ALL ON {t} FROM public",
        "COPY {t} TO STDOUT WITH (FORMAT csv)",
        "COPY {t} (id, note) FROM STDIN",
        "COPY (SELECT * FROM {t} WHERE {p}) TO STDOUT",
        "COPY (DELETE FROM {t} WHERE {p} RETURNING *) TO STDOUT",
        "BEGIN ISOLATION LEVEL REPEATABLE READ",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT sp_{n}",
        "SET statement_timeout = '5s'",
        "SHOW search_path",
        "LISTEN ch_{n}",
        "NOTIFY ch_{n}, 'payload; DROP TABLE t'",
        "LOCK TABLE {t} IN SHARE MODE",
        "VACUUM (ANALYZE) {t}",
        "PREPARE p_{n} (int) AS SELECT * FROM {t} WHERE id = $1",
        "PREPARE d_{n} AS DELETE FROM {t} WHERE id = $1",
        "EXECUTE p_{n}(1)",
        "DEALLOCATE p_{n}",
        "DO $body$ BEGIN PERFORM 1; END $body$",
        "CALL refresh_{n}()",
        "SELECT set_config('search_path', 'x', false)",
        "SELECT jsonb_build_object('k', note) FROM {t} WHERE {p}",
        "SELECT id FROM {t} UNION ALL SELECT id FROM other",
        "VALUES (1, 'a'), (2, 'b')",
        "TABLE {t}",
    ];
    let mut out = Vec::new();
    for n in 0..3000 {
        let tpl = templates[n % templates.len()];
        let sql = tpl
            .replace("{t}", rng.pick(&tables))
            .replace("{p}", rng.pick(&preds))
            .replace("{n}", &n.to_string());
        let sql = match rng.next() % 4 {
            0 => sql.to_lowercase(),
            1 => format!(
                "{}{sql}",
                rng.pick(&comments).trim_start_matches(" -- trailing\n")
            ),
            2 => format!("{sql}{}", rng.pick(&comments)),
            _ => sql,
        };
        out.push(sql);
    }
    // Multi-statement strings.
    for n in 0..200 {
        let a = &out[n * 7 % 3000];
        let b = &out[n * 13 % 3000];
        out.push(format!("{a}; {b}"));
    }
    out
}

#[test]
fn never_calls_a_write_a_read_and_agrees_on_kinds() {
    let corpus = corpus();
    let (mut checked, mut agreed, mut opaque) = (0, 0, 0);
    let mut failures = Vec::new();
    for sql in &corpus {
        let Some(truth) = oracle(sql) else { continue };
        let ours: Vec<Statement> = classify(sql.as_bytes(), Dialect::Postgres);
        if ours.len() != truth.len() {
            if !ours.iter().any(|s| s.flags.opaque) {
                failures.push(format!(
                    "{sql:?}: {} statements, PostgreSQL sees {}",
                    ours.len(),
                    truth.len()
                ));
            }
            continue;
        }
        for (o, t) in ours.iter().zip(&truth) {
            checked += 1;
            if o.flags.opaque {
                opaque += 1;
                continue;
            }
            if t.writes && !o.flags.writes {
                failures.push(format!(
                    "{sql:?}: WRITE CALLED A READ ({:?}; PostgreSQL: {})",
                    o.kind, t.top
                ));
                continue;
            }
            let agrees = expected_kind(&t.top) == Some(o.kind)
                || t.nested.contains(&o.kind)
                || (t.top == "SelectStmt" && o.kind == Kind::Create && t.writes)
                // `SELECT set_config(...)` is judged as the setting it makes.
                || (t.top == "SelectStmt"
                    && matches!(o.kind, Kind::Set | Kind::SetRole | Kind::SetSearchPath)
                    && sql.to_ascii_lowercase().contains("set_config"))
                || expected_kind(&t.top).is_none();
            if agrees {
                agreed += 1;
            } else {
                failures.push(format!(
                    "{sql:?}: kind {:?}, PostgreSQL: {} (nested {:?})",
                    o.kind, t.top, t.nested
                ));
            }
        }
    }
    eprintln!(
        "differential: {checked} statements checked, {agreed} agree, {opaque} opaque, {} disagree",
        failures.len()
    );
    assert!(
        checked > 3000,
        "the corpus parses under PostgreSQL ({checked})"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
