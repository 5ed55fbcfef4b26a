//! Settings: `SET`/`RESET`, `set_config`, startup parameters, and [`with_params`]
//! for judging a setting with a `Bind`'s values.

use crate::postgres::encoding::{self, Class};
use crate::sql::lexer::{lex, Dialect, Options, Token, TokenKind};

use super::{is, Flags, Kind, Statement};

/// The value a setting is given, as far as the text shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// `DEFAULT`, `RESET`: back to what the session started with.
    Default,
    /// A plain word, number or `'string'` (quotes removed, `''` still doubled).
    Text(&'a [u8]),
    /// A parameter, an expression, an escaped string: not known until run.
    Unknown,
}

/// How setting `name` (a GUC name, any case) to `value` is classified, wherever
/// it happens: `SET`, `set_config`, a startup parameter, startup `options`.
///
/// Choosing a role is [`Kind::SetRole`], choosing a search path
/// [`Kind::SetSearchPath`]; a reset to the default is a plain `set` (it returns to
/// what the gateway logged in with). A client encoding is classified by
/// [`encoding::class`], and an unknown one is unsafe.
pub fn setting(name: &[u8], value: Value<'_>) -> Statement {
    let mut st = Statement {
        kind: Kind::Set,
        flags: Flags::default(),
    };
    // `set_config('role', 'none', ...)` resets the role; PostgreSQL compares
    // exactly (`'NONE'` is a role of that name). A bare `NONE` word arrives
    // here lower-cased, as the server reads it.
    let text = |v: &[u8]| -> bool { v != b"none" };
    if name.eq_ignore_ascii_case(b"role") || name.eq_ignore_ascii_case(b"session_authorization") {
        if match value {
            Value::Default => false,
            Value::Text(v) => text(v) || name.eq_ignore_ascii_case(b"session_authorization"),
            Value::Unknown => true,
        } {
            st.kind = Kind::SetRole;
        }
    } else if name.eq_ignore_ascii_case(b"search_path") {
        if value != Value::Default {
            st.kind = Kind::SetSearchPath;
        }
    } else if name.len() >= 17 && name[name.len() - 17..].eq_ignore_ascii_case(b"preload_libraries")
    {
        // `local_preload_libraries` / `session_preload_libraries` load code
        // into the session, like `LOAD`.
        st.flags.opaque = true;
    } else if name.eq_ignore_ascii_case(b"client_encoding") {
        st.flags.encoding = match value {
            Value::Default => None,
            Value::Text(v) => Some(encoding::class(v)),
            Value::Unknown => Some(Class::Unsafe),
        };
    }
    st
}

/// A setting name the text does not show (`U&"..."`, a parameter): it may be
/// any of them, so it counts as all of them.
pub(super) fn unknown_setting() -> Statement {
    Statement {
        kind: Kind::SetRole,
        flags: Flags {
            opaque: true,
            kinds: Kind::SetSearchPath.bit(),
            encoding: Some(Class::Unsafe),
            ..Flags::default()
        },
    }
}

/// `sql` with each `$n` parameter replaced by its value from a `Bind` as a
/// plain literal, so a statement whose meaning depends on its parameters
/// (`set_config('client_encoding', $1, false)`) can be classified with them.
/// A binary value is taken as its bytes: the arguments a setting takes are
/// text, whose binary form is the text itself, and a literal changes nothing
/// else about how a statement classifies. A value that cannot be written as a
/// plain literal (a backslash, a NUL, not UTF-8) and a parameter with no value
/// stay `$n`, so they classify as unknown (fail closed). `None` if the text
/// does not lex.
pub fn with_params(sql: &[u8], params: &[crate::postgres::frontend::Param<'_>]) -> Option<Vec<u8>> {
    use crate::postgres::frontend::Param;
    let mut tokens = Vec::new();
    lex(sql, Options::new(Dialect::Postgres), &mut tokens).ok()?;
    let mut out = Vec::with_capacity(sql.len() + 16);
    let mut from = 0;
    for t in tokens.iter().filter(|t| t.kind == TokenKind::Param) {
        let raw = &sql[t.range()];
        let index = std::str::from_utf8(raw.get(1..)?)
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n >= 1);
        let literal = match index.and_then(|n| params.get(n - 1)) {
            Some(Param::Null) => Some(b"NULL".to_vec()),
            Some(Param::Text(v) | Param::Binary(v))
                if std::str::from_utf8(v).is_ok() && !v.contains(&b'\\') && !v.contains(&0) =>
            {
                let mut l = Vec::with_capacity(v.len() + 2);
                l.push(b'\'');
                for &b in *v {
                    if b == b'\'' {
                        l.push(b'\'');
                    }
                    l.push(b);
                }
                l.push(b'\'');
                Some(l)
            }
            _ => None,
        };
        if let Some(l) = literal {
            out.extend_from_slice(&sql[from..t.start as usize]);
            out.extend_from_slice(&l);
            from = t.end as usize;
        }
    }
    out.extend_from_slice(&sql[from..]);
    Some(out)
}

/// The text of a plain `'...'` literal (quotes removed), or of a word or number.
fn plain_value<'a>(sql: &'a [u8], t: &Token) -> Option<&'a [u8]> {
    let raw = &sql[t.range()];
    match t.kind {
        TokenKind::Word | TokenKind::Number => Some(raw),
        // Only a plain literal: `E'...'`, `U&'...'` and dollar quotes may spell
        // anything through escapes. A doubled quote stays doubled, which no
        // name that matters contains.
        // With standard_conforming_strings off the server reads `'rol\e'` as
        // `role`: a literal with a backslash is not plain.
        TokenKind::String
            if raw.first() == Some(&b'\'') && raw.len() >= 2 && !raw.contains(&b'\\') =>
        {
            Some(&raw[1..raw.len() - 1])
        }
        _ => None,
    }
}

/// A setting name: `name`, `"name"`, `a.b` (identifiers joined by dots), read
/// up to `TO`/`=`. `None` if the text does not show it.
fn setting_name(sql: &[u8], toks: &[Token]) -> Option<(Vec<u8>, usize)> {
    let mut name = Vec::new();
    let mut i = 0;
    loop {
        let t = toks.get(i)?;
        let raw = &sql[t.range()];
        match t.kind {
            TokenKind::Word => name.extend_from_slice(raw),
            TokenKind::QuotedIdent if raw.first() == Some(&b'"') => {
                let inner = &raw[1..raw.len() - 1];
                if memchr::memchr(b'"', inner).is_some() {
                    return None;
                }
                name.extend_from_slice(inner);
            }
            _ => return None,
        }
        i += 1;
        if toks
            .get(i)
            .is_some_and(|t| t.kind == TokenKind::Punct(b'.'))
        {
            name.push(b'.');
            i += 1;
        } else {
            return Some((name, i));
        }
    }
}

/// A PostgreSQL `SET ...` or `RESET ...` statement (its tokens).
pub(super) fn set_statement(sql: &[u8], s: &[Token], reset: bool) -> Statement {
    let plain = Statement {
        kind: Kind::Set,
        flags: Flags::default(),
    };
    if reset {
        // RESET name / ALL / ROLE / SESSION AUTHORIZATION: back to the defaults
        // the session started with.
        return plain;
    }
    let w = |i: usize, kw: &str| s.get(i).is_some_and(|t| is(sql, t, kw));
    // SET [SESSION | LOCAL] ...; `SESSION AUTHORIZATION` and `SESSION
    // CHARACTERISTICS` are statements of their own.
    let mut at = 1;
    if w(1, "LOCAL") || (w(1, "SESSION") && !w(2, "AUTHORIZATION") && !w(2, "CHARACTERISTICS")) {
        at = 2;
    }
    let value_at = |i: usize| -> Value<'_> {
        match s.get(i) {
            Some(t) if is(sql, t, "DEFAULT") => Value::Default,
            Some(t) if s.len() == i + 1 => plain_value(sql, t).map_or(Value::Unknown, Value::Text),
            None => Value::Default,
            Some(_) => Value::Unknown,
        }
    };
    if w(at, "SESSION") && w(at + 1, "AUTHORIZATION") {
        return setting(b"session_authorization", value_at(at + 2));
    }
    if w(at, "ROLE") {
        // A bare word is folded to lower case by the server's parser.
        if w(at + 1, "NONE") && s.len() == at + 2 {
            return setting(b"role", Value::Text(b"none"));
        }
        return setting(b"role", value_at(at + 1));
    }
    if w(at, "SCHEMA") {
        return setting(b"search_path", value_at(at + 1));
    }
    if w(at, "NAMES") {
        return setting(b"client_encoding", value_at(at + 1));
    }
    for kw in [
        "TRANSACTION",
        "CHARACTERISTICS",
        "CONSTRAINTS",
        "TIME",
        "XML",
    ] {
        if w(at, kw) {
            return plain;
        }
    }
    let Some((name, used)) = setting_name(sql, &s[at.min(s.len())..]) else {
        return unknown_setting();
    };
    let next = at + used;
    let value = if w(next, "TO")
        || s.get(next)
            .is_some_and(|t| t.kind == TokenKind::Punct(b'='))
    {
        value_at(next + 1)
    } else {
        // `SET name FROM CURRENT` (function options) or something the server
        // will refuse.
        Value::Unknown
    };
    setting(&name, value)
}

/// `set_config(name, value, is_local)`: `args` are the tokens after its `(`.
pub(super) fn set_config(sql: &[u8], args: &[Token]) -> Statement {
    let comma = |i: usize| {
        args.get(i)
            .is_some_and(|t| t.kind == TokenKind::Punct(b','))
    };
    let name = args
        .first()
        .filter(|t| t.kind == TokenKind::String && comma(1))
        .and_then(|t| plain_value(sql, t));
    let param = |i: usize| args.get(i).is_some_and(|t| t.kind == TokenKind::Param);
    let Some(name) = name else {
        let mut st = unknown_setting();
        st.flags.bound_setting = param(0);
        return st;
    };
    let value = match args.get(2) {
        Some(t) if comma(3) => plain_value(sql, t)
            .filter(|_| t.kind == TokenKind::String)
            .map_or(Value::Unknown, Value::Text),
        _ => Value::Unknown,
    };
    let mut st = setting(name, value);
    // Only where the value decides how it is judged (an encoding; a role or
    // `none`) does it need the Bind's value.
    st.flags.bound_setting = value == Value::Unknown
        && param(2)
        && (st.kind == Kind::SetRole || st.flags.encoding.is_some());
    st
}
