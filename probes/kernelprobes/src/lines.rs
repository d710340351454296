//! Turning reads of arbitrary size into whole lines.
//!
//! A line that crosses a read boundary is kept (the C klogscanner dropped it), a last line
//! without `\n` is returned by [`LineAssembler::finish`] (the C pstoreprobe spun forever on
//! one), and a line longer than the bound keeps its first bytes only, so memory stays
//! bounded whatever the input.

/// Splits a byte stream into lines (without their `\n`).
#[derive(Debug)]
pub struct LineAssembler {
    partial: Vec<u8>,
    max_line: usize,
}

impl LineAssembler {
    /// Lines longer than `max_line` bytes are cut to their first `max_line` bytes.
    pub fn new(max_line: usize) -> LineAssembler {
        LineAssembler {
            partial: Vec::new(),
            max_line,
        }
    }

    /// Feed the next chunk; `emit` gets every line completed by it.
    pub fn push(&mut self, mut chunk: &[u8], emit: &mut impl FnMut(&[u8])) {
        while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            let piece = &chunk[..nl];
            if self.partial.is_empty() {
                emit(&piece[..piece.len().min(self.max_line)]);
            } else {
                self.append(piece);
                emit(&self.partial);
                self.partial.clear();
            }
            chunk = &chunk[nl + 1..];
        }
        self.append(chunk);
    }

    /// The input ended: emit a last line that had no `\n`.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            emit(&self.partial);
            self.partial.clear();
        }
    }

    /// Bytes of an incomplete line held back.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    fn append(&mut self, bytes: &[u8]) {
        let room = self.max_line.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(chunks: &[&[u8]], max: usize, expected: &[&str]) {
        let mut asm = LineAssembler::new(max);
        let mut got = Vec::new();
        let mut emit = |l: &[u8]| got.push(String::from_utf8_lossy(l).into_owned());
        for c in chunks {
            asm.push(c, &mut emit);
        }
        asm.finish(&mut emit);
        assert_eq!(got, expected, "chunks {chunks:?}");
    }

    #[test]
    fn lines_across_chunks_and_without_final_newline() {
        check(&[b"a\nb", b"c\n", b"d"], 100, &["a", "bc", "d"]);
        check(&[b"", b"\n\n"], 100, &["", ""]);
        check(&[b"ab", b"cd", b"ef\n"], 100, &["abcdef"]);
        check(&[b"no newline at all"], 100, &["no newline at all"]);
        check(&[], 100, &[]);
    }

    #[test]
    fn long_lines_are_cut_not_split() {
        check(&[b"abcdef\nxy\n"], 3, &["abc", "xy"]);
        check(&[b"ab", b"cdef", b"gh\nz"], 3, &["abc", "z"]);
        check(&[b"abcdefgh"], 3, &["abc"]);
    }
}
