//! The fuzz targets' bodies, one function each (the targets in
//! `fuzz_targets/` only call them; `tests/fuzz_corpus.rs` replays the
//! corpus through the same functions).

pub mod decoders;
#[cfg(feature = "engine")]
pub mod engine;
