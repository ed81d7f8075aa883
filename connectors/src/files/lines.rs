//! Lines of one piece of a file: bytes arrive in chunks; each line belongs to the piece its first
//! byte is in, so pieces of one file split it without losing or repeating a line.

/// A line: where it starts, its number when known, and its bytes' range in the buffer.
#[derive(Debug, Clone, Copy)]
pub struct Line {
    /// Byte offset of its first byte in the file (uncompressed).
    pub offset: u64,
    /// Its number in the file, 1-based, when the piece starts at the file's start.
    pub number: Option<u64>,
    start: usize,
    end: usize,
}

impl Line {
    /// Where the line is in file `shown`: its number, or its byte offset inside later pieces.
    pub fn locate(&self, shown: &str) -> String {
        match self.number {
            Some(n) => format!("{shown} line {n}"),
            None => format!("{shown} byte {}", self.offset),
        }
    }
}

/// Splits a piece's bytes into lines.
#[derive(Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    offset: u64,
    /// Lines at or after this offset belong to the next piece.
    end: u64,
    /// The bytes before the first newline belong to the previous piece.
    skip_partial: bool,
    next_number: Option<u64>,
    /// Complete lines waiting in `buf`.
    complete: usize,
    finished: bool,
}

impl LineBuffer {
    /// Lines of the piece `[start, end)`, fed from offset `start - 1` when `start > 0` (so a line
    /// starting exactly at `start` is recognised), from 0 otherwise.
    pub fn new(start: u64, end: u64) -> Self {
        Self {
            buf: Vec::new(),
            offset: start.saturating_sub(1),
            end,
            skip_partial: start > 0,
            next_number: (start == 0).then_some(1),
            complete: 0,
            finished: false,
        }
    }

    /// Whether the piece's last line was taken (later bytes belong to the next piece).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Appends bytes.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        if self.finished {
            return;
        }
        if self.skip_partial {
            match memchr::memchr(b'\n', chunk) {
                Some(i) => {
                    self.offset += i as u64 + 1;
                    chunk = &chunk[i + 1..];
                    self.skip_partial = false;
                }
                None => {
                    self.offset += chunk.len() as u64;
                    return;
                }
            }
        }
        self.complete += memchr::memchr_iter(b'\n', chunk).count();
        self.buf.extend_from_slice(chunk);
    }

    /// Complete lines waiting.
    pub fn complete(&self) -> usize {
        self.complete
    }

    /// Takes the complete lines (and, when `at_eof`, the last unterminated one), up to the end of
    /// the piece; call [`Self::text`] for their bytes, then [`Self::consume`].
    pub fn lines(&mut self, at_eof: bool) -> Vec<Line> {
        let mut lines = Vec::with_capacity(self.complete + 1);
        let mut start = 0usize;
        let mut number = self.next_number;
        let mut ends: Vec<usize> = memchr::memchr_iter(b'\n', &self.buf).collect();
        if at_eof && !self.buf.is_empty() && self.buf.last() != Some(&b'\n') {
            ends.push(self.buf.len());
        }
        for end in ends {
            let offset = self.offset + start as u64;
            if offset >= self.end {
                self.finished = true;
                break;
            }
            let mut stop = end;
            if stop > start && self.buf[stop - 1] == b'\r' {
                stop -= 1;
            }
            lines.push(Line { offset, number, start, end: stop });
            number = number.map(|n| n + 1);
            start = (end + 1).min(self.buf.len());
        }
        self.next_number = number;
        lines
    }

    /// The bytes of `line`.
    pub fn text(&self, line: &Line) -> &[u8] {
        &self.buf[line.start..line.end]
    }

    /// Drops the bytes of the lines taken (everything up to the last one's newline).
    pub fn consume(&mut self, taken: &[Line]) {
        let Some(last) = taken.last() else { return };
        let upto = (last.end + 1).min(self.buf.len());
        let upto = if self.buf.get(last.end) == Some(&b'\r') { (last.end + 2).min(self.buf.len()) } else { upto };
        self.buf.drain(..upto);
        self.offset += upto as u64;
        self.complete = memchr::memchr_iter(b'\n', &self.buf).count();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &[u8], start: u64, end: u64, chunk: usize) -> Vec<(u64, String)> {
        let mut lines = LineBuffer::new(start, end);
        let from = start.saturating_sub(1) as usize;
        let mut out = Vec::new();
        for piece in text[from..].chunks(chunk) {
            lines.feed(piece);
            let taken = lines.lines(false);
            out.extend(taken.iter().map(|l| (l.offset, String::from_utf8_lossy(lines.text(l)).to_string())));
            lines.consume(&taken);
        }
        let taken = lines.lines(true);
        out.extend(taken.iter().map(|l| (l.offset, String::from_utf8_lossy(lines.text(l)).to_string())));
        out
    }

    #[test]
    fn pieces_of_a_file_hold_every_line_once() {
        let text = b"{\"a\":1}\r\n{\"a\":22}\n\n{\"a\":333}\n{\"a\":4444}";
        let whole = split(text, 0, text.len() as u64, 3);
        assert_eq!(whole.iter().map(|l| l.1.as_str()).collect::<Vec<_>>(), ["{\"a\":1}", "{\"a\":22}", "", "{\"a\":333}", "{\"a\":4444}"]);
        for cut in 1..text.len() as u64 {
            for chunk in [1, 2, 5, 100] {
                let mut both = split(text, 0, cut, chunk);
                both.extend(split(text, cut, text.len() as u64, chunk));
                assert_eq!(both, whole, "cut at {cut}, chunks of {chunk}");
            }
        }
    }
}
