//! Every validation error class, each asserting its `file:line:col` message.

use super::*;

const TCP_OK: &str = r#"[[target]]
name = "cache"
protocol = "tcp"
listen = "127.0.0.1:16379"
upstream = "127.0.0.1:6379"
access = ["*"]
"#;

fn env(name: &str) -> Option<String> {
    (name == "ORDERS_PASSWORD").then(|| "s3cret".to_owned())
}

/// The rendered error text of an invalid config.
fn errors(src: &str) -> String {
    match parse(src, "t.toml", env) {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(e) => e.to_string(),
    }
}

fn assert_error(src: &str, expected: &str) {
    let got = errors(src);
    assert!(
        got.lines().any(|l| l.starts_with(expected)),
        "expected a line starting with {expected:?}, got:\n{got}"
    );
}

#[test]
fn tcp_only_config_needs_no_identity() {
    let c = parse(TCP_OK, "t.toml", env).unwrap();
    assert!(c.identity.is_none());
    assert_eq!(c.targets[0].protocol, Protocol::Tcp);
    assert_eq!(c.gateway.shards, 0);
    assert_eq!(c.gateway.drain_timeout, Duration::from_secs(30));
}

#[test]
fn toml_syntax_error() {
    assert_error("[gateway\nshards = 1\n", "t.toml:1:9: ");
}

#[test]
fn unknown_key() {
    let src = format!("{TCP_OK}acess = [\"sre\"]\n");
    let got = errors(&src);
    assert!(
        got.starts_with("t.toml:7:1: unknown key `acess`; the keys here are"),
        "{got}"
    );
}

#[test]
fn unknown_key_in_gateway() {
    let got = errors(&format!("[gateway]\nshard = 2\n{TCP_OK}"));
    assert!(got.starts_with("t.toml:2:1: unknown key `shard`"), "{got}");
}

#[test]
fn wrong_type() {
    let got = errors(&format!("[gateway]\nshards = \"four\"\n{TCP_OK}"));
    assert!(
        got.starts_with("t.toml:2:10: wrong type: expected a whole number, found string \"four\""),
        "{got}"
    );
}

#[test]
fn every_structural_problem_is_listed_in_plain_words() {
    let src = format!(
        "[gateway]\nshards = \"two\"\nbogus = 1\n{}",
        TCP_OK.replace("listen = \"127.0.0.1:16379\"", "listen = 127.0.0.1:16379")
    );
    let got = errors(&src);
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), 3, "{got}");
    assert!(
        lines[0].starts_with("t.toml:2:10: wrong type: expected a whole number"),
        "{got}"
    );
    assert!(
        lines[1].starts_with("t.toml:3:1: unknown key `bogus`"),
        "{got}"
    );
    assert!(
        lines[2].contains("`127.0.0.1:16379` must be quoted: write \"127.0.0.1:16379\""),
        "{got}"
    );
    assert!(
        !got.contains("expected nothing") && !got.contains("i64"),
        "{got}"
    );
}

#[test]
fn unknown_protocol() {
    let src = TCP_OK.replace("protocol = \"tcp\"", "protocol = \"ftp\"");
    let got = errors(&src);
    assert!(
        got.starts_with("t.toml:3:12: unknown value `ftp`; it may be one of"),
        "{got}"
    );
}

#[test]
fn missing_required_field() {
    let src = TCP_OK.replace("upstream = \"127.0.0.1:6379\"\n", "");
    assert_error(&src, "t.toml:1:1: missing key `upstream`");
}

#[test]
fn invalid_listen_address() {
    let src = TCP_OK.replace("127.0.0.1:16379", "localhost");
    assert_error(
        &src,
        "t.toml:4:10: invalid listen address `localhost`: expected an IP address and port",
    );
}

#[test]
fn duplicate_listen_address() {
    let second = TCP_OK.replace("\"cache\"", "\"cache2\"");
    let src = format!("{TCP_OK}{second}");
    assert_error(
        &src,
        "t.toml:10:10: listen address 127.0.0.1:16379 is already used by target `cache`",
    );
}

#[test]
fn listen_address_clashes_with_admin() {
    let src = format!("[gateway]\nadmin = \"127.0.0.1:16379\"\n{TCP_OK}");
    assert_error(
        &src,
        "t.toml:6:10: listen address 127.0.0.1:16379 is already used by the admin listener",
    );
}

#[test]
fn invalid_upstream() {
    let src = TCP_OK.replace("127.0.0.1:6379", "db.internal");
    assert_error(
        &src,
        "t.toml:5:12: invalid upstream `db.internal`: expected host:port",
    );
}

#[test]
fn upstream_may_be_a_host_name() {
    let src = TCP_OK.replace("127.0.0.1:6379", "db.internal:6379");
    assert_eq!(
        parse(&src, "t.toml", env).unwrap().targets[0].upstream,
        "db.internal:6379"
    );
}

#[test]
fn duplicate_and_invalid_target_names() {
    let second = TCP_OK.replace("16379", "16380");
    assert_error(
        &format!("{TCP_OK}{second}"),
        "t.toml:8:8: duplicate target name `cache`",
    );
    let bad = TCP_OK.replace("\"cache\"", "\"my cache\"");
    assert_error(&bad, "t.toml:2:8: invalid target name `my cache`");
}

#[test]
fn tcp_target_must_open_access_explicitly() {
    let src = TCP_OK.replace("access = [\"*\"]", "access = [\"sre\"]");
    assert_error(&src, "t.toml:6:10: tcp target `cache` cannot check identity: it must say access = [\"*\"] explicitly");
    let src = TCP_OK.replace("access = [\"*\"]\n", "");
    assert_error(&src, "t.toml:2:8: tcp target `cache` cannot check identity");
}

#[test]
fn tcp_target_rejects_l7_settings() {
    let src = format!("{TCP_OK}credentials = {{ user = \"app\" }}\n");
    assert_error(
        &src,
        "t.toml:7:15: `credentials` has no effect on tcp target `cache`",
    );
}

const PG: &str = r#"[[target]]
name = "orders"
protocol = "postgres"
listen = "127.0.0.1:6432"
upstream = "127.0.0.1:5432"
credentials = { user = "app", password_env = "ORDERS_PASSWORD" }
access = ["sre"]
"#;

const IDENTITY: &str = r#"[identity]
issuer = "https://idp.example.com/"
audience = "sluice"
jwks = "file:dev.jwks.json"
"#;

#[test]
fn identity_required_only_when_a_target_needs_it() {
    assert_error(PG, "t.toml:3:12: target `orders` uses protocol postgres which authenticates callers with a token: add an [identity] section");
    let c = parse(&format!("{IDENTITY}{PG}"), "t.toml", env).unwrap();
    let creds = c.targets[0].credentials.as_ref().unwrap();
    assert_eq!(creds.password.as_ref().unwrap().expose(), "s3cret");
    assert_eq!(format!("{:?}", creds.password), "Some(Secret(***))");
}

#[test]
fn missing_env_var_is_named() {
    let src = format!("{IDENTITY}{PG}").replace("ORDERS_PASSWORD", "NOPE_PASSWORD");
    assert_error(
        &src,
        "t.toml:10:46: environment variable `NOPE_PASSWORD` (named by `password_env`) is not set",
    );
}

#[test]
fn l7_target_needs_access() {
    let src = format!("{IDENTITY}{PG}").replace("access = [\"sre\"]\n", "");
    assert_error(&src, "t.toml:6:8: target `orders` needs `access`");
}

#[test]
fn invalid_jwks() {
    let src = format!("{IDENTITY}{PG}").replace("file:dev.jwks.json", "dev.jwks.json");
    assert_error(&src, "t.toml:4:8: invalid jwks `dev.jwks.json`");
}

#[test]
fn unknown_guardrails_and_masking_references() {
    let src = format!("{IDENTITY}{PG}guardrails = \"prod\"\nmasking = \"pii\"\n");
    let got = errors(&src);
    assert!(
        got.contains("t.toml:12:14: unknown guardrails `prod`: no [guardrails.prod] table"),
        "{got}"
    );
    assert!(
        got.contains("t.toml:13:11: unknown masking profile `pii`"),
        "{got}"
    );
}

#[test]
fn custom_entities_are_checked_where_they_are_written() {
    let src = format!(
        "{IDENTITY}{PG}masking = \"pii\"\n[masking.pii]\nentities = {{ emp = {{ pattern = \"EMP-[0-9]+\" }}, acct = {{ pattern = \"A[0-9]{{8}}\", validator = \"crc\" }}, email = {{ pattern = \"x\" }} }}\n"
    );
    let got = errors(&src);
    assert!(
        got.contains("t.toml:14:32: custom entity `emp`: pattern can match more than 1024 bytes"),
        "{got}"
    );
    assert!(
        got.contains("t.toml:14:92: custom entity `acct`: unknown validator `crc`"),
        "{got}"
    );
    assert!(
        got.contains("custom entity `email` has the name of a built-in detector"),
        "{got}"
    );
    let ok = format!(
        "{IDENTITY}{PG}masking = \"pii\"\n[masking.pii]\nentities = {{ emp = {{ pattern = \"EMP-[0-9]{{6}}\" }}, acct = {{ pattern = \"A[0-9]{{8}}\", validator = \"luhn\" }} }}\n"
    );
    let cfg = parse(&ok, "t.toml", env).unwrap();
    assert_eq!(cfg.masking["pii"].entities.len(), 2);
}

#[test]
fn the_hash_style_needs_a_key() {
    let base = format!(
        "{IDENTITY}{PG}masking = \"pii\"\n[masking.pii]\ncolumns = {{ email = \"hash\" }}\n"
    );
    let got = errors(&base);
    assert!(
        got.contains("t.toml:14:21: the `hash` style needs `hash_key_env`"),
        "{got}"
    );
    let got = errors(&format!("{base}hash_key_env = \"NO_SUCH_VAR\"\n"));
    assert!(
        got.contains(
            "t.toml:15:16: environment variable `NO_SUCH_VAR` (named by `hash_key_env`) is not set"
        ),
        "{got}"
    );
    // ORDERS_PASSWORD holds 6 bytes in these tests.
    let got = errors(&format!("{base}hash_key_env = \"ORDERS_PASSWORD\"\n"));
    assert!(
        got.contains("t.toml:15:16: the `hash` key in `ORDERS_PASSWORD` is 6 bytes; use at least 16 random bytes"),
        "{got}"
    );
}

#[test]
fn unknown_statement_kind_detector_and_style() {
    let src = format!(
        "{IDENTITY}{PG}guardrails = \"prod\"\nmasking = \"pii\"\n\
[guardrails.prod]\nrules = [\n  {{ kinds = [\"drop\", \"dorp\"], action = \"deny\" }},\n]\n\
[masking.pii]\ndetectors = [\"email\", \"emial\"]\ncolumns = {{ ssn = \"blur\" }}\n"
    );
    let got = errors(&src);
    assert!(
        got.contains("t.toml:16:22: unknown statement kind `dorp`"),
        "{got}"
    );
    assert!(
        got.contains("t.toml:19:23: unknown detector `emial`"),
        "{got}"
    );
    assert!(
        got.contains("t.toml:20:19: unknown mask style `blur`"),
        "{got}"
    );
}

#[test]
fn unknown_action() {
    let src = format!(
        "{IDENTITY}{PG}[guardrails.prod]\nrules = [{{ kinds = [\"drop\"], action = \"block\" }}]\n"
    );
    assert_error(
        &src,
        "t.toml:13:39: unknown value `block`; it may be one of `allow`, `deny`, `approve`",
    );
}

#[test]
fn rule_needs_something_to_match() {
    let src = format!("{IDENTITY}{PG}[guardrails.prod]\nrules = [{{ action = \"deny\" }}]\n");
    assert_error(
        &src,
        "t.toml:13:10: a rule needs `kinds` (SQL), `methods`/`path` (HTTP) or `commands` (SSH)",
    );
}

#[test]
fn invalid_duration_and_range() {
    let src = format!("[gateway]\nshards = 5000\ndrain_timeout = \"soon\"\n{TCP_OK}");
    let got = errors(&src);
    assert!(
        got.contains("t.toml:2:10: `shards` must be between 0 (one per core) and 1024, not 5000"),
        "{got}"
    );
    assert!(
        got.contains("t.toml:3:17: invalid duration `soon` for `drain_timeout`"),
        "{got}"
    );
}

#[test]
fn no_targets() {
    assert_error("[gateway]\nshards = 1\n", "t.toml:1:1: no targets");
}

#[test]
fn every_error_is_reported_at_once() {
    let src = TCP_OK
        .replace("127.0.0.1:16379", "nope")
        .replace("127.0.0.1:6379", "also-nope")
        .replace("[\"*\"]", "[\"sre\"]");
    let got = errors(&src);
    assert_eq!(got.lines().count(), 3, "{got}");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
    assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
    assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
    assert_eq!(parse_duration("fast"), None);
    assert_eq!(parse_duration("5 parsecs"), None);
}

#[test]
fn line_col_counts_characters() {
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("é = 1\nx", 3), (1, 3));
}

/// The blueprint's contract, verbatim, is a valid configuration.
#[test]
fn blueprint_example_is_valid() {
    let src = r#"
[gateway]
shards = 0                        # 0 = one per available core
admin = "127.0.0.1:9470"          # approvals API, /metrics, /healthz, web UI

[identity]
issuer = "https://idp.example.com/"
audience = "sluice"
jwks = "file:dev.jwks.json"       # or an https URL
groups_claim = "groups"

[audit]
dir = "audit"
durability = "strict"             # or "batched"

[[target]]
name = "orders"
protocol = "postgres"             # postgres | mysql | http | tcp
listen = "127.0.0.1:6432"
upstream = "127.0.0.1:5432"
credentials = { user = "app", password_env = "ORDERS_PASSWORD" }
access = ["sre", "agents"]        # groups that may connect
approvers = ["dba"]               # groups that may approve
guardrails = "prod"
masking = "pii"

[guardrails.prod]
rules = [
  { kinds = ["drop", "truncate"], action = "deny", message = "destructive DDL is blocked on orders" },
  { kinds = ["delete", "update"], unbounded = true, action = "deny", message = "add a WHERE clause" },
  { kinds = ["delete", "update", "alter", "grant", "revoke", "opaque"], action = "approve" },
  { kinds = ["delete"], groups = ["dba"], action = "allow" },
]

[masking.pii]
detectors = ["email", "credit_card", "ssn", "phone", "iban", "aws_key", "jwt"]
columns = { ssn = "redact", card_number = "last4" }
"#;
    let c = parse(src, "blueprint.toml", env).unwrap();
    assert_eq!(c.targets[0].protocol, Protocol::Postgres);
    assert_eq!(c.guardrails["prod"].rules.len(), 4);
    assert!(c.guardrails["prod"].rules[1].unbounded);
    assert_eq!(c.masking["pii"].columns["card_number"], "last4");
    assert_eq!(c.audit.as_ref().unwrap().durability, Durability::Strict);
}

#[test]
fn token_algorithms_are_validated() {
    let src = format!("{IDENTITY}algorithms = [\"RS256\", \"none\"]\n{PG}");
    assert_error(
        &src,
        "t.toml:5:24: unknown or refused token algorithm `none`",
    );
    let src = format!("{IDENTITY}algorithms = [\"HS256\"]\n{PG}");
    assert_error(
        &src,
        "t.toml:5:15: `HS256` needs a shared secret: set `hmac_secret_env`",
    );
    let ok = parse(&format!("{IDENTITY}{PG}"), "t.toml", env).unwrap();
    assert!(
        !ok.identity
            .unwrap()
            .algorithms
            .iter()
            .any(|a| a.starts_with("HS")),
        "no HMAC by default"
    );
}

#[test]
fn tls_settings_are_validated() {
    let src = format!("{IDENTITY}{PG}require_tls = true\n");
    assert_error(
        &src,
        "t.toml:12:15: target `orders` requires TLS but there is no [tls] section",
    );
    let src = format!("{IDENTITY}{PG}upstream_tls = \"verify\"\n");
    assert_error(
        &src,
        "t.toml:12:16: target `orders`: upstream_tls = \"verify\" needs `upstream_ca`",
    );
    let src = format!("{TCP_OK}require_tls = true\n");
    assert_error(
        &src,
        "t.toml:7:15: `require_tls` has no effect on tcp target `cache`",
    );
}

#[test]
fn jwks_may_be_omitted_for_discovery() {
    let src = format!("{IDENTITY}{PG}").replace("jwks = \"file:dev.jwks.json\"\n", "");
    let c = parse(&src, "t.toml", env).unwrap();
    assert_eq!(c.identity.unwrap().jwks, None);
}

mod policy_tables {
    use super::super::policy::*;
    use super::*;

    const CFG: &str = r#"
[identity]
issuer = "https://idp.example.com/"
audience = "sluice"
jwks = "file:dev.jwks.json"

[[target]]
name = "orders"
protocol = "postgres"
listen = "127.0.0.1:6432"
upstream = "127.0.0.1:5432"
access = ["sre", "agents"]
approvers = ["dba"]
guardrails = "prod"

[[target]]
name = "open"
protocol = "postgres"
listen = "127.0.0.1:6433"
upstream = "127.0.0.1:5432"
access = ["*"]

[guardrails.prod]
rules = [
  { kinds = ["drop", "truncate"], action = "deny", message = "destructive DDL is blocked on orders" },
  { kinds = ["delete", "update"], unbounded = true, action = "deny", message = "add a WHERE clause" },
  { kinds = ["delete", "update", "alter", "grant", "revoke", "opaque"], action = "approve" },
  { kinds = ["delete"], groups = ["dba"], action = "allow" },
]
"#;

    #[test]
    fn opaque_is_the_last_kind() {
        assert_eq!(kind_index("opaque"), Some(OPAQUE));
    }

    fn stmt(kind: &str, unbounded: bool, opaque: bool) -> Statement {
        Statement {
            kind: kind_index(kind).unwrap(),
            unbounded,
            opaque,
        }
    }

    #[test]
    fn table_of_cases() {
        let c = parse(CFG, "t.toml", env).unwrap();
        let p = CompiledPolicy::compile(&c).unwrap();
        let agent = p.groups(&["agents"]);
        let dba = p.groups(&["agents", "dba"]);
        let nobody = p.groups(&["marketing"]);
        assert_eq!(nobody, GroupSet(0), "unknown groups get no bits");
        assert!(p.may_connect(0, agent));
        assert!(!p.may_connect(0, nobody));
        assert!(
            !p.may_connect(0, p.groups(&["dba"])),
            "approvers are not implicitly granted access"
        );
        assert!(p.may_connect(1, nobody), "`*` admits any caller");
        assert!(p.may_approve(0, dba) && !p.may_approve(0, agent));

        let deny = |m: &str, rule| Decision::Deny {
            message: m.into(),
            rule,
        };
        let cases = [
            (stmt("select", false, false), agent, Decision::Allow),
            (
                stmt("drop", false, false),
                dba,
                deny("destructive DDL is blocked on orders", 0),
            ),
            (
                stmt("truncate", false, false),
                agent,
                deny("destructive DDL is blocked on orders", 0),
            ),
            (
                stmt("delete", true, false),
                dba,
                deny("add a WHERE clause", 1),
            ),
            (
                stmt("update", true, false),
                agent,
                deny("add a WHERE clause", 1),
            ),
            (
                stmt("delete", false, false),
                agent,
                Decision::Approve { rule: 2 },
            ),
            (stmt("delete", false, false), dba, Decision::Allow),
            (
                stmt("update", false, false),
                dba,
                Decision::Approve { rule: 2 },
            ),
            (
                stmt("select", false, true),
                agent,
                Decision::Approve { rule: 2 },
            ),
            (
                stmt("do", false, true),
                agent,
                Decision::Approve { rule: 2 },
            ),
            (stmt("insert", false, false), agent, Decision::Allow),
        ];
        for (s, g, want) in cases {
            assert_eq!(p.decide(0, s, g), want, "{s:?} for {g:?}");
        }
        assert_eq!(
            p.decide(1, stmt("drop", false, false), nobody),
            Decision::Allow,
            "no guardrails"
        );
    }
}

mod approvals {
    use super::*;
    use crate::policy::CompiledPolicy;

    const HEAD: &str = r#"[identity]
issuer = "https://idp.example.com/"
audience = "sluice"
jwks = "file:dev.jwks.json"
"#;

    fn target(extra: &str) -> String {
        format!(
            "{HEAD}[[target]]\nname = \"orders\"\nprotocol = \"postgres\"\nlisten = \"127.0.0.1:6432\"\nupstream = \"127.0.0.1:5432\"\naccess = [\"agents\"]\nguardrails = \"g\"\n{extra}\n"
        )
    }

    #[test]
    fn defaults_overrides_and_compiled_specs() {
        let src = format!(
            "{}[approvals]\ntimeout = \"90s\"\ngrant_ttl = \"5m\"\nmode = \"nowait\"\nnotify = [\"http://127.0.0.1:9000/hook\", \"http://chat.internal/sluice\"]\n\
             [guardrails.g]\nrules = [\n  {{ kinds = [\"delete\"], action = \"approve\" }},\n  {{ kinds = [\"drop\"], action = \"approve\", approvers = [\"dba-leads\"], quorum = 2 }},\n]\n",
            target("approvers = [\"dba\"]\napproval_timeout = \"30s\"")
        );
        let c = parse(&src, "t.toml", env).unwrap();
        assert_eq!(c.approvals.timeout, Duration::from_secs(90));
        assert_eq!(c.approvals.grant_ttl, Duration::from_secs(300));
        assert_eq!(c.approvals.notify.len(), 2);
        let t = &c.targets[0];
        assert_eq!(
            (t.quorum, t.approval_mode),
            (1, ApprovalMode::Nowait),
            "the [approvals] mode is the default"
        );
        let p = CompiledPolicy::compile(&c).unwrap();
        let first = p.approval(0, 0).unwrap();
        assert_eq!(&first.approvers[..], ["dba".to_owned()]);
        assert_eq!((first.quorum, first.timeout), (1, Duration::from_secs(30)));
        let second = p.approval(0, 1).unwrap();
        assert_eq!(
            &second.approvers[..],
            ["dba-leads".to_owned()],
            "a rule's approvers replace the target's"
        );
        assert_eq!(second.quorum, 2);
        assert_eq!(second.grant_ttl, Duration::from_secs(300));

        let d = Approvals::default();
        assert_eq!(
            (d.timeout, d.grant_ttl, d.mode),
            (
                Duration::from_secs(300),
                Duration::from_secs(600),
                ApprovalMode::Wait
            )
        );
    }

    #[test]
    fn an_approve_rule_needs_someone_to_approve() {
        let src = format!(
            "{}[guardrails.g]\nrules = [ {{ kinds = [\"delete\"], action = \"approve\" }} ]\n",
            target("")
        );
        assert_error(
            &src,
            "t.toml:11:14: target `orders`: rule 1 of guardrails `g` needs approval but nobody may approve",
        );
    }

    #[test]
    fn rule_approvers_and_quorum_only_on_approve_rules() {
        let src = format!(
            "{}[guardrails.g]\nrules = [ {{ kinds = [\"drop\"], action = \"deny\", approvers = [\"dba\"], quorum = 2, reason = true }} ]\n",
            target("")
        );
        let got = errors(&src);
        assert!(
            got.contains(
                "t.toml:14:61: `approvers` only applies to a rule with action = \"approve\""
            ),
            "{got}"
        );
        assert!(got.contains("t.toml:14:78: `quorum` only applies"), "{got}");
        assert!(got.contains("t.toml:14:90: `reason` only applies"), "{got}");
    }

    #[test]
    fn bad_values_are_reported_with_positions() {
        let src = format!(
            "{}[approvals]\ntimeout = \"0s\"\ngrant_ttl = \"soon\"\nnotify = [\"https://hooks.example.com/x\", \"http:///nohost\"]\nmax_pending = 0\nmode = \"later\"\n\
             [guardrails.g]\nrules = [ {{ kinds = [\"delete\"], action = \"approve\" }} ]\n",
            target("approvers = [\"dba\"]\nquorum = 0")
        );
        assert_error(
            &src,
            "t.toml:19:8: unknown value `later`, expected `wait` or `nowait`",
        );
        let src = format!(
            "{}[approvals]\ntimeout = \"0s\"\ngrant_ttl = \"soon\"\nnotify = [\"https://hooks.example.com/x\", \"http:///nohost\"]\nmax_pending = 0\n\
             [guardrails.g]\nrules = [ {{ kinds = [\"delete\"], action = \"approve\" }} ]\n",
            target("approvers = [\"dba\"]\nquorum = 17")
        );
        let got = errors(&src);
        for want in [
            "t.toml:13:10: `quorum` must be between 1 and 16 distinct approvers, not 17",
            "t.toml:15:11: `approvals.timeout` must be between 1s and 7 days",
            "t.toml:16:13: invalid duration `soon` for `approvals.grant_ttl`",
            "t.toml:17:11: invalid webhook `https://hooks.example.com/x`: expected an http:// URL",
            "t.toml:17:42: invalid webhook `http:///nohost`",
            "t.toml:18:15: `approvals.max_pending` must be between 1 and 1000000",
        ] {
            assert!(got.contains(want), "missing {want:?} in:\n{got}");
        }
    }
}

mod http_rules {
    use super::*;
    use crate::policy::{CompiledPolicy, Decision, PathPattern};

    #[test]
    fn path_patterns() {
        let p = PathPattern::parse("/v1/customers/*");
        assert!(p.matches("/v1/customers/42"));
        assert!(!p.matches("/v1/customers/42/orders"));
        assert!(!p.matches("/v1/customers"));
        assert!(!p.matches("/v1/customers/"));
        let p = PathPattern::parse("/v1/**");
        assert!(p.matches("/v1") && p.matches("/v1/a/b/c"));
        assert!(!p.matches("/v2/a"));
        assert!(PathPattern::parse("/health").matches("/health"));
        // Case and a trailing slash cannot step around a rule.
        let p = PathPattern::parse("/v1/customers/*");
        assert!(p.matches("/V1/Customers/42") && p.matches("/v1/customers/42/"));
        assert!(!PathPattern::parse("/health").matches("/health/x"));
    }

    #[test]
    fn http_rules_combine_like_statement_rules() {
        let src = r#"[identity]
issuer = "https://idp.example.com/"
audience = "sluice"
jwks = "file:dev.jwks.json"

[[target]]
name = "api"
protocol = "http"
listen = "127.0.0.1:8080"
upstream = "127.0.0.1:9000"
access = ["agents"]
approvers = ["leads"]
guardrails = "api"

[guardrails.api]
rules = [
  { methods = ["DELETE"], path = "/v1/admin/**", action = "deny", message = "admin API is off limits" },
  { methods = ["DELETE", "PUT"], path = "/v1/customers/*", action = "approve" },
  { methods = ["DELETE"], path = "/v1/customers/*", groups = ["leads"], action = "allow" },
  { path = "/v1/export", action = "deny", message = "no bulk export" },
]
"#;
        let c = parse(src, "t.toml", env).unwrap();
        let p = CompiledPolicy::compile(&c).unwrap();
        let agent = p.groups(&["agents"]);
        let lead = p.groups(&["agents", "leads"]);
        assert_eq!(
            p.decide_http(0, "GET", "/v1/customers/1", agent),
            Decision::Allow
        );
        assert_eq!(
            p.decide_http(0, "delete", "/v1/customers/1", agent),
            Decision::Approve { rule: 1 },
            "method case"
        );
        assert_eq!(
            p.decide_http(0, "DELETE", "/v1/customers/1", agent),
            Decision::Approve { rule: 1 }
        );
        assert_eq!(
            p.decide_http(0, "PUT", "/v1/customers/1", lead),
            Decision::Approve { rule: 1 }
        );
        assert_eq!(
            p.decide_http(0, "DELETE", "/v1/customers/1", lead),
            Decision::Allow,
            "a group exemption"
        );
        assert_eq!(
            p.decide_http(0, "DELETE", "/v1/admin/users/1", lead),
            Decision::Deny {
                message: "admin API is off limits".into(),
                rule: 0
            }
        );
        assert_eq!(
            p.decide_http(0, "GET", "/v1/export", lead),
            Decision::Deny {
                message: "no bulk export".into(),
                rule: 3
            },
            "no methods: any method"
        );
        assert!(p.approval(0, 1).is_some());
    }

    #[test]
    fn http_credentials_are_a_header_or_a_param() {
        let head = "[identity]\nissuer = \"i\"\naudience = \"a\"\njwks = \"file:j\"\n[[target]]\nname = \"api\"\nprotocol = \"http\"\nlisten = \"127.0.0.1:8080\"\nupstream = \"127.0.0.1:9000\"\naccess = [\"a\"]\n";
        let ok = format!("{head}credentials = {{ header = \"Authorization\", value_env = \"ORDERS_PASSWORD\" }}\n");
        let c = parse(&ok, "t.toml", env).unwrap();
        let cr = c.targets[0].credentials.as_ref().unwrap();
        assert_eq!(cr.header.as_deref(), Some("Authorization"));
        assert_eq!(cr.value.as_ref().unwrap().expose(), "s3cret");
        assert_error(
            &format!("{head}credentials = {{ header = \"X\", param = \"k\", value_env = \"ORDERS_PASSWORD\" }}\n"),
            "t.toml:11:39: credentials: use `header` or `param`, not both",
        );
        assert_error(
            &format!(
                "{head}credentials = {{ user = \"app\", password_env = \"ORDERS_PASSWORD\" }}\n"
            ),
            "t.toml:11:24: http target `api` injects",
        );
        assert_error(
            &format!("{head}credentials = {{ header = \"Bad Name\", value_env = \"ORDERS_PASSWORD\" }}\n"),
            "t.toml:11:26: invalid name `Bad Name`",
        );
    }
}

const SSH_OK: &str = r#"[identity]
issuer = "https://idp.example.com/"
audience = "sluice"
jwks = "file:dev.jwks.json"

[[target]]
name = "web1"
protocol = "ssh"
listen = "127.0.0.1:2222"
upstream = "127.0.0.1:22"
upstream_host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMx3example0000000000000000000000000000 web1"
credentials = { user = "deploy", key_file = "/etc/sluice/web1.key" }
access = ["agents", "sre"]
approvers = ["leads"]
guardrails = "web"

[guardrails.web]
rules = [
  { commands = ["rm -rf *", "shutdown*", "mkfs*"], action = "deny", message = "destructive commands are blocked" },
  { commands = ["systemctl restart *"], action = "approve" },
]
"#;

#[test]
fn ssh_targets_pin_the_host_key_and_judge_every_command_a_line_runs() {
    use crate::policy::{CompiledPolicy, Decision};
    let c = parse(SSH_OK, "t.toml", env).unwrap();
    let t = &c.targets[0];
    assert_eq!(t.protocol, Protocol::Ssh);
    assert!(t
        .upstream_host_key
        .as_deref()
        .unwrap()
        .starts_with("ssh-ed25519 "));
    let g = &c.guardrails["web"];
    // A rule denies commands, so a shell (which would step around it) is off.
    assert_eq!(g.ssh.shell, Action::Deny);
    assert_eq!(g.ssh.sftp, Action::Deny);
    let p = CompiledPolicy::compile(&c).unwrap();
    let agent = p.groups(&["agents"]);
    let deny = |line: &str| matches!(p.decide_command(0, line, agent), Decision::Deny { .. });
    assert_eq!(p.decide_command(0, "uptime", agent), Decision::Allow);
    for line in [
        "rm -rf /",
        "rm   -rf   /srv",
        "uptime; /bin/rm -rf /",
        "sudo -- rm -r'f' /",
        "echo $(shutdown -h now)",
        "bash -c 'mkfs.ext4 /dev/sda'",
        "nice -n 5 rm -rf /",
        "$CMD -rf /",
        "eval 'rm -rf /'",
    ] {
        assert!(deny(line), "{line}");
    }
    assert_eq!(
        p.decide_command(0, "systemctl restart nginx", agent),
        Decision::Approve { rule: 1 }
    );
    // The strictest decision of all the commands holds.
    assert!(deny("systemctl restart nginx && shutdown now"));
}

#[test]
fn ssh_target_errors() {
    assert_error(
        &SSH_OK.replace("upstream_host_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMx3example0000000000000000000000000000 web1\"\n", ""),
        "t.toml:7:8: ssh target `web1` needs `upstream_host_key`",
    );
    assert_error(
        &SSH_OK.replace(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMx3example0000000000000000000000000000 web1",
            "AAAA",
        ),
        "t.toml:11:21: `upstream_host_key` must be an OpenSSH public key line",
    );
    assert_error(
        &SSH_OK.replace(", key_file = \"/etc/sluice/web1.key\"", ""),
        "t.toml:12:15: ssh target `web1` needs credentials.key_file",
    );
    assert_error(
        &SSH_OK.replace(
            "action = \"approve\" }",
            "action = \"approve\", kinds = [\"delete\"] }",
        ),
        "t.toml:20:3: a rule matches one of SQL `kinds`",
    );
    assert_error(
        &format!("{SSH_OK}sftp = \"approve\"\n"),
        "t.toml:22:8: `sftp` is \"allow\" or \"deny\"",
    );
    assert_error(
        &format!("{SSH_OK}agent_forwarding = \"allow\"\n"),
        "t.toml:22:20: `agent_forwarding` can only be \"deny\"",
    );
    assert_error(
        &SSH_OK.replace(
            "credentials = {",
            "upstream_known_hosts = \"/etc/ssh/ssh_known_hosts\"\ncredentials = {",
        ),
        "t.toml:12:24: set `upstream_host_key` or `upstream_known_hosts`, not both",
    );
    assert_error(
        &SSH_OK.replace(
            "jwks = \"file:dev.jwks.json\"",
            "jwks = \"file:dev.jwks.json\"\nssh_user_ca = [\"ca.pub\"]",
        ),
        "t.toml:5:16: `ssh_user_ca` entries are the CAs' OpenSSH public key lines",
    );
    // A known_hosts file instead of a pinned key; a CA for certificates.
    let c = parse(
        &SSH_OK
            .replace(
                "upstream_host_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMx3example0000000000000000000000000000 web1\"",
                "upstream_known_hosts = \"/etc/ssh/ssh_known_hosts\"",
            )
            .replace(
                "jwks = \"file:dev.jwks.json\"",
                "jwks = \"file:dev.jwks.json\"\nssh_user_ca = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMx3example0000000000000000000000000000 ca\"]",
            ),
        "t.toml",
        env,
    )
    .unwrap();
    assert_eq!(
        c.targets[0].upstream_known_hosts.as_deref(),
        Some("/etc/ssh/ssh_known_hosts")
    );
    assert_eq!(c.identity.unwrap().ssh_user_ca.len(), 1);
}

#[test]
fn an_allow_list_of_commands_names_every_command_a_line_runs() {
    use crate::policy::{CompiledPolicy, Decision, OTHER_COMMANDS};
    let allow_list = SSH_OK.replace(
        "rules = [\n  { commands = [\"rm -rf *\", \"shutdown*\", \"mkfs*\"], action = \"deny\", message = \"destructive commands are blocked\" },\n  { commands = [\"systemctl restart *\"], action = \"approve\" },\n]",
        "rules = [\n  { commands = [\"uptime\", \"systemctl status *\", \"journalctl -u *\"], action = \"allow\" },\n  { commands = [\"systemctl restart *\"], action = \"approve\" },\n]\nother_commands = \"deny\"",
    );
    assert_ne!(allow_list, SSH_OK);
    let c = parse(&allow_list, "t.toml", env).unwrap();
    // Commands outside the list step around it in a shell: shells are off.
    assert_eq!(c.guardrails["web"].ssh.shell, Action::Deny);
    let p = CompiledPolicy::compile(&c).unwrap();
    let agent = p.groups(&["agents"]);
    for line in [
        "uptime",
        "systemctl status nginx",
        "uptime && journalctl -u nginx | tail",
    ] {
        let d = p.decide_command(0, line, agent);
        // `tail` is not named: the piped line is refused as a whole.
        if line.contains("tail") {
            assert!(
                matches!(
                    d,
                    Decision::Deny {
                        rule: OTHER_COMMANDS,
                        ..
                    }
                ),
                "{line}"
            );
        } else {
            assert_eq!(d, Decision::Allow, "{line}");
        }
    }
    // Output to a file, variables set for a command, a program by a path
    // outside the system's: none of them is a named command.
    for line in [
        "cat /etc/shadow",
        "uptime; cat /etc/shadow",
        "systemctl status nginx $(cat /etc/shadow)",
        "$CMD",
        "> ~/.ssh/authorized_keys",
        "uptime > ~/.bashrc",
        "uptime >> /etc/cron.d/x",
        "uptime 1>x",
        "SYSTEMD_PAGER='sh -c id' systemctl status nginx",
        "./uptime",
        "/tmp/uptime",
        "",
    ] {
        assert!(
            matches!(p.decide_command(0, line, agent), Decision::Deny { .. }),
            "{line}"
        );
    }
    for line in [
        "/usr/bin/uptime",
        "uptime 2>&1",
        "uptime > /dev/null 2>&1",
        "journalctl -u nginx 2>/dev/null",
    ] {
        assert_eq!(p.decide_command(0, line, agent), Decision::Allow, "{line}");
    }
    assert!(matches!(
        p.decide_command(0, "systemctl restart nginx", agent),
        Decision::Approve { .. }
    ));
    // `approve`: what no rule names waits for the target's approvers.
    let held = parse(
        &allow_list.replace("other_commands = \"deny\"", "other_commands = \"approve\""),
        "t.toml",
        env,
    )
    .unwrap();
    let p = CompiledPolicy::compile(&held).unwrap();
    assert_eq!(
        p.decide_command(0, "cat /etc/hostname", agent),
        Decision::Approve {
            rule: OTHER_COMMANDS
        }
    );
    // A rule's approvers do not approve what no rule names on the same line
    // (the target's approvers hold that): one approval cannot stand for both.
    assert!(matches!(
        p.decide_command(0, "true; systemctl restart db", agent),
        Decision::Deny { .. }
    ));
    assert_eq!(
        p.decide_command(0, "systemctl restart db", agent),
        Decision::Approve { rule: 1 }
    );
}

#[test]
fn state_section_is_checked_before_the_first_connection() {
    let ok = format!(
        "{TCP_OK}[state]\npostgres = \"host=db port=5433 dbname=sluice user=gw\"\npassword_env = \"ORDERS_PASSWORD\"\ninstance = \"gw-a\"\nlease = \"5s\"\n"
    );
    let c = parse(&ok, "t.toml", env).unwrap();
    let s = c.state.unwrap();
    assert_eq!(s.instance, "gw-a");
    assert_eq!(s.lease, Duration::from_secs(5));
    assert_eq!(s.password.unwrap().expose(), "s3cret");
    assert!(parse(TCP_OK, "t.toml", env).unwrap().state.is_none());

    let bad = format!(
        "{TCP_OK}[state]\npostgres = \"host=db dbname=sluice user=gw password=x\"\ntls = \"verify\"\ninstance = \"gw a\"\nlease = \"100ms\"\npassword_env = \"NOPE\"\n"
    );
    let got = errors(&bad);
    for want in [
        "t.toml:8:12: put the password in an environment variable named by `password_env`",
        "t.toml:9:7: `[state] tls = \"verify\"` needs `ca`",
        "t.toml:10:12: invalid instance name `gw a`",
        "t.toml:11:9: `state.lease` must be between 3s and 1h",
        "t.toml:12:16: environment variable `NOPE` (named by `password_env`) is not set",
    ] {
        assert!(got.contains(want), "missing {want:?} in:\n{got}");
    }
    assert_error(
        &format!("{TCP_OK}[state]\npostgres = \"host=db user=gw\"\n"),
        "t.toml:8:12: `postgres` needs `dbname=...`",
    );
    assert_error(
        &format!("{TCP_OK}[state]\npostgres = \"host=db dbname=x user=gw sslmode=require\"\n"),
        "t.toml:8:12: use `tls = \"require\"`",
    );
    assert_error(
        &format!("{TCP_OK}[state]\nlease = \"5s\"\n"),
        "t.toml:7:1: `[state]` needs `postgres`",
    );
}

#[test]
fn console_and_admin_tls_are_checked() {
    let id = "[identity]\nissuer = \"https://idp.example/\"\naudience = \"sluice\"\njwks = \"file:/dev/null\"\n";
    let ok = format!("{TCP_OK}{id}[console]\nclient_id = \"sluice-console\"\nurl = \"https://gw.example:9470/\"\n");
    let c = parse(&ok, "t.toml", env).unwrap().console.unwrap();
    assert_eq!(c.url, "https://gw.example:9470");
    assert_eq!(c.scopes, "openid profile");
    let got = errors(&format!(
        "{TCP_OK}[console]\nclient_id = \"x\"\nurl = \"gw.example/console\"\nscopes = \"profile\"\n"
    ));
    for want in [
        "t.toml:7:1: `[console]` signs in with `[identity]`'s issuer",
        "t.toml:9:7: invalid console url `gw.example/console`",
        "t.toml:10:10: `scopes` must include `openid`",
    ] {
        assert!(got.contains(want), "missing {want:?} in:\n{got}");
    }
    assert_error(
        &format!("[gateway]\nadmin = \"127.0.0.1:9470\"\nadmin_tls = true\n{TCP_OK}"),
        "t.toml:3:13: `admin_tls = true` serves the admin listener with `[tls]`'s certificate",
    );
}
