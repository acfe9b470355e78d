//! The admin HTTP listener: a free port, plain HTTP/1.1 requests, the metrics exposition, JSON logs.

use super::*;

/// A loopback address with a port that was free a moment ago (bound on port 0, then released), for
/// `--admin-listen` or `--listen`.
pub fn free_local_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

/// An HTTP response read whole.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The header's value as text; `None` when absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header value is text"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a new connection to `addr`; `Err` when the connection or the exchange fails.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{method} {path} body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok(HttpResponse { status, headers, body })
}

/// `GET path` that must get a response (any status).
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    http_request(addr, "GET", path, &[])
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The samples of a Prometheus/OpenMetrics text exposition: `name{labels} value` lines; `#` lines (HELP, TYPE,
/// `# EOF`) are skipped.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    samples: Vec<Sample>,
}

/// A metric name, its labels (sorted), and its value.
type Sample = (String, Vec<(String, String)>, f64);

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (name, rest) = match line.find(['{', ' ']) {
                Some(i) => line.split_at(i),
                None => panic!("metrics line without a value: {line:?}"),
            };
            let (labels, rest) = if let Some(body) = rest.strip_prefix('{') {
                parse_labels(body, line)
            } else {
                (Vec::new(), rest)
            };
            let value = rest
                .split_whitespace()
                .next()
                .unwrap_or_else(|| panic!("metrics line without a value: {line:?}"));
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad sample value in {line:?}")),
            };
            samples.push((name.to_string(), labels, value));
        }
        Scrape {
            text: text.to_string(),
            samples,
        }
    }

    /// The sample `name` with exactly these labels (in any order).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut wanted: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        wanted.sort();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map(|(_, _, v)| *v)
    }

    /// `get`, with an absent sample (a labelled counter not yet incremented) read as 0.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Every sample named `name`, with its labels.
    pub fn all(&self, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, v)| (l.clone(), *v))
            .collect()
    }
}

/// Parses `a="x",b="y"}` (after the `{`); returns the sorted labels and the rest of the line.
fn parse_labels<'a>(mut body: &'a str, line: &str) -> (Vec<(String, String)>, &'a str) {
    let mut labels = Vec::new();
    loop {
        body = body.trim_start_matches([',', ' ']);
        if let Some(rest) = body.strip_prefix('}') {
            labels.sort();
            return (labels, rest);
        }
        let (key, rest) = body
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label set in {line:?}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("bad label value in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        labels.push((key.trim().to_string(), value));
        body = &rest[end + 1..];
    }
}

/// `GET /metrics`, which must answer 200, parsed.
pub async fn scrape(admin: SocketAddr) -> Scrape {
    let response = http_get(admin, "/metrics").await;
    assert_eq!(response.status, 200, "GET /metrics: {}", response.text());
    Scrape::parse(&response.text())
}

/// Starts a daemon with its admin listener on a free loopback port, and `args`.
pub async fn start_with_admin(args: &[&str]) -> (Daemon, SocketAddr) {
    let admin = free_local_addr();
    let admin_arg = admin.to_string();
    let mut all = vec!["--admin-listen", admin_arg.as_str()];
    all.extend_from_slice(args);
    (Daemon::start(&all).await, admin)
}

/// Every line of the daemon's stderr, each parsed as a JSON object (panics, naming the line, on one that is not).
pub fn json_log(daemon: &Daemon) -> Vec<serde_json::Value> {
    daemon
        .log()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| match serde_json::from_str::<serde_json::Value>(line) {
            Ok(value) if value.is_object() => value,
            _ => panic!("log line is not a JSON object: {line:?}"),
        })
        .collect()
}

/// The log events whose message is `message`.
pub fn events<'a>(log: &'a [serde_json::Value], message: &str) -> Vec<&'a serde_json::Value> {
    log.iter()
        .filter(|e| event_field(e, "message").and_then(|m| m.as_str()) == Some(message))
        .collect()
}

/// A field of a JSON log event: at the top level, or under `fields` when events are not flattened.
pub fn event_field<'a>(event: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    event
        .get(name)
        .or_else(|| event.get("fields").and_then(|f| f.get(name)))
}
