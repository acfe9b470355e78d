//! `Origin`: a real HTTP(S)/1.1 server on loopback whose routes are set at runtime and which counts requests per path.

use super::*;

/// What one path of the origin answers.
#[derive(Clone, Default)]
struct Route {
    /// Statuses returned, one per request, before the route answers normally.
    queue: VecDeque<u16>,
    /// When set, every request gets this status (after the queue is empty).
    always: Option<u16>,
    /// Served with 200 when set.
    body: Option<Bytes>,
    content_type: Option<String>,
    /// Redirect target, served with `redirect_status`.
    location: Option<String>,
    redirect_status: u16,
    /// Wait this long before answering.
    delay: Duration,
    /// Send the body in 64 KiB frames with this pause between frames.
    throttle: Option<Duration>,
    /// Sent as `ETag`; a request whose `If-None-Match` names it gets 304.
    etag: Option<String>,
    /// Answer 200 at once, then send one byte of body after each pause, without end (a slowloris origin).
    drip: Option<Duration>,
}

#[derive(Default)]
struct OriginState {
    routes: Mutex<HashMap<String, Route>>,
    counters: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

impl OriginState {
    fn counter(&self, path: &str) -> Arc<AtomicUsize> {
        self.counters
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default()
            .clone()
    }

    fn with_route(&self, path: &str, f: impl FnOnce(&mut Route)) {
        f(self.routes.lock().unwrap().entry(path.to_string()).or_default());
    }
}

/// A real HTTP/1.1 (and h2) server on 127.0.0.1:0, plain or TLS, with runtime routes and per-path request counts.
/// `stop` (or drop) closes the listener and every open connection, so upstream becomes unreachable.
pub struct Origin {
    addr: SocketAddr,
    state: Arc<OriginState>,
    task: Option<JoinHandle<()>>,
    tls: Option<TlsFiles>,
}

/// The TLS material of an origin: the CA that signed its certificate, as a PEM file for `--ca-file`.
struct TlsFiles {
    _dir: TempDir,
    ca_file: PathBuf,
}

impl Origin {
    /// A plain-HTTP origin on 127.0.0.1.
    pub async fn start() -> Origin {
        Origin::start_on("127.0.0.1").await
    }

    /// A plain-HTTP origin on another loopback address, such as 127.0.0.2.
    pub async fn start_on(ip: &str) -> Origin {
        let listener = std::net::TcpListener::bind((ip, 0)).expect("bind origin");
        listener.set_nonblocking(true).expect("nonblocking");
        Origin::from_std_listener(listener, None)
    }

    /// An HTTPS origin whose certificate (for IP 127.0.0.1 only, not `localhost`) is signed by a fresh test CA that no
    /// system trust store knows; `ca_file()` holds that CA.
    pub async fn start_tls() -> Origin {
        let TestPki {
            ca_cert,
            leaf_cert,
            leaf_key,
        } = TestPki::new("wasmcache test CA");

        let dir = tempfile::tempdir().expect("tls temp dir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).expect("write ca.pem");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf_cert.der().clone()],
                rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
            )
            .expect("server tls config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind origin");
        listener.set_nonblocking(true).expect("nonblocking");
        let mut origin = Origin::from_std_listener(listener, Some(acceptor));
        origin.tls = Some(TlsFiles { _dir: dir, ca_file });
        origin
    }

    pub(crate) fn from_std_listener(listener: std::net::TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) -> Origin {
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        let addr = listener.local_addr().expect("origin addr");
        let state = Arc::new(OriginState::default());
        let shared = state.clone();
        let task = tokio::spawn(serve::accept_loop(listener, tls, move |request| {
            handle(shared.clone(), request)
        }));
        Origin {
            addr,
            state,
            task: Some(task),
            tls: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/path` (or `https://`); `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// The CA PEM to pass as `--ca-file` (TLS origins only).
    pub fn ca_file(&self) -> &Path {
        &self.tls.as_ref().expect("not a TLS origin").ca_file
    }

    /// Serves `body` with 200 at `path` (replacing whatever the route did before, but not its counter).
    pub fn serve(&self, path: &str, body: impl Into<Bytes>) {
        let body = body.into();
        self.state.with_route(path, |r| {
            *r = Route {
                body: Some(body),
                delay: r.delay,
                throttle: r.throttle,
                ..Default::default()
            }
        });
    }

    /// Serves `body` with an `ETag`, answering 304 to a request that names it in `If-None-Match`.
    pub fn serve_with_etag(&self, path: &str, body: impl Into<Bytes>, etag: &str) {
        self.serve(path, body);
        self.state.with_route(path, |r| r.etag = Some(etag.to_string()));
    }

    pub fn serve_with_type(&self, path: &str, body: impl Into<Bytes>, content_type: &str) {
        self.serve(path, body);
        self.state
            .with_route(path, |r| r.content_type = Some(content_type.to_string()));
    }

    /// The next requests to `path` get these statuses, one each, before the route answers normally.
    pub fn fail_first(&self, path: &str, statuses: &[u16]) {
        self.state
            .with_route(path, |r| r.queue.extend(statuses.iter().copied()));
    }

    /// Every request to `path` gets `status` from now on.
    pub fn always(&self, path: &str, status: u16) {
        self.state.with_route(path, |r| r.always = Some(status));
    }

    /// Requests to `path` are redirected to `location` with `status` (301, 302, 307, 308).
    pub fn redirect(&self, path: &str, status: u16, location: &str) {
        self.state.with_route(path, |r| {
            r.location = Some(location.to_string());
            r.redirect_status = status;
        });
    }

    /// Every response on `path` waits `delay` first.
    pub fn delay(&self, path: &str, delay: Duration) {
        self.state.with_route(path, |r| r.delay = delay);
    }

    /// The body of `path` is sent in 64 KiB frames with `pause` between frames.
    pub fn throttle(&self, path: &str, pause: Duration) {
        self.state.with_route(path, |r| r.throttle = Some(pause));
    }

    /// `path` answers 200 with headers at once, then one byte per `pause`, forever: every wait for the next byte
    /// is short, the body never ends.
    pub fn drip(&self, path: &str, pause: Duration) {
        self.state.with_route(path, |r| r.drip = Some(pause));
    }

    /// The request counter of `path`, shared with the server.
    pub fn counter(&self, path: &str) -> Arc<AtomicUsize> {
        self.state.counter(path)
    }

    /// How many requests reached `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        self.state.counter(path).load(Ordering::SeqCst)
    }

    /// How many requests reached any path.
    pub fn total_hits(&self) -> usize {
        self.state
            .counters
            .lock()
            .unwrap()
            .values()
            .map(|c| c.load(Ordering::SeqCst))
            .sum()
    }

    /// Closes the listener and every open connection: from now on, connecting is refused.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn handle(state: Arc<OriginState>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_string();
    let if_none_match = request
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.counter(&path).fetch_add(1, Ordering::SeqCst);
    let route = {
        let mut routes = state.routes.lock().unwrap();
        let route = routes.entry(path.clone()).or_default();
        let queued = route.queue.pop_front();
        (queued, route.clone())
    };
    let (queued, route) = route;
    if !route.delay.is_zero() {
        tokio::time::sleep(route.delay).await;
    }
    if let Some(status) = queued.or(route.always) {
        return Ok(status_response(status));
    }
    if let Some(location) = route.location {
        let response = Response::builder()
            .status(route.redirect_status)
            .header("location", location)
            .body(Full::new(Bytes::new()).boxed())
            .unwrap();
        return Ok(response);
    }
    if let Some(pause) = route.drip {
        let bytes = futures_util::stream::unfold(true, move |first| async move {
            if !first {
                tokio::time::sleep(pause).await;
            }
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0"))), false))
        });
        let response = Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/wasm")
            .body(StreamBody::new(bytes).boxed())
            .unwrap();
        return Ok(response);
    }
    let Some(body) = route.body else {
        return Ok(status_response(404));
    };
    if route.etag.is_some() && route.etag == if_none_match {
        return Ok(status_response(304));
    }
    let mut response = Response::builder().status(StatusCode::OK).header(
        "content-type",
        route.content_type.as_deref().unwrap_or("application/wasm"),
    );
    if let Some(etag) = &route.etag {
        response = response.header("etag", etag);
    }
    let body = match route.throttle {
        None => {
            response = response.header("content-length", body.len());
            Full::new(body).boxed()
        }
        Some(pause) => {
            let frames = futures_util::stream::unfold((body, true), move |(mut rest, first)| async move {
                if rest.is_empty() {
                    return None;
                }
                if !first {
                    tokio::time::sleep(pause).await;
                }
                let frame = rest.split_to(rest.len().min(64 * 1024));
                Some((Ok::<_, Infallible>(Frame::data(frame)), (rest, false)))
            });
            StreamBody::new(frames).boxed()
        }
    };
    Ok(response.body(body).unwrap())
}

fn status_response(status: u16) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(format!("origin says {status}\n"))).boxed())
        .unwrap()
}
