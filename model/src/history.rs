//! The last windows of each key, for models that read a sequence.

use std::collections::{HashMap, VecDeque};

use crate::Frame;

/// Per key, the feature rows of its last `len` windows (raw values).
#[derive(Debug, Clone)]
pub struct History {
    len: usize,
    cols: usize,
    per_key: HashMap<String, VecDeque<Vec<f32>>>,
}

impl History {
    pub fn new(len: usize, cols: usize) -> History {
        History {
            len,
            cols,
            per_key: HashMap::new(),
        }
    }

    /// For each row of `frame` (in order; `keys[i]` is row i's key), the
    /// `len` rows of its key before it, oldest first, as one block of
    /// `rows × len × cols` values, and whether the key had a full history
    /// (if not, the oldest row known, or the row itself, fills the gap).
    /// Then remembers the rows.
    pub fn contexts(&mut self, keys: &[String], frame: &Frame) -> (Vec<f32>, Vec<bool>) {
        let mut out = Vec::with_capacity(frame.rows * self.len * self.cols);
        let mut full = Vec::with_capacity(frame.rows);
        for (i, key) in keys.iter().enumerate().take(frame.rows) {
            let row = frame.row(i);
            let past = self.per_key.entry(key.clone()).or_default();
            full.push(past.len() == self.len);
            let fill = past.front().map_or(row, |r| r.as_slice());
            for _ in past.len()..self.len {
                out.extend_from_slice(fill);
            }
            for r in past.iter() {
                out.extend_from_slice(r);
            }
            if past.len() == self.len {
                past.pop_front();
            }
            past.push_back(row.to_vec());
        }
        (out, full)
    }

    /// Keys remembered.
    pub fn keys(&self) -> usize {
        self.per_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_row_gets_its_keys_previous_rows() {
        let mut h = History::new(2, 1);
        let keys: Vec<String> = ["a", "b", "a", "a"].iter().map(|s| s.to_string()).collect();
        let f = Frame::new(4, 1, vec![1.0, 10.0, 2.0, 3.0]).unwrap();
        let (ctx, full) = h.contexts(&keys, &f);
        assert_eq!(ctx, vec![1.0, 1.0, 10.0, 10.0, 1.0, 1.0, 1.0, 2.0]);
        assert_eq!(full, vec![false, false, false, true]);
        assert_eq!(h.keys(), 2);
    }
}
