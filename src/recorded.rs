//! Recorded data: files of past records read into a source's batches, for
//! `dry-run` (and, later, training); and reference tables read from CSV.
//!
//! Three formats, chosen by extension:
//! - `.jsonl` / `.ndjson` / `.json` (or anything else): one record per line
//!   in the source's own format (JSON objects, or line protocol for an
//!   `influx` source), through the same decoder Kafka records go through;
//!   a malformed line is a dead letter, not an abort;
//! - `.csv`: a header row naming columns; declared columns are cast to
//!   their declared type, the event time may be RFC 3339 or epoch ms;
//! - `.parquet`: columns matched by name and cast to the declared types.
//!
//! Every batch comes out in the source's batch schema, with `_partition`
//! 0 and `_offset` the record's row number (from 0), so a dry run's late
//! records and dead letters say which row they were.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, Int64Array, RecordBatch, new_null_array,
};
use datafusion::arrow::compute::{CastOptions, cast, cast_with_options, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use telemine_codec::decode::{DeadLetter, decoder_for};
use telemine_codec::schema::{ColumnSpec, ColumnType, EVENT_TIME_TYPE};
use thiserror::Error;

use telemine_sql::source::SourceDef;

/// Why a recorded file cannot be read.
#[derive(Debug, Error)]
pub enum RecordedError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> RecordedError {
    RecordedError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// A recorded file, decoded.
#[derive(Debug, Default)]
pub struct Recorded {
    pub batches: Vec<RecordBatch>,
    /// Lines that did not decode (JSONL / line protocol only).
    pub dead: Vec<DeadLetter>,
}

/// Rows per batch read from a file.
const BATCH_ROWS: usize = 8192;

/// Reads `path` as records of `source`.
pub fn read(path: &Path, source: &SourceDef) -> Result<Recorded, RecordedError> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "csv" => read_csv(path, source),
        "parquet" => read_parquet(path, source),
        _ => read_lines(path, source),
    }
}

fn read_lines(path: &Path, source: &SourceDef) -> Result<Recorded, RecordedError> {
    let file = File::open(path).map_err(|e| file_error(path, e))?;
    let mut decoder = decoder_for(
        &source.format,
        &source.influx,
        &source.schema,
        BATCH_ROWS,
        &source.limits,
    )
    .map_err(|e| file_error(path, e))?;
    let mut out = Recorded::default();
    let mut pending = 0;
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| file_error(path, format!("line {}: {e}", n + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        decoder.push(line.as_bytes(), 0, n as i64);
        pending += 1;
        if pending == BATCH_ROWS {
            take(&mut out, decoder.flush());
            pending = 0;
        }
    }
    take(&mut out, decoder.flush());
    Ok(out)
}

fn take(out: &mut Recorded, d: telemine_codec::decode::Decoded) {
    out.batches.extend(d.batch.filter(|b| b.num_rows() > 0));
    out.dead.extend(d.dead);
}

fn read_csv(path: &Path, source: &SourceDef) -> Result<Recorded, RecordedError> {
    conform_all(path, csv_as_text(path)?, source)
}

/// The batches a CSV or Parquet reader yields, each conformed to the
/// source's batch schema, numbering rows from 0.
fn conform_all(
    path: &Path,
    batches: impl Iterator<Item = Result<RecordBatch, datafusion::arrow::error::ArrowError>>,
    source: &SourceDef,
) -> Result<Recorded, RecordedError> {
    let mut out = Recorded::default();
    let mut row = 0i64;
    for batch in batches {
        let batch = batch.map_err(|e| file_error(path, format!("after row {row}: {e}")))?;
        let n = batch.num_rows();
        out.batches.push(conform(path, &batch, source, row)?);
        row += n as i64;
    }
    Ok(out)
}

/// A reference table: the declared columns of a CSV file with a header,
/// cast to their types (a value that does not parse is an error, not a
/// null), in one batch.
pub fn read_table(path: &Path, columns: &[ColumnSpec]) -> Result<RecordBatch, RecordedError> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.ty.data_type(), true))
            .collect::<Vec<_>>(),
    ));
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    let mut batches = Vec::new();
    for batch in csv_as_text(path)? {
        let batch = batch.map_err(|e| file_error(path, e))?;
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(columns.len());
        for c in columns {
            let col = batch.column_by_name(&c.name).ok_or_else(|| {
                file_error(
                    path,
                    format!("declared column `{}` is not in the header row", c.name),
                )
            })?;
            let cast_col = if c.ty == ColumnType::Timestamp {
                event_time(col)
            } else {
                cast_with_options(col, &c.ty.data_type(), &strict)
            }
            .map_err(|e| file_error(path, format!("column `{}`: {e}", c.name)))?;
            cols.push(cast_col);
        }
        batches.push(RecordBatch::try_new(schema.clone(), cols).map_err(|e| file_error(path, e))?);
    }
    concat_batches(&schema, &batches).map_err(|e| file_error(path, e))
}

/// Reads a CSV file with a header row, every column as text.
fn csv_as_text(
    path: &Path,
) -> Result<datafusion::arrow::csv::Reader<BufReader<File>>, RecordedError> {
    let file = File::open(path).map_err(|e| file_error(path, e))?;
    // Read every column as text and cast the declared ones: a header row
    // may have extra columns, and timestamps come in two shapes.
    let mut reader = BufReader::new(file);
    let mut header = String::new();
    reader
        .read_line(&mut header)
        .map_err(|e| file_error(path, e))?;
    let names: Vec<String> = header
        .trim_end()
        .split(',')
        .map(|n| n.trim().trim_matches('"').to_string())
        .collect();
    let text_schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    datafusion::arrow::csv::ReaderBuilder::new(text_schema)
        .with_header(false)
        .with_batch_size(BATCH_ROWS)
        .build(reader)
        .map_err(|e| file_error(path, e))
}

fn read_parquet(path: &Path, source: &SourceDef) -> Result<Recorded, RecordedError> {
    let file = File::open(path).map_err(|e| file_error(path, e))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| file_error(path, e))?
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| file_error(path, e))?;
    conform_all(path, reader, source)
}

/// Builds the source's batch from a file's batch: declared columns by name
/// (null when absent), cast to their types, plus `_partition` and
/// `_offset`. Rows without an event time are an error naming the row.
fn conform(
    path: &Path,
    batch: &RecordBatch,
    source: &SourceDef,
    first_row: i64,
) -> Result<RecordBatch, RecordedError> {
    let schema = source.schema.batch_schema();
    let n = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, spec) in source.schema.columns().iter().enumerate() {
        let target = schema.field(i).data_type();
        let Some(col) = batch.column_by_name(&spec.name) else {
            columns.push(new_null_array(target, n));
            continue;
        };
        let cast_col = if i == source.schema.event_time_index() {
            event_time(col)
        } else {
            cast(col, target)
        }
        .map_err(|e| file_error(path, format!("column `{}`: {e}", spec.name)))?;
        if i == source.schema.event_time_index() && cast_col.null_count() > 0 {
            let bad = (0..n).find(|&r| cast_col.is_null(r)).unwrap_or(0);
            return Err(file_error(
                path,
                format!(
                    "row {}: event time `{}` is missing or not a timestamp (RFC 3339 or epoch milliseconds)",
                    first_row + bad as i64,
                    spec.name
                ),
            ));
        }
        columns.push(cast_col);
    }
    columns.push(Arc::new(Int32Array::from(vec![0; n])));
    columns.push(Arc::new(Int64Array::from_iter_values(
        first_row..first_row + n as i64,
    )));
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| file_error(path, e))
}

/// Event time from text (RFC 3339 or epoch ms), integers (epoch ms) or any
/// timestamp unit, as milliseconds.
fn event_time(col: &ArrayRef) -> Result<ArrayRef, datafusion::arrow::error::ArrowError> {
    match col.data_type() {
        DataType::Utf8 => {
            let text = col.as_string::<i32>();
            let numeric = (0..text.len())
                .find(|&i| !text.is_null(i))
                .is_some_and(|i| text.value(i).trim().parse::<i64>().is_ok());
            if numeric {
                let ms = cast(col, &DataType::Int64)?;
                cast(&ms, &EVENT_TIME_TYPE)
            } else {
                cast(col, &EVENT_TIME_TYPE)
            }
        }
        DataType::Timestamp(_, _) => {
            let plain = cast(col, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
            Ok(plain)
        }
        _ => {
            let ms = cast(col, &DataType::Int64)?;
            cast(&ms, &EVENT_TIME_TYPE)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use datafusion::arrow::datatypes::{Float64Type, TimestampMillisecondType};

    use super::*;

    fn source() -> SourceDef {
        SourceDef::for_tests(&["host string", "cpu double"], &[])
    }

    fn write(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        (dir, path)
    }

    #[test]
    fn csv_with_both_time_shapes_and_extra_columns() {
        let s = source();
        let (_d, p) = write(
            "a.csv",
            "host,ts,cpu,extra\nh1,2026-11-27T00:00:01Z,5.5,x\nh2,2026-11-27T00:00:02Z,,y\n",
        );
        let r = read(&p, &s).unwrap();
        let b = &r.batches[0];
        assert_eq!(b.num_rows(), 2);
        let ts = b.column(0).as_primitive::<TimestampMillisecondType>();
        assert_eq!(ts.value(1), 1_795_737_602_000);
        let cpu = b.column(2).as_primitive::<Float64Type>();
        assert_eq!(cpu.value(0), 5.5);
        assert!(cpu.is_null(1));
        let (_d, p) = write("b.csv", "ts,host,cpu\n1795737601000,h1,1\n");
        let r = read(&p, &s).unwrap();
        let ts = r.batches[0]
            .column(0)
            .as_primitive::<TimestampMillisecondType>();
        assert_eq!(ts.value(0), 1_795_737_601_000);
    }

    #[test]
    fn csv_row_without_event_time_is_named() {
        let (_d, p) = write("a.csv", "ts,host,cpu\n1795737601000,h1,1\n,h2,2\n");
        let e = read(&p, &source()).unwrap_err().to_string();
        assert!(e.contains("row 1"), "{e}");
    }

    #[test]
    fn jsonl_bad_lines_become_dead_letters_with_their_line() {
        let (_d, p) = write(
            "a.jsonl",
            "{\"ts\":1795737601000,\"host\":\"h1\",\"cpu\":1}\nnot json\n",
        );
        let r = read(&p, &source()).unwrap();
        assert_eq!(r.batches[0].num_rows(), 1);
        assert_eq!(r.dead.len(), 1);
        assert_eq!(r.dead[0].offset, 1);
    }
}
