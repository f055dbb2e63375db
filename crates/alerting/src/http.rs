//! What the webhook receivers and the Alertmanagers share: an HTTP client
//! per receiver (timeout, extra headers, bearer or basic authentication,
//! TLS roots and client certificate), a POST tried again with exponential
//! backoff on what may pass (connection errors, timeouts, 429, 5xx), and a
//! receiver's name for logs that carries no secret.
//!
//! Secrets (passwords, tokens, header values, a URL's `user:pass@`) are
//! never logged: logs name a receiver by [`redact`]ed URL only.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use thiserror::Error;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

use super::config::{AlertmanagerConfig, BasicAuthConfig, HttpTlsConfig, Secret, WebhookConfig};

/// Why a receiver's HTTP keys cannot make a client, or its credentials
/// cannot be had (named by key, so `check` can point at it).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HttpKeyError {
    #[error("set at most one of `bearer_token`, `bearer_token_file` and `basic_auth`")]
    ManyAuthentications,
    #[error("tls: `cert_file` and `key_file` go together")]
    CertWithoutKey,
    /// A TLS file that cannot be read or holds nothing usable.
    #[error("tls.{key} {}: {why}", path.display())]
    TlsFile {
        key: &'static str,
        path: PathBuf,
        why: String,
    },
    /// The bearer token file cannot be read (worth another try: the file
    /// may come back).
    #[error("cannot read bearer_token_file {}: {why}", path.display())]
    TokenFile { path: PathBuf, why: String },
}

/// The HTTP client keys every receiver declares: `WebhookConfig` and
/// `AlertmanagerConfig` spell them alike (serde's `flatten` cannot share
/// one struct under `deny_unknown_fields`, so both declare them, and
/// `tests/config_reference.rs` checks that the two agree); this is the
/// one place that reads them.
struct ClientKeys<'a> {
    timeout: Duration,
    max_retries: u32,
    backoff: Duration,
    headers: &'a std::collections::BTreeMap<String, Secret>,
    bearer_token: &'a Option<Secret>,
    bearer_token_file: &'a Option<PathBuf>,
    basic_auth: &'a Option<BasicAuthConfig>,
    tls: &'a HttpTlsConfig,
}

impl ClientKeys<'_> {
    fn target(&self, url: String) -> Result<Target, HttpKeyError> {
        Ok(Target {
            url,
            timeout: self.timeout,
            max_retries: self.max_retries,
            backoff: self.backoff,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            auth: Auth::from_keys(self.bearer_token, self.bearer_token_file, self.basic_auth)?,
            tls: self.tls.clone(),
        })
    }
}

/// How a receiver is reached: everything its config says about HTTP.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub timeout: Duration,
    pub max_retries: u32,
    pub backoff: Duration,
    pub headers: Vec<(String, Secret)>,
    pub auth: Auth,
    pub tls: HttpTlsConfig,
}

/// The `Authorization` a receiver wants.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    None,
    Bearer(Secret),
    /// Read again for every request, so a rotated token is picked up.
    BearerFile(PathBuf),
    Basic(BasicAuthConfig),
}

impl Auth {
    /// The one authentication the keys ask for; more than one is an error
    /// naming the keys.
    fn from_keys(
        bearer_token: &Option<Secret>,
        bearer_token_file: &Option<PathBuf>,
        basic_auth: &Option<BasicAuthConfig>,
    ) -> Result<Auth, HttpKeyError> {
        match (bearer_token, bearer_token_file, basic_auth) {
            (None, None, None) => Ok(Auth::None),
            (Some(t), None, None) => Ok(Auth::Bearer(t.clone())),
            (None, Some(f), None) => Ok(Auth::BearerFile(f.clone())),
            (None, None, Some(b)) => Ok(Auth::Basic(b.clone())),
            _ => Err(HttpKeyError::ManyAuthentications),
        }
    }

    /// The header's value, or why it cannot be had (an unreadable token
    /// file: worth another try, the file may come back).
    fn header(&self) -> Result<Option<String>, HttpKeyError> {
        Ok(match self {
            Auth::None => None,
            Auth::Bearer(t) => Some(format!("Bearer {}", t.0.trim())),
            Auth::BearerFile(path) => {
                let token = std::fs::read_to_string(path).map_err(|e| HttpKeyError::TokenFile {
                    path: path.clone(),
                    why: e.to_string(),
                })?;
                Some(format!("Bearer {}", token.trim()))
            }
            Auth::Basic(b) => {
                let pair = format!("{}:{}", b.username, b.password.0);
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
        })
    }
}

impl Target {
    pub fn webhook(w: &WebhookConfig) -> Result<Target, HttpKeyError> {
        let keys = ClientKeys {
            timeout: w.timeout,
            max_retries: w.max_retries,
            backoff: w.backoff,
            headers: &w.headers,
            bearer_token: &w.bearer_token,
            bearer_token_file: &w.bearer_token_file,
            basic_auth: &w.basic_auth,
            tls: &w.tls,
        };
        keys.target(w.url.get_ref().clone())
    }

    /// An Alertmanager's alerts endpoint, `URL/api/v2/alerts`.
    pub fn alertmanager(a: &AlertmanagerConfig) -> Result<Target, HttpKeyError> {
        let keys = ClientKeys {
            timeout: a.timeout,
            max_retries: a.max_retries,
            backoff: a.backoff,
            headers: &a.headers,
            bearer_token: &a.bearer_token,
            bearer_token_file: &a.bearer_token_file,
            basic_auth: &a.basic_auth,
            tls: &a.tls,
        };
        keys.target(format!(
            "{}/api/v2/alerts",
            a.url.get_ref().trim_end_matches('/')
        ))
    }
}

/// The problems in a receiver's HTTP keys that would stop it working: the
/// URL's scheme, header names and values, the authentication keys, the
/// TLS files. `telemine check` and `run` report them with the config's
/// position.
pub fn problems(url: &str, target: Result<Target, HttpKeyError>) -> Vec<String> {
    let mut out = Vec::new();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        out.push(format!(
            "url `{}` must start with http:// or https://",
            redact(url)
        ));
    }
    match target {
        Err(e) => out.push(e.to_string()),
        Ok(t) => {
            for (name, value) in &t.headers {
                if ureq::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    out.push(format!("headers: `{name}` is not a valid header name"));
                }
                if ureq::http::HeaderValue::from_str(&value.0).is_err() {
                    out.push(format!(
                        "headers: the value of `{name}` is not a valid header value (no control characters or line breaks)"
                    ));
                }
                if name.eq_ignore_ascii_case("authorization") && t.auth != Auth::None {
                    out.push(format!(
                        "headers: `{name}` conflicts with bearer_token / basic_auth; keep one"
                    ));
                }
            }
            if let Err(e) = tls_config(&t.tls) {
                out.push(e.to_string());
            }
        }
    }
    out
}

/// ureq's TLS settings for `tls`: native-tls (the one provider built in),
/// with the system's roots unless `ca_file` names others.
fn tls_config(tls: &HttpTlsConfig) -> Result<TlsConfig, HttpKeyError> {
    let bad = |key: &'static str, path: &PathBuf, why: String| HttpKeyError::TlsFile {
        key,
        path: path.clone(),
        why,
    };
    let read = |key: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| bad(key, path, e.to_string()))
    };
    let roots = match &tls.ca_file {
        None => RootCerts::PlatformVerifier,
        Some(path) => {
            let pem = read("ca_file", path)?;
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<_, _>>()
                .map_err(|e| bad("ca_file", path, e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("ca_file", path, "no PEM certificate in it".into()));
            }
            RootCerts::Specific(Arc::new(certs))
        }
    };
    let client = match (&tls.cert_file, &tls.key_file) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let pem = read("cert_file", cert)?;
            let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if chain.is_empty() {
                return Err(bad("cert_file", cert, "no PEM certificate in it".into()));
            }
            let key_pem = read("key_file", key)?;
            let key =
                PrivateKey::from_pem(&key_pem).map_err(|e| bad("key_file", key, e.to_string()))?;
            Some(ClientCert::new_with_certs(&chain, key))
        }
        _ => return Err(HttpKeyError::CertWithoutKey),
    };
    Ok(TlsConfig::builder()
        .provider(TlsProvider::NativeTls)
        .root_certs(roots)
        .client_cert(client)
        .disable_verification(tls.insecure_skip_verify)
        .build())
}

/// Waits on `changed` until `done` holds of the guarded state or
/// `deadline` passes; gives the guard back either way (a sender's worker
/// finishing its queue before a stop).
pub(crate) fn wait_until<'a, T>(
    mut guard: std::sync::MutexGuard<'a, T>,
    changed: &std::sync::Condvar,
    deadline: std::time::Instant,
    done: impl Fn(&T) -> bool,
) -> std::sync::MutexGuard<'a, T> {
    while !done(&guard) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        guard = changed
            .wait_timeout(guard, left)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
    }
    guard
}

/// A URL fit for logs: without its `user:pass@`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://***@{}{path}", &authority[at + 1..]),
        None => url.to_string(),
    }
}

/// What one try of a POST came to.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Delivered,
    /// Worth another try: connection error, timeout, 429, 5xx.
    Retry(String),
    /// Not worth another: other 4xx.
    Refused(String),
}

/// One receiver's HTTP client: its agent (kept for its connections) and
/// what every request carries.
pub struct Client {
    agent: ureq::Agent,
    pub target: Target,
    /// For logs.
    pub name: String,
}

impl Client {
    pub fn new(target: Target) -> Result<Client, HttpKeyError> {
        let tls = tls_config(&target.tls)?;
        if target.tls.insecure_skip_verify && target.url.starts_with("https://") {
            tracing::warn!(url = %redact(&target.url), "tls.insecure_skip_verify: the server's certificate is not checked");
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(target.timeout))
            .http_status_as_error(false)
            .tls_config(tls)
            .build()
            .into();
        Ok(Client {
            agent,
            name: redact(&target.url),
            target,
        })
    }

    /// One try.
    pub fn post_once(&self, body: &str) -> Outcome {
        let auth = match self.target.auth.header() {
            Ok(a) => a,
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let mut request = self
            .agent
            .post(&self.target.url)
            .header("content-type", "application/json");
        for (name, value) in &self.target.headers {
            request = request.header(name.as_str(), value.0.as_str());
        }
        if let Some(a) = auth {
            request = request.header("authorization", a.as_str());
        }
        match request.send(body) {
            Ok(resp) => classify(resp.status().as_u16()),
            // ureq's errors name no header; the URL may carry a password.
            Err(e) => Outcome::Retry(redact_in(&e.to_string(), &self.target.url)),
        }
    }

    /// Tries until the receiver accepts or refuses, or the retries are
    /// spent, waiting `backoff` (doubled each time, at most 1 minute)
    /// between tries; `stop` cuts the waits short (shutdown). Returns
    /// whether it was delivered; failures are logged.
    pub fn post(&self, body: &str, what: &str, stop: &dyn Fn() -> bool) -> bool {
        let mut wait = self.target.backoff;
        let url = &self.name;
        for attempt in 0..=self.target.max_retries {
            match self.post_once(body) {
                Outcome::Delivered => return true,
                Outcome::Refused(why) => {
                    tracing::error!(%url, %why, "{what} refused; not retried");
                    return false;
                }
                Outcome::Retry(why) if attempt < self.target.max_retries && !stop() => {
                    tracing::warn!(%url, %why, attempt = attempt + 1, retry_in = ?wait, "{what} failed; retrying");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
                Outcome::Retry(why) => {
                    tracing::error!(%url, %why, tries = attempt + 1, "{what} failed; given up");
                    return false;
                }
            }
        }
        false
    }
}

/// `text` with `url` replaced by its redacted form.
fn redact_in(text: &str, url: &str) -> String {
    text.replace(url, &redact(url))
}

fn classify(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        429 | 500..=599 => Outcome::Retry(format!("HTTP {status}")),
        _ => Outcome::Refused(format!("HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_never_carry_a_urls_password() {
        assert_eq!(
            redact("https://bob:hunter2@am.example:9093/api?x=1"),
            "https://***@am.example:9093/api?x=1"
        );
        assert_eq!(redact("http://am:9093/a@b"), "http://am:9093/a@b");
        assert_eq!(redact("not a url"), "not a url");
        let secret = Secret("hunter2".into());
        assert_eq!(format!("{secret:?}"), "<secret>");
    }

    #[test]
    fn auth_headers_and_conflicting_keys() {
        let basic = BasicAuthConfig {
            username: "alice".into(),
            password: Secret("s3cret".into()),
        };
        // base64("alice:s3cret")
        assert_eq!(
            Auth::Basic(basic.clone()).header(),
            Ok(Some("Basic YWxpY2U6czNjcmV0".into()))
        );
        assert_eq!(
            Auth::Bearer(Secret(" tok \n".into())).header(),
            Ok(Some("Bearer tok".into()))
        );
        let missing = Auth::BearerFile("/nonexistent/telemine-token".into()).header();
        assert!(
            missing
                .as_ref()
                .is_err_and(|e| e.to_string().contains("bearer_token_file")),
            "{missing:?}"
        );
        let both = Auth::from_keys(&Some(Secret("t".into())), &None, &Some(basic));
        assert!(both.is_err());
    }

    /// A self-signed certificate for 127.0.0.1 and its PKCS#8 key, made by
    /// the `openssl` command; `None` (with a message) when it is absent.
    fn self_signed(dir: &std::path::Path) -> Option<(PathBuf, PathBuf)> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !made && std::env::var("TELEMINE_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
            panic!("TELEMINE_REQUIRE_PEERS=1 but the openssl command cannot make a certificate");
        }
        if !made {
            eprintln!("skipped: the openssl command cannot make a test certificate");
        }
        made.then_some((cert, key))
    }

    /// Reads one request (its head and its `content-length` body) from
    /// `stream` and answers 200; the request line back.
    fn answer_ok<S: std::io::Read + std::io::Write>(stream: S) -> String {
        use std::io::{BufRead, BufReader, Read};
        let mut reader = BufReader::new(stream);
        let mut first = String::new();
        let _ = reader.read_line(&mut first);
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        let _ = write!(
            reader.into_inner(),
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        first
    }

    /// An HTTPS server answering 200 to every request, on its own thread;
    /// each request's path comes out of the channel.
    fn https_server(cert: &[u8], key: &[u8]) -> (String, std::sync::mpsc::Receiver<String>) {
        let identity = native_tls::Identity::from_pkcs8(cert, key).expect("identity");
        let acceptor = native_tls::TlsAcceptor::new(identity).expect("acceptor");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("https://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                // A client refusing our certificate ends the handshake.
                let Ok(tls) = acceptor.accept(stream) else {
                    continue;
                };
                let first = answer_ok(tls);
                let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                if tx.send(path).is_err() {
                    return;
                }
            }
        });
        (url, rx)
    }

    #[test]
    fn https_with_a_ca_file_or_without_verification_and_not_otherwise() {
        let dir = tempfile::tempdir().expect("temp dir");
        let Some((cert, key)) = self_signed(dir.path()) else {
            return;
        };
        let pem = |p: &PathBuf| std::fs::read(p).expect("read pem");
        let (url, requests) = https_server(&pem(&cert), &pem(&key));
        let target = |tls: HttpTlsConfig| Target {
            url: format!("{url}/hook"),
            timeout: Duration::from_secs(10),
            max_retries: 0,
            backoff: Duration::from_millis(1),
            headers: vec![],
            auth: Auth::None,
            tls,
        };
        let trusted = Client::new(target(HttpTlsConfig {
            ca_file: Some(cert.clone()),
            ..Default::default()
        }))
        .expect("client");
        assert_eq!(trusted.post_once("{}"), Outcome::Delivered);
        assert_eq!(
            requests.recv_timeout(testing::PATIENCE).expect("request"),
            "/hook"
        );
        let insecure = Client::new(target(HttpTlsConfig {
            insecure_skip_verify: true,
            ..Default::default()
        }))
        .expect("client");
        assert_eq!(insecure.post_once("{}"), Outcome::Delivered);
        // The system's roots do not know a self-signed certificate.
        let system = Client::new(target(HttpTlsConfig::default())).expect("client");
        assert!(
            matches!(system.post_once("{}"), Outcome::Retry(_)),
            "an unknown certificate is refused"
        );
    }

    /// An HTTPS server that requires a client certificate signed by
    /// `client_ca` (mutual TLS, as an Alertmanager behind a proxy may);
    /// answers 200 to every request it reads.
    fn mtls_server(
        cert: &std::path::Path,
        key: &std::path::Path,
        client_ca: &std::path::Path,
    ) -> String {
        use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
        builder
            .set_certificate_chain_file(cert)
            .expect("server certificate");
        builder
            .set_private_key_file(key, SslFiletype::PEM)
            .expect("server key");
        builder.set_ca_file(client_ca).expect("client CA");
        builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        let acceptor = builder.build();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("https://{}", listener.local_addr().expect("addr"));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                // No certificate, or one the CA did not sign: no session.
                let Ok(tls) = acceptor.accept(stream) else {
                    continue;
                };
                answer_ok(tls);
            }
        });
        url
    }

    #[test]
    fn a_client_certificate_is_presented_when_the_server_requires_one() {
        let server_dir = tempfile::tempdir().expect("temp dir");
        let client_dir = tempfile::tempdir().expect("temp dir");
        let (Some((server_cert, server_key)), Some((client_cert, client_key))) = (
            self_signed(server_dir.path()),
            self_signed(client_dir.path()),
        ) else {
            return;
        };
        let url = mtls_server(&server_cert, &server_key, &client_cert);
        let client = |cert: Option<&PathBuf>, key: Option<&PathBuf>| {
            Client::new(Target {
                url: format!("{url}/api/v2/alerts"),
                timeout: Duration::from_secs(10),
                max_retries: 0,
                backoff: Duration::from_millis(1),
                headers: vec![],
                auth: Auth::None,
                tls: HttpTlsConfig {
                    ca_file: Some(server_cert.clone()),
                    cert_file: cert.cloned(),
                    key_file: key.cloned(),
                    insecure_skip_verify: false,
                },
            })
            .expect("client")
        };
        assert_eq!(
            client(Some(&client_cert), Some(&client_key)).post_once("[]"),
            Outcome::Delivered,
            "tls.cert_file and tls.key_file are presented"
        );
        assert!(
            matches!(client(None, None).post_once("[]"), Outcome::Retry(_)),
            "without a client certificate the server ends the handshake"
        );
    }

    #[test]
    fn tls_files_that_cannot_work_are_named() {
        let tls = |ca: Option<&str>, cert: Option<&str>, key: Option<&str>| HttpTlsConfig {
            ca_file: ca.map(PathBuf::from),
            cert_file: cert.map(PathBuf::from),
            key_file: key.map(PathBuf::from),
            insecure_skip_verify: false,
        };
        assert!(tls_config(&HttpTlsConfig::default()).is_ok());
        let e = tls_config(&tls(Some("/nonexistent/ca.pem"), None, None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.ca_file /nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("telemine-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = tls_config(&tls(empty.to_str(), None, None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = tls_config(&tls(None, empty.to_str(), None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("go together"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Tiny local HTTP servers for the senders' tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::time::Duration;

    /// What a server got.
    #[derive(Debug, Clone)]
    pub struct Request {
        pub path: String,
        /// Lower-case names.
        pub headers: BTreeMap<String, String>,
        pub body: String,
    }

    /// A receiver on a local port answering `statuses` in turn (then 200),
    /// one request per connection; each request comes out of the channel.
    pub fn server(statuses: Vec<u16>) -> (String, mpsc::Receiver<Request>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut statuses = statuses.into_iter();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                let status = statuses.next().unwrap_or(200);
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                if tx.send(request).is_err() {
                    return;
                }
            }
        });
        (base, rx)
    }

    /// A receiver that accepts connections and never answers; each
    /// accepted connection is reported on the channel (and kept open).
    pub fn dead_server() -> (String, mpsc::Receiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                held.push(stream);
                if tx.send(()).is_err() {
                    return;
                }
            }
        });
        (base, rx)
    }

    fn read_request(stream: &TcpStream) -> Option<Request> {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let path = line.split_whitespace().nth(1)?.to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).ok()?;
            if line.trim().is_empty() {
                break;
            }
            let (k, v) = line.split_once(':')?;
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let length: usize = headers.get("content-length")?.parse().ok()?;
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        Some(Request {
            path,
            headers,
            body: String::from_utf8(body).ok()?,
        })
    }

    /// Waits (at most [`PATIENCE`]) until `done` holds; whether it did.
    pub fn eventually(done: impl Fn() -> bool) -> bool {
        let end = std::time::Instant::now() + PATIENCE;
        while !done() {
            if std::time::Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// Bound on any wait in a test for something that must come (never a
    /// timing assertion: only a failing test waits this long).
    pub const PATIENCE: Duration = Duration::from_secs(30);
}
