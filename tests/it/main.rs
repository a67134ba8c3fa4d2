//! edgeflow's integration tests: one binary, one module per concern.

mod cli;
mod dead_letters;
mod interop;
mod determinism;
mod oracle;
mod parquet_files;
mod query_errors;
mod query_files;
mod support;
