//! `modelgate-loadtest`: an open- and closed-loop HTTP/1.1 load generator and a fast
//! fixed-response upstream server for benchmarking modelgate.
//!
//! The binary (`main.rs`) is a thin CLI over these modules; integration tests drive
//! them in-process.

pub mod client;
pub mod parse;
pub mod report;
pub mod runner;
pub mod samples;
pub mod schedule;
pub mod upstream;
