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
    read(line).map(|found| found.commands)
}

/// What a line does, as read.
#[derive(Debug, Default)]
pub struct Found {
    /// Every simple command it runs, each normalised.
    pub commands: Vec<String>,
    /// Something it does besides running those commands that a list of
    /// commands cannot name (an allow-list refuses the line): output written
    /// to a file, variables set for a command, a program run by a path
    /// outside the system's program directories (`./uptime`).
    pub unlisted: Option<&'static str>,
}

impl Found {
    fn unlisted(&mut self, why: &'static str) {
        self.unlisted.get_or_insert(why);
    }
}

/// Where a program run by its path counts as the program its name says.
const SYSTEM_PROGRAMS: &[&str] = &[
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
];

/// [`simple_commands`], with what the line does besides.
pub fn read(line: &str) -> Result<Found, Opaque> {
    if line.len() > MAX_LINE {
        return Err(Opaque("the command line is too long to judge"));
    }
    let mut out = Found::default();
    collect(line, 0, &mut out)?;
    Ok(out)
}

/// Programs that run the rest of their words as a command.
/// Programs that run some of their words as a command (which ones depends on
/// their options); an argument with spaces in it may be a whole command line
/// (`su -c 'a b'`, `watch 'a b'`, `flock f -c 'a b'`, `env -S'a b'`).
const WRAPPERS: &[&str] = &[
    "sudo",
    "doas",
    "env",
    "nice",
    "nohup",
    "time",
    "command",
    "exec",
    "builtin",
    "stdbuf",
    "ionice",
    "chrt",
    "taskset",
    "setsid",
    "timeout",
    "xargs",
    "watch",
    "su",
    "runuser",
    "flock",
    "script",
    "find",
    "parallel",
    "busybox",
    "toybox",
    "ssh",
    "unbuffer",
    "chroot",
    "nsenter",
    "unshare",
    "systemd-run",
    "strace",
    "ltrace",
    "gdb",
    "valgrind",
    "caffeinate",
];

/// Shells: only `-c LINE` is read; a shell reading a script file, stdin or a
/// terminal runs what the gateway cannot see.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "fish", "csh", "tcsh",
];

/// Builtins that run text the gateway cannot see, or change how later
/// commands are found or run.
const OPAQUE_PROGRAMS: &[&str] = &[
    "eval",
    "source",
    ".",
    "trap",
    "alias",
    "hash",
    "enable",
    "let",
    "mapfile",
    "readarray",
    "coproc",
    "[[",
    "fc",
    "complete",
    "bind",
];

/// Shell keywords before the command they run (`if rm ...`, `do rm ...`).
const KEYWORDS: &[&str] = &[
    "if", "then", "else", "elif", "do", "while", "until", "!", "time", "fi", "done", "esac",
];

/// Variables that make the shell run code or find other programs.
const DANGEROUS_VARIABLES: &[&str] = &[
    "PS1",
    "PS2",
    "PS3",
    "PS4",
    "PROMPT_COMMAND",
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PATH",
    "IFS",
    "CDPATH",
    "GLOBIGNORE",
    "BASH_FUNC",
    "PERL5OPT",
    "PYTHONSTARTUP",
];

/// Longest line read (longer: opaque), and most commands one line may yield.
const MAX_LINE: usize = 64 * 1024;
const MAX_COMMANDS: usize = 512;

fn collect(line: &str, depth: usize, out: &mut Found) -> Result<(), Opaque> {
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
    text: Vec<u8>,
    dynamic: bool,
}

/// Splits on unquoted `;`, `&`, `|`, newlines; reads quotes and escapes;
/// nested `$(...)` and backticks are collected as commands of their own.
fn split(line: &str, depth: usize, out: &mut Found) -> Result<Vec<Vec<Word>>, Opaque> {
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
            b'(' if b.get(i + 1) == Some(&b'(') => {
                return Err(Opaque("arithmetic commands"));
            }
            b'(' | b')' => {
                end_word(&mut word, &mut words);
                commands.push(std::mem::take(&mut words));
                i += 1;
            }
            // `{ a; }` groups (a brace then a blank); `{a,b}` is an expansion.
            b'{' | b'}'
                if word.is_none()
                    && b.get(i + 1)
                        .is_none_or(|n| matches!(n, b' ' | b'\t' | b'\n' | b';')) =>
            {
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
                if word.as_ref().is_some_and(is_fd_word) {
                    word = None;
                }
                end_word(&mut word, &mut words);
                let op = i;
                i += 1;
                while i < b.len() && matches!(b[i], b'>' | b'&' | b'|') {
                    i += 1;
                }
                let duplicates = b[op..i].contains(&b'&');
                let read_write = c == b'<' && b[op..i].contains(&b'>');
                while i < b.len() && matches!(b[i], b' ' | b'\t') {
                    i += 1;
                }
                let mut target = Word::default();
                i = read_word_part(b, i, &mut target, depth, out, true)?;
                // `2>&1`, `>&-` and `/dev/null` write no file.
                let dup = duplicates
                    && (target.text == b"-" || target.text.iter().all(u8::is_ascii_digit));
                if (c == b'>' || read_write) && !dup && target.text != b"/dev/null" {
                    out.unlisted("it writes output to a file");
                } else if c == b'<' && !dup && target.text != b"/dev/null" {
                    // A file read in is an argument no rule's pattern sees.
                    out.unlisted("it reads a file in by redirection");
                }
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
    out: &mut Found,
    redirect: bool,
) -> Result<usize, Opaque> {
    let push = |w: &mut Word, bytes: &[u8]| w.text.extend_from_slice(bytes);
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
            b'$' if b.get(i + 1) == Some(&b'{') => {
                // `${a[x]}` evaluates `x` as arithmetic, which can run commands.
                let close = b[i..]
                    .iter()
                    .position(|&c| c == b'}')
                    .map_or(b.len(), |k| i + k);
                if b[i..close].contains(&b'[') {
                    return Err(Opaque("array subscripts in expansions"));
                }
                w.dynamic = true;
                push(w, &b[i..(close + 1).min(b.len())]);
                i = close + 1;
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
            c @ (b'$' | b'*' | b'?' | b'[' | b'~' | b'{' | b'}') => {
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
fn substitution(b: &[u8], i: usize, depth: usize, out: &mut Found) -> Result<usize, Opaque> {
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
fn backticks(b: &[u8], i: usize, depth: usize, out: &mut Found) -> Result<usize, Opaque> {
    let close = b[i..]
        .iter()
        .position(|&c| c == b'`')
        .ok_or(Opaque("an unclosed backtick"))?;
    let inner = std::str::from_utf8(&b[i..i + close]).map_err(|_| Opaque("invalid UTF-8"))?;
    collect(inner, depth + 1, out)?;
    Ok(i + close + 1)
}

/// One simple command: leading assignments and keywords and the program's
/// path dropped; `sh -c LINE` read as the line it runs. A wrapper (`sudo`,
/// `nice -n 5`, `timeout 5`, `find -exec`) runs one of its later words as a
/// program; which one depends on its options, so every later word that is
/// not an option is read as a possible program (each position once), and
/// every argument with a blank in it as a possible command line: over-reading
/// can only make a rule match more.
fn simple(words: Vec<Word>, depth: usize, out: &mut Found) -> Result<(), Opaque> {
    let words: Vec<(String, bool)> = words
        .into_iter()
        .map(|w| (String::from_utf8_lossy(&w.text).into_owned(), w.dynamic))
        .collect();
    for (text, _) in &words {
        if let Some((name, _)) = text.split_once('=') {
            // `PS4+=...` appends to the variable: as dangerous as setting it.
            let name = name.strip_suffix('+').unwrap_or(name);
            if DANGEROUS_VARIABLES.contains(&name)
                || name.starts_with("LD_")
                || name.starts_with("BASH_FUNC")
            {
                return Err(Opaque("it sets a variable that changes how commands run"));
            }
        }
    }
    let skip = |mut k: usize| {
        while words
            .get(k)
            .is_some_and(|(t, _)| is_assignment(t) || KEYWORDS.contains(&t.as_str()))
        {
            k += 1;
        }
        k
    };
    if words.iter().take(skip(0)).any(|(t, _)| is_assignment(t)) {
        out.unlisted("it sets variables for the command");
    }
    let mut seen = vec![false; words.len()];
    let mut starts = vec![skip(0)];
    while let Some(s) = starts.pop() {
        if s >= words.len() || std::mem::replace(&mut seen[s], true) {
            continue;
        }
        let rest = &words[s..];
        let (first, dynamic) = &rest[0];
        if *dynamic {
            return Err(Opaque("the program is named by an expansion"));
        }
        let program = first.rsplit('/').next().unwrap_or(first);
        if let Some((dir, _)) = first.rsplit_once('/') {
            if !SYSTEM_PROGRAMS.contains(&dir) {
                out.unlisted(
                    "it runs a program by a path outside the system's program directories",
                );
            }
        }
        if OPAQUE_PROGRAMS.contains(&program) {
            return Err(Opaque(
                "eval, source, alias and kin run or change text the gateway cannot read",
            ));
        }
        if SHELLS.contains(&program) {
            shell(&rest[1..], depth, out)?;
            continue;
        }
        push_command(program, &rest[1..], out)?;
        if WRAPPERS.contains(&program) {
            if rest[1..].iter().any(|(_, d)| *d) {
                return Err(Opaque("a wrapper runs a command built from expansions"));
            }
            for (k, (text, _)) in words.iter().enumerate().skip(s + 1) {
                if !text.starts_with('-') {
                    starts.push(skip(k));
                }
                // `su -c 'a b'`, `watch 'a b'`, `env -S'a b'`, `--command='a b'`.
                if text.contains([' ', '\t', ';', '\n']) {
                    let line = text
                        .trim_start_matches("--command=")
                        .trim_start_matches("--split-string=")
                        .trim_start_matches("-S");
                    collect(line, depth + 1, out)?;
                }
            }
        }
    }
    Ok(())
}

/// A shell's arguments: only `-c LINE` can be read (with options before it,
/// `--` ending them); a script file, stdin or a terminal is opaque.
fn shell(args: &[(String, bool)], depth: usize, out: &mut Found) -> Result<(), Opaque> {
    let mut command = false;
    let mut k = 0;
    while let Some((text, _)) = args.get(k) {
        if text == "--" {
            k += 1;
            break;
        }
        if text.starts_with("--") {
            return Err(Opaque(
                "a shell with long options reads files the gateway cannot see",
            ));
        }
        if !(text.starts_with('-') || text.starts_with('+')) || text.len() < 2 {
            break;
        }
        if text[1..].contains('c') {
            command = true;
        }
        if matches!(&text[1..], "o" | "O") {
            k += 1; // the option's argument
        }
        k += 1;
    }
    match (command, args.get(k)) {
        (true, Some((_, true))) => Err(Opaque("sh -c runs a line built from expansions")),
        (true, Some((line, false))) => collect(line, depth + 1, out),
        (true, None) => Err(Opaque("sh -c without a command")),
        (false, _) => Err(Opaque(
            "a shell reading a script, stdin or a terminal runs commands the gateway cannot see",
        )),
    }
}

/// `NAME=value` or `NAME+=value` (bash appends): an assignment, not a program.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        let name = name.strip_suffix('+').unwrap_or(name);
        !name.is_empty()
            && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
            && !name.as_bytes()[0].is_ascii_digit()
    })
}

/// A word written right before a redirection that names its descriptor:
/// `2>`, bash's `{fd}>`.
fn is_fd_word(w: &Word) -> bool {
    let t = &w.text[..];
    t.iter().all(u8::is_ascii_digit)
        || (t.len() > 2
            && t[0] == b'{'
            && t[t.len() - 1] == b'}'
            && t[1..t.len() - 1]
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'_'))
}

fn push_command(program: &str, args: &[(String, bool)], out: &mut Found) -> Result<(), Opaque> {
    if out.commands.len() >= MAX_COMMANDS {
        return Err(Opaque("the line runs too many commands to judge"));
    }
    let mut line = program.to_owned();
    for (w, _) in args {
        line.push(' ');
        line.push_str(w);
        if line.len() > MAX_LINE {
            return Err(Opaque("the command line is too long to judge"));
        }
    }
    out.commands.push(normalise(&line));
    Ok(())
}

/// Whether `pattern` (a glob: `*` any run of characters, `?` one) matches
/// the whole of `text`.
pub fn glob(pattern: &str, text: &str) -> bool {
    // `rm *` also names `rm` with no arguments (`xargs rm` adds them later).
    if let Some(bare) = pattern.strip_suffix(" *") {
        if bare == text {
            return true;
        }
    }
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

    /// Spellings a shell runs that a rule for `rm *` must still meet: each is
    /// either read as `rm ...` or refused as unreadable.
    #[test]
    fn what_bash_would_run_is_seen_or_refused() {
        let meets_rm = |line: &str| match simple_commands(line) {
            Ok(c) => c.iter().any(|c| glob("rm *", c)),
            Err(_) => true,
        };
        for line in [
            "sh -c \"$(printf 'rm -rf x')\"",
            "sh -c `echo rm -rf x`",
            "bash -c -- 'rm -rf x'",
            "sh -c -e 'rm -rf x'",
            "sh -e -c 'rm -rf x'",
            "if rm -rf x; then :; fi",
            "for i in 1; do rm -rf x; done",
            "while rm -rf x; do :; done",
            "! rm -rf x",
            "coproc rm -rf x",
            "{rm,-rf,x}",
            "r{m,} -rf x",
            "{fd}>f rm -rf x",
            "su -c 'rm -rf /tmp/x'",
            "watch 'rm -rf /tmp/x'",
            "env -S'rm -rf x'",
            "flock /tmp/l -c 'rm -rf x'",
            "busybox rm -rf x",
            "busybox sh",
            "printf 'rm -rf x' > /tmp/s; sh /tmp/s",
            "bash /dev/stdin",
            "bash --init-file f",
            "echo 'rm -rf x' | xargs -I{} sh -c {}",
            "PS4='$(rm -rf x)'; set -x; :",
            "BASH_ENV=/tmp/s bash -c true",
            "hash -p /bin/rm ls; ls -rf x",
            "alias ls=rm; ls -rf x",
            "v='a[$(rm -rf x)]'; (( v ))",
            "echo ${a[$(rm -rf x)]}",
            "echo x | xargs rm",
            "find x -exec rm -rf {} +",
            "ssh localhost rm -rf x",
            "export PATH=/tmp/evil; ls",
            // `NAME+=value` is an assignment too (bash appends).
            "X+=1 rm -rf x",
            "PS4+='$(rm -rf x)'; set -x; :",
            "BASH_ENV+=/tmp/s bash -c true",
        ] {
            assert!(meets_rm(line), "{line}");
        }
        // What an allow-list cannot name: files written or read by
        // redirection (`<>` does both), variables set for a command.
        for line in ["echo hi 1<>f", "cat - < ~/.aws/credentials", "X+=1 uptime"] {
            assert!(read(line).unwrap().unlisted.is_some(), "{line}");
        }
        assert!(read("uptime < /dev/null 2>&1").unwrap().unlisted.is_none());
        // Plain commands stay readable.
        assert_eq!(cmds("ls -la /srv && df -h"), ["ls -la /srv", "df -h"]);
        assert_eq!(cmds("cat x 2>&1 | grep é"), ["cat x", "grep é"]);
    }

    #[test]
    fn lines_that_would_cost_too_much_are_refused_not_read() {
        let long = format!("sudo {}", "a ".repeat(100_000));
        assert!(simple_commands(&long).is_err());
        let many = "sudo a ".repeat(2_000);
        assert!(simple_commands(&many).is_err());
    }

    #[test]
    fn globs_match_whole_lines() {
        assert!(glob("rm -rf *", "rm -rf /"));
        assert!(glob("shutdown*", "shutdown -h now"));
        assert!(glob("systemctl restart *", "systemctl restart nginx"));
        assert!(!glob("systemctl restart *", "systemctl status nginx"));
        assert!(glob("a?c", "abc") && !glob("a?c", "ac"));
        assert!(glob("*", "") && !glob("x", ""));
        assert!(glob("rm *", "rm") && glob("rm -rf *", "rm -rf"));
    }
}
