//! JSON decoder: every line of the input is one Kafka message. Whatever
//! the bytes, decoding never panics, never recurses without bound, and
//! every message becomes exactly one row or one dead letter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemine_connectors::decode::{Format, InfluxOptions, decoder_for};

fuzz_target!(|data: &[u8]| {
    let (schema, limits) = (telemine_fuzz::schema(&[]), telemine_fuzz::limits());
    let mut d = decoder_for(
        &Format::Json,
        &InfluxOptions::default(),
        &schema,
        64,
        &limits,
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
});
