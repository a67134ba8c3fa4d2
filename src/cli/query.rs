//! `edgeflow query` (one statement, or an interactive shell) and `edgeflow tables`.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use edgeflow::outputs::format::{self, OutputFormat};
use edgeflow::outputs::{Outputs, OutputsError, QueryResult, Settings};
use edgeflow::sync::target::{S3Options, Target};

use super::sync::parse_bytes;
use super::{Usage, default_output};

/// Where the outputs are.
#[derive(Debug, Args)]
pub struct OutputsArgs {
    /// Local output root (default: ./edgeflow-out, unless only --remote is given).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// The synced copy: s3://bucket/prefix or file:///path. With --root too, a file in
    /// both places is read once.
    #[arg(long)]
    pub remote: Option<String>,
    /// S3 connection settings.
    #[command(flatten)]
    pub s3: S3Options,
}

impl OutputsArgs {
    fn open(
        &self,
        runtime: &tokio::runtime::Runtime,
        settings: Settings,
    ) -> anyhow::Result<Outputs> {
        let remote = self
            .remote
            .as_deref()
            .map(|url| Target::open(url, &self.s3))
            .transpose()?;
        let root = match (&self.root, &remote) {
            (Some(root), _) => Some(root.clone()),
            (None, None) => Some(default_output()),
            (None, Some(_)) => None,
        };
        let outputs = runtime
            .block_on(Outputs::open_with(
                root.as_deref(),
                remote.as_ref(),
                settings,
            ))
            .map_err(|e| -> anyhow::Error {
                // Asked wrongly (a fleet's bucket with --root): exit 2, as for a query.
                if e.is_users() {
                    Usage(e.to_string()).into()
                } else {
                    e.into()
                }
            })?;
        print_warnings(&outputs);
        Ok(outputs)
    }
}

/// Arguments of `query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The SQL statement; without it, an interactive shell starts.
    pub sql: Option<String>,
    /// Result format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Write results to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print rows, files scanned and time taken on stderr.
    #[arg(long)]
    pub stats: bool,
    /// Also run statements that are not queries (CREATE, DROP, INSERT, COPY, SET, ...);
    /// without it they are refused.
    #[arg(long)]
    pub allow_writes: bool,
    /// Memory query execution may use (sorts, joins, aggregations): 512MiB, 2G, ... A
    /// query needing more fails with "Resources exhausted" instead of exhausting the
    /// machine.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_memory_limit)]
    pub memory_limit: usize,
    /// Where the outputs are.
    #[command(flatten)]
    pub outputs: OutputsArgs,
}

/// Arguments of `tables`.
#[derive(Debug, Args)]
pub struct TablesArgs {
    /// Where the outputs are.
    #[command(flatten)]
    pub outputs: OutputsArgs,
}

fn parse_memory_limit(text: &str) -> Result<usize, String> {
    let bytes = parse_bytes(text)?;
    if bytes == 0 {
        return Err("the memory limit must be more than 0 bytes".into());
    }
    usize::try_from(bytes).map_err(|_| format!("`{text}` is more memory than can be addressed"))
}

/// Files and folders the tables left out, on stderr: the user should know the answer
/// does not include them.
fn print_warnings(outputs: &Outputs) {
    for warning in outputs.take_warnings() {
        eprintln!("warning: {warning}");
    }
}

/// A refused write says how to allow it; a statement that is the user's to fix exits
/// with code 2, a store or file that failed with 1.
fn with_hint(error: OutputsError) -> anyhow::Error {
    match error {
        OutputsError::ReadOnly { .. } => {
            Usage(format!("{error} (start with --allow-writes to run it)")).into()
        }
        e if e.is_users() => Usage(e.to_string()).into(),
        other => other.into(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs `query`.
pub fn query(args: &QueryArgs) -> anyhow::Result<()> {
    let runtime = runtime()?;
    let settings = Settings {
        memory_limit: args.memory_limit,
        allow_writes: args.allow_writes,
    };
    let outputs = args.outputs.open(&runtime, settings)?;
    let Some(sql) = &args.sql else {
        return shell(&runtime, &outputs);
    };
    if args.format == OutputFormat::Parquet && args.out.is_none() && std::io::stdout().is_terminal()
    {
        anyhow::bail!(
            "--format parquet writes binary: give --out FILE or redirect standard output"
        );
    }
    let started = Instant::now();
    let result = runtime.block_on(outputs.sql(sql));
    print_warnings(&outputs);
    let result = result.map_err(with_hint)?;
    let (schema, batches) = (&result.schema, &result.batches);
    match &args.out {
        Some(path) => {
            let file =
                File::create(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            format::write(schema, batches, args.format, BufWriter::new(file))?;
        }
        None => format::write(
            schema,
            batches,
            args.format,
            BufWriter::new(std::io::stdout()),
        )?,
    }
    if args.stats {
        eprintln!("{}", stats(&result, started));
    }
    Ok(())
}

fn stats(result: &QueryResult, started: Instant) -> String {
    format!(
        "{} row(s), {} file(s) scanned, {:.1} ms",
        result.rows(),
        result.files_scanned.len(),
        started.elapsed().as_secs_f64() * 1e3
    )
}

/// Runs `tables`.
pub fn tables(args: &TablesArgs) -> anyhow::Result<()> {
    let runtime = runtime()?;
    let outputs = args.outputs.open(&runtime, Settings::default())?;
    let mut out = std::io::stdout().lock();
    write_tables(&outputs, &mut out)?;
    Ok(())
}

fn write_tables(outputs: &Outputs, out: &mut impl Write) -> std::io::Result<()> {
    if outputs.tables().is_empty() {
        return writeln!(out, "no tables (no Parquet outputs found)");
    }
    let width = outputs
        .tables()
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(out, "{:<width$}  {:>7}  {:>10}", "table", "files", "MB")?;
    for table in outputs.tables() {
        writeln!(
            out,
            "{:<width$}  {:>7}  {:>10.1}",
            table.name,
            table.files,
            table.bytes as f64 / 1e6
        )?;
    }
    Ok(())
}

const HELP: &str =
    "SQL statements end with `;`. \\d lists tables, \\d TABLE describes one, \\q quits.";

/// The interactive shell: line editing and history; statements end with `;`.
fn shell(runtime: &tokio::runtime::Runtime, outputs: &Outputs) -> anyhow::Result<()> {
    use rustyline::error::ReadlineError;
    let mut editor = rustyline::DefaultEditor::new()?;
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".edgeflow_history"));
    if let Some(path) = &history {
        editor.load_history(path).ok();
    }
    eprintln!(
        "edgeflow SQL over {} table(s). {HELP}",
        outputs.tables().len()
    );
    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() {
            "edgeflow> "
        } else {
            "     ...> "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                statement.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if statement.is_empty() && trimmed.starts_with('\\') {
            editor.add_history_entry(trimmed).ok();
            if !meta_command(runtime, outputs, trimmed) {
                break;
            }
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        statement.push_str(&line);
        statement.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        editor.add_history_entry(statement.trim()).ok();
        let started = Instant::now();
        let result = runtime.block_on(outputs.sql(&statement));
        print_warnings(outputs);
        match result {
            Ok(result) => {
                let stdout = BufWriter::new(std::io::stdout());
                if let Err(e) =
                    format::write(&result.schema, &result.batches, OutputFormat::Table, stdout)
                {
                    eprintln!("error: {e}");
                }
                eprintln!("{}", stats(&result, started));
            }
            Err(e) => eprintln!("error: {}", with_hint(e)),
        }
        statement.clear();
    }
    if let Some(path) = &history {
        editor.save_history(path).ok();
    }
    Ok(())
}

/// Runs a backslash command; returns false to quit.
fn meta_command(runtime: &tokio::runtime::Runtime, outputs: &Outputs, line: &str) -> bool {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("\\q"), _) => return false,
        (Some("\\d"), None) => {
            if let Err(e) = write_tables(outputs, &mut std::io::stdout().lock()) {
                eprintln!("error: {e}");
            }
        }
        (Some("\\d"), Some(table)) => {
            let described = runtime.block_on(outputs.describe(table.trim_end_matches(';')));
            print_warnings(outputs);
            match described {
                Ok(text) => {
                    if let Err(e) = writeln!(std::io::stdout().lock(), "{text}") {
                        eprintln!("error: {e}");
                    }
                }
                Err(e) => eprintln!("error: {e}"),
            }
        }
        _ => eprintln!("{HELP}"),
    }
    true
}
