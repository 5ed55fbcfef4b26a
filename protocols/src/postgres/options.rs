//! The startup packet's `options` parameter (libpq's `options` / `PGOPTIONS`), read
//! exactly as the server reads it, so the gateway can judge each setting it
//! carries like a `SET` of that name.
//!
//! PostgreSQL splits the string at unescaped white space, a backslash escaping the
//! byte after it (`pg_split_opts`), then reads the words as command-line
//! switches. A client may only use `-c name=value` (also `-cname=value`) and
//! `--name=value`; in the name, `-` stands for `_` (`ParseLongOption`). Other
//! switches (`-B`, `-d`, `-F`, ...) are refused here with their name rather than
//! passed on unjudged.
//!
//! ```
//! use sluice_protocols::postgres::options::parse;
//! let s = parse(r"-c intervalstyle=postgres_verbose --search-path=a\ b").unwrap();
//! assert_eq!(s, [("intervalstyle".into(), "postgres_verbose".into()),
//!                ("search_path".into(), "a b".into())]);
//! ```

/// Why an `options` string cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("startup option `{0}` is not supported through Sluice (use -c name=value)")]
    Switch(String),
    #[error("startup option `{0}` needs a value (-c name=value)")]
    NoValue(String),
    #[error("startup option -c needs name=value")]
    Missing,
}

/// The words of an `options` string, split as `pg_split_opts` splits them.
pub fn split(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = options.chars().peekable();
    loop {
        // C `isspace` in the C locale.
        while chars.next_if(|c| is_space(*c)).is_some() {}
        if chars.peek().is_none() {
            return words;
        }
        let mut word = String::new();
        let mut escaped = false;
        while let Some(&c) = chars.peek() {
            if is_space(c) && !escaped {
                break;
            }
            chars.next();
            if !escaped && c == '\\' {
                escaped = true;
            } else {
                escaped = false;
                word.push(c);
            }
        }
        words.push(word);
    }
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// The settings an `options` string makes, in order, as `(name, value)` with the
/// name lower-cased and `-` read as `_`.
pub fn parse(options: &str) -> Result<Vec<(String, String)>, OptionsError> {
    let words = split(options);
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        i += 1;
        let setting = if let Some(long) = w.strip_prefix("--") {
            long.to_owned()
        } else if let Some(rest) = w.strip_prefix("-c") {
            if rest.is_empty() {
                let next = words.get(i).ok_or(OptionsError::Missing)?;
                i += 1;
                next.clone()
            } else {
                rest.to_owned()
            }
        } else {
            return Err(OptionsError::Switch(w.clone()));
        };
        let Some((name, value)) = setting.split_once('=') else {
            return Err(OptionsError::NoValue(setting));
        };
        if name.is_empty() {
            return Err(OptionsError::Missing);
        }
        out.push((
            name.replace('-', "_").to_ascii_lowercase(),
            value.to_owned(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn words_split_like_pg_split_opts() {
        assert_eq!(split(""), Vec::<String>::new());
        assert_eq!(split("  \t "), Vec::<String>::new());
        assert_eq!(split(" -c  a=b\n-c\tc=d "), ["-c", "a=b", "-c", "c=d"]);
        assert_eq!(split(r"-c a=x\ y"), ["-c", "a=x y"]);
        assert_eq!(split(r"-c a=x\\y"), ["-c", r"a=x\y"]);
        // A backslash escapes any byte; a trailing one vanishes.
        assert_eq!(split(r"-c a=\q\"), ["-c", "a=q"]);
        // Quotes are ordinary bytes to the server.
        assert_eq!(split("-c a='x y'"), ["-c", "a='x", "y'"]);
    }

    #[test]
    fn settings_in_every_accepted_form() {
        assert_eq!(
            parse("-c intervalstyle=postgres_verbose").unwrap(),
            pairs(&[("intervalstyle", "postgres_verbose")])
        );
        assert_eq!(
            parse("-cstatement_timeout=5s --Search-Path=a,b -c x.y=1=2").unwrap(),
            pairs(&[
                ("statement_timeout", "5s"),
                ("search_path", "a,b"),
                ("x.y", "1=2")
            ])
        );
        assert_eq!(parse("-c a=").unwrap(), pairs(&[("a", "")]));
        assert_eq!(parse("").unwrap(), pairs(&[]));
    }

    #[test]
    fn other_switches_and_broken_settings_are_refused() {
        assert_eq!(parse("-F"), Err(OptionsError::Switch("-F".into())));
        assert_eq!(parse("-B 100"), Err(OptionsError::Switch("-B".into())));
        assert_eq!(parse("x=1"), Err(OptionsError::Switch("x=1".into())));
        assert_eq!(parse("-c"), Err(OptionsError::Missing));
        assert_eq!(parse("-c =1"), Err(OptionsError::Missing));
        assert_eq!(parse("-c role"), Err(OptionsError::NoValue("role".into())));
        assert_eq!(parse("--role"), Err(OptionsError::NoValue("role".into())));
    }
}
