//! Benchmark support: the hand-written baseline the engine must beat, the report of
//! `edgeflow bench`, and its chart.

pub mod baseline;
pub mod report;
pub mod svg;
