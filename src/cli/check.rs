//! `edgeflow check QUERY.sql`: validate a query and print its plan.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

/// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The query file.
    pub query: PathBuf,
}

/// Runs `check`.
pub fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let plan = edgeflow::query::load(&args.query)?;
    let mut out = std::io::stdout().lock();
    write!(out, "{plan}")?;
    Ok(())
}
