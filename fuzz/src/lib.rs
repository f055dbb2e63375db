//! What the fuzz targets share: the source they decode for.

use telemine_connectors::decode::{Clock, Limits};
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
