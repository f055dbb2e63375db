//! The `[alerting]` section as the config declares it: grouping, the
//! intervals, inhibition, the topics it keeps its state in, and the
//! receivers (webhooks, Alertmanagers) with the HTTP client settings (auth,
//! TLS, retries) each has.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use telemine_types::duration::serde_duration;
use toml::Spanned;

/// How alerts become notifications, with Alertmanager's meanings and
/// defaults: grouping, the three intervals, inhibition and silences. Times
/// are event time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    /// Labels alerts are grouped by: one notification covers a group.
    /// Default: ["alertname"].
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    /// How long a new group waits before its first notification, so alerts
    /// that start together arrive together. Default: "30s".
    #[serde(default = "default_group_wait", with = "serde_duration")]
    pub group_wait: Duration,
    /// How often a group that has notified is looked at again for changes.
    /// Default: "5m".
    #[serde(default = "default_group_interval", with = "serde_duration")]
    pub group_interval: Duration,
    /// After how long an unchanged group that still fires is sent again.
    /// Default: "4h".
    #[serde(default = "default_repeat_interval", with = "serde_duration")]
    pub repeat_interval: Duration,
    /// The payloads' `receiver`. Default: "telemine".
    #[serde(default = "default_receiver")]
    pub receiver: String,
    /// The payloads' `externalURL`; each alert's `generatorURL` is this
    /// plus `/rules/<alertname>`. Default: "http://localhost:9898".
    #[serde(default = "default_external_url")]
    pub external_url: String,
    /// Compacted topic holding the silences, keyed by id. Default:
    /// "telemine.silences".
    #[serde(default = "default_silences_topic")]
    pub silences_topic: String,
    /// Compacted topic the alerting state (pending and firing alerts,
    /// groups and what each last sent) is saved to before each offset
    /// commit, keyed by the consumer group, and restored from at start.
    /// Default: "telemine.alert-state".
    #[serde(default = "default_state_topic")]
    pub state_topic: String,
    /// Most alerts one notification carries (Alertmanager's webhook
    /// `max_alerts`), and notifications are also kept under
    /// `sinks.max_message_bytes`: a larger group is sent in several
    /// notifications of the same `groupKey`, each whole, with
    /// `truncatedAlerts` saying how many of the group's alerts it leaves to
    /// the others. Nothing is dropped. Default: 1000.
    #[serde(default = "default_max_alerts")]
    pub max_alerts: usize,
    /// How long `run` waits at start for the silences and the saved
    /// alerting state (brokers unreachable, topic not readable), saying so
    /// every few seconds, before it exits with an error: it never starts
    /// without them. Default: "5m".
    #[serde(default = "default_startup_timeout", with = "serde_duration")]
    pub startup_timeout: Duration,
    /// A firing alert that `source_matchers` match mutes the alerts
    /// `target_matchers` match whose `equal` labels have the same values.
    #[serde(default)]
    pub inhibit: Vec<InhibitConfig>,
    /// Receivers the same payloads are POSTed to (as Alertmanager's webhook
    /// receiver does), besides the alerts topic.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Alertmanagers the alerts themselves (firing, resolved) are POSTed
    /// to, as Prometheus sends them (`/api/v2/alerts`), so Alertmanager's
    /// routing, receivers and silences apply. Default: none.
    #[serde(default)]
    pub alertmanagers: Vec<AlertmanagerConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitConfig {
    /// Matchers such as `alertname="DcPowerLoss"`, `severity=~"critical|warning"`.
    pub source_matchers: Spanned<Vec<String>>,
    pub target_matchers: Spanned<Vec<String>>,
    #[serde(default)]
    pub equal: Vec<String>,
}

fn default_group_by() -> Vec<String> {
    vec!["alertname".into()]
}
fn default_group_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_group_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_repeat_interval() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn default_receiver() -> String {
    "telemine".into()
}
fn default_external_url() -> String {
    "http://localhost:9898".into()
}
fn default_startup_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_max_alerts() -> usize {
    1000
}
fn default_silences_topic() -> String {
    "telemine.silences".into()
}
fn default_state_topic() -> String {
    "telemine.alert-state".into()
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            group_by: default_group_by(),
            group_wait: default_group_wait(),
            group_interval: default_group_interval(),
            repeat_interval: default_repeat_interval(),
            receiver: default_receiver(),
            external_url: default_external_url(),
            silences_topic: default_silences_topic(),
            state_topic: default_state_topic(),
            max_alerts: default_max_alerts(),
            startup_timeout: default_startup_timeout(),
            inhibit: Vec::new(),
            webhooks: Vec::new(),
            alertmanagers: Vec::new(),
        }
    }
}

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
/// resolved. See `crates/alerting/src/alertmanager.rs`.
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
