//! Sync flags of `run`, and the `sync` and `status` commands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use edgeflow::lock::OutputLock;
use edgeflow::sync::target::{S3Options, Target};
use edgeflow::sync::upload::UploadConfig;
use edgeflow::sync::{QuotaPolicy, SyncConfig, Syncer};

/// Where `run` syncs when no `--sync` is given: a local folder, so the default needs no
/// server. Each output folder gets its own subfolder there
/// ([`edgeflow::sync::folder_name`]), so unrelated output folders never collide.
pub fn default_target() -> PathBuf {
    PathBuf::from("edgeflow-sync")
}

/// Upload and retention settings shared by `run` and `sync`.
#[derive(Debug, Clone, Args)]
pub struct UploadFlags {
    /// How long uploaded files stay on local disk, e.g. 24h, 30m, 0s.
    #[arg(long, default_value = "24h", value_parser = crate::cli::duration)]
    pub retention: Duration,
    /// Files at least this large are uploaded in parts.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    pub multipart_threshold: u64,
    /// Part size of multipart uploads (at least 5MiB).
    #[arg(long, default_value = "8MiB", value_parser = parse_part_size)]
    pub part_size: u64,
}

impl UploadFlags {
    /// The sync configuration for `target` with these settings and no quota.
    pub fn config_for(&self, target: Target) -> SyncConfig {
        SyncConfig {
            target,
            upload: UploadConfig {
                multipart_threshold: self.multipart_threshold,
                part_size: self.part_size as usize,
            },
            max_pending_bytes: None,
            on_quota: QuotaPolicy::Backpressure,
            retention: self.retention,
            own_logs: None,
            subfolder_per_output: false,
        }
    }
}

/// How committed files are shipped to object storage.
#[derive(Debug, Clone, Args)]
pub struct SyncFlags {
    /// Sync target: s3://bucket/prefix or file:///path (default: $EDGEFLOW_SYNC, else the
    /// local folder ./edgeflow-sync/<output folder name>-<hash of its path>/).
    #[arg(long = "sync", value_name = "URL")]
    pub sync: Option<String>,
    /// This box's name in a fleet: files go under `node=NAME/` of the target, so many
    /// nodes share one bucket and `edgeflow query` reads them as one table per query.
    #[arg(long, value_name = "NAME", env = "EDGEFLOW_NODE_NAME")]
    pub node: Option<String>,
    /// Do not sync; results stay in the output folder only (wins over $EDGEFLOW_SYNC).
    #[arg(long, conflicts_with = "sync")]
    pub no_sync: bool,
    /// Local quota for files not yet uploaded, e.g. 512MiB or 2G (default: no quota).
    #[arg(long, value_parser = parse_bytes)]
    pub max_pending_bytes: Option<u64>,
    /// What to do when the quota is full.
    #[arg(long, value_enum, default_value_t = QuotaPolicy::Backpressure)]
    pub on_quota: QuotaPolicy,
    /// How long a finite run waits at its end for the target to take the last files.
    #[arg(long, default_value = "5m", value_parser = crate::cli::duration)]
    pub sync_timeout: Duration,
    /// Upload and retention settings.
    #[command(flatten)]
    pub upload: UploadFlags,
    /// S3 connection settings.
    #[command(flatten)]
    pub s3: S3Options,
}

impl SyncFlags {
    /// The sync configuration, or `None` with `--no-sync`.
    pub fn config(&self) -> anyhow::Result<Option<SyncConfig>> {
        if self.no_sync {
            return Ok(None);
        }
        let config = match &self.sync.clone().or_else(sync_from_env) {
            Some(url) => self.config_for(in_node(Target::open(url, &self.s3)?, &self.node)?),
            None => SyncConfig {
                subfolder_per_output: true,
                ..self.config_for(in_node(Target::local(&default_target())?, &self.node)?)
            },
        };
        Ok(Some(config))
    }

    /// The configuration for a given target.
    pub fn config_for(&self, target: Target) -> SyncConfig {
        SyncConfig {
            max_pending_bytes: self.max_pending_bytes,
            on_quota: self.on_quota,
            ..self.upload.config_for(target)
        }
    }
}

/// `target`, or its folder of node `node` in a fleet.
fn in_node(target: Target, node: &Option<String>) -> anyhow::Result<Target> {
    Ok(match node {
        Some(node) => target.for_node(node)?,
        None => target,
    })
}

/// The target in `EDGEFLOW_SYNC`, if set and not empty.
///
/// Read here rather than through clap's `env`, for which a variable counts as the flag
/// itself: `--no-sync` would then be refused wherever the environment names a target.
pub fn sync_from_env() -> Option<String> {
    std::env::var("EDGEFLOW_SYNC")
        .ok()
        .filter(|v| !v.is_empty())
}

/// Parses `1000`, `64KiB`, `8MiB`, `2G` (powers of 1000 without the `i`).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    edgeflow::size::parse_size(text)
}

fn parse_part_size(text: &str) -> Result<u64, String> {
    let bytes = parse_bytes(text)?;
    if bytes < 5 << 20 {
        return Err("S3 parts must be at least 5MiB".into());
    }
    Ok(bytes)
}

/// Arguments of `sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The output root of earlier runs.
    pub dir: PathBuf,
    /// Target: s3://bucket/prefix or file:///path.
    #[arg(long)]
    pub to: String,
    /// This box's name in a fleet: files go under `node=NAME/` of the target.
    #[arg(long, value_name = "NAME", env = "EDGEFLOW_NODE_NAME")]
    pub node: Option<String>,
    /// Check every file still on local disk against the target, not only pending ones.
    #[arg(long)]
    pub all: bool,
    /// Give up after this long if the target stays unreachable.
    #[arg(long, default_value = "5m", value_parser = crate::cli::duration)]
    pub timeout: Duration,
    /// Upload and retention settings.
    #[command(flatten)]
    pub upload: UploadFlags,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// S3 connection settings.
    #[command(flatten)]
    pub s3: S3Options,
}

/// Runs `sync`: exits 0 only when every file is in the target.
pub fn sync(args: &SyncArgs) -> anyhow::Result<()> {
    if !args.dir.is_dir() {
        anyhow::bail!("{}: not a folder", args.dir.display());
    }
    // One writer per output folder: a run (or another sync) of this folder would race on
    // its journal.
    let _lock = OutputLock::acquire(&args.dir).map_err(edgeflow::Error::from)?;
    let target = in_node(Target::open(&args.to, &args.s3)?, &args.node)?;
    let config = args.upload.config_for(target);
    let syncer = Syncer::start(&args.dir, config, args.all)?;
    let (report, outcome) = syncer.finish(args.timeout, || {});
    print_report(&report, args.json)?;
    Ok(outcome?)
}

/// Arguments of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The output root.
    pub dir: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `status`.
pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
    if !args.dir.is_dir() {
        anyhow::bail!("{}: not a folder", args.dir.display());
    }
    let report = edgeflow::sync::status(&args.dir)?;
    print_report(&report, args.json)
}

fn print_report(report: &edgeflow::sync::SyncReport, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, report)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{report}")?;
    }
    Ok(())
}

/// Where `run` writes its own log files.
pub fn log_dir(output: &Path) -> PathBuf {
    output.join("_logs")
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_parse_with_decimal_and_binary_units() {
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("1.5kb"), Ok(1500));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }
}
