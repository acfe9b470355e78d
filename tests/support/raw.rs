//! `RawServer`: a TCP server that answers HTTP by hand, for faults no real server makes (never answering, or
//! promising a body it does not send).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// What the raw server does with one connection, once it has read the request head.
#[derive(Clone)]
pub enum Reply {
    /// Nothing: the socket stays open and silent until the server is dropped.
    Hang,
    /// `200` with a `Content-Length` of the whole body, then half the body, then close.
    Half(Bytes),
    /// `200` with the whole body, then close.
    Full(Bytes),
}

/// Accepts on 127.0.0.1:0 and answers connection `n` (counted from 0) as `plan(n)` says.
pub struct RawServer {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl RawServer {
    pub async fn start(plan: impl Fn(usize) -> Reply + Send + Sync + 'static) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind raw server");
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let reply = plan(counter.fetch_add(1, Ordering::SeqCst));
                connections.spawn(raw_connection(stream, reply));
            }
        });
        RawServer { addr, accepted, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn raw_connection(mut stream: TcpStream, reply: Reply) {
    // Read the request head (a TLS ClientHello never ends one: that client is left waiting too).
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let (body, sent) = match reply {
        Reply::Hang => return std::future::pending().await,
        Reply::Half(body) => {
            let half = body.len() / 2;
            (body, half)
        }
        Reply::Full(body) => {
            let len = body.len();
            (body, len)
        }
    };
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/wasm\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(header.as_bytes()).await;
    let _ = stream.write_all(&body[..sent]).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}
