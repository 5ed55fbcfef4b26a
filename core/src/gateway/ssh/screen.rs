//! Commands typed in an interactive shell, read off a terminal screen model:
//! the line as the user saw it when they pressed Enter (with the shell's
//! editing, history and completion applied), never a reconstruction from
//! keystrokes. Best effort, and recorded as such: a shell may redraw its line
//! in ways a line reader cannot follow, and a full-screen program's keys are
//! not commands (its screen is not read).

use std::num::NonZeroU16;

/// Widest terminal modelled: a wider one is modelled this wide (its long
/// lines then wrap differently; a command still reads whole).
const MAX_COLS: u32 = 512;
/// Tallest terminal modelled: only the lines around the cursor are read, and
/// the model's memory grows with its area.
const MAX_ROWS: u32 = 100;
/// Enter presses waiting for their line to leave the screen (a paste of many
/// lines); more are dropped rather than queued without bound.
const MAX_PENDING: usize = 64;

pub(super) struct Screen {
    parser: vt100::Parser,
    /// What stood before the cursor when the user began the line: the prompt,
    /// taken off the line read at Enter.
    prompt: Option<String>,
    /// Enter presses whose line is read when the host's output moves the
    /// cursor off it (the echo of the typed line comes back first).
    entered: usize,
    /// Lines of the last Enter press (or paste) read so far.
    echoed: usize,
    /// The shell has a line editor that says when it reads a line (bracketed
    /// paste on while it does: bash, zsh): its lines are read when it stops.
    line_editor: bool,
    /// The line editor's line as it stood at its last newline.
    edited_line: Option<String>,
}

fn size(n: u32, max: u32, default: u16) -> NonZeroU16 {
    let n = if n == 0 {
        u32::from(default)
    } else {
        n.min(max)
    };
    NonZeroU16::new(n as u16).unwrap_or(NonZeroU16::MIN)
}

impl Screen {
    pub(super) fn new(cols: u32, rows: u32) -> Screen {
        Screen {
            parser: vt100::Parser::new(size(rows, MAX_ROWS, 24), size(cols, MAX_COLS, 80), 0),
            prompt: None,
            entered: 0,
            echoed: 0,
            line_editor: false,
            edited_line: None,
        }
    }

    pub(super) fn resize(&mut self, cols: u32, rows: u32) {
        self.parser
            .set_size(size(rows, MAX_ROWS, 24), size(cols, MAX_COLS, 80));
    }

    /// Keystrokes from the client.
    pub(super) fn input(&mut self, data: &[u8], lines: &mut Vec<String>) {
        if self.prompt.is_none() && self.entered == 0 {
            self.prompt = Some(self.before_cursor());
        }
        let enters = data.iter().filter(|&&b| b == b'\r' || b == b'\n').count();
        if enters == 0 {
            return;
        }
        if self.line_editor {
            return;
        }
        if self.entered == 1 && self.echoed == 0 {
            // The last Enter never moved the cursor (a program that reads
            // keys): its line is read now, as it stands.
            self.take(lines);
        }
        // Lines of an earlier paste whose prompt never came back are dropped.
        self.entered = enters.min(MAX_PENDING);
        self.echoed = 0;
    }

    /// Output from the host, after masking (what the client is shown).
    pub(super) fn output(&mut self, data: &[u8], lines: &mut Vec<String>) {
        let mut rest = data;
        loop {
            let editing = self.parser.screen().bracketed_paste();
            let nl = match editing || self.entered > 0 {
                true => rest.iter().position(|&b| b == b'\n'),
                false => None,
            };
            // Where the line editor starts or stops reading a line.
            let off = match editing {
                true => find(rest, EDITOR_OFF),
                false => find(rest, EDITOR_ON),
            };
            match (nl, off) {
                (Some(nl), off) if off.is_none_or(|o| nl < o) => {
                    self.parser.process(&rest[..nl]);
                    if self.parser.screen().bracketed_paste() {
                        // A line editor is reading a line (bash, zsh): the
                        // line as it stands when Enter moves off it, kept
                        // until the editor says it accepted the line.
                        self.line_editor = true;
                        self.edited_line = Some(self.line(false));
                    } else if !self.line_editor {
                        self.newline(lines);
                    }
                    self.parser.process(b"\n");
                    rest = &rest[nl + 1..];
                }
                (_, Some(off)) => {
                    let end = off + EDITOR_ON.len();
                    self.parser.process(&rest[..end]);
                    rest = &rest[end..];
                }
                _ => {
                    self.parser.process(rest);
                    self.edited(editing, lines);
                    return;
                }
            }
            self.edited(editing, lines);
        }
    }

    /// A line editor that was reading a line has stopped: the line it read.
    fn edited(&mut self, was_editing: bool, lines: &mut Vec<String>) {
        if !was_editing || self.parser.screen().bracketed_paste() {
            return;
        }
        self.entered = 0;
        self.echoed = 0;
        let prompt = self.prompt.take().unwrap_or_default();
        if let Some(line) = self.edited_line.take() {
            let command = match line.strip_prefix(prompt.as_str()) {
                Some(rest) if !prompt.is_empty() => rest,
                // Typed ahead of the prompt: the prompt ends at its mark.
                _ => after_prompt(&line),
            };
            push(lines, command);
        }
    }

    /// A newline from a shell without a line editor (sh): the first after
    /// Enter ends the typed line's echo; in a paste the next lines are the
    /// first command's output until the prompt shows again with the next.
    fn newline(&mut self, lines: &mut Vec<String>) {
        if self.entered == 0 {
            return;
        }
        // Typed ahead of any prompt: which line is the command's is unknown.
        let prompt = self.prompt.as_deref().unwrap_or_default();
        if prompt.is_empty() {
            return;
        }
        if self.echoed == 0 || self.line(false).starts_with(prompt) {
            self.take(lines);
            self.echoed += 1;
        }
    }

    /// The cursor's logical line (its row and the rows that wrap into it).
    fn line(&self, to_cursor: bool) -> String {
        let screen = self.parser.screen();
        let (row, col) = screen.cursor_position();
        let mut start = row;
        while start > 0 && screen.row_wrapped(start - 1) {
            start -= 1;
        }
        let end_col = if to_cursor {
            col
        } else {
            screen.size().1.get()
        };
        let mut text = if start == row {
            screen.contents_between(row, 0, row, end_col)
        } else {
            screen.contents_between(start, 0, row, end_col)
        };
        text.truncate(text.trim_end().len());
        text
    }

    fn before_cursor(&self) -> String {
        if self.parser.screen().alternate_screen() {
            return String::new();
        }
        self.line(true)
    }

    /// Reads the line of one Enter press.
    fn take(&mut self, lines: &mut Vec<String>) {
        self.entered -= 1;
        // The prompt stays for the lines of a paste; it is read again for
        // the next line typed.
        let prompt = if self.entered == 0 {
            self.prompt.take()
        } else {
            self.prompt.clone()
        };
        if self.parser.screen().alternate_screen() {
            return;
        }
        let line = self.line(false);
        let prompt = prompt.unwrap_or_default();
        push(lines, line.strip_prefix(prompt.as_str()).unwrap_or(&line));
    }
}

/// What a line editor writes when it starts reading a line (bracketed paste
/// on), and when it has read it (off).
const EDITOR_ON: &[u8] = b"\x1b[?2004h";
const EDITOR_OFF: &[u8] = b"\x1b[?2004l";

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn push(lines: &mut Vec<String>, command: &str) {
    let command = command.trim();
    if !command.is_empty() {
        lines.push(command.to_owned());
    }
}

/// A line editor's line without its prompt, when the prompt was not seen
/// before the line was typed: what follows the first of the marks prompts
/// end in (`$ `, `# `, `% `, `> `), or the whole line.
fn after_prompt(line: &str) -> &str {
    let mark = ["$ ", "# ", "% ", "> "]
        .iter()
        .filter_map(|m| line.find(m).map(|i| i + m.len()))
        .min();
    mark.map_or(line, |i| &line[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(screen: &mut Screen, keys: &str, echo: &str) -> Vec<String> {
        let mut lines = Vec::new();
        screen.input(keys.as_bytes(), &mut lines);
        screen.output(echo.as_bytes(), &mut lines);
        lines
    }

    #[test]
    fn a_typed_line_is_read_without_its_prompt() {
        let mut s = Screen::new(80, 24);
        let mut lines = Vec::new();
        s.output(b"user@web1:~$ ", &mut lines);
        assert!(typed(&mut s, "l", "l").is_empty());
        assert!(typed(&mut s, "s -la", "s -la").is_empty());
        let got = typed(&mut s, "\r", "\r\ntotal 0\r\nuser@web1:~$ ");
        assert_eq!(got, ["ls -la"]);
        // The next line has its own prompt.
        let got = typed(&mut s, "whoami\r", "whoami\r\nuser\r\nuser@web1:~$ ");
        assert_eq!(got, ["whoami"]);
    }

    #[test]
    fn editing_and_history_are_read_as_the_screen_shows_them() {
        let mut s = Screen::new(80, 24);
        let mut lines = Vec::new();
        s.output(b"$ ", &mut lines);
        // `rm -rf /tmp/xx`, two backspaces as the line editor redraws them,
        // then `y`: the line reads as it was run.
        typed(&mut s, "rm -rf /tmp/xx", "rm -rf /tmp/xx");
        typed(&mut s, "\x7f\x7f", "\x08\x1b[K\x08\x1b[K");
        typed(&mut s, "y", "y");
        let got = typed(&mut s, "\r", "\r\n$ ");
        assert_eq!(got, ["rm -rf /tmp/y"]);
        // Up-arrow history: the shell redraws the line after the prompt.
        typed(&mut s, "\x1b[A", "rm -rf /tmp/y");
        let got = typed(&mut s, "\r", "\r\n$ ");
        assert_eq!(got, ["rm -rf /tmp/y"]);
    }

    #[test]
    fn a_line_longer_than_the_terminal_reads_whole() {
        let mut s = Screen::new(20, 5);
        let mut lines = Vec::new();
        s.output(b"$ ", &mut lines);
        let long = "echo 0123456789abcdefghijklmnopqrstuvwxyz";
        typed(&mut s, long, long);
        let got = typed(&mut s, "\r", "\r\n0123\r\n$ ");
        assert_eq!(got, [long]);
    }

    #[test]
    fn a_password_typed_without_echo_is_not_read() {
        let mut s = Screen::new(80, 24);
        let mut lines = Vec::new();
        s.output(b"[sudo] password for user: ", &mut lines);
        let got = typed(&mut s, "hunter2\r", "\r\n");
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn full_screen_programs_are_not_read() {
        let mut s = Screen::new(80, 24);
        let mut lines = Vec::new();
        s.output(b"\x1b[?1049h~\r\n~\r\n", &mut lines);
        let got = typed(&mut s, ":wq\r", ":wq\r\n");
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn a_pasted_block_reads_line_by_line() {
        let mut s = Screen::new(80, 24);
        let mut lines = Vec::new();
        s.output(b"$ ", &mut lines);
        let got = typed(&mut s, "id\rdate\r", "id\r\nuid=0\r\n$ date\r\nSun\r\n$ ");
        assert_eq!(got, ["id", "date"]);
    }

    /// bash as it runs under `ssh -tt` with its input piped: the input comes
    /// first (echoed by the terminal before bash reads it), then readline
    /// reads each line between bracketed-paste on and off.
    #[test]
    fn lines_typed_ahead_of_a_line_editor_are_read_when_it_accepts_them() {
        let mut s = Screen::new(0, 0);
        let mut lines = Vec::new();
        s.input(b"echo hello\nexit\n", &mut lines);
        for chunk in [
            "Last login: today\r\r\n\r\necho hello\r\nexit\r\n",
            "\x1b[?2004h",
            "root@vm:~# ",
            "echo hello",
            "\r\n",
            "\x1b[?2004l\r",
            "hello\r\n",
            "\x1b[?2004hroot@vm:~# exit\r\n\x1b[?2004l\rlogout\r\n",
        ] {
            s.output(chunk.as_bytes(), &mut lines);
        }
        assert_eq!(lines, ["echo hello", "exit"]);
    }

    #[test]
    fn a_line_editor_line_is_read_without_its_prompt() {
        let mut s = Screen::new(80, 24);
        let mut lines = Vec::new();
        s.output(b"\x1b[?2004huser@h:/tmp$ ", &mut lines);
        typed(&mut s, "cd /", "cd /");
        let got = typed(&mut s, "\r", "\r\n\x1b[?2004l\r\x1b[?2004huser@h:/$ ");
        assert_eq!(got, ["cd /"]);
        // The prompt changed; the next line still reads without it.
        typed(&mut s, "ls > x", "ls > x");
        let got = typed(&mut s, "\r", "\r\n\x1b[?2004l\r");
        assert_eq!(got, ["ls > x"]);
    }

    #[test]
    fn an_absurd_terminal_size_is_modelled_bounded() {
        let mut s = Screen::new(u32::MAX, u32::MAX);
        s.resize(0, 0);
        s.output(b"$ ", &mut Vec::new());
        let got = typed(&mut s, "true\r", "true\r\n");
        assert_eq!(got, ["true"]);
    }
}
