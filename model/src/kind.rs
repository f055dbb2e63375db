//! The kinds of detector a model may be, each named once: what a config's
//! `kind`, `eval --detector` and the sidecar of a trained model spell.

use std::fmt;
use std::str::FromStr;

/// A kind of detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Reconstruction through a bottleneck (Candle).
    Autoencoder,
    /// Prediction from the series' previous windows (Candle GRU).
    Sequence,
    /// Reconstruction from principal components.
    Pca,
    /// Distance to the nearest k-means centroid.
    Kmeans,
    /// Distance to the nearest training row.
    Nearest,
    /// A time-of-day profile fitted per series (`profile.rs`).
    Profile,
}

impl Kind {
    /// Every kind, in the order documentation lists them.
    pub const ALL: [Kind; 6] = [
        Kind::Autoencoder,
        Kind::Sequence,
        Kind::Pca,
        Kind::Kmeans,
        Kind::Nearest,
        Kind::Profile,
    ];

    /// The kind's name.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Autoencoder => "autoencoder",
            Kind::Sequence => "sequence",
            Kind::Pca => "pca",
            Kind::Kmeans => "kmeans",
            Kind::Nearest => "nearest",
            Kind::Profile => "profile",
        }
    }

    /// Every kind's name.
    pub fn names() -> Vec<&'static str> {
        Kind::ALL.iter().map(|k| k.name()).collect()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no kind of detector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKind(pub String);

impl fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown kind `{}` (use {})",
            self.0,
            Kind::names().join(", ")
        )
    }
}

impl std::error::Error for UnknownKind {}

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Kind, UnknownKind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_name_and_nothing_else_does() {
        for k in Kind::ALL {
            assert_eq!(k.name().parse::<Kind>(), Ok(k));
        }
        let err = "pcaa".parse::<Kind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown kind `pcaa` (use autoencoder, sequence, pca, kmeans, nearest, profile)"
        );
    }
}
