//! Which buffered rows make up a closing window, and with which bounds,
//! for each kind of window. Pure functions over a source's buffer; the
//! engine (`windows.rs`) decides when to call them and keeps their state.
//!
//! - TUMBLE and HOP panes: rows in `[lo, hi)` of event time, bounds from a
//!   grid aligned to the epoch (the window size, or the HOP slide).
//! - HOP windows: the panes' rows with their pane bounds ([`grid_rows`];
//!   their partial states are merged per window by `crates/sql/src/sliding.rs`), or —
//!   for a view whose aggregate does not split — the rows copied into every
//!   window they fall in ([`hop_rows`]).
//! - SESSION: rows grouped per key and cut wherever two consecutive event
//!   times are a gap or more apart ([`sessions`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use datafusion::arrow::datatypes::{SchemaRef, TimestampMillisecondType};
use datafusion::arrow::row::{RowConverter, SortField};

use telemine_types::error::EngineError;

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(e.to_string())
}

fn times(b: &RecordBatch, ts_index: usize) -> &[i64] {
    b.column(ts_index)
        .as_primitive::<TimestampMillisecondType>()
        .values()
}

/// The lowest and highest event time of a batch.
pub fn time_bounds(b: &RecordBatch, ts_index: usize) -> Option<(i64, i64)> {
    let ts = b
        .column(ts_index)
        .as_primitive::<TimestampMillisecondType>();
    if datafusion::arrow::array::Array::null_count(ts) > 0 {
        return Some((
            datafusion::arrow::compute::min(ts)?,
            datafusion::arrow::compute::max(ts)?,
        ));
    }
    // Event times are never NULL in the buffer: a plain loop the compiler
    // vectorises (this runs over every buffered batch at every close).
    let v = ts.values();
    if v.is_empty() {
        return None;
    }
    Some(
        v.iter()
            .fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t))),
    )
}

/// The buffered rows with `lo <= ts < hi` (no lower bound with `None`).
pub fn rows_in(
    buffer: &[RecordBatch],
    ts_index: usize,
    lo: Option<i64>,
    hi: i64,
) -> Result<Vec<RecordBatch>, EngineError> {
    let mut out = Vec::new();
    for b in buffer {
        // Most buffered batches lie wholly inside or outside the range:
        // the vectorised bounds decide without a mask.
        let Some((min, max)) = time_bounds(b, ts_index) else {
            continue;
        };
        if max < lo.unwrap_or(i64::MIN) || min >= hi {
            continue;
        }
        if min >= lo.unwrap_or(i64::MIN) && max < hi {
            out.push(b.clone());
            continue;
        }
        let t = times(b, ts_index);
        if t.is_sorted() {
            // Rows in event-time order (the usual case within a
            // partition): the range is one slice, no copy.
            let from = lo.map_or(0, |lo| t.partition_point(|&x| x < lo));
            let to = t.partition_point(|&x| x < hi);
            if to > from {
                out.push(b.slice(from, to - from));
            }
            continue;
        }
        let keep = BooleanArray::from(
            t.iter()
                .map(|&t| lo.is_none_or(|lo| t >= lo) && t < hi)
                .collect::<Vec<bool>>(),
        );
        out.extend(filter_rows(b, keep)?);
    }
    Ok(out)
}

/// The rows of `b` that `keep` selects: `b` itself when it selects all,
/// `None` when it selects none.
pub fn filter_rows(
    b: &RecordBatch,
    keep: BooleanArray,
) -> Result<Option<RecordBatch>, EngineError> {
    Ok(match keep.true_count() {
        0 => None,
        n if n == b.num_rows() => Some(b.clone()),
        _ => Some(filter_record_batch(b, &keep).map_err(internal)?),
    })
}

/// Appends `window_start` and `window_end` columns.
pub fn with_bounds(
    rows: &RecordBatch,
    starts: Vec<i64>,
    ends: Vec<i64>,
    schema: &SchemaRef,
) -> Result<RecordBatch, EngineError> {
    let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
    columns.push(Arc::new(TimestampMillisecondArray::from(starts)));
    columns.push(Arc::new(TimestampMillisecondArray::from(ends)));
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| EngineError::Internal(format!("window input: {e}")))
}

/// Rows in `[lo, hi)` with the bounds of their cell of a `grid`-long grid
/// aligned to the epoch (a TUMBLE window or a HOP pane).
pub fn grid_rows(
    buffer: &[RecordBatch],
    ts_index: usize,
    lo: Option<i64>,
    hi: i64,
    grid: i64,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, EngineError> {
    rows_in(buffer, ts_index, lo, hi)?
        .iter()
        .map(|rows| {
            let starts: Vec<i64> = times(rows, ts_index)
                .iter()
                .map(|&t| t - t.rem_euclid(grid))
                .collect();
            let ends = starts.iter().map(|s| s + grid).collect();
            with_bounds(rows, starts, ends, schema)
        })
        .collect()
}

/// HOP without pane sharing: for every window ending in `ends`, its rows
/// (`[end - size, end)`) with its bounds. Each row appears size/slide
/// times.
pub fn hop_rows(
    buffer: &[RecordBatch],
    ts_index: usize,
    size: i64,
    ends: impl Iterator<Item = i64>,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, EngineError> {
    let mut out = Vec::new();
    for end in ends {
        for rows in rows_in(buffer, ts_index, Some(end - size), end)? {
            let n = rows.num_rows();
            out.push(with_bounds(
                &rows,
                vec![end - size; n],
                vec![end; n],
                schema,
            )?);
        }
    }
    Ok(out)
}

/// Splits batches by the value of timestamp column `col`.
/// The distinct values of timestamp column `col` over `batches`.
pub fn distinct_times(
    batches: &[RecordBatch],
    col: usize,
) -> Result<std::collections::BTreeSet<i64>, EngineError> {
    let mut out = std::collections::BTreeSet::new();
    for b in batches {
        let times = b
            .column(col)
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| internal("window bounds are not timestamps"))?;
        out.extend(times.values().iter().copied());
    }
    Ok(out)
}

pub fn split_by_time(
    batches: &[RecordBatch],
    col: usize,
) -> Result<BTreeMap<i64, Vec<RecordBatch>>, EngineError> {
    let mut out: BTreeMap<i64, Vec<RecordBatch>> = BTreeMap::new();
    for b in batches {
        let times = b
            .column(col)
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| internal("window bounds are not timestamps"))?;
        let mut rows: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (i, s) in times.values().iter().enumerate() {
            rows.entry(*s).or_default().push(i as u32);
        }
        if rows.len() == 1 {
            if let Some((s, _)) = rows.pop_first() {
                out.entry(s).or_default().push(b.clone());
            }
            continue;
        }
        for (s, idx) in rows {
            let part = take_record_batch(b, &UInt32Array::from(idx)).map_err(internal)?;
            out.entry(s).or_default().push(part);
        }
    }
    Ok(out)
}

/// What cutting the buffer into sessions found.
#[derive(Debug, Default)]
pub struct Sessions {
    /// Rows of the sessions to emit, with each session's bounds.
    pub rows: Option<RecordBatch>,
    /// Earliest first event time over the sessions still open.
    pub open_from: Option<i64>,
    /// Earliest end over the sessions still open: nothing can close
    /// before the watermark reaches it.
    pub next_end: Option<i64>,
    /// Latest end over the sessions emitted.
    pub max_end: Option<i64>,
    /// Sessions emitted again because records reached them within the
    /// allowed lateness (late firings).
    pub refired: usize,
}

/// Where a record reached a closed session within the allowed lateness:
/// its key (in the row format of [`session_keys`]) and event time.
pub type LateInSession = (Box<[u8]>, i64);

/// The session keys of `rows` of `batch`, in the row format [`sessions`]
/// compares them in.
pub fn session_keys(
    batch: &RecordBatch,
    keys: &[usize],
    rows: &[u32],
) -> Result<Vec<Box<[u8]>>, EngineError> {
    let picked = UInt32Array::from(rows.to_vec());
    let columns = keys
        .iter()
        .map(|&k| datafusion::arrow::compute::take(batch.column(k), &picked, None))
        .collect::<Result<Vec<_>, _>>()
        .map_err(internal)?;
    let (converter, key_rows) = key_rows(&columns)?;
    drop(converter);
    Ok(key_rows.iter().map(|r| r.as_ref().into()).collect())
}

fn key_rows(
    columns: &[ArrayRef],
) -> Result<(RowConverter, datafusion::arrow::row::Rows), EngineError> {
    let converter = RowConverter::new(
        columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )
    .map_err(internal)?;
    let rows = converter.convert_columns(columns).map_err(internal)?;
    Ok((converter, rows))
}

/// Cuts the buffered rows with event time `>= floor` into sessions per
/// key: a session is a run of one key's rows less than `gap` apart, from
/// its first event time to its last plus `gap`. Sessions that end at or
/// before `watermark` are closed; those that also end after `emitted` (the
/// watermark of the previous close), or that one of `late` (sorted)
/// reached, are returned for emission. A closed session that ends no more
/// than `lateness` before the watermark may still take records: its rows
/// are kept (it counts in `open_from`).
#[allow(clippy::too_many_arguments)]
pub fn sessions(
    buffer: &[RecordBatch],
    ts_index: usize,
    keys: &[usize],
    floor: Option<i64>,
    gap: i64,
    watermark: i64,
    emitted: Option<i64>,
    (lateness, late): (i64, &[LateInSession]),
    schema: &SchemaRef,
) -> Result<Sessions, EngineError> {
    let parts = rows_in(buffer, ts_index, floor, i64::MAX)?;
    let mut out = Sessions::default();
    let Some(first) = parts.first() else {
        return Ok(out);
    };
    let all = concat_batches(&first.schema(), &parts).map_err(internal)?;
    let ts = times(&all, ts_index).to_vec();
    let key_columns: Vec<ArrayRef> = keys.iter().map(|&k| all.column(k).clone()).collect();
    let (_converter, key_rows) = key_rows(&key_columns)?;
    let mut order: Vec<u32> = (0..all.num_rows() as u32).collect();
    order.sort_by(|&a, &b| {
        key_rows
            .row(a as usize)
            .cmp(&key_rows.row(b as usize))
            .then(ts[a as usize].cmp(&ts[b as usize]))
    });
    let (mut take, mut starts, mut ends) = (Vec::new(), Vec::new(), Vec::new());
    let mut i = 0;
    while i < order.len() {
        // One session: extend while the same key and less than gap apart.
        let mut j = i + 1;
        while j < order.len() {
            let (prev, next) = (order[j - 1] as usize, order[j] as usize);
            if key_rows.row(prev) != key_rows.row(next) || ts[next] - ts[prev] >= gap {
                break;
            }
            j += 1;
        }
        let start = ts[order[i] as usize];
        let last = ts[order[j - 1] as usize];
        let end = last + gap;
        if end <= watermark {
            let fresh = emitted.is_none_or(|e| end > e);
            let reached = !fresh && !late.is_empty() && {
                let key = key_rows.row(order[i] as usize);
                let at = late.partition_point(|(k, t)| (k.as_ref(), *t) < (key.as_ref(), start));
                late.get(at)
                    .is_some_and(|(k, t)| k.as_ref() == key.as_ref() && *t <= last)
            };
            if fresh || reached {
                take.extend_from_slice(&order[i..j]);
                starts.extend(std::iter::repeat_n(start, j - i));
                ends.extend(std::iter::repeat_n(end, j - i));
                out.max_end = Some(out.max_end.map_or(end, |m: i64| m.max(end)));
                out.refired += usize::from(reached);
            }
            if lateness > 0 && end + lateness >= watermark {
                out.open_from = Some(out.open_from.map_or(start, |o: i64| o.min(start)));
            }
        } else {
            out.open_from = Some(out.open_from.map_or(start, |o: i64| o.min(start)));
            out.next_end = Some(out.next_end.map_or(end, |o: i64| o.min(end)));
        }
        i = j;
    }
    if !take.is_empty() {
        let rows = take_record_batch(&all, &UInt32Array::from(take)).map_err(internal)?;
        out.rows = Some(with_bounds(&rows, starts, ends, schema)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    const TS: usize = 0;
    const HOST: usize = 1;

    /// Rows of (event time ms, host).
    fn batch(rows: &[(i64, &str)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Field::new("host", DataType::Utf8, false),
        ]));
        let ts: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let hosts: Vec<&str> = rows.iter().map(|r| r.1).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMillisecondArray::from(ts)),
                Arc::new(StringArray::from(hosts)),
            ],
        )
        .expect("batch")
    }

    /// The buffer's schema with the window bounds after it.
    fn bounded() -> SchemaRef {
        let mut fields: Vec<Field> = batch(&[])
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for name in ["window_start", "window_end"] {
            fields.push(Field::new(
                name,
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ));
        }
        Arc::new(Schema::new(fields))
    }

    /// Sessions per host with a 10 s gap, no lateness, at `watermark`,
    /// the previous close having been at `emitted`.
    fn sessions_by_host(buffer: &[RecordBatch], watermark: i64, emitted: Option<i64>) -> Sessions {
        sessions(
            buffer,
            TS,
            &[HOST],
            None,
            10_000,
            watermark,
            emitted,
            (0, &[]),
            &bounded(),
        )
        .expect("sessions")
    }

    fn column(batches: &[RecordBatch], i: usize) -> Vec<i64> {
        batches.iter().flat_map(|b| times(b, i).to_vec()).collect()
    }

    fn hosts(b: &RecordBatch) -> Vec<String> {
        let c = b.column(HOST).as_any().downcast_ref::<StringArray>();
        c.map(|c| (0..c.len()).map(|i| c.value(i).to_string()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_tumbling_window_takes_its_rows_from_its_start_up_to_but_not_its_end() {
        let buffer = [
            batch(&[(0, "h1"), (59_999, "h1"), (60_000, "h1")]),
            batch(&[(120_000, "h1")]),
        ];
        let rows = rows_in(&buffer, TS, Some(0), 60_000).expect("rows");
        assert_eq!(column(&rows, TS), vec![0, 59_999]);
        // The whole second batch lies past the end: it is not even looked at.
        assert_eq!(rows.len(), 1);
        let none = rows_in(&buffer, TS, Some(180_000), 240_000).expect("rows");
        assert!(none.is_empty());
    }

    #[test]
    fn hop_panes_carry_the_bounds_of_the_pane_each_row_falls_in() {
        let buffer = [batch(&[
            (1_000, "h1"),
            (9_999, "h1"),
            (10_000, "h2"),
            (19_999, "h2"),
            (25_000, "h1"),
        ])];
        let rows = grid_rows(&buffer, TS, Some(0), 20_000, 10_000, &bounded()).expect("panes");
        assert_eq!(column(&rows, TS), vec![1_000, 9_999, 10_000, 19_999]);
        assert_eq!(column(&rows, 2), vec![0, 0, 10_000, 10_000]);
        assert_eq!(column(&rows, 3), vec![10_000, 10_000, 20_000, 20_000]);
    }

    #[test]
    fn a_hop_window_that_cannot_share_panes_copies_each_row_into_every_window_it_falls_in() {
        // 30 s windows every 10 s, closing at 30 s and 40 s.
        let buffer = [batch(&[(5_000, "h1"), (25_000, "h1"), (35_000, "h1")])];
        let rows = hop_rows(
            &buffer,
            TS,
            30_000,
            [30_000, 40_000].into_iter(),
            &bounded(),
        )
        .expect("rows");
        assert_eq!(column(&rows, TS), vec![5_000, 25_000, 25_000, 35_000]);
        assert_eq!(column(&rows, 2), vec![0, 0, 10_000, 10_000]);
        assert_eq!(column(&rows, 3), vec![30_000, 30_000, 40_000, 40_000]);
    }

    #[test]
    fn sessions_are_cut_per_key_at_a_gap_and_close_once_the_watermark_passes_their_end() {
        let buffer = [batch(&[
            (0, "h1"),
            (5_000, "h1"),
            (20_000, "h1"),
            (1_000, "h2"),
        ])];
        let s = sessions_by_host(&buffer, 16_000, None);
        // h1's first session [0, 15 s) and h2's [1 s, 11 s) are closed;
        // h1's second, from 20 s, stays open until 30 s.
        let rows = s.rows.expect("closed sessions");
        assert_eq!(hosts(&rows), vec!["h1", "h1", "h2"]);
        assert_eq!(column(std::slice::from_ref(&rows), 2), vec![0, 0, 1_000]);
        assert_eq!(
            column(std::slice::from_ref(&rows), 3),
            vec![15_000, 15_000, 11_000]
        );
        assert_eq!(s.open_from, Some(20_000));
        assert_eq!(s.next_end, Some(30_000));
        assert_eq!(s.max_end, Some(15_000));
        assert_eq!(s.refired, 0);
    }

    #[test]
    fn a_session_already_emitted_is_not_emitted_again() {
        let buffer = [batch(&[(0, "h1"), (5_000, "h1"), (20_000, "h1")])];
        let s = sessions_by_host(&buffer, 40_000, Some(16_000));
        let rows = s.rows.expect("the second session");
        assert_eq!(column(std::slice::from_ref(&rows), TS), vec![20_000]);
        assert_eq!(s.open_from, None);
    }

    #[test]
    fn closed_windows_split_by_their_start() {
        let rows = grid_rows(
            &[batch(&[(1_000, "h1"), (11_000, "h1"), (12_000, "h2")])],
            TS,
            None,
            20_000,
            10_000,
            &bounded(),
        )
        .expect("panes");
        let by_start = split_by_time(&rows, 2).expect("split");
        let counts: Vec<(i64, usize)> = by_start
            .iter()
            .map(|(s, b)| (*s, b.iter().map(|b| b.num_rows()).sum()))
            .collect();
        assert_eq!(counts, vec![(0, 1), (10_000, 2)]);
        assert_eq!(
            distinct_times(&rows, 3)
                .expect("ends")
                .into_iter()
                .collect::<Vec<_>>(),
            vec![10_000, 20_000]
        );
    }
}
