//! The HTTP server of a running engine, against the real broker and real
//! peers: `/metrics` scraped by a real Prometheus and passed by
//! `promtool check metrics`, health and readiness, the JSON API (views,
//! rows, series, rules, active alerts, silences with the bearer token),
//! the live stream, and the live page driven in headless Chromium (a
//! screenshot is kept). Peers come from Debian; each part skips with a
//! message when its peer is missing (`TELEMINE_REQUIRE_PEERS=1` makes
//! that a failure).

mod support;

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::broker::*;
use support::peers::*;
use support::setup::*;
use support::*;
use telemine::http::HttpServer;
use telemine::runtime::{RunOptions, Stop, run_pipeline};
use telemine_observe::metrics::Metrics;

/// h2's CPU is saturated in minutes 1 and 8: the second is still firing
/// when the test looks.
const ANOMALIES: Anomalies = &[(1, 95.0, 95.0), (8, 95.0, 95.0)];
const TOKEN: &str = "s3cret-token";
const VIEW: &str = "host_1m";
const H2: &str = "dc=fra1,rack=fra1-r01,host=h2";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// (status, body) of a request; status 0 when it could not be made.
fn call(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let agent = agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let resp = match (method, body) {
        ("GET", _) => {
            let mut r = agent.get(url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()
        }
        ("DELETE", _) => {
            let mut r = agent.delete(url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()
        }
        (_, body) => {
            let mut r = agent.post(url).header("content-type", "application/json");
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.send(body.unwrap_or(""))
        }
    };
    // A peer still starting refuses connections: status 0, for the
    // caller's wait to try again.
    let mut resp = match resp {
        Ok(r) => r,
        Err(e) => return (0, format!("{method} {url}: {e}")),
    };
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, text)
}

fn json(url: &str) -> Value {
    let (status, body) = call("GET", url, None, None);
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
}

/// Polls `f` every 200 ms until it is `Some`, at most `secs`.
fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "waited {secs} s for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn config(s: &Setup, dir: &std::path::Path) -> String {
    let sql = sql_with(
        dir,
        &["features/host_1m.sql", "rules/host_cpu_saturated.sql"],
    );
    std::fs::write(
        sql.join("rules/host_anomalous.sql"),
        "-- @name: HostAnomalous\n\
         -- @severity: warning\n\
         SELECT dc, rack, host, window_start, window_end, anomaly_score\n\
         FROM host_1m WHERE anomaly_score > 0.9\n",
    )
    .expect("rule");
    config_text(&s.brokers, &s.group, &s.prefix, &sql).replacen(
        "\n\n[[sources]]",
        "\n\n[kafka.properties]\n\"statistics.interval.ms\" = \"500\"\n\n[[sources]]",
        1,
    ) + &inline_model(2, 3, 3)
        + &format!("\n[http]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_engine_is_watched_over_http() {
    logs();
    let Some(s) = Setup::new("http").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, sql) = load_config(&config(&s, dir.path())).await;
    let metrics = Arc::new(Metrics::default());
    let server = HttpServer::start(&config, metrics.clone())
        .await
        .expect("server")
        .expect("[http] listen is set");
    let base = format!("http://{}", server.addr);

    let telemetry_topic = s.topic("telemetry");
    produce(&s.brokers, &telemetry_topic, &telemetry(0, 300, ANOMALIES)).await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let options = RunOptions {
        metrics: Some(metrics.clone()),
        ..RunOptions::default()
    };
    let run = tokio::spawn(async move {
        let stop = async {
            let _ = stop_rx.await;
            Stop::Now
        };
        run_pipeline(&config, sql, options, stop).await
    });

    // Before the engine has read anything: alive, not ready.
    let b = base.clone();
    let early =
        tokio::task::spawn_blocking(move || call("GET", &format!("{b}/readyz"), None, None))
            .await
            .expect("readyz");
    if early.0 == 503 {
        assert!(early.1.contains("reasons"), "{}", early.1);
    }

    // The live stream: a subscriber sees rows of the second half as the
    // view makes them.
    let b = base.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("h2's first rows on the API", 120, || {
            let (status, body) = call(
                "GET",
                &format!("{b}/api/v1/views/{VIEW}/series"),
                None,
                None,
            );
            (status == 200 && body.contains("host=h2")).then_some(())
        })
    })
    .await
    .expect("first rows");
    let b = base.clone();
    let streamed = tokio::task::spawn_blocking(move || {
        let mut resp = agent()
            .get(format!("{b}/api/v1/stream?view={VIEW}&series={}", enc(H2)))
            .call()
            .expect("stream");
        assert_eq!(resp.status().as_u16(), 200);
        let mut lines = BufReader::new(resp.body_mut().as_reader()).lines();
        let mut event = String::new();
        loop {
            let line = lines
                .next()
                .expect("the stream ended")
                .expect("stream line");
            if let Some(e) = line.strip_prefix("event: ") {
                event = e.to_string();
            } else if let Some(data) = line.strip_prefix("data: ")
                && event == "row"
            {
                return data.to_string();
            }
        }
    });
    // Subscribed (or already served a row of the first half, still being
    // computed): either way the stream works before the second half.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.live.subscribers() == 0 && !streamed.is_finished() {
        assert!(Instant::now() < deadline, "no subscriber on the stream");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    produce(
        &s.brokers,
        &telemetry_topic,
        &telemetry(300, 600, ANOMALIES),
    )
    .await;
    let row: Value =
        serde_json::from_str(&streamed.await.expect("streamed row")).expect("row JSON");
    assert_eq!(row["view"], VIEW);
    assert_eq!(row["series"], H2);
    assert!(row["row"]["cpu_avg"].is_number(), "{row}");

    let b = base.clone();
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tokio::task::spawn_blocking(move || look_at_everything(&b, &shots))
        .await
        .expect("the checks");

    let _ = stop_tx.send(());
    run.await.expect("join").expect("pipeline");
    server.stop().await;
}

/// Every check on the running engine's HTTP side.
fn look_at_everything(base: &str, shots: &std::path::Path) {
    // Every window up to minute 8 has been closed and scored.
    let rows = wait_for("h2's window of minute 8", 120, || {
        let (status, body) = call(
            "GET",
            &format!("{base}/api/v1/views/{VIEW}/series/{}", enc(H2)),
            None,
            None,
        );
        let v: Value = serde_json::from_str(&body).ok()?;
        let rows = v["rows"].as_array()?.clone();
        (status == 200
            && rows.iter().any(|r| {
                r["window_end"]
                    .as_str()
                    .is_some_and(|e| e.contains("00:09:00"))
            }))
        .then_some(rows)
    });
    assert!(
        rows.iter().any(|r| r["anomaly_score"].is_number()),
        "the model has scored h2: {rows:?}"
    );

    // Health and readiness.
    assert_eq!(call("GET", &format!("{base}/healthz"), None, None).0, 200);
    wait_for("/readyz to say ready", 60, || {
        let (status, body) = call("GET", &format!("{base}/readyz"), None, None);
        (status == 200).then_some(()).or_else(|| {
            eprintln!("readyz: {status} {body}");
            None
        })
    });

    // /metrics: labelled, and what promtool and a real Prometheus accept.
    let (status, exposition) = call("GET", &format!("{base}/metrics"), None, None);
    assert_eq!(status, 200);
    for needle in [
        r#"telemine_records_in_total{partition="0",source="telemetry"}"#,
        r#"telemine_records_out_total{partition="0",source="telemetry"}"#,
        r#"telemine_consumer_lag{partition="0",topic=""#,
        r#"telemine_watermark_seconds{partition="0",source="telemetry"}"#,
        r#"telemine_evaluation_seconds_bucket{kind="view",name="host_1m",le="#,
        r#"telemine_evaluation_seconds_count{kind="rule",name="HostCpuSaturated"}"#,
        r#"telemine_model_scoring_seconds_count{model="host_behaviour"}"#,
        r#"telemine_model_rows_total{model="host_behaviour"}"#,
        r#"telemine_alerts_active{state="firing"}"#,
        r#"telemine_open_windows{view="host_1m"}"#,
        r#"telemine_buffered_rows{source="telemetry"}"#,
        "telemine_notifications_total",
        "telemine_sql_memory_exceeded_total 0",
        "telemine_sql_reloads_total 0",
    ] {
        assert!(
            exposition.contains(needle),
            "/metrics lacks {needle}:\n{exposition}"
        );
    }
    if let Some(promtool) = peer(&["promtool"], "prometheus") {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(exposition.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("promtool");
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("promtool check metrics: passed");
    }
    if let Some(prometheus) = peer(&["prometheus"], "prometheus") {
        scraped_by_prometheus(&prometheus, base);
    }

    // The API.
    let views = json(&format!("{base}/api/v1/views"));
    let host = views["views"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == VIEW))
        .expect("host_1m listed")
        .clone();
    assert_eq!(host["model"], "host_behaviour");
    assert!(host["evaluations"].as_u64().unwrap_or(0) > 0, "{host}");
    let rules = json(&format!("{base}/api/v1/rules"));
    let anomalous = rules["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "HostAnomalous"))
        .expect("HostAnomalous listed")
        .clone();
    assert_eq!(anomalous["score_thresholds"], serde_json::json!([0.9]));
    let last = json(&format!("{base}/api/v1/views/{VIEW}/rows?limit=3"));
    assert_eq!(last["rows"].as_array().map(Vec::len), Some(3));
    let (status, body) = call("GET", &format!("{base}/api/v1/views/nope/rows"), None, None);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("GET /api/v1/views lists them"), "{body}");
    let alerts = wait_for("h2's CPU alert firing", 60, || {
        let a = json(&format!("{base}/api/v1/alerts"));
        let firing: Vec<Value> = a["alerts"]
            .as_array()?
            .iter()
            .filter(|a| a["state"] == "firing" && a["rule"] == "HostCpuSaturated")
            .cloned()
            .collect();
        (!firing.is_empty()).then_some(firing)
    });
    assert_eq!(alerts[0]["labels"]["host"], "h2");

    // Silences: changes need the token.
    let url = format!("{base}/api/v1/silences");
    let new = r#"{"matchers": ["host=h2"], "duration": "2h", "comment": "disk swap", "createdBy": "test"}"#;
    assert_eq!(call("POST", &url, None, Some(new)).0, 401);
    assert_eq!(call("POST", &url, Some("wrong"), Some(new)).0, 401);
    let (status, body) = call("POST", &url, Some(TOKEN), Some(r#"{"matchers": []}"#));
    assert_eq!(status, 400, "{body}");
    let (status, body) = call("POST", &url, Some(TOKEN), Some(new));
    assert_eq!(status, 201, "{body}");
    let added: Value = serde_json::from_str(&body).expect("silence JSON");
    let id = added["id"].as_str().expect("id").to_string();
    assert_eq!(added["status"], "active");
    let listed = json(&url);
    assert!(
        listed["silences"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["id"] == id.as_str())),
        "{listed}"
    );
    assert_eq!(call("DELETE", &format!("{url}/{id}"), None, None).0, 401);
    let (status, body) = call("DELETE", &format!("{url}/{id}"), Some(TOKEN), None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""status":"expired""#), "{body}");

    // The live page, in headless Chromium.
    if let Some(chromedriver) = peer(&["chromedriver"], "chromium-driver") {
        live_page(&chromedriver, base, shots);
    }
}

fn scraped_by_prometheus(prometheus: &std::path::Path, base: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = base.trim_start_matches("http://");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: telemine\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .expect("prometheus config");
    let port = free_port();
    let _p = Process::start(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let query = |q: &str| -> Option<Vec<Value>> {
        let (status, body) = call(
            "GET",
            &format!("http://127.0.0.1:{port}/api/v1/query?query={}", enc(q)),
            None,
            None,
        );
        let v: Value = serde_json::from_str(&body).ok()?;
        (status == 200).then(|| v["data"]["result"].as_array().cloned().unwrap_or_default())
    };
    wait_for("Prometheus to scrape telemine (up == 1)", 90, || {
        let r = query(r#"up{job="telemine"}"#)?;
        (r.first()?["value"][1] == "1").then_some(())
    });
    let series = wait_for("telemine_records_in_total in Prometheus", 60, || {
        let r = query("telemine_records_in_total")?;
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(series[0]["metric"]["source"], "telemetry");
    eprintln!(
        "Prometheus scraped telemine: {} series of telemine_records_in_total",
        series.len()
    );
}

/// Drives the live page in headless Chromium through chromedriver
/// (WebDriver, plain HTTP): opens it on h2's series, waits until it has
/// drawn the series (its latest row's table lists the features and the
/// score), shows the threshold of the rule reading the score and the
/// firing alert, and has its live stream open; keeps a screenshot.
fn live_page(chromedriver: &std::path::Path, base: &str, shots: &std::path::Path) {
    let port = free_port();
    let _driver = Process::start(
        Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let wd = format!("http://127.0.0.1:{port}");
    let chromium = peer(&["chromium", "chromium-browser"], "chromium").expect("chromium");
    let capabilities = serde_json::json!({
        "capabilities": { "alwaysMatch": { "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--hide-scrollbars", "--window-size=1280,800"],
        }}}
    })
    .to_string();
    let session = wait_for("chromedriver to start a session", 60, || {
        let (status, body) = call("POST", &format!("{wd}/session"), None, Some(&capabilities));
        let v: Value = serde_json::from_str(&body).ok()?;
        (status == 200).then(|| v["value"]["sessionId"].as_str().map(String::from))?
    });
    let at = format!("{wd}/session/{session}");
    let url = format!("{base}/?view={VIEW}&series={}", enc(H2));
    let (status, body) = call(
        "POST",
        &format!("{at}/url"),
        None,
        Some(&serde_json::json!({ "url": url }).to_string()),
    );
    assert_eq!(status, 200, "{body}");
    let script = serde_json::json!({
        "script": "return ['latest', 'thr-note', 'alerts', 'status', 'series'].map((id) => id + ': ' + (document.getElementById(id).innerText || document.getElementById(id).value)).join('\\n')",
        "args": [],
    })
    .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let wanted = [
        "cpu_avg",
        "anomaly_score",
        "threshold 0.9",
        "HostCpuSaturated",
        "status: live",
    ];
    let shown = loop {
        let (_, body) = call("POST", &format!("{at}/execute/sync"), None, Some(&script));
        let text = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["value"].as_str().map(String::from))
            .unwrap_or(body);
        // (innerText is as shown: the score's heading is in capitals.)
        let lower = text.to_lowercase();
        if wanted.iter().all(|n| lower.contains(&n.to_lowercase())) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the live page did not draw h2's series within 60 s; it shows:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("the live page shows:\n{shown}");
    let (status, body) = call("GET", &format!("{at}/screenshot"), None, None);
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).expect("screenshot JSON");
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(v["value"].as_str().expect("base64 PNG"))
        .expect("PNG");
    let shot = shots.join("live-page.png");
    std::fs::write(&shot, &png).expect("screenshot");
    assert!(png.len() > 10_000, "the screenshot is {} bytes", png.len());
    eprintln!(
        "live page screenshot: {} ({} bytes)",
        shot.display(),
        png.len()
    );
    let _ = call("DELETE", &at, None, None);
}
