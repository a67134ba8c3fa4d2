//! The report printed at the end of a run.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::control::Metrics;
use crate::query::QueryPlan;
use crate::sink::Layout;
use crate::source::Input;
use crate::stats::quantile;

/// What a run did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    /// Query name.
    pub query: String,
    /// Input description.
    pub input: String,
    /// Worker threads.
    pub workers: usize,
    /// Readings decoded.
    pub readings: u64,
    /// Bad lines (see the dead-letter file).
    pub bad: u64,
    /// Late (reading, window) rows written to the late table.
    pub late: u64,
    /// (reading, window) pairs taken within the allowed lateness, as corrections.
    pub corrections: u64,
    /// Readings dropped by `WHERE`.
    pub filtered: u64,
    /// Distinct windows closed.
    pub windows: u64,
    /// Result rows written.
    pub rows: u64,
    /// Files committed (results and late).
    pub files: u64,
    /// Bytes of committed files.
    pub bytes_written: u64,
    /// Input bytes read (0 for the generator).
    pub input_bytes: u64,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Largest number of open (window, key) groups on one worker.
    pub peak_groups: u64,
    /// State bytes on that worker then.
    pub peak_state_bytes: u64,
    /// Aggregates whose final value was out of range (an overflowed sum, a variance of
    /// squares beyond `f64`), written as NULL.
    pub overflows: u64,
    /// Result folder.
    pub results: PathBuf,
    /// Dead-letter folder.
    pub dead_letters: PathBuf,
    /// Peak resident memory of the process, bytes (Linux).
    pub peak_rss_bytes: Option<u64>,
    /// Milliseconds from a window's close to its result file being durable: p50, p99, max.
    pub close_to_durable_ms: Option<[f64; 3]>,
    /// The input was consumed entirely by earlier runs on this output folder: nothing
    /// was read.
    #[serde(default)]
    pub already_consumed: bool,
    /// Where this run resumed the input (bytes, or readings for the generator).
    #[serde(default)]
    pub resumed_at: Option<u64>,
    /// Windows written while still open and kept for the next run.
    #[serde(default)]
    pub kept_windows: u64,
    /// Closed windows kept for corrections within the allowed lateness.
    #[serde(default)]
    pub correctable_windows: u64,
    /// Older revisions moved to `<query>_revisions/`.
    #[serde(default)]
    pub superseded: u64,
    /// Readings an `INNER` registry join dropped: no registry row for their device.
    #[serde(default)]
    pub registry_unmatched: u64,
    /// Rows in the registry version in force at the end.
    #[serde(default)]
    pub registry_rows: u64,
    /// Registry reloads that found the file changed and took it.
    #[serde(default)]
    pub registry_reloads: u64,
    /// Registry reloads refused for a malformed row.
    #[serde(default)]
    pub registry_errors: u64,
    /// The signal that ended the run early (2 SIGINT, 15 SIGTERM).
    #[serde(default)]
    pub interrupted_by: Option<i32>,
}

impl RunSummary {
    /// One summary of a run done in legs (ended by checkpoints): this one, then `next`.
    pub fn then(self, next: RunSummary) -> RunSummary {
        let max = |a: Option<u64>, b: Option<u64>| a.max(b);
        RunSummary {
            readings: self.readings + next.readings,
            bad: self.bad + next.bad,
            late: self.late + next.late,
            corrections: self.corrections + next.corrections,
            filtered: self.filtered + next.filtered,
            windows: self.windows + next.windows,
            rows: self.rows + next.rows,
            files: self.files + next.files,
            bytes_written: self.bytes_written + next.bytes_written,
            input_bytes: self.input_bytes + next.input_bytes,
            elapsed: self.elapsed + next.elapsed,
            peak_groups: self.peak_groups.max(next.peak_groups),
            peak_state_bytes: self.peak_state_bytes.max(next.peak_state_bytes),
            overflows: self.overflows + next.overflows,
            peak_rss_bytes: max(self.peak_rss_bytes, next.peak_rss_bytes),
            close_to_durable_ms: next.close_to_durable_ms.or(self.close_to_durable_ms),
            already_consumed: self.already_consumed && next.already_consumed,
            resumed_at: self.resumed_at,
            superseded: self.superseded + next.superseded,
            ..next
        }
    }
}

/// The process's peak resident set size, from `/proc/self/status` (`VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl RunSummary {
    pub(super) fn collect(
        plan: &QueryPlan,
        input: &Input,
        layout: &Layout,
        workers: usize,
        m: &Metrics,
        elapsed: Duration,
    ) -> Self {
        RunSummary {
            query: plan.name.clone(),
            input: input.describe(),
            workers,
            readings: Metrics::get(&m.readings),
            bad: Metrics::get(&m.bad),
            late: Metrics::get(&m.late),
            corrections: Metrics::get(&m.corrections),
            filtered: Metrics::get(&m.filtered),
            windows: m.windows.lock().map(|w| w.len() as u64).unwrap_or(0),
            rows: Metrics::get(&m.rows),
            files: Metrics::get(&m.files),
            bytes_written: Metrics::get(&m.bytes_written),
            input_bytes: Metrics::get(&m.input_bytes),
            elapsed,
            peak_groups: Metrics::get(&m.peak_groups),
            peak_state_bytes: Metrics::get(&m.peak_state_bytes),
            overflows: Metrics::get(&m.overflows),
            results: layout.results_dir(),
            dead_letters: layout.dead_letter_dir(),
            peak_rss_bytes: peak_rss_bytes(),
            close_to_durable_ms: m.close_to_durable.lock().ok().and_then(|samples| {
                let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
                ms.sort_by(f64::total_cmp);
                (!ms.is_empty())
                    .then(|| [quantile(&ms, 0.5), quantile(&ms, 0.99), quantile(&ms, 1.0)])
            }),
            already_consumed: false,
            resumed_at: None,
            kept_windows: Metrics::get(&m.kept_windows),
            correctable_windows: Metrics::get(&m.correctable_windows),
            superseded: Metrics::get(&m.superseded),
            registry_unmatched: Metrics::get(&m.registry_unmatched),
            registry_rows: Metrics::get(&m.registry_rows),
            registry_reloads: Metrics::get(&m.registry_reloads),
            registry_errors: Metrics::get(&m.registry_errors),
            interrupted_by: None,
        }
    }

    /// Readings per second of wall-clock time.
    pub fn readings_per_second(&self) -> f64 {
        self.readings as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// State bytes per open (window, key) group at the peak.
    pub fn state_bytes_per_group(&self) -> Option<f64> {
        (self.peak_groups > 0).then(|| self.peak_state_bytes as f64 / self.peak_groups as f64)
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "query        {}  ({} worker{})",
            self.query,
            self.workers,
            if self.workers == 1 { "" } else { "s" }
        )?;
        writeln!(f, "input        {}", self.input)?;
        if self.already_consumed {
            writeln!(
                f,
                "             already consumed by earlier runs on this output folder: nothing to do (--fresh to compute it again)"
            )?;
            return Ok(());
        }
        if let Some(at) = self.resumed_at {
            writeln!(
                f,
                "             resumed at {at} where an earlier run stopped"
            )?;
        }
        if let Some(signal) = self.interrupted_by {
            writeln!(
                f,
                "             stopped early by signal {signal}; the next run resumes here"
            )?;
        }
        writeln!(f, "readings     {}", self.readings)?;
        let dead = if self.bad > 0 {
            format!("  (see {})", self.dead_letters.display())
        } else {
            String::new()
        };
        writeln!(f, "bad          {}{dead}", self.bad)?;
        writeln!(f, "late         {}", self.late)?;
        if self.corrections > 0 {
            writeln!(f, "corrections  {}", self.corrections)?;
        }
        if self.filtered > 0 {
            writeln!(f, "filtered     {}", self.filtered)?;
        }
        writeln!(f, "windows      {} closed", self.windows)?;
        writeln!(f, "rows out     {}", self.rows)?;
        writeln!(
            f,
            "files        {}  ({:.1} MB in {})",
            self.files,
            self.bytes_written as f64 / 1e6,
            self.results.display()
        )?;
        if self.kept_windows > 0 {
            writeln!(
                f,
                "open         {} windows written as they stand and kept for the next run",
                self.kept_windows
            )?;
        }
        if self.correctable_windows > 0 {
            writeln!(
                f,
                "correctable  {} closed windows kept for corrections within the allowed lateness",
                self.correctable_windows
            )?;
        }
        if self.registry_rows > 0 || self.registry_unmatched > 0 {
            write!(
                f,
                "registry     {} devices; {} reloads taken, {} refused",
                self.registry_rows, self.registry_reloads, self.registry_errors,
            )?;
            // Only an INNER join drops them (a LEFT join keeps them with NULLs).
            if self.registry_unmatched > 0 {
                write!(
                    f,
                    "; {} readings without a registry row dropped (INNER join)",
                    self.registry_unmatched
                )?;
            }
            writeln!(f)?;
        }
        if self.superseded > 0 {
            writeln!(
                f,
                "revised      {} windows written again; older revisions in {}_revisions",
                self.superseded, self.query
            )?;
        }
        if self.overflows > 0 {
            writeln!(
                f,
                "overflows    {}  (aggregates out of range, written as NULL)",
                self.overflows
            )?;
        }
        if let Some(per_group) = self.state_bytes_per_group() {
            writeln!(
                f,
                "state        {:.0} bytes per open (key, window) at the peak of {} groups",
                per_group, self.peak_groups
            )?;
        }
        if let Some(rss) = self.peak_rss_bytes {
            writeln!(f, "peak memory  {:.1} MB", rss as f64 / 1e6)?;
        }
        if let Some([p50, p99, _]) = self.close_to_durable_ms {
            writeln!(
                f,
                "latency      window close to durable file: p50 {p50:.1} ms, p99 {p99:.1} ms"
            )?;
        }
        writeln!(f, "elapsed      {:.3} s", self.elapsed.as_secs_f64())?;
        write!(
            f,
            "throughput   {:.0} readings/s",
            self.readings_per_second()
        )?;
        if self.input_bytes > 0 {
            write!(
                f,
                ", {:.1} MB/s",
                self.input_bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
            )?;
        }
        Ok(())
    }
}
