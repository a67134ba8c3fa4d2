//! The `edgeflow` command: parse the command line, run the command, map errors to exit
//! codes (2: fix your input or query; 1: the environment failed; 70: a bug).

mod cli;

use std::process::ExitCode;

use clap::Parser;
use edgeflow::error::ErrorKind;

use cli::{Cli, Command};

fn exit_code(error: &anyhow::Error) -> u8 {
    if let Some(cli::run::Interrupted(signal)) = error.downcast_ref() {
        return (128 + signal).clamp(0, 255) as u8;
    }
    if error.downcast_ref::<cli::Usage>().is_some() {
        return 2;
    }
    if let Some(refused) = error.downcast_ref::<cli::ctl::Refused>() {
        return if refused.is_users() { 2 } else { 1 };
    }
    if let Some(
        edgeflow::sync::target::TargetError::Url(_) | edgeflow::sync::target::TargetError::Node(_),
    ) = error.downcast_ref()
    {
        return 2;
    }
    match error
        .downcast_ref::<edgeflow::Error>()
        .map(edgeflow::Error::kind)
    {
        Some(ErrorKind::External) => 1,
        Some(ErrorKind::Internal) => 70,
        Some(ErrorKind::User) => 2,
        None if error
            .downcast_ref::<edgeflow::query::QueryError>()
            .is_some() =>
        {
            2
        }
        None => 1,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _faults = edgeflow::fault::setup();
    // A query that cannot be read is refused before any folder is made: an output
    // folder (and its `_logs/`) appearing after a failed start would look like a node
    // that ran. The files are read again by the command; they are small.
    let readable =
        |files: &[std::path::PathBuf]| files.iter().all(|q| edgeflow::query::load(q).is_ok());
    let log_dir = match &cli.command {
        // An output folder that cannot be made is reported by `run` itself.
        Command::Run(args) => Some(cli::sync::log_dir(&args.output))
            .filter(|_| readable(&args.queries))
            .filter(|dir| std::fs::create_dir_all(dir).is_ok()),
        Command::Serve(args) => args
            .file()
            .ok()
            .filter(|file| {
                // `serve` also takes folders of query files.
                cli::serve::query_files(if args.queries.is_empty() {
                    &file.queries
                } else {
                    &args.queries
                })
                .is_ok_and(|files| readable(&files))
            })
            .map(|file| cli::sync::log_dir(&args.output(&file)))
            .filter(|dir| std::fs::create_dir_all(dir).is_ok()),
        _ => None,
    };
    let process = match &cli.command {
        Command::Run(args) => args
            .cluster
            .hostfile
            .is_some()
            .then_some(args.cluster.process),
        _ => None,
    };
    let logs = cli::logging::init(log_dir.as_deref(), process);
    let result = match &cli.command {
        Command::Run(args) => cli::run::run(args, logs),
        Command::Serve(args) => cli::serve::serve(args, logs),
        Command::Sync(args) => cli::sync::sync(args),
        #[cfg(feature = "sql")]
        Command::Query(args) => cli::query::query(args),
        #[cfg(feature = "sql")]
        Command::Tables(args) => cli::query::tables(args),
        #[cfg(not(feature = "sql"))]
        Command::WithoutSql { .. } => Err(anyhow::anyhow!(
            "this edgeflow was built without the `sql` feature (a slim edge build), which `query` and `tables` need: query the outputs where they are synced, with DuckDB or pyarrow, or with an edgeflow built with default features"
        )),
        Command::Status(args) => cli::sync::status(args),
        Command::Check(args) => cli::check::check(args),
        Command::Gen(args) => cli::gen_cmd::generate(args),
        Command::Bench(args) => cli::bench::bench(args),
        Command::Devices(args) => cli::devices::devices(args),
        Command::Ctl(args) => cli::ctl::ctl(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of the output went away (`edgeflow ... | head`): nothing more to say.
        Err(error)
            if error.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {}", message(&error));
            ExitCode::from(exit_code(&error))
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text the line already
/// holds: libraries (DataFusion, object_store) often repeat their cause in their message.
fn message(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
