//! A zero-copy SQL lexer for the PostgreSQL and MySQL dialects.
//!
//! It knows exactly where strings, quoted identifiers, dollar-quoted bodies and
//! comments begin and end, because that is where a guardrail bypass would hide:
//! `SELECT '...; DROP TABLE t' ` must stay one statement, and
//! `/*! DROP TABLE t */` (MySQL executable comment) must be seen as code.
//! Anything it cannot finish (an unterminated string or comment) is an error,
//! which the classifier turns into `opaque`.

use std::ops::Range;

/// Which server's lexical rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Mysql,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An unquoted word: keyword or identifier.
    Word,
    /// `"ident"` (or `` `ident` `` in MySQL), `U&"ident"`.
    QuotedIdent,
    /// Any string constant, including dollar-quoted bodies.
    String,
    Number,
    /// `$1`, `?`.
    Param,
    /// One punctuation or operator byte (`(`, `)`, `,`, `.`, `=`, ...).
    Punct(u8),
    Semicolon,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub start: u32,
    pub end: u32,
}

impl Token {
    pub fn range(&self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LexError {
    UnterminatedString,
    UnterminatedComment,
    UnterminatedQuotedIdent,
    UnterminatedDollarQuote,
    TooLong,
}

/// Options that change how plain strings end.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub dialect: Dialect,
    /// Backslash escapes in plain `'...'` strings (MySQL always; PostgreSQL when
    /// `standard_conforming_strings` is off).
    pub backslash_quotes: bool,
}

impl Options {
    pub fn new(dialect: Dialect) -> Self {
        Options {
            dialect,
            backslash_quotes: dialect == Dialect::Mysql,
        }
    }
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// Bytes that may continue an unquoted identifier (both dialects allow `$`).
static IDENT_CONT: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
        b += 1;
    }
    t
};

fn is_ident_cont(b: u8) -> bool {
    IDENT_CONT[b as usize]
}

/// Lexes `sql` into `out` (cleared first).
pub fn lex(sql: &[u8], opts: Options, out: &mut Vec<Token>) -> Result<(), LexError> {
    out.clear();
    if sql.len() > u32::MAX as usize {
        return Err(LexError::TooLong);
    }
    let d = opts.dialect;
    let n = sql.len();
    let mut i = 0;
    let push = |out: &mut Vec<Token>, kind, start: usize, end: usize| {
        out.push(Token {
            kind,
            start: start as u32,
            end: end as u32,
        })
    };
    while i < n {
        let b = sql[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\x0b' => {
                i += 1;
                while i < n && matches!(sql[i], b' ' | b'\t' | b'\n' | b'\r') {
                    i += 1;
                }
            }
            b'-' if sql.get(i + 1) == Some(&b'-')
                && (d == Dialect::Postgres
                    || sql
                        .get(i + 2)
                        .is_none_or(|c| c.is_ascii_whitespace() || c.is_ascii_control())) =>
            {
                // PostgreSQL ends a `--` comment at CR as well as LF.
                i = memchr::memchr2(b'\n', b'\r', &sql[i..]).map_or(n, |p| i + p + 1);
            }
            b'#' if d == Dialect::Mysql => {
                i = memchr::memchr(b'\n', &sql[i..]).map_or(n, |p| i + p + 1);
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                if d == Dialect::Mysql && sql.get(i + 2) == Some(&b'!') {
                    // Executable comment: its content is code. Skip `/*!` and an
                    // optional version number; the closing `*/` is skipped below.
                    i += 3;
                    while i < n && sql[i].is_ascii_digit() {
                        i += 1;
                    }
                    continue;
                }
                i = skip_block_comment(sql, i, d)?;
            }
            b'*' if d == Dialect::Mysql && sql.get(i + 1) == Some(&b'/') => {
                // The end of an executable comment.
                i += 2;
            }
            b'\'' => {
                let end = string_end(sql, i + 1, opts.backslash_quotes)?;
                push(out, TokenKind::String, i, end);
                i = end;
            }
            b'"' => {
                if d == Dialect::Mysql {
                    // MySQL: a string unless ANSI_QUOTES; lexing it as a string is
                    // the same shape either way (doubled quote, backslashes).
                    let end = quoted_end(sql, i + 1, b'"', true)?;
                    push(out, TokenKind::String, i, end);
                    i = end;
                } else {
                    let end = quoted_end(sql, i + 1, b'"', false)
                        .map_err(|_| LexError::UnterminatedQuotedIdent)?;
                    push(out, TokenKind::QuotedIdent, i, end);
                    i = end;
                }
            }
            b'`' if d == Dialect::Mysql => {
                let end = quoted_end(sql, i + 1, b'`', false)
                    .map_err(|_| LexError::UnterminatedQuotedIdent)?;
                push(out, TokenKind::QuotedIdent, i, end);
                i = end;
            }
            b'$' if d == Dialect::Postgres => {
                if sql.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    let mut j = i + 1;
                    while j < n && sql[j].is_ascii_digit() {
                        j += 1;
                    }
                    push(out, TokenKind::Param, i, j);
                    i = j;
                } else if let Some(tag_end) = dollar_tag(sql, i) {
                    let tag = &sql[i..tag_end];
                    let body_end = memchr::memmem::find(&sql[tag_end..], tag)
                        .ok_or(LexError::UnterminatedDollarQuote)?;
                    let end = tag_end + body_end + tag.len();
                    push(out, TokenKind::String, i, end);
                    i = end;
                } else {
                    push(out, TokenKind::Punct(b'$'), i, i + 1);
                    i += 1;
                }
            }
            b';' => {
                push(out, TokenKind::Semicolon, i, i + 1);
                i += 1;
            }
            b'?' if d == Dialect::Mysql => {
                push(out, TokenKind::Param, i, i + 1);
                i += 1;
            }
            b'0'..=b'9' => {
                let end = number_end(sql, i);
                push(out, TokenKind::Number, i, end);
                i = end;
            }
            b'.' if sql.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let end = number_end(sql, i);
                push(out, TokenKind::Number, i, end);
                i = end;
            }
            _ if is_ident_start(b) => {
                // String prefixes: E'..' (backslash escapes), B'..', X'..', N'..', U&'..'.
                let next = sql.get(i + 1).copied();
                if d == Dialect::Postgres && matches!(b, b'e' | b'E') && next == Some(b'\'') {
                    let end = string_end(sql, i + 2, true)?;
                    push(out, TokenKind::String, i, end);
                    i = end;
                    continue;
                }
                if matches!(b, b'b' | b'B' | b'x' | b'X' | b'n' | b'N') && next == Some(b'\'') {
                    let end = string_end(sql, i + 2, opts.backslash_quotes)?;
                    push(out, TokenKind::String, i, end);
                    i = end;
                    continue;
                }
                if d == Dialect::Postgres && matches!(b, b'u' | b'U') && next == Some(b'&') {
                    match sql.get(i + 2) {
                        Some(b'\'') => {
                            let end = string_end(sql, i + 3, false)?;
                            push(out, TokenKind::String, i, end);
                            i = end;
                            continue;
                        }
                        Some(b'"') => {
                            let end = quoted_end(sql, i + 3, b'"', false)
                                .map_err(|_| LexError::UnterminatedQuotedIdent)?;
                            push(out, TokenKind::QuotedIdent, i, end);
                            i = end;
                            continue;
                        }
                        _ => {}
                    }
                }
                let j = i
                    + 1
                    + sql[i + 1..]
                        .iter()
                        .position(|&c| !is_ident_cont(c))
                        .unwrap_or(n - i - 1);
                push(out, TokenKind::Word, i, j);
                i = j;
            }
            _ => {
                push(out, TokenKind::Punct(b), i, i + 1);
                i += 1;
            }
        }
    }
    Ok(())
}

/// End (exclusive) of a `/* */` comment starting at `i`; nested in PostgreSQL.
fn skip_block_comment(sql: &[u8], mut i: usize, d: Dialect) -> Result<usize, LexError> {
    let mut depth = 0usize;
    let n = sql.len();
    while i < n {
        if sql[i] == b'/' && sql.get(i + 1) == Some(&b'*') {
            if d == Dialect::Postgres || depth == 0 {
                depth += 1;
            }
            i += 2;
        } else if sql[i] == b'*' && sql.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Ok(i);
            }
        } else {
            i += 1;
        }
    }
    Err(LexError::UnterminatedComment)
}

/// End (exclusive) of a `'...'` string whose body starts at `i`.
fn string_end(sql: &[u8], i: usize, backslash: bool) -> Result<usize, LexError> {
    quoted_end(sql, i, b'\'', backslash)
}

/// End (exclusive) of a quoted run closed by `q` (doubled `q` is an escaped `q`).
fn quoted_end(sql: &[u8], mut i: usize, q: u8, backslash: bool) -> Result<usize, LexError> {
    let n = sql.len();
    loop {
        let found = if backslash {
            memchr::memchr2(q, b'\\', &sql[i..])
        } else {
            memchr::memchr(q, &sql[i..])
        };
        let Some(p) = found else {
            return Err(LexError::UnterminatedString);
        };
        let at = i + p;
        if sql[at] == b'\\' {
            i = at + 2;
            if i > n {
                return Err(LexError::UnterminatedString);
            }
            continue;
        }
        if sql.get(at + 1) == Some(&q) {
            i = at + 2;
            continue;
        }
        return Ok(at + 1);
    }
}

/// If `sql[i..]` starts a dollar-quote tag (`$$` or `$tag$`), the end of the tag.
fn dollar_tag(sql: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if sql.get(j) == Some(&b'$') {
        return Some(j + 1);
    }
    if !sql.get(j).copied().is_some_and(is_ident_start) {
        return None;
    }
    while j < sql.len() && (sql[j].is_ascii_alphanumeric() || sql[j] == b'_' || sql[j] >= 0x80) {
        j += 1;
    }
    (sql.get(j) == Some(&b'$')).then_some(j + 1)
}

fn number_end(sql: &[u8], mut i: usize) -> usize {
    let n = sql.len();
    if sql[i] == b'0'
        && matches!(
            sql.get(i + 1),
            Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B')
        )
    {
        i += 2;
        while i < n && (sql[i].is_ascii_hexdigit() || sql[i] == b'_') {
            i += 1;
        }
        return i;
    }
    while i < n && (sql[i].is_ascii_digit() || sql[i] == b'_' || sql[i] == b'.') {
        // `1..2` is not a number followed by a number; keep it simple and stop at a
        // second dot.
        if sql[i] == b'.' && sql.get(i + 1) == Some(&b'.') {
            break;
        }
        i += 1;
    }
    if i < n && matches!(sql[i], b'e' | b'E') {
        let mut j = i + 1;
        if j < n && matches!(sql[j], b'+' | b'-') {
            j += 1;
        }
        if j < n && sql[j].is_ascii_digit() {
            i = j;
            while i < n && sql[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    i
}
