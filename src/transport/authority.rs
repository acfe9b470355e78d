//! Lets clients that name no valid authority use the Unix socket.
//!
//! gRPC C-core (the Python, C++, Ruby and PHP clients) sends the percent-encoded socket path as `:authority`
//! since 1.57, and grpc-java sends the raw path. h2 parses `:authority` as a URI authority and resets every
//! stream whose value does not parse, with no option to relax it. [`AuthorityRewrite`] sits under hyper on
//! connections from the Unix socket and edits the client's byte stream before h2 reads it: each header
//! block is decoded with the client's HPACK context, an invalid `:authority` becomes `localhost` (a valid
//! one is kept), and the block is re-encoded as literals that use no dynamic table, so that h2's decoder
//! stays in step without sharing the client's table. Every other frame, DATA included, passes through
//! untouched and, when it arrives in a read of its own, uncopied. Writes go straight to the socket.
//!
//! Input h2 would refuse as a connection error anyway (a bad preface, an oversized frame, a broken header
//! block sequence, malformed HPACK) ends the connection with an I/O error instead of being forwarded.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::hpack::{self, HpackError};

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The largest frame payload the server accepts (SETTINGS_MAX_FRAME_SIZE); [`super::serve`] advertises it.
pub(crate) const MAX_FRAME_SIZE: u32 = 16_384;

/// The largest HPACK dynamic table the server allows: SETTINGS_HEADER_TABLE_SIZE's initial value, which
/// [`super::serve`] never changes.
pub(crate) const HEADER_TABLE_SIZE: u32 = 4_096;

/// The largest header block accepted, encoded (HEADERS and its CONTINUATIONs) and decoded (counted as
/// SETTINGS_MAX_HEADER_LIST_SIZE counts it). h2 refuses lists over 16 KiB one stream at a time; anything
/// past this bound is an attempt to make the rewrite buffer without end, and ends the connection.
pub(crate) const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// What `:authority` becomes when the client's value is not a valid authority.
const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Stream dependency (4 bytes) and weight (1 byte) of a HEADERS frame with the PRIORITY flag.
const PRIORITY_LEN: usize = 5;

/// Client input that ends the connection.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum RewriteError {
    #[error("the client did not start with the HTTP/2 connection preface")]
    BadPreface,
    #[error("a frame of {0} bytes exceeds the {MAX_FRAME_SIZE}-byte maximum")]
    FrameTooLarge(u32),
    #[error("a frame of type {0:#x} interrupts a header block")]
    ContinuationExpected(u8),
    #[error("a CONTINUATION frame follows no open header block")]
    UnexpectedContinuation,
    #[error("a client sent PUSH_PROMISE")]
    PushPromise,
    #[error("a HEADERS frame's padding or priority exceeds its payload")]
    BadPadding,
    #[error("a header block exceeds {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge,
    #[error("malformed header block: {0}")]
    Hpack(#[from] HpackError),
}

impl From<RewriteError> for io::Error {
    fn from(e: RewriteError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// An accepted connection whose reads go through the rewrite and whose writes do not.
pub(crate) struct AuthorityRewrite<IO> {
    inner: IO,
    rewriter: Rewriter,
    /// Bytes the rewriter made (re-encoded header frames, a frame header that came in pieces), due to the
    /// reader before anything else.
    out: BytesMut,
    /// Bytes read from the socket after a rewritten frame in the same read, not yet through the rewriter.
    pending: BytesMut,
    /// The error that ended the connection, returned to every later read.
    failed: Option<RewriteError>,
}

impl<IO> AuthorityRewrite<IO> {
    /// Wraps a connection accepted on the Unix socket, before any byte of it was read.
    pub(crate) fn new(inner: IO) -> AuthorityRewrite<IO> {
        AuthorityRewrite {
            inner,
            rewriter: Rewriter::new(),
            out: BytesMut::new(),
            pending: BytesMut::new(),
            failed: None,
        }
    }

    fn fail(&mut self, e: RewriteError) -> io::Error {
        self.failed = Some(e.clone());
        e.into()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityRewrite<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = &this.failed {
            return Poll::Ready(Err(e.clone().into()));
        }
        let initial = buf.filled().len();
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                continue;
            }
            if !this.pending.is_empty() {
                let limit = this.pending.len().min(buf.remaining());
                match this.rewriter.step(&this.pending[..limit], &mut this.out) {
                    Ok(Step::Forward(n)) => {
                        buf.put_slice(&this.pending[..n]);
                        this.pending.advance(n);
                    }
                    Ok(Step::Consumed(n)) => this.pending.advance(n),
                    Err(e) => return Poll::Ready(Err(this.fail(e))),
                }
                continue;
            }
            // Whatever was added must be returned now: a read that returns Pending has read nothing.
            if buf.filled().len() > initial {
                return Poll::Ready(Ok(()));
            }
            // Read into the caller's buffer and leave every forwarded byte where it landed.
            let start = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let end = buf.filled().len();
            if end == start {
                return Poll::Ready(Ok(()));
            }
            let mut pos = start;
            while pos < end {
                match this.rewriter.step(&buf.filled()[pos..end], &mut this.out) {
                    Ok(Step::Forward(n)) => pos += n,
                    Ok(Step::Consumed(n)) => {
                        // What follows must wait for the rewriter's output: move it aside.
                        this.pending.extend_from_slice(&buf.filled()[pos + n..end]);
                        buf.set_filled(pos);
                        break;
                    }
                    Err(e) => {
                        buf.set_filled(start);
                        return Poll::Ready(Err(this.fail(e)));
                    }
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityRewrite<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// What the rewriter did with the start of its input.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// These bytes go to h2 unchanged.
    Forward(usize),
    /// These bytes were taken in; what replaces them (if anything yet) was appended to the output.
    Consumed(usize),
}

/// Where the rewriter is in the client's byte stream.
enum State {
    /// Inside the connection preface, this many bytes in.
    Preface(usize),
    /// At (or inside) a frame header; `have` bytes of it are held in `header` when it came in pieces.
    FrameHeader {
        have: usize,
        header: [u8; FRAME_HEADER_LEN],
    },
    /// Inside the payload of a frame that passes through.
    Forward(usize),
    /// Collecting the payload of a HEADERS or CONTINUATION frame.
    Collect { frame: FrameHeader, remaining: usize },
}

#[derive(Clone, Copy)]
struct FrameHeader {
    len: u32,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHeader {
    fn parse(bytes: &[u8]) -> FrameHeader {
        FrameHeader {
            len: u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]),
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    fn write(&self, out: &mut BytesMut) {
        out.extend_from_slice(&self.len.to_be_bytes()[1..]);
        out.extend_from_slice(&[self.kind, self.flags]);
        out.extend_from_slice(&self.stream.to_be_bytes());
    }
}

/// A header block being collected: from its HEADERS frame up to the frame with END_HEADERS.
struct OpenBlock {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_LEN]>,
    fragment: Vec<u8>,
}

/// The client-to-server HTTP/2 byte stream, frame by frame: header blocks rewritten, the rest forwarded.
struct Rewriter {
    state: State,
    /// The payload of the HEADERS or CONTINUATION frame being collected.
    payload: Vec<u8>,
    open: Option<OpenBlock>,
    decoder: hpack::Decoder,
}

impl Rewriter {
    fn new() -> Rewriter {
        Rewriter {
            state: State::Preface(0),
            payload: Vec::new(),
            open: None,
            decoder: hpack::Decoder::new(HEADER_TABLE_SIZE as usize, MAX_HEADER_BLOCK),
        }
    }

    /// Takes in the start of `input` (never empty), appending to `out` whatever must reach h2 before the
    /// rest of the input.
    fn step(&mut self, input: &[u8], out: &mut BytesMut) -> Result<Step, RewriteError> {
        match &mut self.state {
            State::Preface(matched) => {
                let n = (PREFACE.len() - *matched).min(input.len());
                if input[..n] != PREFACE[*matched..*matched + n] {
                    return Err(RewriteError::BadPreface);
                }
                *matched += n;
                if *matched == PREFACE.len() {
                    self.state = State::FrameHeader {
                        have: 0,
                        header: [0; FRAME_HEADER_LEN],
                    };
                }
                Ok(Step::Forward(n))
            }
            State::FrameHeader { have: 0, .. } if input.len() >= FRAME_HEADER_LEN => {
                let frame = FrameHeader::parse(&input[..FRAME_HEADER_LEN]);
                if self.start_frame(frame, out)? {
                    Ok(Step::Forward(FRAME_HEADER_LEN))
                } else {
                    Ok(Step::Consumed(FRAME_HEADER_LEN))
                }
            }
            State::FrameHeader { have, header } => {
                let n = (FRAME_HEADER_LEN - *have).min(input.len());
                header[*have..*have + n].copy_from_slice(&input[..n]);
                *have += n;
                if *have == FRAME_HEADER_LEN {
                    let bytes = *header;
                    let frame = FrameHeader::parse(&bytes);
                    if self.start_frame(frame, out)? {
                        out.extend_from_slice(&bytes);
                    }
                }
                Ok(Step::Consumed(n))
            }
            State::Forward(remaining) => {
                let n = (*remaining).min(input.len());
                *remaining -= n;
                if *remaining == 0 {
                    self.state = State::at_frame_header();
                }
                Ok(Step::Forward(n))
            }
            State::Collect { frame, remaining } => {
                let n = (*remaining).min(input.len());
                self.payload.extend_from_slice(&input[..n]);
                *remaining -= n;
                if *remaining == 0 {
                    let frame = *frame;
                    self.state = State::at_frame_header();
                    self.end_frame(frame, out)?;
                }
                Ok(Step::Consumed(n))
            }
        }
    }

    /// Checks a frame header against the frame sequence and moves to its payload. True when the frame
    /// passes through (its header included), false when it is collected for rewriting.
    fn start_frame(&mut self, frame: FrameHeader, out: &mut BytesMut) -> Result<bool, RewriteError> {
        if frame.len > MAX_FRAME_SIZE {
            return Err(RewriteError::FrameTooLarge(frame.len));
        }
        match &self.open {
            Some(open) if frame.kind != CONTINUATION || frame.stream != open.stream => {
                return Err(RewriteError::ContinuationExpected(frame.kind));
            }
            None if frame.kind == CONTINUATION => return Err(RewriteError::UnexpectedContinuation),
            _ => {}
        }
        match frame.kind {
            PUSH_PROMISE => Err(RewriteError::PushPromise),
            HEADERS | CONTINUATION => {
                self.payload.clear();
                self.state = State::Collect {
                    frame,
                    remaining: frame.len as usize,
                };
                if frame.len == 0 {
                    self.state = State::at_frame_header();
                    self.end_frame(frame, out)?;
                }
                Ok(false)
            }
            _ => {
                self.state = match frame.len {
                    0 => State::at_frame_header(),
                    len => State::Forward(len as usize),
                };
                Ok(true)
            }
        }
    }

    /// Adds a complete HEADERS or CONTINUATION payload to the open block, and rewrites the block when
    /// this frame ends it.
    fn end_frame(&mut self, frame: FrameHeader, out: &mut BytesMut) -> Result<(), RewriteError> {
        if frame.kind == HEADERS {
            let mut body = &self.payload[..];
            let mut padding = 0;
            if frame.flags & PADDED != 0 {
                let (&len, rest) = body.split_first().ok_or(RewriteError::BadPadding)?;
                padding = usize::from(len);
                body = rest;
            }
            let mut priority = None;
            if frame.flags & PRIORITY != 0 {
                let (fields, rest) = body.split_first_chunk().ok_or(RewriteError::BadPadding)?;
                priority = Some(*fields);
                body = rest;
            }
            let fragment_len = body.len().checked_sub(padding).ok_or(RewriteError::BadPadding)?;
            self.open = Some(OpenBlock {
                stream: frame.stream,
                end_stream: frame.flags & END_STREAM != 0,
                priority,
                fragment: body[..fragment_len].to_vec(),
            });
        } else {
            let open = self.open.as_mut().ok_or(RewriteError::UnexpectedContinuation)?;
            if open.fragment.len() + self.payload.len() > MAX_HEADER_BLOCK {
                return Err(RewriteError::HeaderBlockTooLarge);
            }
            open.fragment.extend_from_slice(&self.payload);
        }
        if frame.flags & END_HEADERS != 0 {
            let block = self.open.take().ok_or(RewriteError::UnexpectedContinuation)?;
            self.rewrite(block, out)?;
        }
        Ok(())
    }

    /// Decodes a whole header block and writes it back as HEADERS (and CONTINUATION) frames of literals,
    /// with an invalid `:authority` replaced.
    fn rewrite(&mut self, block: OpenBlock, out: &mut BytesMut) -> Result<(), RewriteError> {
        let mut encoded = Vec::with_capacity(block.fragment.len() * 2);
        self.decoder.decode(&block.fragment, |name, value, never_indexed| {
            let value = if name == b":authority" && !valid_authority(value) {
                REPLACEMENT_AUTHORITY
            } else {
                value
            };
            hpack::encode_literal(&mut encoded, name, value, never_indexed);
        })?;
        let max = MAX_FRAME_SIZE as usize;
        let priority_len = block.priority.map_or(0, |p| p.len());
        let first_len = encoded.len().min(max - priority_len);
        let (first, mut rest) = encoded.split_at(first_len);
        let mut flags = if block.end_stream { END_STREAM } else { 0 };
        if block.priority.is_some() {
            flags |= PRIORITY;
        }
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        FrameHeader {
            len: (priority_len + first.len()) as u32,
            kind: HEADERS,
            flags,
            stream: block.stream,
        }
        .write(out);
        if let Some(priority) = block.priority {
            out.extend_from_slice(&priority);
        }
        out.extend_from_slice(first);
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(rest.len().min(max));
            rest = after;
            FrameHeader {
                len: chunk.len() as u32,
                kind: CONTINUATION,
                flags: if rest.is_empty() { END_HEADERS } else { 0 },
                stream: block.stream,
            }
            .write(out);
            out.extend_from_slice(chunk);
        }
        Ok(())
    }
}

impl State {
    fn at_frame_header() -> State {
        State::FrameHeader {
            have: 0,
            header: [0; FRAME_HEADER_LEN],
        }
    }
}

/// Whether h2 accepts `value` as `:authority`: UTF-8 that parses as a URI authority.
fn valid_authority(value: &[u8]) -> bool {
    std::str::from_utf8(value).is_ok() && hyper::http::uri::Authority::try_from(value).is_ok()
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;
    use tokio::io::AsyncReadExt as _;

    use super::hpack::{huffman_encode, Decoder};
    use super::*;

    const DATA: u8 = 0x0;
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const WINDOW_UPDATE: u8 = 0x8;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        FrameHeader {
            len: payload.len() as u32,
            kind,
            flags,
            stream,
        }
        .write(&mut out);
        out.extend_from_slice(payload);
        out.to_vec()
    }

    fn client(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        out.extend(frames.iter().flatten());
        out
    }

    /// A raw string literal (short strings only).
    fn string(s: &[u8]) -> Vec<u8> {
        assert!(s.len() < 0x7f);
        let mut out = vec![s.len() as u8];
        out.extend_from_slice(s);
        out
    }

    /// A literal with incremental indexing and a literal name: the client adds it to its dynamic table.
    fn indexed_literal(name: &str, value: &str) -> Vec<u8> {
        let mut out = vec![0x40];
        out.extend(string(name.as_bytes()));
        out.extend(string(value.as_bytes()));
        out
    }

    /// A request's usual fields from the static table: `:method POST`, `:scheme http`, `:path /`.
    const POST_HTTP_ROOT: [u8; 3] = [0x83, 0x86, 0x84];

    fn request_block(authority: &str) -> Vec<u8> {
        let mut block = POST_HTTP_ROOT.to_vec();
        block.extend(indexed_literal(":authority", authority));
        block
    }

    /// Delivers its chunks one read at a time (each cut to the reader's buffer).
    struct Chunks(VecDeque<Vec<u8>>);

    impl AsyncRead for Chunks {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let chunks = &mut self.get_mut().0;
            if let Some(chunk) = chunks.front_mut() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                chunk.drain(..n);
                if chunk.is_empty() {
                    chunks.pop_front();
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    async fn rewrite_chunks(chunks: Vec<Vec<u8>>, read_size: usize) -> io::Result<Vec<u8>> {
        let mut rewrite = AuthorityRewrite::new(Chunks(chunks.into()));
        let mut out = Vec::new();
        let mut buf = vec![0; read_size];
        loop {
            match rewrite.read(&mut buf).await? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    async fn rewrite(input: &[u8]) -> io::Result<Vec<u8>> {
        rewrite_chunks(vec![input.to_vec()], 64 * 1024).await
    }

    async fn rewrite_err(input: &[u8]) -> RewriteError {
        let e = rewrite(input).await.expect_err("the rewrite should end the connection");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        e.get_ref()
            .and_then(|e| e.downcast_ref::<RewriteError>())
            .expect("a RewriteError")
            .clone()
    }

    struct Frame {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    }

    /// The frames of a rewritten stream, after checking its preface.
    fn frames(output: &[u8]) -> Vec<Frame> {
        assert_eq!(&output[..PREFACE.len()], PREFACE);
        let mut rest = &output[PREFACE.len()..];
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let header = FrameHeader::parse(&rest[..FRAME_HEADER_LEN]);
            let end = FRAME_HEADER_LEN + header.len as usize;
            frames.push(Frame {
                kind: header.kind,
                flags: header.flags,
                stream: header.stream,
                payload: rest[FRAME_HEADER_LEN..end].to_vec(),
            });
            rest = &rest[end..];
        }
        frames
    }

    /// Every header block of a rewritten stream, decoded by a decoder with no dynamic table at all: the
    /// rewrite must leave nothing for h2 to look up.
    fn header_lists(output: &[u8]) -> Vec<Vec<(String, String)>> {
        let mut decoder = Decoder::new(0, MAX_HEADER_BLOCK);
        let mut lists = Vec::new();
        let mut block = Vec::new();
        for frame in frames(output) {
            match frame.kind {
                HEADERS => {
                    assert_eq!(frame.flags & PADDED, 0, "padding left in");
                    let skip = if frame.flags & PRIORITY != 0 { PRIORITY_LEN } else { 0 };
                    block = frame.payload[skip..].to_vec();
                }
                CONTINUATION => block.extend_from_slice(&frame.payload),
                _ => continue,
            }
            if frame.flags & END_HEADERS != 0 {
                let mut fields = Vec::new();
                decoder
                    .decode(&block, |n, v, _| {
                        fields.push((
                            String::from_utf8(n.to_vec()).unwrap(),
                            String::from_utf8(v.to_vec()).unwrap(),
                        ))
                    })
                    .expect("a block h2 can decode without a dynamic table");
                lists.push(fields);
            }
        }
        lists
    }

    fn authorities(output: &[u8]) -> Vec<String> {
        header_lists(output)
            .into_iter()
            .map(|list| {
                list.into_iter()
                    .find(|(n, _)| n == ":authority")
                    .expect(":authority in every block")
                    .1
            })
            .collect()
    }

    #[tokio::test]
    async fn frames_other_than_headers_pass_through_unchanged() {
        let input = client(&[
            frame(SETTINGS, 0, 0, &[0, 4, 0, 0x10, 0, 0]),
            frame(SETTINGS, 1, 0, &[]),
            frame(WINDOW_UPDATE, 0, 0, &[0, 0x0f, 0, 0]),
            frame(PING, 0, 0, b"12345678"),
            frame(DATA, END_STREAM, 1, &[7; 1000]),
            frame(0x2, 0, 3, &[0, 0, 0, 1, 16]),
            frame(0x3, 0, 3, &[0, 0, 0, 8]),
            frame(0xfa, 0xff, 5, b"an extension frame"),
        ]);

        assert_eq!(rewrite(&input).await.unwrap(), input);
    }

    #[tokio::test]
    async fn percent_encoded_socket_path_authority_becomes_localhost() {
        let input = client(&[frame(
            HEADERS,
            END_HEADERS,
            1,
            &request_block("%2Ftmp%2Fx%2Fwasmcache.sock"),
        )]);

        let output = rewrite(&input).await.unwrap();

        assert_eq!(
            header_lists(&output),
            vec![vec![
                (":method".into(), "POST".into()),
                (":scheme".into(), "http".into()),
                (":path".into(), "/".into()),
                (":authority".into(), "localhost".into()),
            ]]
        );
    }

    #[tokio::test]
    async fn raw_socket_path_and_empty_authorities_become_localhost() {
        let input = client(&[
            frame(HEADERS, END_HEADERS, 1, &request_block("/run/wasmcache/wasmcache.sock")),
            frame(HEADERS, END_HEADERS, 3, &request_block("")),
            frame(HEADERS, END_HEADERS, 5, &request_block("a b")),
        ]);

        assert_eq!(authorities(&rewrite(&input).await.unwrap()), ["localhost"; 3]);
    }

    #[tokio::test]
    async fn valid_authorities_are_kept() {
        let input = client(&[
            frame(HEADERS, END_HEADERS, 1, &request_block("localhost:1234")),
            frame(HEADERS, END_HEADERS, 3, &request_block("wasmcache.invalid")),
            frame(HEADERS, END_HEADERS, 5, &request_block("[::1]:80")),
        ]);

        assert_eq!(
            authorities(&rewrite(&input).await.unwrap()),
            ["localhost:1234", "wasmcache.invalid", "[::1]:80"]
        );
    }

    /// RFC 7541 C.4: Huffman-coded requests whose second block takes `:authority` from the dynamic table.
    #[tokio::test]
    async fn huffman_coded_blocks_and_table_references_are_resolved() {
        let block = |s: &str| hex::decode(s.replace(' ', "")).unwrap();
        let input = client(&[
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &block("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
            ),
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                3,
                &block("8286 84be 5886 a8eb 1064 9cbf"),
            ),
        ]);

        let output = rewrite(&input).await.unwrap();

        let lists = header_lists(&output);
        assert_eq!(lists[0][3], (":authority".into(), "www.example.com".into()));
        assert_eq!(lists[1][3], (":authority".into(), "www.example.com".into()));
        assert_eq!(lists[1][4], ("cache-control".into(), "no-cache".into()));
        let frames = frames(&output);
        assert_eq!(
            frames.iter().map(|f| (f.stream, f.flags)).collect::<Vec<_>>(),
            [(1, END_HEADERS | END_STREAM), (3, END_HEADERS | END_STREAM)]
        );
    }

    /// C-core adds `:authority` to its dynamic table once and refers to it in every later request.
    #[tokio::test]
    async fn invalid_authority_from_the_dynamic_table_is_rewritten_in_later_requests() {
        let mut first = POST_HTTP_ROOT.to_vec();
        first.push(0x41); // literal with incremental indexing, name :authority (static 1)
        let path = huffman_encode(b"%2Ftmp%2Fx%2Fwasmcache.sock");
        first.push(0x80 | path.len() as u8);
        first.extend(&path);
        first.extend(indexed_literal("user-agent", "grpc-python/1.85"));
        // Later requests: index 63 is :authority (older), 62 is user-agent (newest).
        let later = [0x83, 0x86, 0x84, 0xbf, 0xbe];
        let input = client(&[
            frame(HEADERS, END_HEADERS, 1, &first),
            frame(DATA, END_STREAM, 1, b"\0\0\0\0\0"),
            frame(HEADERS, END_HEADERS, 3, &later),
            frame(HEADERS, END_HEADERS, 5, &later),
        ]);

        let output = rewrite(&input).await.unwrap();

        assert_eq!(authorities(&output), ["localhost"; 3]);
        assert!(header_lists(&output)
            .iter()
            .all(|list| list.contains(&("user-agent".into(), "grpc-python/1.85".into()))));
    }

    #[tokio::test]
    async fn dynamic_table_size_update_is_followed() {
        let mut second = vec![0x20]; // size 0: the table empties
        second.extend(request_block("localhost"));
        let input = client(&[
            frame(HEADERS, END_HEADERS, 1, &request_block("%2Fa")),
            frame(HEADERS, END_HEADERS, 3, &second),
            frame(HEADERS, END_HEADERS, 5, &[0x83, 0x86, 0x84, 0xbe]),
        ]);

        assert_eq!(rewrite_err(&input).await, RewriteError::Hpack(HpackError::BadIndex(62)));
    }

    #[tokio::test]
    async fn continuation_frames_are_joined_into_one_block() {
        let mut block = request_block("%2Fsplit");
        block.extend(indexed_literal("te", "trailers"));
        let input = client(&[
            frame(HEADERS, END_STREAM, 1, &block[..5]),
            frame(CONTINUATION, 0, 1, &block[5..9]),
            frame(CONTINUATION, 0, 1, &[]),
            frame(CONTINUATION, END_HEADERS, 1, &block[9..]),
        ]);

        let output = rewrite(&input).await.unwrap();

        let frames = frames(&output);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].flags, END_STREAM | END_HEADERS);
        assert_eq!(header_lists(&output)[0][3], (":authority".into(), "localhost".into()));
        assert_eq!(header_lists(&output)[0][4], ("te".into(), "trailers".into()));
    }

    #[tokio::test]
    async fn padding_is_dropped_and_priority_kept() {
        let priority = [0x80, 0, 0, 3, 200];
        let mut payload = vec![10];
        payload.extend(priority);
        payload.extend(request_block("%2Fp"));
        payload.extend([0; 10]);
        let input = client(&[frame(HEADERS, PADDED | PRIORITY | END_HEADERS, 5, &payload)]);

        let output = rewrite(&input).await.unwrap();

        let frames = frames(&output);
        assert_eq!(frames[0].flags, PRIORITY | END_HEADERS);
        assert_eq!(frames[0].payload[..PRIORITY_LEN], priority);
        assert_eq!(authorities(&output), ["localhost"]);
    }

    #[tokio::test]
    async fn large_blocks_are_reframed_within_the_max_frame_size() {
        // Three 15000-byte values, each from the table once and again by index: 90 KB decoded is over
        // the bound, so two of them (60 KB) plus the request fields.
        let value = "v".repeat(15_000);
        let mut block = request_block("%2Fbig");
        for name in ["x-a", "x-b"] {
            block.extend([0x40]);
            block.extend(string(name.as_bytes()));
            block.push(0x7f);
            let mut len = value.len() - 0x7f;
            while len >= 0x80 {
                block.push((len & 0x7f) as u8 | 0x80);
                len >>= 7;
            }
            block.push(len as u8);
            block.extend(value.as_bytes());
        }
        let cut = MAX_FRAME_SIZE as usize - PRIORITY_LEN;
        let mut headers = vec![0, 0, 0, 0, 1];
        headers.extend(&block[..cut]);
        let input = client(&[
            frame(HEADERS, PRIORITY, 1, &headers),
            frame(CONTINUATION, END_HEADERS, 1, &block[cut..]),
        ]);

        let output = rewrite(&input).await.unwrap();

        let frames = frames(&output);
        assert!(frames.len() >= 2);
        assert!(frames.iter().all(|f| f.payload.len() <= MAX_FRAME_SIZE as usize));
        assert_eq!(frames[0].kind, HEADERS);
        assert!(frames[1..].iter().all(|f| f.kind == CONTINUATION));
        let ends: Vec<bool> = frames.iter().map(|f| f.flags & END_HEADERS != 0).collect();
        assert_eq!(ends.iter().filter(|&&e| e).count(), 1);
        assert!(ends[ends.len() - 1]);
        let list = &header_lists(&output)[0];
        assert_eq!(list[3].1, "localhost");
        assert_eq!(list[4], ("x-a".into(), value.clone()));
        assert_eq!(list[5], ("x-b".into(), value));
    }

    /// Preface, SETTINGS, a padded request in three frames, DATA, WINDOW_UPDATE, a request that uses the
    /// dynamic table, PING.
    fn conversation() -> Vec<u8> {
        let mut first = request_block("%2Ftmp%2Fsock");
        first.extend(indexed_literal("content-type", "application/grpc"));
        let mut headers = vec![3];
        headers.extend(&first[..6]);
        headers.extend([0; 3]);
        client(&[
            frame(SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 0]),
            frame(HEADERS, PADDED, 1, &headers),
            frame(CONTINUATION, 0, 1, &first[6..10]),
            frame(CONTINUATION, END_HEADERS, 1, &first[10..]),
            frame(DATA, END_STREAM, 1, b"\0\0\0\0\x02\x08\x01"),
            frame(WINDOW_UPDATE, 0, 0, &[0, 1, 0, 0]),
            frame(HEADERS, END_HEADERS | END_STREAM, 3, &[0x83, 0x86, 0x84, 0xbf, 0xbe]),
            frame(PING, 1, 0, b"pingpong"),
        ])
    }

    #[tokio::test]
    async fn every_split_of_the_input_gives_the_same_output() {
        let input = conversation();
        let whole = rewrite(&input).await.unwrap();
        assert_eq!(authorities(&whole), ["localhost", "localhost"]);

        for cut in 1..input.len() {
            let chunks = vec![input[..cut].to_vec(), input[cut..].to_vec()];
            assert_eq!(rewrite_chunks(chunks, 64 * 1024).await.unwrap(), whole, "cut at {cut}");
        }
        let bytes = input.iter().map(|&b| vec![b]).collect();
        assert_eq!(rewrite_chunks(bytes, 64 * 1024).await.unwrap(), whole, "byte by byte");
        for read_size in [1, 2, 7, 9, 10, 33] {
            let chunks = vec![input.clone()];
            assert_eq!(
                rewrite_chunks(chunks, read_size).await.unwrap(),
                whole,
                "reads of {read_size}"
            );
        }
    }

    /// The hot path: frames that pass through stay in the reader's buffer, with nothing set aside.
    #[tokio::test]
    async fn passing_frames_are_left_in_the_readers_buffer() {
        let input = client(&[
            frame(SETTINGS, 0, 0, &[]),
            frame(DATA, 0, 1, &[1; 16_384]),
            frame(WINDOW_UPDATE, 0, 0, &[0, 1, 0, 0]),
        ]);
        let mut rewrite = AuthorityRewrite::new(Chunks(vec![input.clone()].into()));
        let mut buf = vec![0; 64 * 1024];

        let n = rewrite.read(&mut buf).await.unwrap();

        assert_eq!(&buf[..n], &input[..]);
        assert!(rewrite.out.capacity() == 0 && rewrite.pending.capacity() == 0);
    }

    #[tokio::test]
    async fn connection_without_the_preface_is_refused() {
        assert_eq!(
            rewrite_err(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await,
            RewriteError::BadPreface
        );
    }

    #[tokio::test]
    async fn hostile_frame_sequences_end_the_connection() {
        let block = request_block("%2Fx");
        let cases = [
            (
                frame(DATA, 0, 1, &[0; MAX_FRAME_SIZE as usize + 1]),
                RewriteError::FrameTooLarge(MAX_FRAME_SIZE + 1),
            ),
            (
                [frame(HEADERS, 0, 1, &block), frame(DATA, 0, 1, b"x")].concat(),
                RewriteError::ContinuationExpected(DATA),
            ),
            (
                [frame(HEADERS, 0, 1, &block), frame(CONTINUATION, END_HEADERS, 3, &[])].concat(),
                RewriteError::ContinuationExpected(CONTINUATION),
            ),
            (
                frame(CONTINUATION, END_HEADERS, 1, &block),
                RewriteError::UnexpectedContinuation,
            ),
            (
                frame(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2, 0x82]),
                RewriteError::PushPromise,
            ),
            (
                frame(HEADERS, END_HEADERS | PADDED, 1, &[200, 0x82]),
                RewriteError::BadPadding,
            ),
            (frame(HEADERS, END_HEADERS | PADDED, 1, &[]), RewriteError::BadPadding),
            (
                frame(HEADERS, END_HEADERS | PRIORITY, 1, &[0, 0, 0]),
                RewriteError::BadPadding,
            ),
            (
                frame(HEADERS, END_HEADERS, 1, &[0x82, 0xff]),
                RewriteError::Hpack(HpackError::Truncated),
            ),
            (
                frame(HEADERS, END_HEADERS, 1, &[0x82, 0xc0]),
                RewriteError::Hpack(HpackError::BadIndex(64)),
            ),
        ];
        for (frames, expected) in cases {
            assert_eq!(rewrite_err(&client(&[frames])).await, expected);
        }
    }

    #[tokio::test]
    async fn header_block_over_the_bound_ends_the_connection() {
        let mut frames = vec![frame(HEADERS, 0, 1, &[0x82; 16_000])];
        frames.extend((0..4).map(|_| frame(CONTINUATION, 0, 1, &[0x82; 16_000])));
        frames.push(frame(CONTINUATION, END_HEADERS, 1, &[0x82; 1]));

        assert_eq!(rewrite_err(&client(&frames)).await, RewriteError::HeaderBlockTooLarge);
    }

    #[tokio::test]
    async fn decoded_header_list_over_the_bound_ends_the_connection() {
        // One 4000-byte table entry (1 + 3967 + 32), referred to 17 times: 4 KB on the wire, 72 KB decoded.
        let mut block = vec![0x40, 1, b'x', 0x7f];
        block.extend([0x80 | ((3967 - 0x7f) & 0x7f) as u8, ((3967 - 0x7f) >> 7) as u8]);
        block.extend([b'v'; 3967]);
        block.extend([0xbe; 17]);
        let frames = [frame(HEADERS, END_HEADERS, 1, &block)];

        assert_eq!(
            rewrite_err(&client(&frames)).await,
            RewriteError::Hpack(HpackError::ListTooLarge(MAX_HEADER_BLOCK))
        );
    }

    #[tokio::test]
    async fn reads_after_an_error_fail_again() {
        let input = client(&[frame(CONTINUATION, END_HEADERS, 1, &[])]);
        let mut rewrite = AuthorityRewrite::new(Chunks(vec![input].into()));
        let mut buf = vec![0; 1024];

        for _ in 0..3 {
            let e = rewrite.read(&mut buf).await.expect_err("a read after the bad frame");
            assert_eq!(e.to_string(), RewriteError::UnexpectedContinuation.to_string());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever follows the preface, the rewrite forwards, rewrites or refuses it: it never panics.
        #[test]
        fn arbitrary_frames_never_panic(
            frames in proptest::collection::vec(
                (prop_oneof![Just(HEADERS), Just(CONTINUATION), Just(DATA), any::<u8>()],
                 any::<u8>(),
                 0u32..4,
                 proptest::collection::vec(any::<u8>(), 0..48)),
                1..8),
            cut in 1usize..64,
        ) {
            let frames: Vec<Vec<u8>> = frames.iter().map(|(k, f, s, p)| frame(*k, *f, *s, p)).collect();
            let input = client(&frames);
            let cut = cut.min(input.len() - 1);
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let whole = runtime.block_on(rewrite(&input));
            let split = runtime.block_on(rewrite_chunks(vec![input[..cut].to_vec(), input[cut..].to_vec()], 4096));
            prop_assert_eq!(whole.is_ok(), split.is_ok());
            if let (Ok(whole), Ok(split)) = (whole, split) {
                prop_assert_eq!(whole, split);
            }
        }
    }
}
