//! Reading the labelled corpora `telemine eval` scores against: NAB's
//! layout (`data/<category>/<name>.csv`, `labels/combined_windows.json`)
//! and the ASD layout (`omi-N.train.csv`, `omi-N.test.csv`, `omi-N.txt`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which layout a folder holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    Nab,
    Asd,
}

pub fn layout(dir: &Path) -> Result<Layout, String> {
    if dir.join("labels/combined_windows.json").exists() {
        return Ok(Layout::Nab);
    }
    let has_test = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().ends_with(".test.csv"));
    if has_test {
        return Ok(Layout::Asd);
    }
    Err(format!(
        "{}: neither NAB's layout (labels/combined_windows.json, data/<category>/*.csv) nor ASD's (*.train.csv, *.test.csv)",
        dir.display()
    ))
}

/// One NAB series with its labelled windows as record indices.
#[derive(Debug, Clone)]
pub struct NabSeries {
    /// `category/name.csv`, as the labels name it.
    pub name: String,
    pub timestamps: Vec<String>,
    pub values: Vec<f64>,
    /// Inclusive index ranges, in order.
    pub windows: Vec<(usize, usize)>,
}

impl NabSeries {
    /// Whether record `i` lies in a window (NAB's `label` column).
    pub fn label(&self, i: usize) -> bool {
        self.windows.iter().any(|&(a, b)| (a..=b).contains(&i))
    }
}

/// Every series of a NAB folder that the labels name, sorted by name.
pub fn read_nab(dir: &Path) -> Result<Vec<NabSeries>, String> {
    let labels_path = dir.join("labels/combined_windows.json");
    let text = std::fs::read_to_string(&labels_path)
        .map_err(|e| format!("{}: {e}", labels_path.display()))?;
    let labels: BTreeMap<String, Vec<(String, String)>> = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not NAB's windows file: {e}", labels_path.display()))?;
    let mut out = Vec::new();
    for (name, windows) in labels {
        let path = dir.join("data").join(&name);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (mut timestamps, mut values) = (Vec::new(), Vec::new());
        for (line_no, line) in text.lines().enumerate().skip(1) {
            let Some((t, v)) = line.split_once(',') else {
                continue;
            };
            let v: f64 = v.trim().parse().map_err(|_| {
                format!("{}:{}: `{v}` is not a number", path.display(), line_no + 1)
            })?;
            timestamps.push(t.trim().to_string());
            values.push(v);
        }
        // Windows are timestamp ranges ("2014-04-10 07:15:00.000000"); the
        // series' timestamps compare as text in the same format.
        let windows = windows
            .iter()
            .filter_map(|(start, end)| {
                let start = &start[..start.len().min(19)];
                let end = &end[..end.len().min(19)];
                let a = timestamps.partition_point(|t| t.as_str() < start);
                let b = timestamps.partition_point(|t| t.as_str() <= end);
                (b > a).then(|| (a, b - 1))
            })
            .collect();
        out.push(NabSeries {
            name,
            timestamps,
            values,
            windows,
        });
    }
    Ok(out)
}

/// One ASD server: training rows (normal), test rows with labels, and
/// the interpretation labels (test row ranges and the metrics behind them).
#[derive(Debug, Clone)]
pub struct AsdServer {
    pub name: String,
    pub features: Vec<String>,
    pub train: Vec<Vec<f32>>,
    pub test: Vec<Vec<f32>>,
    pub labels: Vec<bool>,
    /// (first row, last row, 0-based metric indices), inclusive.
    pub interpretation: Vec<(usize, usize, Vec<usize>)>,
}

/// A CSV's feature names, rows, and labels (when `labelled`).
struct Table {
    features: Vec<String>,
    rows: Vec<Vec<f32>>,
    labels: Vec<bool>,
}

fn read_csv(path: &Path, labelled: bool) -> Result<Table, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .ok_or_else(|| format!("{}: empty", path.display()))?
        .split(',')
        .skip(1)
        .map(str::to_string)
        .collect();
    let features = if labelled {
        header[..header.len().saturating_sub(1)].to_vec()
    } else {
        header
    };
    let (mut rows, mut labels) = (Vec::new(), Vec::new());
    for (i, line) in lines.enumerate() {
        let mut cells = line.split(',').skip(1);
        let row: Vec<f32> = cells
            .by_ref()
            .take(features.len())
            .map(|c| c.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}:{}: {e}", path.display(), i + 2))?;
        if labelled {
            labels.push(cells.next().is_some_and(|l| l.trim() == "1"));
        }
        rows.push(row);
    }
    Ok(Table {
        features,
        rows,
        labels,
    })
}

/// Every server of an ASD folder, in name order.
pub fn read_asd(dir: &Path) -> Result<Vec<AsdServer>, String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".test.csv")
                .map(str::to_string)
        })
        .collect();
    names.sort_by_key(|n| {
        let digits: String = n.chars().filter(char::is_ascii_digit).collect();
        (digits.parse::<u64>().unwrap_or(0), n.clone())
    });
    let mut out = Vec::new();
    for name in names {
        let file = |ext: &str| -> PathBuf { dir.join(format!("{name}.{ext}")) };
        let train = read_csv(&file("train.csv"), false)?;
        let test = read_csv(&file("test.csv"), true)?;
        let mut interpretation = Vec::new();
        if let Ok(text) = std::fs::read_to_string(file("txt")) {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let Some((range, metrics)) = line.split_once(':') else {
                    continue;
                };
                let Some((a, b)) = range.split_once('-') else {
                    continue;
                };
                let (Ok(a), Ok(b)) = (a.trim().parse(), b.trim().parse()) else {
                    continue;
                };
                let metrics = metrics
                    .split(',')
                    .filter_map(|m| m.trim().parse::<usize>().ok())
                    .filter_map(|m| m.checked_sub(1))
                    .collect();
                interpretation.push((a, b, metrics));
            }
        }
        out.push(AsdServer {
            name,
            features: train.features,
            train: train.rows,
            test: test.rows,
            labels: test.labels,
            interpretation,
        });
    }
    Ok(out)
}
