//! HTTP/1.1 on the registry endpoint's connections: request heads read with `httparse`, one request at a time
//! (so pipelined requests are answered in order), every response with a `Content-Length`, and blob bodies sent
//! with `sendfile(2)` from the cache's file straight to a plain TCP socket.
//!
//! # Why not hyper
//! hyper owns the socket and takes bodies as a stream of buffers, so every blob byte would be read into user
//! space and written out again. A cache hit here should cost what it costs nginx: one kernel copy from the page
//! cache to the socket. The protocol these clients speak to a registry is small (GET and HEAD, no request bodies,
//! no chunked responses, no upgrades; containerd, skopeo and oras are Go clients that use HTTP/2 only when TLS
//! ALPN offers it, and this listener offers `http/1.1` only), so it is handled here in a few hundred lines.
//!
//! # Bounds
//! Per connection: a read buffer of at most [`Limits::max_head_bytes`] and 64 header fields, a reused buffer
//! for response heads, and (TLS only) a 64 KiB copy buffer while a blob is sent. Time: a connection may wait
//! [`Limits::idle_timeout`] for its next request, a request head (and a TLS handshake) must arrive within
//! [`Limits::head_timeout`], and a write that makes no progress for [`Limits::send_timeout`] (a client that
//! stopped reading) ends the connection, releasing the blob it held. Request bodies are never read: a GET or
//! HEAD announcing one is refused, and other methods are answered and the connection closed.
//!
//! Long: one HTTP/1.1 connection loop (head parsing and limits, keep-alive, sendfile and TLS bodies) whose timeouts and states interlock.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::OpenBlob;

/// Most header fields a request may have.
pub const MAX_HEADERS: usize = 64;

/// Read buffer growth step, and the size a connection starts with.
const READ_CHUNK: usize = 4096;

/// Bodies up to this size go out in the same write as the response head.
const INLINE_BODY: usize = 16 * 1024;

/// The copy buffer of a blob sent over TLS (where the bytes must pass through user space to be encrypted).
const COPY_CHUNK: usize = 64 * 1024;

/// How long, and how many bytes of, a request body left unread are drained before closing; see [`linger`].
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 1 << 20;

/// Time and size bounds of a connection.
#[derive(Clone, Debug)]
pub struct Limits {
    /// How long a connection may wait for its next request (Go's clients keep idle connections 90 s).
    pub idle_timeout: Duration,
    /// How long a request head may take to arrive from its first byte, and a TLS handshake from accept.
    pub head_timeout: Duration,
    /// How long a write may make no progress before the client is given up on.
    pub send_timeout: Duration,
    /// Largest request head (request line and header fields).
    pub max_head_bytes: usize,
    /// Copy blobs through user space on plain TCP too, to measure what `sendfile` saves.
    #[cfg(test)]
    pub copy_only: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle_timeout: Duration::from_secs(60),
            head_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
            max_head_bytes: 16 * 1024,
            #[cfg(test)]
            copy_only: false,
        }
    }
}

/// An accepted connection: plain TCP, where blobs go out with `sendfile`, or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Other(String),
}

impl Method {
    /// The `method` label: the mutating methods by name, anything else `other` (the label set stays small).
    pub fn label(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Other(m) => match m.as_str() {
                "POST" => "POST",
                "PUT" => "PUT",
                "PATCH" => "PATCH",
                "DELETE" => "DELETE",
                _ => "other",
            },
        }
    }
}

/// What a request's head says about a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    /// `Transfer-Encoding`, or a `Content-Length` that is malformed or repeated with another value.
    Unknown,
}

/// `Authorization` as received: the value is kept only until the request is answered, and never logged.
#[derive(Clone, PartialEq, Eq)]
pub enum Authorization {
    None,
    One(String),
    /// Several fields, or one that is not visible ASCII.
    Malformed,
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Authorization::None => "None",
            Authorization::One(_) => "One(<redacted>)",
            Authorization::Malformed => "Malformed",
        })
    }
}

/// A parsed request head, owned, so the read buffer can move on to a pipelined request.
#[derive(Clone, Debug)]
pub struct RequestHead {
    pub method: Method,
    /// The request target as sent (origin form; absolute form is reduced to its path and query).
    pub target: String,
    pub http10: bool,
    /// The client lets the connection stay open after this response.
    pub keep_alive: bool,
    pub host: bool,
    pub authorization: Authorization,
    pub range: Option<String>,
    pub if_none_match: Option<String>,
    pub framing: Framing,
}

impl RequestHead {
    /// The path and the query (without `?`; empty when there is none).
    pub fn path_and_query(&self) -> (&str, &str) {
        let target = match self
            .target
            .strip_prefix("http://")
            .or_else(|| self.target.strip_prefix("https://"))
        {
            // Absolute form, as a proxy would send it: the path starts after the authority.
            Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => &self.target,
        };
        target.split_once('?').unwrap_or((target, ""))
    }
}

/// A response: everything but `Content-Length`, `Date` and `Connection`, which the writer adds.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

pub enum Body {
    Empty,
    Bytes(Bytes),
    /// `len` bytes of an opened blob from `offset`; the blob's hold keeps it from eviction until sent.
    File {
        blob: OpenBlob,
        offset: u64,
        len: u64,
    },
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }
}

/// Why no request head could be read.
#[derive(Debug)]
pub enum HeadError {
    /// The connection failed or closed in the middle of a head: nothing to answer.
    Gone,
    /// A head that is answered with this status (and the connection closed).
    Refuse(u16, String),
}

/// Reads the next request head. `Ok(None)`: the connection closed, stayed idle past the idle timeout, or
/// `stop` came while it was idle; in each case it should close without an answer.
pub async fn read_head(
    stream: &mut Stream,
    buf: &mut BytesMut,
    limits: &Limits,
    stop: &CancellationToken,
) -> Result<Option<RequestHead>, HeadError> {
    let mut deadline = None;
    loop {
        if !buf.is_empty() {
            if let Some(head) = parse_head(buf)? {
                return Ok(Some(head));
            }
            if buf.len() >= limits.max_head_bytes {
                return Err(too_large(buf));
            }
            // The head timeout runs from the request's first byte.
            deadline.get_or_insert_with(|| Instant::now() + limits.head_timeout);
        }
        buf.reserve(READ_CHUNK.min(limits.max_head_bytes - buf.len()));
        let read = match deadline {
            None => tokio::select! {
                () = stop.cancelled() => return Ok(None),
                read = tokio::time::timeout(limits.idle_timeout, stream.read_buf(buf)) => match read {
                    Ok(read) => read,
                    Err(_) => return Ok(None),
                },
            },
            Some(deadline) => match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
                Ok(read) => read,
                Err(_) => {
                    return Err(HeadError::Refuse(
                        408,
                        "the request head took too long to arrive".into(),
                    ))
                }
            },
        };
        match read {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) | Err(_) => return Err(HeadError::Gone),
            Ok(_) => {}
        }
    }
}

fn too_large(buf: &[u8]) -> HeadError {
    // Without the end of the request line in the buffer, it is the target that is too long.
    if buf.windows(2).any(|w| w == b"\r\n") {
        HeadError::Refuse(431, "request header fields too large".into())
    } else {
        HeadError::Refuse(414, "request target too long".into())
    }
}

/// Parses a complete head off the front of `buf`; `Ok(None)` while it is incomplete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<RequestHead>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let consumed = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::Refuse(431, format!("more than {MAX_HEADERS} header fields")))
        }
        Err(httparse::Error::Version) => {
            return Err(HeadError::Refuse(
                505,
                "only HTTP/1.0 and HTTP/1.1 are spoken here".into(),
            ))
        }
        Err(e) => return Err(HeadError::Refuse(400, format!("malformed request: {e}"))),
    };
    let method = match request.method.unwrap_or_default() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_string()),
    };
    let http10 = request.version == Some(0);
    let mut head = RequestHead {
        method,
        target: request.path.unwrap_or_default().to_string(),
        http10,
        keep_alive: !http10,
        host: false,
        authorization: Authorization::None,
        range: None,
        if_none_match: None,
        framing: Framing::None,
    };
    let text = |value: &[u8]| std::str::from_utf8(value).ok().map(|v| v.trim().to_string());
    for field in request.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("connection") {
            for token in String::from_utf8_lossy(field.value).split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && http10 {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("host") {
            head.host = true;
        } else if name.eq_ignore_ascii_case("authorization") {
            head.authorization = match (&head.authorization, text(field.value)) {
                (Authorization::None, Some(v)) if v.bytes().all(|b| b.is_ascii_graphic() || b == b' ') => {
                    Authorization::One(v)
                }
                _ => Authorization::Malformed,
            };
        } else if name.eq_ignore_ascii_case("range") {
            head.range = text(field.value);
        } else if name.eq_ignore_ascii_case("if-none-match") {
            head.if_none_match = text(field.value);
        } else if name.eq_ignore_ascii_case("content-length") {
            let length = text(field.value)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            head.framing = match (head.framing, length) {
                (Framing::None, Some(n)) => Framing::Length(n),
                (Framing::Length(m), Some(n)) if m == n => Framing::Length(n),
                _ => Framing::Unknown,
            };
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.framing = Framing::Unknown;
        }
    }
    buf.advance(consumed);
    Ok(Some(head))
}

/// Writes `response` (the head only when `head_only`) and returns the body bytes sent. `close` adds
/// `Connection: close`; a kept-alive HTTP/1.0 connection gets `Connection: keep-alive`. `sent` is told
/// of body bytes as they leave, for the metric.
pub async fn write_response(
    stream: &mut Stream,
    out: &mut Vec<u8>,
    response: &Response,
    head_only: bool,
    connection: Connection,
    limits: &Limits,
    sent: &(dyn Fn(u64) + Sync),
) -> io::Result<u64> {
    use std::io::Write as _;
    out.clear();
    let status = response.status;
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason(status));
    if status != 304 {
        let _ = write!(out, "Content-Length: {}\r\n", response.body.len());
    }
    let _ = write!(
        out,
        "Date: {}\r\nDocker-Distribution-API-Version: registry/2.0\r\n",
        httpdate::fmt_http_date(SystemTime::now())
    );
    for (name, value) in &response.headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    match connection {
        Connection::KeepAlive => {}
        Connection::KeepAlive10 => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        Connection::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    let timeout = limits.send_timeout;
    let body = if head_only || status == 304 {
        &Body::Empty
    } else {
        &response.body
    };
    let sent_bytes = match body {
        Body::Empty => {
            write_all(stream, out, timeout).await?;
            0
        }
        Body::Bytes(bytes) if bytes.len() <= INLINE_BODY => {
            out.extend_from_slice(bytes);
            write_all(stream, out, timeout).await?;
            sent(bytes.len() as u64);
            bytes.len() as u64
        }
        Body::Bytes(bytes) => {
            write_all(stream, out, timeout).await?;
            write_all(stream, bytes, timeout).await?;
            sent(bytes.len() as u64);
            bytes.len() as u64
        }
        Body::File { blob, offset, len } => {
            write_all(stream, out, timeout).await?;
            #[cfg(test)]
            if limits.copy_only {
                return copy_file(stream, &blob.file, *offset, *len, timeout, sent).await;
            }
            send_file(stream, &blob.file, *offset, *len, timeout, sent).await?
        }
    };
    flush(stream, timeout).await?;
    Ok(sent_bytes)
}

/// What the response says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    /// HTTP/1.1's default: nothing to say.
    KeepAlive,
    /// An HTTP/1.0 client that asked for keep-alive.
    KeepAlive10,
    Close,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

fn stalled() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")
}

/// Writes all of `data`; each write may wait at most `timeout` for the socket to take some of it.
async fn write_all(stream: &mut Stream, mut data: &[u8], timeout: Duration) -> io::Result<()> {
    while !data.is_empty() {
        let n = tokio::time::timeout(timeout, stream.write(data))
            .await
            .map_err(|_| stalled())??;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
    }
    Ok(())
}

async fn flush(stream: &mut Stream, timeout: Duration) -> io::Result<()> {
    tokio::time::timeout(timeout, stream.flush())
        .await
        .map_err(|_| stalled())?
}

/// Sends `len` bytes of `file` from `offset`: with `sendfile(2)` on plain TCP under Linux, else copied through
/// a buffer. A file that ends early (it cannot, once verified, unless something truncated it) is an error.
async fn send_file(
    stream: &mut Stream,
    file: &File,
    offset: u64,
    len: u64,
    timeout: Duration,
    sent: &(dyn Fn(u64) + Sync),
) -> io::Result<u64> {
    #[cfg(target_os = "linux")]
    if let Stream::Plain(tcp) = stream {
        return sendfile::send(tcp, file, offset, len, timeout, sent).await;
    }
    copy_file(stream, file, offset, len, timeout, sent).await
}

/// The copy path (TLS, or no `sendfile`): 64 KiB at a time, each read at its offset and written out.
///
/// The reads run on the runtime's worker, as `service::BlobChunks` explains: a served blob was verified by
/// hashing it, so its pages are normally in the page cache (`sendfile` reads the same way).
async fn copy_file(
    stream: &mut Stream,
    file: &File,
    offset: u64,
    len: u64,
    timeout: Duration,
    sent: &(dyn Fn(u64) + Sync),
) -> io::Result<u64> {
    let mut chunk = vec![0u8; COPY_CHUNK.min(len as usize)];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk.len() as u64) as usize;
        file.read_exact_at(&mut chunk[..n], offset + done)?;
        write_all(stream, &chunk[..n], timeout).await?;
        sent(n as u64);
        done += n as u64;
    }
    Ok(done)
}

#[cfg(target_os = "linux")]
mod sendfile {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use tokio::io::Interest;
    use tokio::net::TcpStream;

    /// Most bytes one `sendfile` call may move (Linux's own cap).
    const MAX_PER_CALL: u64 = 0x7fff_f000;

    /// Sends bytes `offset..offset + len` of `file` to `tcp` with `sendfile(2)`: the kernel copies from the page
    /// cache into the socket, as nginx does. The socket is non-blocking, so each call moves what the socket
    /// buffer takes; when it is full, this waits (through tokio's readiness) for it to drain, at most `timeout`
    /// at a time. The file's own offset is not used (or moved): the position is passed to each call.
    pub(super) async fn send(
        tcp: &TcpStream,
        file: &File,
        offset: u64,
        len: u64,
        timeout: Duration,
        sent: &(dyn Fn(u64) + Sync),
    ) -> io::Result<u64> {
        let mut done = 0;
        while done < len {
            let count = (len - done).min(MAX_PER_CALL) as usize;
            let position = offset + done;
            let moved = tokio::time::timeout(timeout, async {
                loop {
                    tcp.writable().await?;
                    match tcp.try_io(Interest::WRITABLE, || sendfile(tcp, file, position, count)) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        result => return result,
                    }
                }
            })
            .await
            .map_err(|_| super::stalled())??;
            if moved == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the cached file is shorter than its size",
                ));
            }
            sent(moved as u64);
            done += moved as u64;
        }
        Ok(done)
    }

    /// One `sendfile` call from `position`, retried on EINTR.
    fn sendfile(tcp: &TcpStream, file: &File, position: u64, count: usize) -> io::Result<usize> {
        let mut offset = libc::off_t::try_from(position).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        loop {
            // SAFETY: both descriptors are borrowed from live owners (`tcp`, `file`) for the whole call, and
            // `offset` is a local the kernel writes the new position into.
            let n = unsafe { libc::sendfile(tcp.as_raw_fd(), file.as_raw_fd(), &mut offset, count) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Closes a connection whose request may have left bytes unread (a PUT's body, a pipelined request after a
/// refused one). Closing a socket with unread input makes the kernel send a reset, which can destroy the
/// response before the client reads it; so the write side is shut first (the client sees the response and
/// the end), then input is read and dropped until the client closes, for at most [`LINGER_TIME`] and
/// [`LINGER_BYTES`] (as nginx's lingering close does). Nothing read is looked at.
pub async fn linger(stream: &mut Stream, timeout: Duration) {
    if tokio::time::timeout(timeout, stream.shutdown()).await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let mut drained = 0u64;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while drained < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n as u64,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Option<RequestHead>, HeadError> {
        let mut buf = BytesMut::from(raw.as_bytes());
        parse_head(&mut buf)
    }

    fn head(raw: &str) -> RequestHead {
        parse(raw).unwrap().expect("a complete head")
    }

    fn refused(raw: &str) -> u16 {
        match parse(raw) {
            Err(HeadError::Refuse(status, _)) => status,
            other => panic!("{raw:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn a_head_is_parsed_and_consumed() {
        let mut buf = BytesMut::from(
            &b"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YTpi\r\nRange: bytes=0-1\r\n\r\nGET /next"[..],
        );
        let head = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.target, "/v2/");
        assert!(head.keep_alive && head.host && !head.http10);
        assert_eq!(head.authorization, Authorization::One("Basic YTpi".into()));
        assert_eq!(head.range.as_deref(), Some("bytes=0-1"));
        assert_eq!(&buf[..], b"GET /next", "the pipelined request stays in the buffer");
        assert!(parse_head(&mut buf).unwrap().is_none(), "incomplete");
    }

    #[test]
    fn connection_persistence_follows_the_version() {
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn body_framing_is_read_and_conflicts_are_unknown() {
        let framing = |raw: &str| head(raw).framing;
        assert_eq!(framing("GET / HTTP/1.1\r\n\r\n"), Framing::None);
        assert_eq!(
            framing("PUT / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Framing::Length(5)
        );
        assert_eq!(
            framing("PUT / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            Framing::Length(5)
        );
        assert_eq!(
            framing("PUT / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            Framing::Unknown
        );
        assert_eq!(
            framing("PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Framing::Unknown
        );
        assert_eq!(
            framing("PUT / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"),
            Framing::Unknown
        );
        assert_eq!(
            framing("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Framing::Unknown
        );
    }

    #[test]
    fn repeated_authorization_is_malformed_and_never_printed() {
        let h = head("GET / HTTP/1.1\r\nAuthorization: Basic a\r\nAuthorization: Basic b\r\n\r\n");
        assert_eq!(h.authorization, Authorization::Malformed);
        let h = head("GET / HTTP/1.1\r\nAuthorization: Bearer s3cr3t\r\n\r\n");
        assert!(!format!("{h:?}").contains("s3cr3t"));
    }

    #[test]
    fn bad_heads_are_refused_with_their_status() {
        assert_eq!(refused("GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(refused("GET /\x01 HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refused("GET / HTTP/1.1\r\nBad Header\r\n\r\n"), 400);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(refused(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
    }

    #[test]
    fn absolute_targets_are_reduced_to_path_and_query() {
        let target = |t: &str| {
            let h = head(&format!("GET {t} HTTP/1.1\r\n\r\n"));
            let (p, q) = h.path_and_query();
            (p.to_string(), q.to_string())
        };
        assert_eq!(target("/v2/a?ns=x"), ("/v2/a".into(), "ns=x".into()));
        assert_eq!(target("http://h:5000/v2/a?ns=x"), ("/v2/a".into(), "ns=x".into()));
        assert_eq!(target("https://h"), ("/".into(), "".into()));
        assert_eq!(target("/v2/"), ("/v2/".into(), "".into()));
    }
}
