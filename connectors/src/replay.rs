//! File replay: recorded JSONL data through the same decoders as Kafka.
//!
//! Each line of the file is one record, as if it were one Kafka message;
//! its "partition" is 0 and its "offset" is the line number (from 1), so a
//! dead letter points at the line to fix.

use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::ConnectorError;
use crate::decode::{Decoded, Decoder};

/// Reads a JSONL (or line-protocol) file and yields decoded chunks of at
/// most `chunk` lines each.
pub fn read_lines(
    path: &Path,
    decoder: &mut dyn Decoder,
    chunk: usize,
    mut each: impl FnMut(Decoded),
) -> Result<(), ConnectorError> {
    let file = std::fs::File::open(path).map_err(|e| ConnectorError::File {
        path: path.display().to_string(),
        message: format!("cannot open: {e}"),
    })?;
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(|e| ConnectorError::File {
            path: path.display().to_string(),
            message: format!("read failed at line {}: {e}", i + 1),
        })?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        decoder.push(&line, 0, i as i64 + 1);
        if decoder.buffered() >= chunk {
            each(decoder.flush());
        }
    }
    if decoder.buffered() > 0 {
        each(decoder.flush());
    }
    Ok(())
}
