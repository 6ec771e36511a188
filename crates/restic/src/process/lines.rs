//! Reads a child's output line by line with a memory cap per line.
//!
//! `read_until` would buffer a newline-free stream without bound; this
//! reader keeps at most `cap` bytes of a line and counts the rest, so a
//! runaway line costs a counter, not memory. All state lives in the reader,
//! which makes [`LineReader::next_line`] safe to use in `select!`: a
//! cancelled call loses nothing.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// One line of output, without its newline.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RawLine {
    /// The kept bytes (at most the reader's cap).
    pub bytes: Vec<u8>,
    /// How many bytes past the cap were discarded.
    pub dropped: u64,
}

/// Splits a byte stream into capped lines as it arrives: the part of line
/// reading that needs no I/O, shared by [`LineReader`] and [`split_lines`]
/// so recorded output is cut exactly as live output is.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    cap: usize,
    line: RawLine,
}

impl LineSplitter {
    /// A splitter keeping at most `cap` bytes of each line.
    pub(crate) fn new(cap: usize) -> Self {
        LineSplitter {
            cap,
            line: RawLine::default(),
        }
    }

    /// Takes bytes from the front of `available`: returns how many it
    /// consumed and the line they completed, if any.
    pub(crate) fn push(&mut self, available: &[u8]) -> (usize, Option<RawLine>) {
        let (chunk, consumed, complete) = match available.iter().position(|&b| b == b'\n') {
            Some(newline) => (&available[..newline], newline + 1, true),
            None => (available, available.len(), false),
        };
        let room = self.cap.saturating_sub(self.line.bytes.len());
        let keep = chunk.len().min(room);
        self.line.bytes.extend_from_slice(&chunk[..keep]);
        self.line.dropped += (chunk.len() - keep) as u64;
        let line = complete.then(|| std::mem::take(&mut self.line));
        (consumed, line)
    }

    /// The last line when the stream ended without a newline.
    pub(crate) fn finish(&mut self) -> Option<RawLine> {
        let line = std::mem::take(&mut self.line);
        let empty = line.bytes.is_empty() && line.dropped == 0;
        (!empty).then_some(line)
    }
}

/// All lines of recorded output, capped like live output.
pub(crate) fn split_lines(mut bytes: &[u8], cap: usize) -> Vec<RawLine> {
    let mut splitter = LineSplitter::new(cap);
    let mut lines = Vec::new();
    while !bytes.is_empty() {
        let (consumed, line) = splitter.push(bytes);
        lines.extend(line);
        bytes = &bytes[consumed..];
    }
    lines.extend(splitter.finish());
    lines
}

/// A capped, cancel-safe line reader.
pub(crate) struct LineReader<R> {
    inner: BufReader<R>,
    splitter: LineSplitter,
    done: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// Reads from `inner`, keeping at most `cap` bytes of each line.
    pub(crate) fn new(inner: R, cap: usize) -> Self {
        LineReader {
            inner: BufReader::new(inner),
            splitter: LineSplitter::new(cap),
            done: false,
        }
    }

    /// The next line; `None` at end of stream. A last line without a
    /// newline is still returned.
    pub(crate) async fn next_line(&mut self) -> std::io::Result<Option<RawLine>> {
        if self.done {
            return Ok(None);
        }
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                self.done = true;
                return Ok(self.splitter.finish());
            }
            let (consumed, line) = self.splitter.push(available);
            self.inner.consume(consumed);
            if line.is_some() {
                return Ok(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all_lines(input: &[u8], cap: usize) -> Vec<RawLine> {
        let mut reader = LineReader::new(input, cap);
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap_or_else(|e| panic!("{e}")) {
            lines.push(line);
        }
        lines
    }

    fn line(text: &str, dropped: u64) -> RawLine {
        RawLine {
            bytes: text.as_bytes().to_vec(),
            dropped,
        }
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_an_unterminated_last_one() {
        assert_eq!(
            all_lines(b"one\n\ntwo\nthree", 100).await,
            [
                line("one", 0),
                line("", 0),
                line("two", 0),
                line("three", 0)
            ]
        );
        assert_eq!(all_lines(b"", 100).await, []);
    }

    #[tokio::test]
    async fn caps_long_lines_without_losing_the_next() {
        let mut input = vec![b'x'; 100_000];
        input.extend_from_slice(b"\nnext\n");
        let lines = all_lines(&input, 10).await;
        assert_eq!(lines, [line("xxxxxxxxxx", 99_990), line("next", 0)]);
    }

    #[tokio::test]
    async fn recorded_output_splits_as_live_output_does() {
        for input in [
            &b"one\n\ntwo\nthree"[..],
            b"",
            b"\n",
            b"abcdefghijklmnop\nq\n",
        ] {
            assert_eq!(split_lines(input, 5), all_lines(input, 5).await);
        }
    }
}
