//! `telemine dry-run` over the same records recorded as JSONL, CSV and
//! Parquet: the same alerts, without a broker.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dry_run(input: &std::path::Path) -> Vec<String> {
    let out = support::stdout_of(
        Command::new(env!("CARGO_BIN_EXE_telemine"))
            .current_dir(repo())
            .args(["dry-run", "--source", "telemetry", "--input"])
            .arg(input),
    );
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The fixture's rows as columns: ts, host, cpu, latency_ms, fan_rpm.
type Columns = (Vec<i64>, Vec<String>, Vec<f64>, Vec<f64>, Vec<f64>);

fn columns() -> Columns {
    let text = std::fs::read_to_string(repo().join("sql/tests/data/two_hosts_3m.jsonl")).unwrap();
    let (mut ts, mut host, mut cpu, mut lat, mut fan) = (vec![], vec![], vec![], vec![], vec![]);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let t = chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap()).unwrap();
        ts.push(t.timestamp_millis());
        host.push(v["host"].as_str().unwrap().to_string());
        cpu.push(v["cpu"].as_f64().unwrap());
        lat.push(v["latency_ms"].as_f64().unwrap());
        fan.push(v["fan_rpm"].as_f64().unwrap());
    }
    (ts, host, cpu, lat, fan)
}

#[test]
fn jsonl_csv_and_parquet_give_the_same_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let (ts, host, cpu, lat, fan) = columns();
    // CSV: epoch milliseconds, columns in another order, dc/rack constant.
    let csv = dir.path().join("t.csv");
    let mut text = String::from("host,ts,cpu,latency_ms,fan_rpm,dc,rack,temp_c,power_w\n");
    for i in 0..ts.len() {
        text.push_str(&format!(
            "{},{},{},{},{},fra1,fra1-r01,25,300\n",
            host[i], ts[i], cpu[i], lat[i], fan[i]
        ));
    }
    std::fs::write(&csv, text).unwrap();
    // Parquet: a real timestamp column (microseconds, UTC) to be cast.
    let parquet = dir.path().join("t.parquet");
    let n = ts.len();
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("dc", DataType::Utf8, false),
        Field::new("rack", DataType::Utf8, false),
        Field::new("host", DataType::Utf8, false),
        Field::new("cpu", DataType::Float64, false),
        Field::new("temp_c", DataType::Float64, false),
        Field::new("power_w", DataType::Float64, false),
        Field::new("fan_rpm", DataType::Float64, false),
        Field::new("latency_ms", DataType::Float64, false),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMillisecondArray::from(ts.iter().map(|t| t * 1000).collect::<Vec<_>>())
                .reinterpret_cast::<datafusion::arrow::datatypes::TimestampMicrosecondType>()
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from(vec!["fra1"; n])),
        Arc::new(StringArray::from(vec!["fra1-r01"; n])),
        Arc::new(StringArray::from(host.clone())),
        Arc::new(Float64Array::from(cpu.clone())),
        Arc::new(Float64Array::from(vec![25.0; n])),
        Arc::new(Float64Array::from(vec![300.0; n])),
        Arc::new(Float64Array::from(fan.clone())),
        Arc::new(Float64Array::from(lat.clone())),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&parquet).unwrap(),
        schema,
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let from_jsonl = dry_run(&repo().join("sql/tests/data/two_hosts_3m.jsonl"));
    assert_eq!(from_jsonl.len(), 2, "{from_jsonl:?}");
    assert!(
        from_jsonl
            .iter()
            .any(|l| l.contains("HostCpuSaturated") && l.contains("\"h2\""))
    );
    assert!(
        from_jsonl
            .iter()
            .any(|l| l.contains("HostLatencySpike") && l.contains("\"h1\""))
    );
    // `mem` is only in the JSONL (null elsewhere); no default view reads it.
    assert_eq!(dry_run(&csv), from_jsonl);
    assert_eq!(dry_run(&parquet), from_jsonl);
}
