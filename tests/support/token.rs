//! A bearer-token server for Debian's `docker-registry` configured with `auth.token`, as Docker Hub, GHCR and
//! most hosted registries work: the registry answers `401` with a `Bearer realm=...,service=...,scope=...`
//! challenge, the client asks the realm for a token (with Basic credentials, or anonymously), and the registry
//! checks the token's ES256 signature (the signing certificate travels in the JWT's `x5c` header and must chain to
//! the registry's `rootcertbundle`), issuer, audience, lifetime and `access` claims.
//!
//! The registry is the real one; only the token issuer is ours, since no token server can be installed here. It
//! grants `pull` on every requested repository to the users `USER_A` and `USER_B` with their passwords, answers
//! `401` to wrong credentials, and gives anonymous callers a token without any access (as Docker Hub does for a
//! private repository). Every request is recorded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::registry::{TokenAuth, USER_A, USER_B};

const SERVICE: &str = "wasmcache-test-registry";
const ISSUER: &str = "wasmcache-test-token-issuer";

/// One request to the token endpoint, as received.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The user of the Basic credentials, if any were sent.
    pub user: Option<String>,
    pub service: Option<String>,
    pub scopes: Vec<String>,
    pub status: u16,
}

pub struct TokenServer {
    addr: SocketAddr,
    cert_pem: String,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    task: JoinHandle<()>,
}

struct Issuer {
    key: EcdsaKeyPair,
    /// The signing certificate (self-signed, P-256), standard base64 DER, for the `x5c` header.
    cert_b64: String,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
}

impl TokenServer {
    pub async fn start() -> TokenServer {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("cert params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wasmcache test token issuer");
        let cert = params.self_signed(&key).expect("self-signed token cert");
        let signing = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .expect("ring key from rcgen's PKCS#8");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let issuer = Arc::new(Issuer {
            key: signing,
            cert_b64: base64::engine::general_purpose::STANDARD.encode(cert.der()),
            requests: requests.clone(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind token server");
        let addr = listener.local_addr().expect("token server addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let issuer = issuer.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let issuer = issuer.clone();
                        async move { Ok::<_, Infallible>(issuer.answer(request)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TokenServer {
            addr,
            cert_pem: cert.pem(),
            requests,
            task,
        }
    }

    /// What a registry needs to trust this server's tokens.
    pub fn registry_auth(&self) -> TokenAuth {
        TokenAuth {
            realm: format!("http://{}/token", self.addr),
            service: SERVICE.to_string(),
            issuer: ISSUER.to_string(),
            root_cert_pem: self.cert_pem.clone(),
        }
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Issuer {
    fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let query: Vec<(String, String)> = url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
        let service = query.iter().find(|(k, _)| k == "service").map(|(_, v)| v.clone());
        let scopes: Vec<String> = query
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .collect();
        let credentials = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
        let known =
            |(user, password): &(String, String)| [USER_A, USER_B].iter().any(|(u, p)| u == user && p == password);
        let (status, body) = match &credentials {
            Some(c) if !known(c) => (StatusCode::UNAUTHORIZED, json!({"details": "wrong credentials"})),
            Some((user, _)) => {
                let token = self.token(user, &scopes);
                (StatusCode::OK, json!({"token": token, "expires_in": 300}))
            }
            // Anonymous: a valid token that grants nothing.
            None => (StatusCode::OK, json!({"token": self.token("", &[]), "expires_in": 300})),
        };
        self.requests.lock().unwrap().push(TokenRequest {
            user: credentials.map(|(u, _)| u),
            service,
            scopes,
            status: status.as_u16(),
        });
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    }

    /// A compact JWS (ES256) granting `pull` on the repository of each `repository:NAME:ACTIONS` scope.
    fn token(&self, subject: &str, scopes: &[String]) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let access: Vec<_> = scopes
            .iter()
            .filter_map(|s| s.strip_prefix("repository:"))
            .filter_map(|s| s.rsplit_once(':').map(|(name, _)| name))
            .map(|name| json!({"type": "repository", "name": name, "actions": ["pull"]}))
            .collect();
        let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [self.cert_b64]});
        let claims = json!({
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("{:016x}", fastrand::u64(..)),
            "access": access,
        });
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self
            .key
            .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
            .expect("sign token");
        format!("{signing_input}.{}", b64(signature.as_ref()))
    }
}
