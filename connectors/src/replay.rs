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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Format, InfluxOptions, decoder_for};
    use crate::schema::SourceSchema;

    #[test]
    fn replays_a_file_with_line_numbers_as_offsets() {
        let dir = std::env::temp_dir().join(format!("telemine-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rec.jsonl");
        std::fs::write(
            &path,
            "{\"ts\":1000,\"host\":\"a\"}\n\n{\"ts\":\"bad\"}\n{\"ts\":3000,\"host\":\"c\"}\n",
        )
        .unwrap();
        let schema = SourceSchema::new(
            vec![
                "ts timestamp".parse().unwrap(),
                "host string".parse().unwrap(),
            ],
            "ts",
        )
        .unwrap();
        let mut decoder = decoder_for(
            &Format::Json,
            &InfluxOptions::default(),
            &schema,
            2,
            &Default::default(),
        )
        .unwrap();
        let (mut rows, mut dead) = (0, Vec::new());
        read_lines(&path, decoder.as_mut(), 2, |d| {
            rows += d.batch.map_or(0, |b| b.num_rows());
            dead.extend(d.dead.into_iter().map(|x| x.offset));
        })
        .unwrap();
        assert_eq!(rows, 2);
        assert_eq!(dead, [3], "the bad record is reported by its line number");
        let missing = read_lines(&dir.join("none.jsonl"), decoder.as_mut(), 2, |_| {});
        assert!(missing.unwrap_err().to_string().contains("cannot open"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
