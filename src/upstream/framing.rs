//! The framing of an HTTP/1.1 response body from the upstream (RFC 9112 section 6): a length,
//! chunks, or everything until the connection closes. [`Decoder`] takes body bytes out of the
//! connection's read buffer without copying them; it never reads the socket itself.
//!
//! Its rules are hyper's or stricter: a chunk size is 1 to 16 hex digits, a size line and each
//! trailer line end in CRLF (a bare LF is an error), a size line is at most
//! [`MAX_CHUNK_LINE`] bytes with its extensions and the trailers [`MAX_TRAILERS`] bytes in all.

use bytes::{Bytes, BytesMut};

/// Longest chunk-size line accepted, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer bytes accepted after the last chunk (they are read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// How the body of one response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// `Content-Length`: exactly this many bytes (0 for a HEAD answer, 204 and 304).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body ends when the upstream closes the connection.
    Close,
}

/// What [`Decoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decoded {
    /// Body bytes, taken out of the buffer.
    Data(Bytes),
    /// The buffer holds no complete piece: read more.
    NeedMore,
    /// The body is complete; the buffer holds what came after it.
    End,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// After a chunk's data, expecting its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one; bytes of trailers seen so far.
    Trailers(usize),
}

/// The body's state: bytes left, or the place in the chunked encoding.
#[derive(Debug)]
pub(super) struct Decoder {
    framing: Framing,
    chunk: Chunk,
    done: bool,
}

/// Why a body could not be decoded: the upstream broke the framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the API's response body is malformed: {0}")]
pub(crate) struct Malformed(pub(super) &'static str);

impl Decoder {
    pub(super) fn new(framing: Framing) -> Self {
        Decoder {
            framing,
            chunk: Chunk::Size,
            done: framing == Framing::Length(0),
        }
    }

    /// Whether the whole body has been taken.
    pub(super) fn is_done(&self) -> bool {
        self.done
    }

    /// Bytes left, when the framing says.
    pub(super) fn remaining(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            _ => None,
        }
    }

    /// Whether the connection can carry another request after this body: not when the body ran
    /// until the close.
    pub(super) fn reusable(&self) -> bool {
        self.framing != Framing::Close
    }

    /// The next piece of body in `buf`, taken out of it.
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Malformed> {
        if self.done {
            return Ok(Decoded::End);
        }
        match self.framing {
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let left = left - take as u64;
                self.framing = Framing::Length(left);
                self.done = left == 0;
                Ok(Decoded::Data(buf.split_to(take).freeze()))
            }
            Framing::Close => Ok(if buf.is_empty() {
                Decoded::NeedMore
            } else {
                Decoded::Data(buf.split().freeze())
            }),
            Framing::Chunked => self.chunked(buf),
        }
    }

    /// The connection closed: the end of a close-delimited body, an error for the others.
    pub(super) fn eof(&mut self) -> Result<(), Malformed> {
        match self.framing {
            Framing::Close => {
                self.done = true;
                Ok(())
            }
            _ if self.done => Ok(()),
            _ => Err(Malformed(
                "the connection closed before the end of the body",
            )),
        }
    }

    fn chunked(&mut self, buf: &mut BytesMut) -> Result<Decoded, Malformed> {
        loop {
            match self.chunk {
                Chunk::Size => {
                    let Some(line) =
                        take_line(buf, MAX_CHUNK_LINE, "a chunk-size line is too long")?
                    else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    self.chunk = if size == 0 {
                        Chunk::Trailers(0)
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - take as u64;
                    self.chunk = if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Chunk::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed("a chunk does not end in CRLF"));
                    }
                    let _ = buf.split_to(2);
                    self.chunk = Chunk::Size;
                }
                Chunk::Trailers(seen) => {
                    let room = MAX_TRAILERS.saturating_sub(seen);
                    let Some(line) = take_line(buf, room, "the trailers are too long")? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        self.done = true;
                        return Ok(Decoded::End);
                    }
                    if !line.contains(&b':') {
                        return Err(Malformed("a trailer line is not a header field"));
                    }
                    self.chunk = Chunk::Trailers(seen + line.len() + 2);
                }
            }
        }
    }
}

/// A line ending in CRLF, taken out of `buf` without its CRLF; `None` if the line is not
/// complete yet. A line longer than `max` (the error `too_long`), or a bare CR or LF in it, is
/// an error.
fn take_line(
    buf: &mut BytesMut,
    max: usize,
    too_long: &'static str,
) -> Result<Option<BytesMut>, Malformed> {
    let window = &buf[..buf.len().min(max.saturating_add(2))];
    match window.iter().position(|&b| b == b'\n') {
        Some(lf) => {
            if lf == 0 || window[lf - 1] != b'\r' || window[..lf - 1].contains(&b'\r') {
                return Err(Malformed("a line does not end in CRLF"));
            }
            let mut line = buf.split_to(lf + 1);
            line.truncate(lf - 1);
            Ok(Some(line))
        }
        None if window.contains(&b'\r') && window.last() != Some(&b'\r') => {
            Err(Malformed("a line does not end in CRLF"))
        }
        None if buf.len() > max.saturating_add(1) => Err(Malformed(too_long)),
        None => Ok(None),
    }
}

/// The size of a chunk line: 1 to 16 hex digits, then optionally extensions after `;` (ignored,
/// printable ASCII, space and tab only); nothing else.
fn chunk_size(line: &[u8]) -> Result<u64, Malformed> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(Malformed("a chunk size is not 1 to 16 hex digits"));
    }
    let rest = &line[digits..];
    // Optional whitespace before the extensions (RFC 9112 BWS), then `;`.
    let ext = rest.trim_ascii_start();
    if !rest.is_empty() && !ext.starts_with(b";") {
        return Err(Malformed(
            "a chunk size is followed by something other than ';'",
        ));
    }
    if !ext
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err(Malformed("a chunk extension holds a control byte"));
    }
    let mut size = 0u64;
    for &b in &line[..digits] {
        let digit = (b as char).to_digit(16).unwrap_or(0);
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(digit)))
            .ok_or(Malformed("a chunk size overflows"))?;
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes and returns the body or the error.
    fn run(framing: Framing, input: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), Malformed> {
        let mut decoder = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(b) => body.extend_from_slice(&b),
                Decoded::End => return Ok((body, buf.to_vec())),
                Decoded::NeedMore if fed < input.len() => {
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
                Decoded::NeedMore => {
                    decoder.eof()?;
                    return Ok((body, buf.to_vec()));
                }
            }
        }
    }

    #[test]
    fn lengths_take_exactly_their_bytes() {
        for step in [1, 3, 100] {
            let (body, rest) = run(Framing::Length(5), b"helloNEXT", step).unwrap();
            assert_eq!(body, b"hello");
            assert!(b"NEXT".starts_with(&rest), "{rest:?}");
        }
        assert!(Decoder::new(Framing::Length(0)).is_done());
        assert!(run(Framing::Length(9), b"short", 2).is_err());
    }

    #[test]
    fn chunks_decode_in_any_pieces() {
        let input = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 1\r\n\r\nNEXT";
        for step in [1, 2, 7, 1000] {
            let (body, rest) = run(Framing::Chunked, input, step).unwrap();
            assert_eq!(body, b"hello world", "step {step}");
            assert!(b"NEXT".starts_with(&rest), "step {step}: {rest:?}");
        }
        let (body, _) = run(Framing::Chunked, b"A\r\n0123456789\r\n0\r\n\r\n", 4).unwrap();
        assert_eq!(body, b"0123456789");
    }

    #[test]
    fn broken_chunks_are_errors() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"x\r\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5\r\r\nhello\r\n",
            b"0\r\nnot a trailer\r\n\r\n",
            b"5\r\nhel",
        ] {
            assert!(run(Framing::Chunked, bad, 3).is_err(), "{bad:?}");
        }
        let long = [b"1;".as_slice(), &[b'a'; 5000], b"\r\n"].concat();
        assert!(run(Framing::Chunked, &long, 4096).is_err());
    }

    #[test]
    fn close_delimited_bodies_end_at_eof() {
        let (body, _) = run(Framing::Close, b"all of it", 4).unwrap();
        assert_eq!(body, b"all of it");
        assert!(!Decoder::new(Framing::Close).reusable());
    }
}
