//! Feature rows as one row-major block of `f32`, the shape they are copied
//! to the device in.

use candle_core::{Device, Tensor};

use crate::{ModelError, Result};

/// `rows × cols` feature values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Frame {
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Frame> {
        if data.len() != rows * cols {
            return Err(ModelError::Invalid(format!(
                "a frame of {rows} rows × {cols} features needs {} values, got {}",
                rows * cols,
                data.len()
            )));
        }
        Ok(Frame { rows, cols, data })
    }

    /// Interleaves `columns` (one slice per feature, equal lengths) into
    /// rows: the one copy a batch makes on the host.
    pub fn from_columns(columns: &[&[f32]]) -> Result<Frame> {
        let cols = columns.len();
        let rows = columns.first().map_or(0, |c| c.len());
        if let Some(bad) = columns.iter().position(|c| c.len() != rows) {
            return Err(ModelError::Invalid(format!(
                "feature {bad} has {} values, feature 0 has {rows}",
                columns[bad].len()
            )));
        }
        let mut data = vec![0f32; rows * cols];
        for (j, column) in columns.iter().enumerate() {
            for (i, v) in column.iter().enumerate() {
                data[i * cols + j] = *v;
            }
        }
        Ok(Frame { rows, cols, data })
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// The rows at `index`, in that order.
    pub fn select(&self, index: &[usize]) -> Frame {
        let mut data = Vec::with_capacity(index.len() * self.cols);
        for &i in index {
            data.extend_from_slice(self.row(i));
        }
        Frame {
            rows: index.len(),
            cols: self.cols,
            data,
        }
    }

    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.data,
            (self.rows, self.cols),
            device,
        )?)
    }

    /// The frame as a tensor: on the CPU its buffer is taken over, not
    /// copied; on a GPU it is the one transfer to the device.
    pub fn into_tensor(self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(self.data, (self.rows, self.cols), device)?)
    }

    /// A stable hash of the values and their shape (xxh3-128, hex).
    pub fn content_hash(&self) -> String {
        let mut bytes = Vec::with_capacity(16 + self.data.len() * 4);
        bytes.extend_from_slice(&(self.rows as u64).to_le_bytes());
        bytes.extend_from_slice(&(self.cols as u64).to_le_bytes());
        for v in &self.data {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_interleave_into_rows() {
        let f = Frame::from_columns(&[&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]]).unwrap();
        assert_eq!((f.rows, f.cols), (3, 2));
        assert_eq!(f.row(1), &[2.0, 20.0]);
        assert!(Frame::from_columns(&[&[1.0], &[1.0, 2.0]]).is_err());
    }
}
