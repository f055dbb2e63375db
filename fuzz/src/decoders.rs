//! The decoder targets' bodies: any bytes in, never a panic, and what the
//! decoders promise checked. Shared by the fuzz targets and by
//! `tests/fuzz_corpus.rs`, which replays the corpus in every test run.

use telemine_connectors::decode::{Clock, Format, InfluxOptions, Limits, decoder_for};
use telemine_connectors::schema::SourceSchema;

/// A telemetry source with every column type, plus `extra` columns.
pub fn schema(extra: &[&str]) -> SourceSchema {
    SourceSchema::new(
        [
            "ts timestamp",
            "host string",
            "cpu double",
            "n bigint",
            "up boolean",
        ]
        .iter()
        .chain(extra)
        .map(|c| c.parse().expect("column"))
        .collect(),
        "ts",
    )
    .expect("schema")
}

/// The default limits, the clock at 2026-11-27T00:00:00Z.
pub fn limits() -> Limits {
    Limits {
        clock: Clock::fixed(1_795_737_600_000),
        ..Limits::default()
    }
}

/// JSON: every line is one Kafka message, and becomes exactly one row or
/// one dead letter that keeps its bytes.
pub fn json_decoder(data: &[u8]) {
    let mut d = decoder_for(
        &Format::Json,
        &InfluxOptions::default(),
        &schema(&[]),
        64,
        &limits(),
    )
    .expect("decoder");
    let messages: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    for (i, m) in messages.iter().enumerate() {
        d.push(m, 0, i as i64);
    }
    let out = d.flush();
    let rows = out.batch.as_ref().map_or(0, |b| b.num_rows());
    assert_eq!(
        rows + out.dead.len(),
        messages.len(),
        "one row or one dead letter per message"
    );
    for dead in &out.dead {
        assert_eq!(
            dead.payload, messages[dead.offset as usize],
            "dead letters keep their bytes"
        );
    }
}

/// Line protocol: every 0x00 byte separates two messages (a message may
/// hold several lines); each message is wholly rows or one dead letter
/// that keeps its bytes.
pub fn influx_decoder(data: &[u8]) {
    let options = InfluxOptions {
        measurement_column: Some("m".into()),
        precision: "ns".into(),
    };
    let mut d = decoder_for(
        &Format::Influx,
        &options,
        &schema(&["m string"]),
        64,
        &limits(),
    )
    .expect("decoder");
    let messages: Vec<&[u8]> = data.split(|b| *b == 0).collect();
    for (i, m) in messages.iter().enumerate() {
        d.push(m, 0, i as i64);
    }
    let out = d.flush();
    for dead in &out.dead {
        assert_eq!(
            dead.payload, messages[dead.offset as usize],
            "dead letters keep their bytes"
        );
    }
    if let Some(b) = &out.batch {
        let offsets = b
            .column_by_name("_offset")
            .expect("offsets")
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .expect("int64");
        for o in offsets.values() {
            assert!(
                !out.dead.iter().any(|d| d.offset == *o),
                "a message is all rows or one dead letter"
            );
        }
    }
}
