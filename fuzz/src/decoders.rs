//! The decoder targets' bodies: any bytes in, never a panic, and what the
//! decoders promise checked. Shared by the fuzz targets and by
//! `tests/fuzz_corpus.rs`, which replays the corpus in every test run.

use telemine_codec::decode::{
    Clock, Format, InfluxOptions, Limits, decoder_for, scanner_and_arrow_json,
};
use telemine_codec::schema::{SourceSchema, TimestampUnit};

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

/// JSON: every line is one Kafka message. A message that is not an array
/// becomes exactly one row or one dead letter that keeps its bytes; an
/// array becomes rows and dead letters of that message only.
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
    let is_array = |m: &[u8]| m.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let mut per_message = vec![0usize; messages.len()];
    for o in offsets(&out) {
        per_message[o as usize] += 1;
    }
    for dead in &out.dead {
        let m = messages[dead.offset as usize];
        per_message[dead.offset as usize] += 1;
        if !is_array(m) {
            assert_eq!(dead.payload, m, "dead letters keep their bytes");
        }
    }
    for (i, m) in messages.iter().enumerate() {
        if !is_array(m) {
            assert_eq!(per_message[i], 1, "one row or one dead letter per message");
        } else {
            assert!(per_message[i] >= 1, "an array gives rows or dead letters");
        }
    }
    // Where the flat scanner takes the messages, arrow-json (the general
    // path) makes the same columns of them.
    let (flat, arrow) = scanner_and_arrow_json(&schema(&[]), &messages);
    if let Some(flat) = flat {
        assert_eq!(Some(flat), arrow, "the flat scanner and arrow-json differ");
    }
}

/// collectd's JSON: any bytes as messages (split at newlines), never a
/// panic; every row has an event time and every dead letter its message.
pub fn collectd_decoder(data: &[u8]) {
    let schema = SourceSchema::new(
        [
            "time timestamp",
            "host string",
            "plugin string",
            "type_instance string",
            "dsname string",
            "dstype string",
            "value double",
            "interval double",
        ]
        .iter()
        .map(|c| c.parse().expect("column"))
        .collect(),
        "time",
    )
    .expect("schema")
    .with_time_unit(TimestampUnit::S);
    let mut d = decoder_for(
        &Format::Collectd,
        &InfluxOptions::default(),
        &schema,
        64,
        &limits(),
    )
    .expect("decoder");
    let messages: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    for (i, m) in messages.iter().enumerate() {
        d.push(m, 0, i as i64);
    }
    let out = d.flush();
    for dead in &out.dead {
        assert!(
            (dead.offset as usize) < messages.len(),
            "a message's offset"
        );
    }
    if let Some(b) = &out.batch {
        assert_eq!(b.column(0).null_count(), 0, "every row has an event time");
    }
}

/// The `_offset` of every decoded row.
fn offsets(out: &telemine_codec::decode::Decoded) -> Vec<i64> {
    out.batch.as_ref().map_or_else(Vec::new, |b| {
        b.column_by_name("_offset")
            .expect("offsets")
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .expect("int64")
            .values()
            .to_vec()
    })
}

/// Line protocol: every 0x00 byte separates two messages (a message may
/// hold several lines); a dead letter holds its whole message (not UTF-8,
/// too large, no point) or one of its lines, and a line is a row or a dead
/// letter, never both.
pub fn influx_decoder(data: &[u8]) {
    let options = InfluxOptions {
        measurement_column: Some("m".into()),
        precision: "ns".into(),
        ..Default::default()
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
    let mut dead_lines = vec![0usize; messages.len()];
    for dead in &out.dead {
        let m = messages[dead.offset as usize];
        if dead.payload != m {
            dead_lines[dead.offset as usize] += 1;
            // Lines as the decoder reads them (a UTF-8 message's lines,
            // trimmed).
            let line_of_m = std::str::from_utf8(m)
                .is_ok_and(|t| t.lines().any(|l| l.trim().as_bytes() == dead.payload));
            assert!(
                line_of_m,
                "a dead letter holds its message or one line of it"
            );
        }
    }
    let mut rows = vec![0usize; messages.len()];
    for o in offsets(&out) {
        rows[o as usize] += 1;
    }
    for (i, m) in messages.iter().enumerate() {
        let lines = std::str::from_utf8(m).map_or(1, |t| t.lines().count().max(1));
        assert!(
            rows[i] + dead_lines[i] <= lines,
            "a line is a row or a dead letter"
        );
    }
}
