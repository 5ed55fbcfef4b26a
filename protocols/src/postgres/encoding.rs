//! Client encodings as PostgreSQL names them, and which of them the SQL lexer can
//! read exactly as the server does.
//!
//! The lexer works on bytes and finds quotes, backslashes and semicolons by their
//! ASCII values. That is exact only when no multibyte character can contain an
//! ASCII byte. UTF-8, the EUC family, MULE and every single-byte encoding
//! guarantee it; Shift-JIS, Big5, GBK, UHC, Johab and GB18030 do not (their
//! trailing bytes include `\` and other ASCII bytes), so in those the server could
//! read `'\x81\x5c'` as one character where the lexer sees an escaped quote.
//! Only the safe ones are allowed through, whatever the spelling: names are
//! resolved as PostgreSQL's `pg_char_to_encoding` resolves them (case ignored,
//! every non-alphanumeric byte dropped, then its alias table), and a name not in
//! the table is treated as unsafe (the server would refuse it anyway).
//!
//! ```
//! use sluice_protocols::postgres::encoding::{class, Class};
//! assert_eq!(class(b"utf-8"), Class::Utf8);
//! assert_eq!(class(b"ISO_8859_1"), Class::Safe);
//! assert_eq!(class(b"Windows-936"), Class::Unsafe); // GBK
//! ```

/// How the lexer can read text in an encoding, from best to worst (so the worse
/// of two is their `max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// UTF-8 (what masking needs).
    Utf8,
    /// Another encoding whose multibyte characters never contain an ASCII byte.
    Safe,
    /// Multibyte characters may contain ASCII bytes, or the name is unknown.
    Unsafe,
}

/// PostgreSQL's encoding names and aliases (`pg_encname_tbl`), cleaned as it
/// cleans them, with their class.
const NAMES: &[(&str, Class)] = {
    const S: Class = Class::Safe;
    const NO: Class = Class::Unsafe;
    const U8: Class = Class::Utf8;
    &[
        ("abc", S),
        ("alt", S),
        ("big5", NO),
        ("euccn", S),
        ("eucjis2004", S),
        ("eucjp", S),
        ("euckr", S),
        ("euctw", S),
        ("gb18030", NO),
        ("gbk", NO),
        ("iso88591", S),
        ("iso885910", S),
        ("iso885913", S),
        ("iso885914", S),
        ("iso885915", S),
        ("iso885916", S),
        ("iso88592", S),
        ("iso88593", S),
        ("iso88594", S),
        ("iso88595", S),
        ("iso88596", S),
        ("iso88597", S),
        ("iso88598", S),
        ("iso88599", S),
        ("johab", NO),
        ("koi8", S),
        ("koi8r", S),
        ("koi8u", S),
        ("latin1", S),
        ("latin10", S),
        ("latin2", S),
        ("latin3", S),
        ("latin4", S),
        ("latin5", S),
        ("latin6", S),
        ("latin7", S),
        ("latin8", S),
        ("latin9", S),
        ("mskanji", NO),
        ("muleinternal", S),
        ("shiftjis", NO),
        ("shiftjis2004", NO),
        ("sjis", NO),
        ("sqlascii", S),
        ("tcvn", S),
        ("tcvn5712", S),
        ("uhc", NO),
        ("unicode", U8),
        ("utf8", U8),
        ("vscii", S),
        ("win", S),
        ("win1250", S),
        ("win1251", S),
        ("win1252", S),
        ("win1253", S),
        ("win1254", S),
        ("win1255", S),
        ("win1256", S),
        ("win1257", S),
        ("win1258", S),
        ("win866", S),
        ("win874", S),
        ("win932", NO),
        ("win936", NO),
        ("win949", NO),
        ("win950", NO),
        ("windows1250", S),
        ("windows1251", S),
        ("windows1252", S),
        ("windows1253", S),
        ("windows1254", S),
        ("windows1255", S),
        ("windows1256", S),
        ("windows1257", S),
        ("windows1258", S),
        ("windows866", S),
        ("windows874", S),
        ("windows932", NO),
        ("windows936", NO),
        ("windows949", NO),
        ("windows950", NO),
    ]
};

/// The class of an encoding name as a client would send it (startup parameter,
/// `SET client_encoding`, `set_config`). Unknown names are [`Class::Unsafe`].
pub fn class(name: &[u8]) -> Class {
    // `clean_encoding_name`: keep ASCII alphanumerics, lower-cased. Real names
    // are short; a long one is not in the table.
    let mut clean = [0u8; 32];
    let mut n = 0;
    for &b in name {
        if b.is_ascii_alphanumeric() {
            if n == clean.len() {
                return Class::Unsafe;
            }
            clean[n] = b.to_ascii_lowercase();
            n += 1;
        }
    }
    let clean = &clean[..n];
    NAMES
        .iter()
        .find(|(k, _)| k.as_bytes() == clean)
        .map_or(Class::Unsafe, |&(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_resolve_as_postgresql_resolves_them() {
        for (name, want) in [
            ("UTF8", Class::Utf8),
            ("utf-8", Class::Utf8),
            ("Unicode", Class::Utf8),
            ("'UTF8'", Class::Utf8),
            ("SQL_ASCII", Class::Safe),
            ("LATIN1", Class::Safe),
            ("iso-8859-15", Class::Safe),
            ("WIN1252", Class::Safe),
            ("EUC_JP", Class::Safe),
            ("koi8-r", Class::Safe),
            ("SJIS", Class::Unsafe),
            ("Shift_JIS", Class::Unsafe),
            ("shift-jis-2004", Class::Unsafe),
            ("windows936", Class::Unsafe),
            ("Windows-932", Class::Unsafe),
            ("WIN949", Class::Unsafe),
            ("windows_950", Class::Unsafe),
            ("BIG5", Class::Unsafe),
            ("GB18030", Class::Unsafe),
            ("JOHAB", Class::Unsafe),
            ("mskanji", Class::Unsafe),
            ("auto", Class::Unsafe),
            ("", Class::Unsafe),
            ("klingon", Class::Unsafe),
            ("utf8utf8utf8utf8utf8utf8utf8utf8utf8", Class::Unsafe),
        ] {
            assert_eq!(class(name.as_bytes()), want, "{name}");
        }
    }

    #[test]
    fn the_table_is_sorted_and_clean() {
        assert!(NAMES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(NAMES.iter().all(|(k, _)| k
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())));
    }
}
