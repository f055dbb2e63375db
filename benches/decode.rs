//! Decode throughput: generated telemetry as JSON and as InfluxDB line
//! protocol, through the same decoders the Kafka source uses.
//!
//! `cargo bench --bench decode`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use telemine_codec::decode::{Format, InfluxOptions, decoder_for};
use telemine_codec::schema::SourceSchema;
use telemine_connectors::generator::{Generator, GeneratorConfig, Stream};

const RECORDS: usize = 8192 * 4;

fn schema() -> SourceSchema {
    let cols = [
        "ts timestamp",
        "dc string",
        "rack string",
        "host string",
        "cpu double",
        "mem double",
        "temp_c double",
        "power_w double",
        "fan_rpm double",
        "net_rx_bps double",
        "disk_io double",
        "latency_ms double",
    ];
    SourceSchema::new(
        cols.iter().map(|c| c.parse().expect("column")).collect(),
        "ts",
    )
    .expect("schema")
}

fn json_records() -> Vec<Vec<u8>> {
    let mut g = Generator::new(GeneratorConfig {
        late_fraction: 0.0,
        ..Default::default()
    });
    let mut out = Vec::with_capacity(RECORDS);
    while out.len() < RECORDS {
        g.emit_second(&mut |s, _, p| {
            if s == Stream::Telemetry && out.len() < RECORDS {
                out.push(p.to_vec());
            }
        });
    }
    out
}

/// The same records as line protocol (`telemetry,dc=…,rack=…,host=… cpu=…,… <ns>`).
fn influx_records(json: &[Vec<u8>]) -> Vec<Vec<u8>> {
    json.iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(r).expect("generated JSON");
            let ts = chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap_or_default())
                .map(|d| d.timestamp_nanos_opt().unwrap_or_default())
                .unwrap_or_default();
            let fields = [
                "cpu",
                "mem",
                "temp_c",
                "power_w",
                "fan_rpm",
                "net_rx_bps",
                "disk_io",
                "latency_ms",
            ]
            .iter()
            .map(|f| format!("{f}={}", v[f]))
            .collect::<Vec<_>>()
            .join(",");
            format!(
                "telemetry,dc={},rack={},host={} {fields} {ts}",
                v["dc"].as_str().unwrap_or(""),
                v["rack"].as_str().unwrap_or(""),
                v["host"].as_str().unwrap_or("")
            )
            .into_bytes()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let schema = schema();
    let json = json_records();
    let influx = influx_records(&json);
    let mut group = c.benchmark_group("decode");
    group.sample_size(20);
    group.throughput(Throughput::Elements(RECORDS as u64));
    for (name, format, records) in [
        ("json", Format::Json, &json),
        ("influx_line_protocol", Format::Influx, &influx),
    ] {
        let mut decoder = decoder_for(
            &format,
            &InfluxOptions::default(),
            &schema,
            8192,
            &Default::default(),
        )
        .expect("decoder");
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut rows = 0;
                for chunk in records.chunks(8192) {
                    for (i, r) in chunk.iter().enumerate() {
                        decoder.push(r, 0, i as i64);
                    }
                    let out = decoder.flush();
                    assert!(out.dead.is_empty());
                    rows += out.batch.map_or(0, |b| b.num_rows());
                }
                assert_eq!(rows, RECORDS);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
