//! The alerting section's receivers as the config declares them: webhook
//! receivers and Alertmanagers, with the HTTP client settings (auth, TLS,
//! retries) each has.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use telemine_types::duration::serde_duration;
use toml::Spanned;

/// A secret from the config (a password, a token): deserialised from a
/// plain string, never shown by `Debug`, so a logged config leaks nothing.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// HTTP basic authentication.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// The user name. Required.
    pub username: String,
    /// The password. Required.
    pub password: Secret,
}

/// How an HTTP client checks the server (https:// URLs) and proves who it
/// is.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTlsConfig {
    /// PEM file of the CA certificates the server's certificate must chain
    /// to; they replace the system's roots. Default: the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file of a client certificate (chain), for servers that ask for
    /// one; needs `key_file`. Default: none.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key, in PKCS#8 form
    /// (`-----BEGIN PRIVATE KEY-----`; convert others with `openssl pkcs8
    /// -topk8 -nocrypt`). Default: none.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate and host name (testing only: anyone on
    /// the path can read and forge the traffic). Default: false.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// An Alertmanager that telemine sends its alerts to, as Prometheus does:
/// a JSON array of `{labels, annotations, startsAt, endsAt, generatorURL}`
/// POSTed to `URL/api/v2/alerts`. A firing alert is sent when it starts
/// firing (or its labels or annotations change) and again every
/// `resend_interval` of wall time, each time with `endsAt` four resend
/// intervals ahead (a lease: should telemine stop sending, Alertmanager
/// resolves it then); a resolved alert is sent with `endsAt` = when it
/// resolved. See `src/alerting/alertmanager.rs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// The Alertmanager's base URL, http:// or https://, e.g.
    /// "http://127.0.0.1:9093" (a path prefix is kept). Required.
    pub url: Spanned<String>,
    /// How often a still-firing alert is sent again (wall time); its lease
    /// is four times this. Default: "1m" (Prometheus' `resend_delay`).
    #[serde(default = "default_am_resend_interval", with = "serde_duration")]
    pub resend_interval: Duration,
    /// Most alerts held for this Alertmanager (firing, and resolved ones
    /// not yet delivered): a new alert past it is dropped and counted
    /// (`alertmanager_queue_drops`); alerts already held are always
    /// updated. Default: 10000.
    #[serde(default = "default_am_queue_size")]
    pub queue_size: usize,
    /// Tries after the first for one POST (a failed batch is also sent
    /// again with the next re-send). Default: 2.
    #[serde(default = "default_am_retries")]
    pub max_retries: u32,
    /// The first wait between tries, doubled each time (at most 1 minute).
    /// Default: "500ms".
    #[serde(default = "default_webhook_backoff", with = "serde_duration")]
    pub backoff: Duration,
    /// Per request. Default: "10s".
    #[serde(default = "default_webhook_timeout", with = "serde_duration")]
    pub timeout: Duration,
    /// Extra request headers (e.g. `X-Scope-OrgID` for a multi-tenant
    /// Alertmanager). Their values are never logged. Default: none.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, Secret>,
    /// `Authorization: Bearer TOKEN`. Default: none.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// A file holding the bearer token, read again for every request (so a
    /// rotated token is picked up). Default: none.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// `basic_auth = { username = "…", password = "…" }`. Default: none.
    #[serde(default)]
    pub basic_auth: Option<BasicAuthConfig>,
    /// TLS for https:// URLs (`ca_file`, `cert_file`, `key_file`,
    /// `insecure_skip_verify`). Default: the system's roots.
    #[serde(default)]
    pub tls: HttpTlsConfig,
}

fn default_am_resend_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_am_queue_size() -> usize {
    10_000
}
fn default_am_retries() -> u32 {
    2
}
fn default_webhook_queue_size() -> usize {
    1000
}

/// A webhook receiver: each notification is POSTed as JSON; a failure
/// (connection error, timeout, 429 or 5xx) is retried with exponential
/// backoff; other 4xx answers are not.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// http:// or https:// URL. Required.
    pub url: Spanned<String>,
    /// Tries after the first. Default: 5.
    #[serde(default = "default_webhook_retries")]
    pub max_retries: u32,
    /// The first wait between tries, doubled each time (at most 1 minute).
    /// Default: "500ms".
    #[serde(default = "default_webhook_backoff", with = "serde_duration")]
    pub backoff: Duration,
    /// Per request. Default: "10s".
    #[serde(default = "default_webhook_timeout", with = "serde_duration")]
    pub timeout: Duration,
    /// Notifications waiting for this receiver (each receiver has its own
    /// thread and queue, so a slow or dead one never delays another): when
    /// full, the oldest waiting notification is dropped and counted
    /// (`webhook_queue_drops`) — a group's newer notification supersedes
    /// it. Default: 1000.
    #[serde(default = "default_webhook_queue_size")]
    pub queue_size: usize,
    /// Extra request headers. Their values are never logged. Default: none.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, Secret>,
    /// `Authorization: Bearer TOKEN`. Default: none.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// A file holding the bearer token, read again for every request.
    /// Default: none.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// `basic_auth = { username = "…", password = "…" }` (instead of
    /// `user:pass@` in the URL). Default: none.
    #[serde(default)]
    pub basic_auth: Option<BasicAuthConfig>,
    /// TLS for https:// URLs (`ca_file`, `cert_file`, `key_file`,
    /// `insecure_skip_verify`). Default: the system's roots.
    #[serde(default)]
    pub tls: HttpTlsConfig,
}

fn default_webhook_retries() -> u32 {
    5
}
fn default_webhook_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}
