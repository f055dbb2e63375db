//! Line-protocol decoder: every 0x00 byte of the input separates two Kafka
//! messages (a message may hold several lines). Whatever the bytes,
//! decoding never panics, and every message is either wholly rows or one
//! dead letter carrying its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemine_connectors::decode::{Format, InfluxOptions, decoder_for};

fuzz_target!(|data: &[u8]| {
    let (schema, limits) = (
        telemine_fuzz::schema(&["m string"]),
        telemine_fuzz::limits(),
    );
    let options = InfluxOptions {
        measurement_column: Some("m".into()),
        precision: "ns".into(),
    };
    let mut d = decoder_for(&Format::Influx, &options, &schema, 64, &limits).expect("decoder");
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
});
