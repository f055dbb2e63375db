//! Detection quality on labelled data (`telemine eval`): the NAB score for
//! univariate series streamed record by record ([`nab`]), and
//! point-wise figures for multivariate servers ([`asd`]); [`corpus`] reads
//! both layouts; [`fleet`] runs an operator's config over the generated
//! fleet and counts the notifications it would send.

pub mod asd;
pub mod configs;
pub mod corpus;
pub mod cv;
pub mod fleet;
pub mod nab;

/// The detectors `eval` knows, by their config names: every kind.
pub fn detectors() -> Vec<&'static str> {
    telemine_detector::Kind::names()
}

/// Whether `detector` is a kind or a blend of kinds (`nearest+kmeans`),
/// as a model's `kind` names them.
pub fn known(detector: &str) -> bool {
    telemine_detector::blend::kinds(detector).is_ok()
}

/// The detectors for univariate series (NAB): the profile detector is
/// for multivariate server metrics.
pub fn univariate(detector: &str) -> bool {
    telemine_detector::blend::kinds(detector)
        .is_ok_and(|kinds| !kinds.contains(&telemine_detector::Kind::Profile))
}
