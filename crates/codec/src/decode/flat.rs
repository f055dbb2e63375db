//! A schema-driven scanner for the commonest message: one flat JSON object
//! whose declared fields hold scalars of their column's type. It reads each
//! payload once, straight into Arrow builders, with no tape and no per-row
//! value; a field the schema does not declare is skipped over whatever it
//! holds.
//!
//! It only takes what it decodes exactly as arrow-json would. Anything else
//! in a flush — an escaped key, a declared field twice, a value of another
//! JSON type than its column's (a string for a number, a fraction for an
//! integer, an object), a missing non-nullable field, text after the
//! object, bytes that are not JSON — makes [`FlatScanner::scan`] give up
//! on the whole flush, and `json.rs` decodes it through arrow-json as
//! before, which names the bad record. So the scanner changes how fast a
//! flush decodes, never what it decodes to (`tests` hold it to arrow-json
//! on generated records).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::compute::kernels::cast_utils::string_to_datetime;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};

/// One declared column and what it is building.
enum Column {
    Utf8(StringBuilder),
    Float64(Float64Builder),
    Int64(Int64Builder),
    Boolean(BooleanBuilder),
    /// Milliseconds from numbers, or from RFC 3339 strings.
    TimestampMs(TimestampMillisecondBuilder),
}

/// Why a flush goes to arrow-json instead: nothing to report, the general
/// path decodes it (or names what is wrong with it).
struct GiveUp;

type Step<T> = Result<T, GiveUp>;

/// Decodes flat objects of a fixed schema into Arrow columns: see the
/// module docs.
pub(crate) struct FlatScanner {
    names: Vec<Vec<u8>>,
    nullable: Vec<bool>,
    types: Vec<DataType>,
    /// Per column, the row that last set it (duplicates and missing
    /// fields).
    seen: Vec<usize>,
}

impl FlatScanner {
    /// A scanner for `raw`'s columns, if every one has a type it decodes.
    pub(crate) fn new(raw: &SchemaRef) -> Option<FlatScanner> {
        let mut names = Vec::new();
        let mut nullable = Vec::new();
        let mut types = Vec::new();
        for f in raw.fields() {
            match f.data_type() {
                DataType::Utf8 | DataType::Float64 | DataType::Int64 | DataType::Boolean => {}
                DataType::Timestamp(TimeUnit::Millisecond, None) => {}
                _ => return None,
            }
            names.push(f.name().as_bytes().to_vec());
            nullable.push(f.is_nullable());
            types.push(f.data_type().clone());
        }
        let seen = vec![usize::MAX; names.len()];
        Some(FlatScanner {
            names,
            nullable,
            types,
            seen,
        })
    }

    /// The columns of every payload, in order; `None`: a payload is not a
    /// flat object the scanner decodes exactly (see the module docs).
    pub(crate) fn scan<'a>(
        &mut self,
        payloads: impl ExactSizeIterator<Item = &'a [u8]>,
    ) -> Option<Vec<ArrayRef>> {
        let rows = payloads.len();
        let mut columns: Vec<Column> = self
            .types
            .iter()
            .map(|t| match t {
                DataType::Utf8 => Column::Utf8(StringBuilder::with_capacity(rows, rows * 8)),
                DataType::Float64 => Column::Float64(Float64Builder::with_capacity(rows)),
                DataType::Int64 => Column::Int64(Int64Builder::with_capacity(rows)),
                DataType::Boolean => Column::Boolean(BooleanBuilder::with_capacity(rows)),
                _ => Column::TimestampMs(TimestampMillisecondBuilder::with_capacity(rows)),
            })
            .collect();
        self.seen.fill(usize::MAX);
        for (row, payload) in payloads.enumerate() {
            self.row(payload, row, &mut columns).ok()?;
        }
        Some(
            columns
                .into_iter()
                .map(|c| -> ArrayRef {
                    match c {
                        Column::Utf8(mut b) => Arc::new(b.finish()),
                        Column::Float64(mut b) => Arc::new(b.finish()),
                        Column::Int64(mut b) => Arc::new(b.finish()),
                        Column::Boolean(mut b) => Arc::new(b.finish()),
                        Column::TimestampMs(mut b) => Arc::new(b.finish()),
                    }
                })
                .collect(),
        )
    }

    /// One payload into row `row` of `columns`.
    fn row(&mut self, p: &[u8], row: usize, columns: &mut [Column]) -> Step<()> {
        // Valid UTF-8 throughout (arrow-json refuses it anywhere), checked
        // once: every string between two quotes is then valid too.
        let text = std::str::from_utf8(p).map_err(|_| GiveUp)?;
        let mut at = skip_ws(p, 0);
        expect(p, &mut at, b'{')?;
        at = skip_ws(p, at);
        // Fields usually come in the order of the last record's: try the
        // column after the last one matched first.
        let mut next = 0;
        if p.get(at) == Some(&b'}') {
            at += 1;
        } else {
            loop {
                let key = plain_string(text, &mut at)?;
                at = skip_ws(p, at);
                expect(p, &mut at, b':')?;
                at = skip_ws(p, at);
                match self.column_of(key, next) {
                    Some(c) => {
                        if self.seen[c] == row {
                            return Err(GiveUp);
                        }
                        self.seen[c] = row;
                        value(text, &mut at, &mut columns[c])?;
                        next = c + 1;
                    }
                    None => skip_value(text, &mut at, 0)?,
                }
                at = skip_ws(p, at);
                match p.get(at) {
                    Some(b',') => {
                        at = skip_ws(p, at + 1);
                    }
                    Some(b'}') => {
                        at += 1;
                        break;
                    }
                    _ => return Err(GiveUp),
                }
            }
        }
        if skip_ws(p, at) != p.len() {
            return Err(GiveUp);
        }
        // Fields the record left out are null.
        for (c, column) in columns.iter_mut().enumerate() {
            if self.seen[c] != row {
                if !self.nullable[c] {
                    return Err(GiveUp);
                }
                append_null(column);
            }
        }
        Ok(())
    }

    fn column_of(&self, key: &[u8], hint: usize) -> Option<usize> {
        if self.names.get(hint).is_some_and(|n| n == key) {
            return Some(hint);
        }
        self.names.iter().position(|n| n == key)
    }
}

fn append_null(column: &mut Column) {
    match column {
        Column::Utf8(b) => b.append_null(),
        Column::Float64(b) => b.append_null(),
        Column::Int64(b) => b.append_null(),
        Column::Boolean(b) => b.append_null(),
        Column::TimestampMs(b) => b.append_null(),
    }
}

fn skip_ws(p: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = p.get(at) {
        at += 1;
    }
    at
}

fn expect(p: &[u8], at: &mut usize, byte: u8) -> Step<()> {
    if p.get(*at) == Some(&byte) {
        *at += 1;
        Ok(())
    } else {
        Err(GiveUp)
    }
}

/// A string at `at`: `Ok(Ok(text))` between the quotes if it has no
/// escape, `Ok(Err(start))` (its opening quote) if it has one; a control
/// character or no closing quote gives up.
fn raw_string<'a>(text: &'a str, at: &mut usize) -> Step<Result<&'a str, usize>> {
    let p = text.as_bytes();
    expect(p, at, b'"')?;
    let start = *at;
    let end = p
        .get(start..)
        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
        .map(|k| start + k)
        .ok_or(GiveUp)?;
    if p[start..end].iter().any(|&b| b < 0x20) {
        return Err(GiveUp);
    }
    if p[end] == b'\\' {
        return Ok(Err(start - 1));
    }
    *at = end + 1;
    // Quotes are ASCII: the slice starts and ends on a char boundary.
    text.get(start..end).map(Ok).ok_or(GiveUp)
}

/// A key: a string without escapes.
fn plain_string<'a>(text: &'a str, at: &mut usize) -> Step<&'a [u8]> {
    match raw_string(text, at)? {
        Ok(s) => Ok(s.as_bytes()),
        Err(_) => Err(GiveUp),
    }
}

/// A string value, escapes decoded.
fn string_value<'a>(text: &'a str, at: &mut usize) -> Step<std::borrow::Cow<'a, str>> {
    let p = text.as_bytes();
    match raw_string(text, at)? {
        Ok(s) => Ok(std::borrow::Cow::Borrowed(s)),
        Err(start) => {
            // An escape: find the closing quote, then let serde_json
            // decode the escapes.
            let mut i = start + 1;
            loop {
                match p.get(i) {
                    Some(b'\\') => i += 2,
                    Some(b'"') => break,
                    Some(0..=0x1f) | None => return Err(GiveUp),
                    Some(_) => i += 1,
                }
            }
            let s: String = serde_json::from_slice(&p[start..=i]).map_err(|_| GiveUp)?;
            *at = i + 1;
            Ok(std::borrow::Cow::Owned(s))
        }
    }
}

/// A number's text, checked against JSON's grammar; whether it is an
/// integer (no fraction, no exponent).
fn number<'a>(text: &'a str, at: &mut usize) -> Step<(&'a str, bool)> {
    let p = text.as_bytes();
    let start = *at;
    let mut i = start;
    let digits = |i: &mut usize| {
        let from = *i;
        while p.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - from
    };
    if p.get(i) == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    let n = digits(&mut i);
    if n == 0 || (n > 1 && p[int_start] == b'0') {
        return Err(GiveUp);
    }
    let mut integer = true;
    if p.get(i) == Some(&b'.') {
        i += 1;
        integer = false;
        if digits(&mut i) == 0 {
            return Err(GiveUp);
        }
    }
    if let Some(b'e' | b'E') = p.get(i) {
        i += 1;
        integer = false;
        if let Some(b'+' | b'-') = p.get(i) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return Err(GiveUp);
        }
    }
    *at = i;
    // ASCII by construction.
    Ok((text.get(start..i).ok_or(GiveUp)?, integer))
}

/// A number's text (JSON's grammar, checked) as `str::parse` reads it,
/// with a shortcut for the commonest kind: at most 15 digits and no
/// exponent. Then the digits as an integer and the power of ten are both
/// exact doubles, and one IEEE division rounds their quotient correctly
/// (Clinger's fast path), so the result is the same.
fn parse_f64(text: &str) -> Option<f64> {
    const POW10: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let bytes = text.as_bytes();
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    let (mut mantissa, mut count, mut fraction, mut dot) = (0u64, 0usize, 0usize, false);
    for &c in digits {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(c - b'0');
                count += 1;
                fraction += usize::from(dot);
                if count > 15 {
                    return text.parse().ok();
                }
            }
            b'.' => dot = true,
            _ => return text.parse().ok(),
        }
    }
    let v = mantissa as f64 / POW10[fraction];
    Some(if negative { -v } else { v })
}

fn literal(p: &[u8], at: &mut usize, word: &[u8]) -> Step<()> {
    if p.get(*at..*at + word.len()) == Some(word) {
        *at += word.len();
        Ok(())
    } else {
        Err(GiveUp)
    }
}

/// A declared field's value into its column.
fn value(text: &str, at: &mut usize, column: &mut Column) -> Step<()> {
    let p = text.as_bytes();
    if p.get(*at) == Some(&b'n') {
        literal(p, at, b"null")?;
        append_null(column);
        return Ok(());
    }
    match column {
        Column::Utf8(b) => {
            if p.get(*at) != Some(&b'"') {
                return Err(GiveUp);
            }
            b.append_value(string_value(text, at)?);
        }
        Column::Float64(b) => {
            let (num, _) = number(text, at)?;
            b.append_value(parse_f64(num).ok_or(GiveUp)?);
        }
        Column::Int64(b) => {
            let (num, integer) = number(text, at)?;
            if !integer {
                return Err(GiveUp);
            }
            b.append_value(num.parse::<i64>().map_err(|_| GiveUp)?);
        }
        Column::Boolean(b) => match p.get(*at) {
            Some(b't') => {
                literal(p, at, b"true")?;
                b.append_value(true);
            }
            Some(b'f') => {
                literal(p, at, b"false")?;
                b.append_value(false);
            }
            _ => return Err(GiveUp),
        },
        Column::TimestampMs(b) => {
            if p.get(*at) == Some(&b'"') {
                let s = string_value(text, at)?;
                let t = string_to_datetime(&chrono::Utc, &s).map_err(|_| GiveUp)?;
                b.append_value(t.timestamp_millis());
            } else {
                let (num, integer) = number(text, at)?;
                if !integer {
                    return Err(GiveUp);
                }
                b.append_value(num.parse::<i64>().map_err(|_| GiveUp)?);
            }
        }
    }
    Ok(())
}

/// Past one value of any type (an undeclared field's). `depth`: the
/// containers it is inside (the guard bounds a payload's nesting before
/// it gets here; this bound only keeps the recursion safe on its own).
fn skip_value(text: &str, at: &mut usize, depth: usize) -> Step<()> {
    let p = text.as_bytes();
    if depth > 128 {
        return Err(GiveUp);
    }
    match p.get(*at) {
        Some(b'"') => {
            string_value(text, at)?;
        }
        Some(b'{') | Some(b'[') => {
            let close = if p[*at] == b'{' { b'}' } else { b']' };
            let object = close == b'}';
            *at = skip_ws(p, *at + 1);
            if p.get(*at) == Some(&close) {
                *at += 1;
                return Ok(());
            }
            loop {
                if object {
                    string_value(text, at)?;
                    *at = skip_ws(p, *at);
                    expect(p, at, b':')?;
                    *at = skip_ws(p, *at);
                }
                skip_value(text, at, depth + 1)?;
                *at = skip_ws(p, *at);
                match p.get(*at) {
                    Some(b',') => *at = skip_ws(p, *at + 1),
                    Some(&c) if c == close => {
                        *at += 1;
                        break;
                    }
                    _ => return Err(GiveUp),
                }
            }
        }
        Some(b't') => literal(p, at, b"true")?,
        Some(b'f') => literal(p, at, b"false")?,
        Some(b'n') => literal(p, at, b"null")?,
        _ => {
            number(text, at)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("host", DataType::Utf8, true),
            Field::new("cpu", DataType::Float64, true),
            Field::new("n", DataType::Int64, true),
            Field::new("up", DataType::Boolean, true),
        ]))
    }

    fn arrow_json(schema: &SchemaRef, payloads: &[&[u8]]) -> Option<Vec<ArrayRef>> {
        super::super::json::arrow_json_of(schema, payloads)
    }

    fn scan(schema: &SchemaRef, payloads: &[&[u8]]) -> Option<Vec<ArrayRef>> {
        FlatScanner::new(schema)?.scan(payloads.iter().copied())
    }

    #[test]
    fn flat_objects_decode_as_arrow_json_decodes_them() {
        let s = schema();
        let records: [&[u8]; 6] = [
            br#"{"ts":"2026-12-08T00:00:01Z","host":"h1","cpu":12.5,"n":3,"up":true}"#,
            br#" { "host" : "h\u00e9\"2" , "ts" : 1765152000000 , "cpu" : -1e-3 } "#,
            br#"{"ts":"2026-12-08T00:00:02.250+01:00","extra":{"a":[1,{"b":"}"}],"c":null},"cpu":7}"#,
            br#"{}"#,
            br#"{"host":null,"cpu":null,"n":-9223372036854775808,"up":false,"x":"\\"}"#,
            "{\"host\":\"ünïcode ✓\",\"cpu\":0.1,\"n\":0}".as_bytes(),
        ];
        let ours = scan(&s, &records).expect("the scanner takes these");
        assert_eq!(Some(ours), arrow_json(&s, &records));
    }

    #[test]
    fn anything_else_goes_to_arrow_json() {
        let s = schema();
        for bad in [
            &br#"{"cpu":"12.5"}"#[..],
            br#"{"n":1.5}"#,
            br#"{"n":1e3}"#,
            br#"{"host":7}"#,
            br#"{"up":"true"}"#,
            br#"{"cpu":1,"cpu":2}"#,
            br#"{"h\u006fst":"a"}"#,
            br#"{"cpu":01}"#,
            br#"{"cpu":1.}"#,
            br#"{"cpu":NaN}"#,
            br#"{"cpu":1} {"cpu":2}"#,
            br#"{"cpu":1"#,
            br#"[{"cpu":1}]"#,
            br#"{"host":"a
b"}"#,
            br#"{"ts":"yesterday"}"#,
            br#"{"cpu":{"v":1}}"#,
            b"{\"host\":\"\xff\"}",
            br#"{"n":99999999999999999999}"#,
        ] {
            assert!(
                scan(&s, &[bad]).is_none(),
                "{} is left to arrow-json",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn numbers_read_as_the_standard_parser_reads_them() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut texts: Vec<String> = [
            "0",
            "-0",
            "-0.0",
            "0.1",
            "0.30000000000000004",
            "123456789012345",
            "1234567890123456",
            "999999999999999.9",
            "0.000000000000001",
            "1e5",
            "-2.5E-3",
            "9007199254740993",
            "4.35",
            "17976931348623157e292",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for _ in 0..20_000 {
            let r = next();
            let int = (r >> 20) % 10u64.pow((r % 16) as u32 + 1);
            let frac = r % 1_000_000;
            let sign = if r & 1 == 1 { "-" } else { "" };
            texts.push(match (r >> 8) % 3 {
                0 => format!("{sign}{int}"),
                1 => format!("{sign}{int}.{frac}"),
                _ => format!("{sign}{int}.{:02}", frac % 100),
            });
        }
        for t in &texts {
            let want: f64 = t.parse().unwrap();
            let got = parse_f64(t).unwrap();
            assert_eq!(got.to_bits(), want.to_bits(), "{t}");
        }
    }

    #[test]
    fn a_missing_non_nullable_field_is_left_to_arrow_json() {
        let s: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Float64, false),
            Field::new("b", DataType::Float64, true),
        ]));
        assert!(scan(&s, &[br#"{"b":1}"#]).is_none());
        assert!(scan(&s, &[br#"{"a":1}"#]).is_some());
    }

    #[test]
    fn an_undeclared_field_nested_past_the_skip_bound_is_left_to_arrow_json() {
        let s = schema();
        let nested = |levels: usize| {
            format!(
                r#"{{"cpu":1,"x":{}1{}}}"#,
                "[".repeat(levels),
                "]".repeat(levels)
            )
        };
        let within = nested(128);
        assert!(scan(&s, &[within.as_bytes()]).is_some());
        let past = nested(129);
        assert!(scan(&s, &[past.as_bytes()]).is_none());
    }

    #[test]
    fn other_column_types_are_not_scanned() {
        let s: SchemaRef = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, true)]));
        assert!(FlatScanner::new(&s).is_none());
    }

    /// Generated records, well-formed or slightly broken: wherever the
    /// scanner takes a flush, arrow-json decodes it to the same columns.
    #[test]
    fn generated_records_decode_alike_or_are_left_to_arrow_json() {
        let s = schema();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let pieces: [&str; 16] = [
            r#""ts":"2026-12-08T00:00:00Z""#,
            r#""ts":1765152000123"#,
            r#""host":"h\n1""#,
            r#""host":"h1""#,
            r#""cpu":3.25e2"#,
            r#""cpu":-0"#,
            r#""cpu":null"#,
            r#""n":42"#,
            r#""n":-7"#,
            r#""up":true"#,
            r#""other":[1,2,{"x":"y"}]"#,
            r#""o":{}"#,
            r#""cpu":"1""#,
            r#""n":2.5"#,
            r#""up":nul"#,
            r#""host":"\ud83d\ude00""#,
        ];
        let mut taken = 0;
        for _ in 0..2000 {
            let rows = 1 + next(4) as usize;
            let texts: Vec<String> = (0..rows)
                .map(|_| {
                    let fields: Vec<&str> = (0..next(6))
                        .map(|_| pieces[next(pieces.len() as u64) as usize])
                        .collect();
                    format!("{{{}}}", fields.join(","))
                })
                .collect();
            let payloads: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
            if let Some(ours) = scan(&s, &payloads) {
                taken += 1;
                assert_eq!(Some(ours), arrow_json(&s, &payloads), "{texts:?}");
            }
        }
        assert!(taken > 100, "the scanner took {taken} flushes");
    }
}
