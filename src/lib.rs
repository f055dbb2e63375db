pub mod config;
pub mod eval;
pub mod http;
pub mod matching;
pub mod recorded;
pub mod ruletest;
pub mod runtime;
