//! Statement classification over the lexer's tokens.
//!
//! Each statement gets a [`Kind`] and [`Flags`]. A statement counts as the most
//! dangerous kind found anywhere inside it: `WITH x AS (DELETE ...) SELECT` is a
//! delete, `EXPLAIN ANALYZE UPDATE ...` is an update, `PREPARE p AS DROP ...`
//! (were it valid) a drop. What cannot be seen through (`DO`, `EXECUTE`, `CALL`,
//! `COPY ... PROGRAM`, functions known to run dynamic SQL or write, an unknown
//! leading keyword, anything the lexer cannot finish) is flagged `opaque`, so
//! policy can fail closed.

use super::lexer::{lex, Dialect, LexError, Options, Token, TokenKind};
use crate::postgres::encoding::Class;

mod functions;
mod settings;
mod sub_statement;

pub use functions::calls;
use functions::function_at;
use settings::unknown_setting;
pub use settings::{setting, with_params, Value};
use sub_statement::sub_statement;

/// Statement kinds, in the order of `sluice_config::STATEMENT_KINDS` (a test in
/// `core` keeps the two lists equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    Copy,
    /// `COPY ... TO PROGRAM` / `FROM PROGRAM`: runs an operating-system command.
    Program,
    Create,
    Alter,
    Drop,
    Truncate,
    Grant,
    Revoke,
    Set,
    /// `SET ROLE`, `SET SESSION AUTHORIZATION`, `set_config('role', ...)`.
    SetRole,
    /// `SET search_path`, `SET SCHEMA`, `set_config('search_path', ...)`.
    SetSearchPath,
    Show,
    Begin,
    Commit,
    Rollback,
    Prepare,
    Execute,
    Deallocate,
    Do,
    Call,
    Explain,
    Vacuum,
    Lock,
    Listen,
    Notify,
    Other,
}

impl Kind {
    pub const ALL: [Kind; 31] = [
        Kind::Select,
        Kind::Insert,
        Kind::Update,
        Kind::Delete,
        Kind::Merge,
        Kind::Copy,
        Kind::Program,
        Kind::Create,
        Kind::Alter,
        Kind::Drop,
        Kind::Truncate,
        Kind::Grant,
        Kind::Revoke,
        Kind::Set,
        Kind::SetRole,
        Kind::SetSearchPath,
        Kind::Show,
        Kind::Begin,
        Kind::Commit,
        Kind::Rollback,
        Kind::Prepare,
        Kind::Execute,
        Kind::Deallocate,
        Kind::Do,
        Kind::Call,
        Kind::Explain,
        Kind::Vacuum,
        Kind::Lock,
        Kind::Listen,
        Kind::Notify,
        Kind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Select => "select",
            Kind::Insert => "insert",
            Kind::Update => "update",
            Kind::Delete => "delete",
            Kind::Merge => "merge",
            Kind::Copy => "copy",
            Kind::Program => "program",
            Kind::Create => "create",
            Kind::Alter => "alter",
            Kind::Drop => "drop",
            Kind::Truncate => "truncate",
            Kind::Grant => "grant",
            Kind::Revoke => "revoke",
            Kind::Set => "set",
            Kind::SetRole => "set_role",
            Kind::SetSearchPath => "set_search_path",
            Kind::Show => "show",
            Kind::Begin => "begin",
            Kind::Commit => "commit",
            Kind::Rollback => "rollback",
            Kind::Prepare => "prepare",
            Kind::Execute => "execute",
            Kind::Deallocate => "deallocate",
            Kind::Do => "do",
            Kind::Call => "call",
            Kind::Explain => "explain",
            Kind::Vacuum => "vacuum",
            Kind::Lock => "lock",
            Kind::Listen => "listen",
            Kind::Notify => "notify",
            Kind::Other => "other",
        }
    }

    /// How much harm a statement of this kind can do; the highest found wins.
    pub fn danger(self) -> u8 {
        match self {
            Kind::Select | Kind::Show | Kind::Explain => 0,
            Kind::Listen | Kind::Notify => 1,
            Kind::Begin | Kind::Commit | Kind::Rollback | Kind::Deallocate => 2,
            Kind::Set | Kind::SetSearchPath | Kind::Prepare => 3,
            Kind::Other => 4,
            Kind::Insert | Kind::Copy | Kind::Lock | Kind::Vacuum => 5,
            Kind::Update | Kind::Merge => 6,
            Kind::Delete => 7,
            Kind::Create => 8,
            Kind::Alter | Kind::Grant | Kind::Revoke | Kind::SetRole => 9,
            Kind::Execute | Kind::Call | Kind::Do => 10,
            Kind::Truncate => 11,
            Kind::Drop => 12,
            Kind::Program => 13,
        }
    }

    /// This kind's bit in [`Flags::kinds`].
    pub const fn bit(self) -> u64 {
        1 << self as u8
    }
}

/// Properties of a statement beyond its kind. `kinds` and `encoding` say what
/// else it does wherever it does it (`SELECT set_config('role', ...)` also sets
/// the role), so policy judges that part too whatever the statement's own kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags {
    /// An `UPDATE`/`DELETE` (anywhere in the statement) without a `WHERE`.
    pub unbounded: bool,
    /// Modifies data or schema somewhere.
    pub writes: bool,
    /// Contains code the gateway cannot see into.
    pub opaque: bool,
    /// Calls a function not known to be free of side effects (anything but
    /// the common read-only built-ins: `count`, `coalesce`, `lower`, ...): a
    /// user function may write, so the statement is not proven read-only.
    pub calls: bool,
    /// Every kind of (sub)statement found inside, as [`Kind::bit`]s: `WITH d AS
    /// (DELETE ...) INSERT ...` is an insert that also deletes, `MERGE ... THEN
    /// DELETE` a delete, `SELECT set_config('role', ...)` also sets the role
    /// (choosing a role or a search path counts; returning to the login's
    /// defaults does not). Policy judges the statement as each of them.
    pub kinds: u64,
    /// A setting's name or value comes from a `$n` parameter
    /// (`set_config('client_encoding', $1, false)`): the statement can only be
    /// judged with the values a `Bind` gives it.
    pub bound_setting: bool,
    /// Sets the client encoding to an encoding of this class; `Unsafe` also when
    /// the new encoding cannot be read from the text.
    pub encoding: Option<Class>,
    /// `PREPARE name AS statement`: the statement is kept to run later.
    pub prepares: bool,
}

/// One classified statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Statement {
    /// The most dangerous kind found anywhere in it.
    pub kind: Kind,
    pub flags: Flags,
}

impl Statement {
    /// Every kind the statement is judged as: its own and those inside.
    pub fn kinds(&self) -> impl Iterator<Item = Kind> {
        let bits = self.flags.kinds | self.kind.bit();
        Kind::ALL.into_iter().filter(move |k| bits & k.bit() != 0)
    }

    /// Does it do `kind` anywhere?
    pub fn has(&self, kind: Kind) -> bool {
        (self.flags.kinds | self.kind.bit()) & kind.bit() != 0
    }

    /// Proven to change nothing: a `SELECT` or `SHOW` (and nothing else
    /// inside), no write, no opaque code, no function that may write. What
    /// is not proven is treated as a write.
    pub fn read_only(&self) -> bool {
        let reads = Kind::Select.bit() | Kind::Show.bit();
        (self.flags.kinds | self.kind.bit()) & !reads == 0
            && !self.flags.writes
            && !self.flags.opaque
            && !self.flags.calls
    }
}

/// Reusable scratch space, so classifying allocates nothing once warm.
#[derive(Default)]
pub struct Classifier {
    tokens: Vec<Token>,
    alt: Vec<Token>,
}

impl Classifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Classifies every statement of `sql` into `out` (cleared first).
    /// Empty statements (only comments or `;`) produce nothing.
    pub fn classify(&mut self, sql: &[u8], dialect: Dialect, out: &mut Vec<Statement>) {
        out.clear();
        let opts = Options::new(dialect);
        if lex(sql, opts, &mut self.tokens).is_err() {
            out.push(opaque_other());
            return;
        }
        // PostgreSQL with standard_conforming_strings off reads backslashes in
        // plain strings as escapes. If that reading splits the text differently,
        // the gateway cannot know which the server uses: opaque.
        if dialect == Dialect::Postgres && memchr::memchr(b'\\', sql).is_some() {
            let alt = Options {
                backslash_quotes: true,
                ..opts
            };
            let same = match lex(sql, alt, &mut self.alt) {
                Ok(()) => self.alt == self.tokens,
                Err(_) => false,
            };
            if !same {
                out.push(opaque_other());
                return;
            }
        }
        // In the multibyte encodings Sluice refuses (SJIS, BIG5, GBK, ...), a
        // character's second byte can be `\`, right after a byte >= 0x80. Should
        // the session ever be in one of them unseen, that is the only way the
        // server could read the text differently: such text is opaque.
        let hidden_escape = dialect == Dialect::Postgres
            && memchr::memchr_iter(b'\\', sql).any(|i| i > 0 && sql[i - 1] >= 0x80);
        for stmt in self.tokens.split(|t| t.kind == TokenKind::Semicolon) {
            if !stmt.is_empty() {
                let mut st = statement(sql, stmt, dialect);
                st.flags.opaque |= hidden_escape;
                out.push(st);
            }
        }
    }
}

fn opaque_other() -> Statement {
    Statement {
        kind: Kind::Other,
        flags: Flags {
            opaque: true,
            writes: true,
            ..Flags::default()
        },
    }
}

/// Upper-cased keyword comparison without allocating.
fn is(sql: &[u8], t: &Token, kw: &str) -> bool {
    t.kind == TokenKind::Word && sql[t.range()].eq_ignore_ascii_case(kw.as_bytes())
}

fn word<'a>(sql: &'a [u8], t: Option<&Token>) -> Option<&'a [u8]> {
    t.filter(|t| t.kind == TokenKind::Word)
        .map(|t| &sql[t.range()])
}

fn eq(w: Option<&[u8]>, kw: &str) -> bool {
    w.is_some_and(|w| w.eq_ignore_ascii_case(kw.as_bytes()))
}

/// Classifies one statement (its tokens, without the `;`).
fn statement(sql: &[u8], toks: &[Token], dialect: Dialect) -> Statement {
    let mut st = Statement {
        kind: Kind::Other,
        flags: Flags::default(),
    };
    // Walk every position where a (sub)statement may start: the beginning, and
    // right after `(`. Nested DML is what makes a SELECT a write.
    let mut seen_any = false;
    // True while only `(` has been seen: `(SELECT 1)` starts at its first word.
    let mut leading = true;
    // Each sub-statement is read to its end: past this nesting depth the
    // reading would cost the square of the text, so deeper ones are opaque.
    const MAX_NESTING: usize = 32;
    let mut depth = 0usize;
    for i in 0..toks.len() {
        let kind = toks[i].kind;
        match kind {
            TokenKind::Punct(b'(') => depth += 1,
            TokenKind::Punct(b')') => depth = depth.saturating_sub(1),
            _ => {}
        }
        let at_start =
            i == 0 || (toks[i - 1].kind == TokenKind::Punct(b'(') && kind == TokenKind::Word);
        if at_start && kind == TokenKind::Word && depth > MAX_NESTING {
            st.flags.opaque = true;
            st.flags.writes = true;
        } else if at_start && kind == TokenKind::Word {
            if let Some(sub) = sub_statement(sql, toks, i, dialect, leading) {
                merge(&mut st, sub, !seen_any && leading);
                seen_any = true;
            }
        }
        leading &= kind == TokenKind::Punct(b'(');
        function_at(sql, toks, i, dialect, &mut st);
    }
    if !seen_any {
        st.flags.opaque = true;
        st.flags.writes = true;
    }
    // `pg_settings` is writable by anyone, and its rule calls `set_config` with
    // whatever the statement puts there: a write to it may set anything.
    let writes_rows =
        Kind::Insert.bit() | Kind::Update.bit() | Kind::Delete.bit() | Kind::Merge.bit();
    if dialect == Dialect::Postgres
        && (st.flags.kinds | st.kind.bit()) & writes_rows != 0
        && toks.iter().any(|t| {
            let raw = &sql[t.range()];
            let name = raw
                .strip_prefix(b"\"")
                .and_then(|r| r.strip_suffix(b"\""))
                .unwrap_or(raw);
            // A `U&"..."` name may spell pg_settings through escapes.
            let escaped =
                t.kind == TokenKind::QuotedIdent && matches!(raw.first(), Some(b'u' | b'U'));
            matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent)
                && (name.eq_ignore_ascii_case(b"pg_settings") || escaped)
        })
    {
        merge(&mut st, unknown_setting(), false);
    }
    st
}

/// Folds a sub-statement into the statement: the most dangerous kind wins, flags
/// accumulate. `top` marks the statement's own leading keyword.
fn merge(st: &mut Statement, sub: Statement, top: bool) {
    if top || sub.kind.danger() > st.kind.danger() {
        st.kind = sub.kind;
    }
    st.flags.unbounded |= sub.flags.unbounded;
    st.flags.writes |= sub.flags.writes;
    st.flags.opaque |= sub.flags.opaque;
    st.flags.calls |= sub.flags.calls;
    st.flags.kinds |= sub.flags.kinds | sub.kind.bit();
    st.flags.encoding = st.flags.encoding.max(sub.flags.encoding);
    st.flags.bound_setting |= sub.flags.bound_setting;
    st.flags.prepares |= sub.flags.prepares;
}

/// Convenience: classify with a fresh classifier.
pub fn classify(sql: &[u8], dialect: Dialect) -> Vec<Statement> {
    let mut out = Vec::new();
    Classifier::new().classify(sql, dialect, &mut out);
    out
}

impl From<LexError> for Statement {
    fn from(_: LexError) -> Self {
        opaque_other()
    }
}
