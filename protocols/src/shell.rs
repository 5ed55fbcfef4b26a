//! POSIX shell command lines, read as far as a gateway can judge them: the
//! simple commands a line would run (`a; b && c | d`, `$(e)`, `` `f` ``,
//! `sh -c 'g'`), each as its words with quotes removed, the program's path
//! and harmless wrappers (`sudo`, `env`, `nice`, ...) stripped, so a rule for
//! `rm -rf *` also sees `/bin/rm -r'f' /` inside `x; sudo -- rm -rf /`.
//!
//! What cannot be read without running a shell (a program named by a variable
//! or a glob, `eval`, here-documents, process substitution) is [`Opaque`]: the
//! caller decides what an unreadable command line may do (the SSH gateway
//! refuses it where command rules deny or hold anything).

/// Why a command line cannot be read statically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opaque(pub &'static str);

impl std::fmt::Display for Opaque {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Deepest nesting of `$(...)`, backticks and `sh -c` read.
const MAX_DEPTH: usize = 8;

/// The whole line with runs of whitespace made one space, trimmed.
pub fn normalise(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every simple command `line` would run, each normalised (`rm -rf /`).
pub fn simple_commands(line: &str) -> Result<Vec<String>, Opaque> {
    let mut out = Vec::new();
    collect(line, 0, &mut out)?;
    Ok(out)
}

/// Programs that run the rest of their words as a command.
const WRAPPERS: &[&str] = &[
    "sudo", "doas", "env", "nice", "nohup", "time", "command", "exec", "builtin", "stdbuf",
    "ionice", "chrt", "taskset", "setsid", "timeout", "xargs", "watch", "su",
];

/// Shells whose `-c` argument is a command line.
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"];

/// Builtins that run text the gateway cannot see.
const OPAQUE_PROGRAMS: &[&str] = &["eval", "source", ".", "trap"];

fn collect(line: &str, depth: usize, out: &mut Vec<String>) -> Result<(), Opaque> {
    if depth > MAX_DEPTH {
        return Err(Opaque("commands nest too deeply"));
    }
    for words in split(line, depth, out)? {
        simple(words, depth, out)?;
    }
    Ok(())
}

/// One word as read: its text with quotes removed, and whether any of it
/// came from an unquoted expansion (`$X`, a glob) the shell would change.
#[derive(Debug, Default)]
struct Word {
    text: String,
    dynamic: bool,
}

/// Splits on unquoted `;`, `&`, `|`, newlines; reads quotes and escapes;
/// nested `$(...)` and backticks are collected as commands of their own.
fn split(line: &str, depth: usize, out: &mut Vec<String>) -> Result<Vec<Vec<Word>>, Opaque> {
    let b = line.as_bytes();
    let mut commands: Vec<Vec<Word>> = Vec::new();
    let mut words: Vec<Word> = Vec::new();
    let mut word: Option<Word> = None;
    let mut i = 0;
    let end_word = |word: &mut Option<Word>, words: &mut Vec<Word>| {
        if let Some(w) = word.take() {
            words.push(w);
        }
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' => {
                end_word(&mut word, &mut words);
                i += 1;
            }
            b';' | b'&' | b'|' | b'\n' | b'\r' => {
                end_word(&mut word, &mut words);
                commands.push(std::mem::take(&mut words));
                i += 1;
            }
            b'(' | b')' => {
                end_word(&mut word, &mut words);
                commands.push(std::mem::take(&mut words));
                i += 1;
            }
            b'{' | b'}' if word.is_none() => {
                // Subshells and groups: their contents are commands like any.
                end_word(&mut word, &mut words);
                commands.push(std::mem::take(&mut words));
                i += 1;
            }
            b'<' | b'>' => {
                if b.get(i + 1) == Some(&b'(') {
                    return Err(Opaque("process substitution"));
                }
                if c == b'<' && b.get(i + 1) == Some(&b'<') {
                    return Err(Opaque("here-documents"));
                }
                // A redirection: its target is a word, not part of the command,
                // and so is a file descriptor number written right before it.
                if word
                    .as_ref()
                    .is_some_and(|w| !w.dynamic && w.text.bytes().all(|c| c.is_ascii_digit()))
                {
                    word = None;
                }
                end_word(&mut word, &mut words);
                i += 1;
                while i < b.len() && matches!(b[i], b'>' | b'&' | b'|') {
                    i += 1;
                }
                while i < b.len() && matches!(b[i], b' ' | b'\t') {
                    i += 1;
                }
                let mut target = Word::default();
                i = read_word_part(b, i, &mut target, depth, out, true)?;
            }
            _ => {
                let w = word.get_or_insert_with(Word::default);
                i = read_word_part(b, i, w, depth, out, false)?;
            }
        }
    }
    end_word(&mut word, &mut words);
    commands.push(words);
    commands.retain(|c| !c.is_empty());
    Ok(commands)
}

/// Reads one word (or what is left of it) from `b[i..]`, appending its text
/// to `w`; returns where it stopped. `redirect`: a redirection target (read,
/// then dropped).
fn read_word_part(
    b: &[u8],
    mut i: usize,
    w: &mut Word,
    depth: usize,
    out: &mut Vec<String>,
    redirect: bool,
) -> Result<usize, Opaque> {
    let push = |w: &mut Word, bytes: &[u8]| w.text.push_str(&String::from_utf8_lossy(bytes));
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' | b';' | b'&' | b'|' | b'\n' | b'\r' | b'<' | b'>' => break,
            b'(' | b')' if !redirect => break,
            b'\\' => {
                if let Some(&n) = b.get(i + 1) {
                    if n != b'\n' {
                        push(w, &[n]);
                    }
                }
                i += 2;
            }
            b'\'' => {
                let close = b[i + 1..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .ok_or(Opaque("an unclosed quote"))?;
                push(w, &b[i + 1..i + 1 + close]);
                i += close + 2;
            }
            b'"' => {
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(Opaque("an unclosed quote")),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            if let Some(&n) = b.get(i + 1) {
                                if !matches!(n, b'$' | b'`' | b'"' | b'\\' | b'\n') {
                                    push(w, b"\\");
                                }
                                if n != b'\n' {
                                    push(w, &[n]);
                                }
                            }
                            i += 2;
                        }
                        Some(b'$') if b.get(i + 1) == Some(&b'(') => {
                            i = substitution(b, i + 2, depth, out)?;
                            w.dynamic = true;
                        }
                        Some(b'`') => {
                            i = backticks(b, i + 1, depth, out)?;
                            w.dynamic = true;
                        }
                        Some(b'$') => {
                            w.dynamic = true;
                            push(w, b"$");
                            i += 1;
                        }
                        Some(&c) => {
                            push(w, &[c]);
                            i += 1;
                        }
                    }
                }
            }
            b'$' if b.get(i + 1) == Some(&b'(') => {
                if b.get(i + 2) == Some(&b'(') {
                    return Err(Opaque("arithmetic expansion"));
                }
                i = substitution(b, i + 2, depth, out)?;
                w.dynamic = true;
            }
            b'`' => {
                i = backticks(b, i + 1, depth, out)?;
                w.dynamic = true;
            }
            c @ (b'$' | b'*' | b'?' | b'[' | b'~') => {
                w.dynamic = true;
                push(w, &[c]);
                i += 1;
            }
            c => {
                push(w, &[c]);
                i += 1;
            }
        }
    }
    Ok(i)
}

/// `$(` ... `)` starting at `i` (after `$(`): its commands are collected;
/// returns the index after the closing parenthesis.
fn substitution(b: &[u8], i: usize, depth: usize, out: &mut Vec<String>) -> Result<usize, Opaque> {
    let mut level = 1;
    let mut j = i;
    let mut quote = None;
    while j < b.len() {
        match (quote, b[j]) {
            (None, b'\\') => j += 1,
            (None, q @ (b'\'' | b'"')) => quote = Some(q),
            (Some(q), c) if c == q => quote = None,
            (None, b'(') => level += 1,
            (None, b')') => {
                level -= 1;
                if level == 0 {
                    let inner =
                        std::str::from_utf8(&b[i..j]).map_err(|_| Opaque("invalid UTF-8"))?;
                    collect(inner, depth + 1, out)?;
                    return Ok(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    Err(Opaque("an unclosed $("))
}

/// `` ` `` ... `` ` `` starting at `i` (after the first backtick).
fn backticks(b: &[u8], i: usize, depth: usize, out: &mut Vec<String>) -> Result<usize, Opaque> {
    let close = b[i..]
        .iter()
        .position(|&c| c == b'`')
        .ok_or(Opaque("an unclosed backtick"))?;
    let inner = std::str::from_utf8(&b[i..i + close]).map_err(|_| Opaque("invalid UTF-8"))?;
    collect(inner, depth + 1, out)?;
    Ok(i + close + 1)
}

/// One simple command: leading assignments and the program's path dropped;
/// `sh -c LINE` read as the line it runs. A wrapper (`sudo`, `nice -n 5`,
/// `timeout 5`) runs one of its later words as a program; which one depends
/// on the wrapper's options, so every later word that is not an option is
/// read as a possible program (each position once): over-reading can only
/// make a rule match more.
fn simple(words: Vec<Word>, depth: usize, out: &mut Vec<String>) -> Result<(), Opaque> {
    let skip_assignments = |mut k: usize| {
        while words.get(k).is_some_and(|w| is_assignment(&w.text)) {
            k += 1;
        }
        k
    };
    let mut seen = vec![false; words.len()];
    let mut starts = vec![skip_assignments(0)];
    while let Some(s) = starts.pop() {
        if s >= words.len() || std::mem::replace(&mut seen[s], true) {
            continue;
        }
        let rest = &words[s..];
        let first = &rest[0];
        if first.dynamic {
            return Err(Opaque("the program is named by an expansion"));
        }
        let program = first.text.rsplit('/').next().unwrap_or(&first.text);
        if OPAQUE_PROGRAMS.contains(&program) {
            return Err(Opaque(
                "eval, source and trap run text the gateway cannot read",
            ));
        }
        if SHELLS.contains(&program) {
            // `sh -c LINE`, `bash -lc LINE`: the line is what runs.
            let flag = rest[1..].iter().position(|w| {
                w.text.starts_with('-') && !w.text.starts_with("--") && w.text.contains('c')
            });
            if let Some(k) = flag {
                let Some(line) = rest.get(k + 2) else {
                    return Err(Opaque("sh -c without a command"));
                };
                collect(&line.text, depth + 1, out)?;
                continue;
            }
            if rest[1..].iter().all(|w| w.text.starts_with('-')) {
                return Err(Opaque(
                    "an interactive shell reads commands the gateway cannot see",
                ));
            }
        }
        push_command(program, &rest[1..], out);
        if WRAPPERS.contains(&program) {
            if rest[1..].iter().any(|w| w.dynamic) {
                return Err(Opaque("a wrapper runs a command built from expansions"));
            }
            for (k, w) in words.iter().enumerate().skip(s + 1) {
                if !w.text.starts_with('-') {
                    starts.push(skip_assignments(k));
                }
            }
        }
    }
    Ok(())
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
            && !name.as_bytes()[0].is_ascii_digit()
    })
}

fn push_command(program: &str, args: &[Word], out: &mut Vec<String>) {
    let mut line = program.to_owned();
    for w in args {
        line.push(' ');
        line.push_str(&w.text);
    }
    out.push(normalise(&line));
}

/// Whether `pattern` (a glob: `*` any run of characters, `?` one) matches
/// the whole of `text`.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmds(line: &str) -> Vec<String> {
        simple_commands(line).unwrap()
    }

    #[test]
    fn separators_quotes_paths_and_wrappers_are_seen_through() {
        assert_eq!(cmds("rm  -rf   /"), ["rm -rf /"]);
        assert_eq!(cmds("echo hi; /bin/rm -r'f' /"), ["echo hi", "rm -rf /"]);
        let c = cmds("true && sudo -- rm -rf / || x");
        assert!(
            c.contains(&"rm -rf /".to_owned()) && c.contains(&"x".to_owned()),
            "{c:?}"
        );
        let c = cmds("ls | FOO=1 env A=b nice -n 5 rm -rf /tmp/x");
        for want in [
            "ls",
            "env A=b nice -n 5 rm -rf /tmp/x",
            "nice -n 5 rm -rf /tmp/x",
            "rm -rf /tmp/x",
        ] {
            assert!(c.contains(&want.to_owned()), "{want}: {c:?}");
        }
        assert!(cmds("timeout 5 shutdown now").contains(&"shutdown now".to_owned()));
        assert_eq!(cmds("echo $(rm -rf /)"), ["rm -rf /", "echo"]);
        assert_eq!(cmds("echo `shutdown now`"), ["shutdown now", "echo"]);
        assert_eq!(
            cmds("bash -lc 'systemctl restart nginx'"),
            ["systemctl restart nginx"]
        );
        assert_eq!(cmds("sh -c \"r\\m -rf /\""), ["rm -rf /"]);
        assert_eq!(
            cmds("(cd /; rm -rf x) > /dev/null 2>&1"),
            ["cd /", "rm -rf x"]
        );
        assert_eq!(cmds("r\\m -rf /"), ["rm -rf /"]);
        assert_eq!(
            cmds("uptime\nshutdown -h now"),
            ["uptime", "shutdown -h now"]
        );
    }

    #[test]
    fn what_a_shell_alone_can_read_is_opaque() {
        for line in [
            "$CMD -rf /",
            "eval 'rm -rf /'",
            "r* -rf /",
            "cat <<EOF\nx\nEOF",
            "diff <(ls a) <(ls b)",
            "echo 'unclosed",
            "bash",
            "bash -i",
            ". ./script",
            "`which rm` -rf /",
            "sudo $CMD",
            "timeout 5 $CMD",
        ] {
            assert!(simple_commands(line).is_err(), "{line}");
        }
    }

    #[test]
    fn globs_match_whole_lines() {
        assert!(glob("rm -rf *", "rm -rf /"));
        assert!(glob("shutdown*", "shutdown -h now"));
        assert!(glob("systemctl restart *", "systemctl restart nginx"));
        assert!(!glob("systemctl restart *", "systemctl status nginx"));
        assert!(glob("a?c", "abc") && !glob("a?c", "ac"));
        assert!(glob("*", "") && !glob("x", ""));
    }
}
