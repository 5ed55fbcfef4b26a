//! Commands typed in an interactive shell, read off a terminal screen model:
//! the line as the user saw it when they pressed Enter (with the shell's
//! editing, history and completion applied), never a reconstruction from
//! keystrokes. Best effort, and recorded as such: a shell may redraw its line
//! in ways a line reader cannot follow, and a full-screen program's keys are
//! not commands (its screen is not read).

use std::num::NonZeroU16;

/// Widest terminal modelled: a wider one is modelled this wide (its long
/// lines then wrap differently; a command still reads whole).
const MAX_COLS: u32 = 300;
/// Tallest terminal modelled: only the lines around the cursor are read, and
/// the model's memory grows with its area (about 1 MiB at the most).
const MAX_ROWS: u32 = 50;
/// Rows of one line read back from the cursor (a command wrapped over more
/// is read from its last rows).
const MAX_LINE_ROWS: u16 = 8;
/// Enter presses waiting for their line to leave the screen (a paste of many
/// lines); more are dropped rather than queued without bound.
const MAX_PENDING: usize = 64;
/// Lines read per channel: a burst, then this many a second; what a flood of
/// Enter presses brings beyond that is counted, not recorded line by line.
const BURST: f64 = 30.0;
const PER_SECOND: f64 = 5.0;

/// What a line editor writes when it starts reading a line (bracketed paste
/// on), and when it has read it (off).
const EDITOR_ON: &[u8] = b"\x1b[?2004h";
const EDITOR_OFF: &[u8] = b"\x1b[?2004l";

/// A command read off the screen, and how many lines before it were not
/// recorded (over the rate).
pub(super) struct Line {
    pub text: String,
    pub dropped: u64,
}

pub(super) struct Screen {
    parser: vt100::Parser,
    /// What stood before the cursor when the user began the line: the prompt,
    /// taken off the line read at Enter.
    prompt: Option<String>,
    /// Enter presses whose line is still to be read. A line is read only for
    /// an Enter the client sent: output alone never makes a command.
    entered: usize,
    /// Lines of the last Enter press (or paste) read so far.
    echoed: usize,
    /// The shell has a line editor that says when it reads a line (bracketed
    /// paste on while it does: bash, zsh): its lines are read when it stops.
    line_editor: bool,
    /// The line editor's line as it stood at its last newline.
    edited_line: Option<String>,
    /// Lines that may be recorded now (refilled at PER_SECOND up to BURST).
    budget: f64,
    refilled: std::time::Instant,
    dropped: u64,
    /// The model failed on some output: nothing more is read.
    broken: bool,
}

fn size(n: u32, max: u32, default: u16) -> NonZeroU16 {
    let n = if n == 0 {
        u32::from(default)
    } else {
        n.min(max)
    };
    NonZeroU16::new(n as u16).unwrap_or(NonZeroU16::MIN)
}

/// Where the output's newlines and line-editor markers are, in order.
#[derive(Clone, Copy, PartialEq)]
enum Mark {
    Newline,
    On,
    Off,
}

fn marks(data: &[u8]) -> Vec<(usize, Mark)> {
    let mut marks: Vec<(usize, Mark)> = memchr::memchr_iter(b'\n', data)
        .map(|p| (p, Mark::Newline))
        .chain(memchr::memmem::find_iter(data, EDITOR_ON).map(|p| (p, Mark::On)))
        .chain(memchr::memmem::find_iter(data, EDITOR_OFF).map(|p| (p, Mark::Off)))
        .collect();
    marks.sort_unstable_by_key(|m| m.0);
    marks
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
            budget: BURST,
            refilled: std::time::Instant::now(),
            dropped: 0,
            broken: false,
        }
    }

    pub(super) fn resize(&mut self, cols: u32, rows: u32) {
        if self.broken {
            return;
        }
        let (rows, cols) = (size(rows, MAX_ROWS, 24), size(cols, MAX_COLS, 80));
        self.guarded(|s| s.parser.set_size(rows, cols));
    }

    /// Runs `f` on the model; a panic in it (the terminal emulator fed
    /// hostile output) turns the model off instead of ending the session.
    fn guarded(&mut self, f: impl FnOnce(&mut Screen)) {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        if ran.is_err() {
            self.broken = true;
        }
    }

    fn process(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.guarded(|s| s.parser.process(bytes));
        }
    }

    /// Keystrokes from the client.
    pub(super) fn input(&mut self, data: &[u8], lines: &mut Vec<Line>) {
        if self.broken {
            return;
        }
        if self.prompt.is_none() && self.entered == 0 {
            self.prompt = Some(self.before_cursor());
        }
        let enters = data.iter().filter(|&&b| b == b'\r' || b == b'\n').count();
        if enters == 0 {
            return;
        }
        if self.line_editor {
            self.entered = (self.entered + enters).min(MAX_PENDING);
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

    /// Output from the host, after masking (what the client is shown). One
    /// pass over its newlines and markers; the screen is read only where a
    /// line may end (the last newline before a line editor stops, or a
    /// newline after an Enter), never at every newline of the output.
    pub(super) fn output(&mut self, data: &[u8], lines: &mut Vec<Line>) {
        if self.broken {
            return;
        }
        let marks = marks(data);
        let mut at = 0;
        for (k, &(pos, mark)) in marks.iter().enumerate() {
            if pos < at {
                continue; // inside a marker already processed
            }
            match mark {
                Mark::Newline => {
                    let editing = self.parser.screen().bracketed_paste();
                    if !editing && (self.line_editor || self.entered == 0) {
                        continue;
                    }
                    self.process(&data[at..pos]);
                    at = pos;
                    if self.parser.screen().bracketed_paste() {
                        self.line_editor = true;
                        // Only the newline the editor stops after matters.
                        // (and only for an Enter: output alone reads nothing).
                        let next = marks.get(k + 1).map(|m| m.1);
                        if self.entered > 0 && next != Some(Mark::Newline) {
                            self.edited_line = Some(self.line(false));
                        }
                    } else if !self.line_editor {
                        self.newline(lines);
                    }
                }
                Mark::On | Mark::Off => {
                    let end = pos + EDITOR_ON.len();
                    let was = self.parser.screen().bracketed_paste();
                    self.process(&data[at..end]);
                    at = end;
                    if mark == Mark::On {
                        self.line_editor = true;
                    }
                    self.edited(was, lines);
                }
            }
            if self.broken {
                return;
            }
        }
        let was = self.parser.screen().bracketed_paste();
        self.process(&data[at..]);
        self.edited(was, lines);
    }

    /// A line editor that was reading a line has stopped: the line it read,
    /// if the client pressed Enter for it.
    fn edited(&mut self, was_editing: bool, lines: &mut Vec<Line>) {
        if !was_editing || self.parser.screen().bracketed_paste() {
            return;
        }
        let line = self.edited_line.take();
        if self.entered == 0 {
            return;
        }
        self.entered -= 1;
        self.echoed = 0;
        let prompt = match self.entered {
            0 => self.prompt.take(),
            _ => self.prompt.clone(),
        }
        .unwrap_or_default();
        if let Some(line) = line {
            let command = match line.strip_prefix(prompt.as_str()) {
                Some(rest) if !prompt.is_empty() => rest,
                // Typed ahead of the prompt: the prompt ends at its mark.
                _ => after_prompt(&line),
            };
            self.push(lines, command);
        }
    }

    /// A newline from a shell without a line editor (sh): the first after
    /// Enter ends the typed line's echo; in a paste the next lines are the
    /// first command's output until the prompt shows again with the next.
    fn newline(&mut self, lines: &mut Vec<Line>) {
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

    /// The cursor's logical line (its row and up to MAX_LINE_ROWS rows that
    /// wrap into it).
    fn line(&self, to_cursor: bool) -> String {
        let screen = self.parser.screen();
        let (row, col) = screen.cursor_position();
        let mut start = row;
        while start > 0 && row - start < MAX_LINE_ROWS && screen.row_wrapped(start - 1) {
            start -= 1;
        }
        let end_col = if to_cursor {
            col
        } else {
            screen.size().1.get()
        };
        let mut text = screen.contents_between(start, 0, row, end_col);
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
    fn take(&mut self, lines: &mut Vec<Line>) {
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
        self.push(lines, line.strip_prefix(prompt.as_str()).unwrap_or(&line));
    }

    fn push(&mut self, lines: &mut Vec<Line>, command: &str) {
        let command = command.trim();
        if command.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * PER_SECOND;
        self.budget = (self.budget + earned).min(BURST);
        self.refilled = now;
        if self.budget < 1.0 {
            self.dropped += 1;
            return;
        }
        self.budget -= 1.0;
        lines.push(Line {
            text: command.to_owned(),
            dropped: std::mem::take(&mut self.dropped),
        });
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
        lines.into_iter().map(|l| l.text).collect()
    }

    fn shown(screen: &mut Screen, output: &str) -> Vec<String> {
        let mut lines = Vec::new();
        screen.output(output.as_bytes(), &mut lines);
        lines.into_iter().map(|l| l.text).collect()
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
        let lines: Vec<_> = lines.into_iter().map(|l| l.text).collect();
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

    /// Output alone (a file `cat`ted, a web page) never makes a command:
    /// only a line the client pressed Enter for is read.
    #[test]
    fn output_without_an_enter_is_not_a_command() {
        let mut s = Screen::new(80, 24);
        let forged = "\x1b[?2004hrm -rf /\n\x1b[?2004l".repeat(50);
        assert!(shown(&mut s, &forged).is_empty());
        // The same from a shell without a line editor.
        let mut s = Screen::new(80, 24);
        assert!(shown(&mut s, "$ rm -rf /\r\n$ ").is_empty());
    }

    /// A flood of Enter presses is recorded up to a rate; the rest counted.
    #[test]
    fn a_flood_of_lines_is_recorded_up_to_a_rate() {
        let mut s = Screen::new(80, 24);
        let mut lines = Vec::new();
        s.output(b"\x1b[?2004h$ ", &mut lines);
        for i in 0..200 {
            s.input(b"\r", &mut lines);
            s.output(
                format!("x{i}\r\n\x1b[?2004l\r\x1b[?2004h$ ").as_bytes(),
                &mut lines,
            );
        }
        assert!(
            lines.len() >= BURST as usize && lines.len() < 60,
            "{}",
            lines.len()
        );
        s.output(b"", &mut lines);
        // Once the rate allows again, the next line says how many were not.
        s.budget = 1.0;
        s.input(b"\r", &mut lines);
        s.output(b"last\r\n\x1b[?2004l", &mut lines);
        let last = lines.last().unwrap();
        assert_eq!(last.text, "last");
        assert!(last.dropped > 100, "{}", last.dropped);
    }

    /// Newlines that move the cursor far down cost one screen read per
    /// line the editor accepts, not one per newline.
    #[test]
    fn hostile_output_is_read_in_bounded_work() {
        let mut s = Screen::new(u32::MAX, u32::MAX);
        let mut lines = Vec::new();
        s.output(b"\x1b[?2004h$ ", &mut lines);
        s.input(b"\r", &mut lines);
        let flood = "\x1b[99;1H\n".repeat(100_000);
        let started = std::time::Instant::now();
        s.output(flood.as_bytes(), &mut lines);
        s.output(b"\x1b[?2004l", &mut lines);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(lines.len() <= 1);
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
