//! `edgeflow check QUERY.sql`: validate a query (and the registry it joins) and print
//! its plan.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

/// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The query file.
    pub query: PathBuf,
}

/// Runs `check`: a registry the query joins is read too, since a malformed one would
/// refuse the start.
pub fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let plan = edgeflow::query::load(&args.query)?;
    let mut out = std::io::stdout().lock();
    write!(out, "{plan}")?;
    if let Some(join) = &plan.join {
        let registry = edgeflow::registry::Registry::open(&join.table, join.key)
            .map_err(edgeflow::Error::Registry)?;
        writeln!(
            out,
            "registry    {} rows read from {}",
            registry.len(),
            join.table.path.display()
        )?;
    }
    Ok(())
}
