//! edgeflow's integration tests: one binary, one module per concern.

mod cli;
mod control;
mod crash;
mod dead_letters;
mod determinism;
mod devices;
mod faults;
mod hostile_input;
mod interop;
mod lateness;
mod live;
mod live_mqtt;
mod live_poll;
mod oracle;
mod parquet_files;
mod query_errors;
mod query_files;
mod query_hardening;
mod query_outputs;
mod s3_server;
mod sessions;
mod sketches;
mod status_page;
mod stream;
mod support;
mod sync;
