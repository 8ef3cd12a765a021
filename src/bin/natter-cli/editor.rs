//! The line editor: turns raw keypresses into finished lines and draws the line being typed.
//!
//! It exists so that a server line can be printed above the prompt without mangling what
//! the user is typing (a cooked terminal would leave half a line under the message). Pure:
//! bytes in, events and escape sequences out; it never reads or writes a descriptor.

/// What a batch of keypresses amounted to.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Line(String),
    /// Ctrl-C on an empty line, or Ctrl-D on an empty line: the user wants out.
    Quit,
    /// Ctrl-L: clear the screen.
    Clear,
}

pub struct Editor {
    prompt: String,
    hidden: bool,
    line: Vec<char>,
    cursor: usize,
    /// The first character shown: a line wider than the terminal scrolls sideways, so the
    /// editor always occupies exactly one row (which `\r\x1b[2K` can erase).
    scroll: usize,
    history: Vec<String>,
    /// Index into `history` while browsing with the arrows; `history.len()` when not.
    browsing: usize,
    /// Bytes of an unfinished UTF-8 character or escape sequence.
    pending: Vec<u8>,
}

impl Editor {
    pub fn new(prompt: &str) -> Editor {
        Editor {
            prompt: prompt.to_owned(),
            hidden: false,
            line: Vec::new(),
            cursor: 0,
            scroll: 0,
            history: Vec::new(),
            browsing: 0,
            pending: Vec::new(),
        }
    }

    /// A new prompt; `hidden` input (passwords) is neither shown nor kept in the history.
    pub fn set_prompt(&mut self, prompt: &str, hidden: bool) {
        self.prompt = prompt.to_owned();
        self.hidden = hidden;
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        self.pending.extend_from_slice(bytes);
        let input = std::mem::take(&mut self.pending);
        let mut i = 0;
        while i < input.len() {
            match self.key(&input[i..]) {
                Step::More => {
                    self.pending = input[i..].to_vec();
                    break;
                }
                Step::Used(n, event) => {
                    i += n;
                    events.extend(event);
                }
            }
        }
        events
    }

    fn key(&mut self, b: &[u8]) -> Step {
        let used = |n| Step::Used(n, None);
        match b[0] {
            b'\r' | b'\n' => {
                let line: String = self.line.drain(..).collect();
                self.cursor = 0;
                if !self.hidden && !line.trim().is_empty() && self.history.last() != Some(&line) {
                    self.history.push(line.clone());
                }
                self.browsing = self.history.len();
                Step::Used(1, Some(Event::Line(line)))
            }
            3 => {
                // Ctrl-C clears a line being typed; on an empty line it quits.
                if self.line.is_empty() {
                    return Step::Used(1, Some(Event::Quit));
                }
                self.line.clear();
                self.cursor = 0;
                used(1)
            }
            4 if self.line.is_empty() => Step::Used(1, Some(Event::Quit)),
            4 => {
                self.delete_at_cursor();
                used(1)
            }
            0x7f | 0x08 => {
                if self.cursor > 0 {
                    self.cursor -= 1;
                    self.line.remove(self.cursor);
                }
                used(1)
            }
            1 => {
                self.cursor = 0;
                used(1)
            }
            5 => {
                self.cursor = self.line.len();
                used(1)
            }
            0x0c => Step::Used(1, Some(Event::Clear)),
            0x0b => {
                self.line.truncate(self.cursor);
                used(1)
            }
            0x15 => {
                self.line.drain(..self.cursor);
                self.cursor = 0;
                used(1)
            }
            0x17 => {
                let mut start = self.cursor;
                while start > 0 && self.line[start - 1] == ' ' {
                    start -= 1;
                }
                while start > 0 && self.line[start - 1] != ' ' {
                    start -= 1;
                }
                self.line.drain(start..self.cursor);
                self.cursor = start;
                used(1)
            }
            0x1b => self.escape(b),
            c if c < 0x20 => used(1),
            _ => match utf8_char(b) {
                Utf8::More => Step::More,
                Utf8::Bad => used(1),
                Utf8::Char(c, n) => {
                    self.line.insert(self.cursor, c);
                    self.cursor += 1;
                    used(n)
                }
            },
        }
    }

    fn escape(&mut self, b: &[u8]) -> Step {
        if b.len() < 2 {
            return Step::More;
        }
        if b[1] != b'[' && b[1] != b'O' {
            return Step::Used(1, None);
        }
        // CSI: parameters then one final byte in 0x40..=0x7e.
        let Some(end) = b[2..].iter().position(|c| (0x40..=0x7e).contains(c)) else {
            return if b.len() > 16 { Step::Used(b.len(), None) } else { Step::More };
        };
        let params = &b[2..2 + end];
        match (params, b[2 + end]) {
            (_, b'A') => self.browse(-1),
            (_, b'B') => self.browse(1),
            (_, b'C') => self.cursor = (self.cursor + 1).min(self.line.len()),
            (_, b'D') => self.cursor = self.cursor.saturating_sub(1),
            (_, b'H') | (b"1" | b"7", b'~') => self.cursor = 0,
            (_, b'F') | (b"4" | b"8", b'~') => self.cursor = self.line.len(),
            (b"3", b'~') => self.delete_at_cursor(),
            _ => {}
        }
        Step::Used(3 + end, None)
    }

    fn delete_at_cursor(&mut self) {
        if self.cursor < self.line.len() {
            self.line.remove(self.cursor);
        }
    }

    fn browse(&mut self, step: isize) {
        if self.hidden || self.history.is_empty() {
            return;
        }
        let next = (self.browsing as isize + step).clamp(0, self.history.len() as isize) as usize;
        self.browsing = next;
        self.line = self.history.get(next).map_or_else(Vec::new, |l| l.chars().collect());
        self.cursor = self.line.len();
    }

    /// Draws a line that was just entered, as it stays on screen (hidden input: the prompt).
    pub fn entered(&self, line: &str) -> String {
        let shown = if self.hidden { "" } else { line };
        format!("\r\x1b[2K{}{shown}\n", self.prompt)
    }

    /// Draws the prompt and as much of the line as fits in `width` columns, scrolled so
    /// the cursor is visible, with the cursor where the user left it.
    pub fn render(&mut self, width: usize) -> String {
        let mut out = String::from("\r\x1b[2K");
        out.push_str(&self.prompt);
        if self.hidden {
            return out;
        }
        let prompt = columns(self.prompt.chars());
        // One column stays free: writing the last one would wrap on some terminals.
        let room = width.saturating_sub(prompt + 1).max(8);
        self.scroll = self.scroll.min(self.cursor);
        if columns(self.line.iter().copied()) <= room {
            self.scroll = 0;
        }
        while columns(self.line[self.scroll..self.cursor].iter().copied()) > room {
            self.scroll += 1;
        }
        let mut used = 0;
        for &c in &self.line[self.scroll..] {
            used += width_of(c);
            if used > room {
                break;
            }
            out.push(c);
        }
        let col = prompt + columns(self.line[self.scroll..self.cursor].iter().copied());
        out.push('\r');
        if col > 0 {
            out.push_str(&format!("\x1b[{col}C"));
        }
        out
    }
}

/// Terminal columns of a character: 2 for East Asian wide ones and most emoji, 0 for
/// combining marks, 1 otherwise (the common cases of wcwidth, without its tables).
fn width_of(c: char) -> usize {
    match c as u32 {
        0x0300..=0x036f | 0x200b..=0x200f | 0xfe00..=0xfe0f => 0,
        0x1100..=0x115f
        | 0x2e80..=0x303e
        | 0x3041..=0x33ff
        | 0x3400..=0x4dbf
        | 0x4e00..=0x9fff
        | 0xa000..=0xa4cf
        | 0xac00..=0xd7a3
        | 0xf900..=0xfaff
        | 0xfe30..=0xfe4f
        | 0xff00..=0xff60
        | 0xffe0..=0xffe6
        | 0x1f300..=0x1f64f
        | 0x1f900..=0x1f9ff
        | 0x20000..=0x3fffd => 2,
        _ => 1,
    }
}

fn columns(chars: impl Iterator<Item = char>) -> usize {
    chars.map(width_of).sum()
}

enum Step {
    /// The bytes end inside a character or escape sequence: wait for the rest.
    More,
    Used(usize, Option<Event>),
}

enum Utf8 {
    More,
    Bad,
    Char(char, usize),
}

fn utf8_char(b: &[u8]) -> Utf8 {
    let n = match b[0] {
        0x20..=0x7e => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return Utf8::Bad,
    };
    if b.len() < n {
        return Utf8::More;
    }
    match std::str::from_utf8(&b[..n]).ok().and_then(|s| s.chars().next()) {
        Some(c) => Utf8::Char(c, n),
        None => Utf8::Bad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(e: &mut Editor, bytes: &[u8]) -> Vec<Event> {
        e.feed(bytes)
    }

    #[test]
    fn typing_editing_and_enter() {
        let mut e = Editor::new("> ");
        assert!(line(&mut e, b"helo").is_empty());
        // left, insert, end, backspace, type
        let ev = line(&mut e, b"\x1b[Dl\x1b[F\x7fo wrld\x1b[D\x1b[D\x1b[Do\r");
        assert_eq!(ev, vec![Event::Line("hello world".into())]);
    }

    #[test]
    fn split_utf8_and_escape_sequences_wait_for_their_rest() {
        let mut e = Editor::new("> ");
        let bytes = "é→".as_bytes();
        for part in [&bytes[..1], &bytes[1..3], &bytes[3..4], &bytes[4..], b"\x1b", b"[", b"D"] {
            assert!(e.feed(part).is_empty());
        }
        assert_eq!(e.feed(b"x\r"), vec![Event::Line("éx→".into())]);
    }

    #[test]
    fn history_and_hidden_input() {
        let mut e = Editor::new("> ");
        e.feed(b"users\r");
        e.set_prompt("password: ", true);
        assert_eq!(e.feed(b"s3cret\r"), vec![Event::Line("s3cret".into())]);
        assert_eq!(e.render(80), "\r\x1b[2Kpassword: ");
        e.set_prompt("> ", false);
        e.feed(b"\x1b[A");
        assert_eq!(e.render(80), "\r\x1b[2K> users\r\x1b[7C");
        assert_eq!(e.feed(b"\x1b[B\x1b[A\r"), vec![Event::Line("users".into())]);
    }

    #[test]
    fn control_keys() {
        let mut e = Editor::new("> ");
        assert_eq!(e.feed(b"send bob hi\x17\x17there\r"), vec![Event::Line("send there".into())]);
        assert_eq!(e.feed(b"abc\x03\x03"), vec![Event::Quit]);
        assert_eq!(e.feed(b"abc\x15x\x01y\r"), vec![Event::Line("yx".into())]);
        assert_eq!(e.feed(b"\x04"), vec![Event::Quit]);
        e.feed(b"abc\x1b[D\x1b[D");
        assert_eq!(e.render(80), "\r\x1b[2K> abc\r\x1b[3C");
        assert_eq!(e.feed(b"\x0c"), vec![Event::Clear]);
    }

    #[test]
    fn a_line_wider_than_the_terminal_scrolls_and_stays_on_one_row() {
        let mut e = Editor::new("> ");
        e.feed("0123456789abcdefghij".as_bytes());
        // 20 columns: the prompt takes 2, one stays free, so 17 characters show.
        assert_eq!(e.render(20), "\r\x1b[2K> 3456789abcdefghij\r\x1b[19C");
        e.feed(b"\x01");
        assert_eq!(e.render(20), "\r\x1b[2K> 0123456789abcdefg\r\x1b[2C");
        // Wide characters count two columns, for the cursor as for the room.
        let mut e = Editor::new("> ");
        e.feed("日本語x".as_bytes());
        e.feed(b"\x1b[D");
        assert_eq!(e.render(80), "\r\x1b[2K> 日本語x\r\x1b[8C");
    }
}
