//! `edgeflow gen`: write synthetic readings.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use edgeflow::source::generator::write_readings;

use super::{GenFormat, GeneratorArgs, TsFormat, is_dash};

/// Arguments of `gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Generator settings.
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// Output file (`-` or absent for standard output).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: GenFormat,
    /// How timestamps are written.
    #[arg(long, value_enum, default_value = "millis")]
    pub ts_format: TsFormat,
}

/// Runs `gen`.
pub fn generate(args: &GenArgs) -> anyhow::Result<()> {
    let config = args.generator.config().map_err(anyhow::Error::msg)?;
    match args.output.as_deref().filter(|p| !is_dash(p)) {
        Some(path) => {
            let file =
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            write_readings(&config, args.format.into(), args.ts_format, &mut out)
                .and_then(|()| out.flush())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => {
            let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            match write_readings(&config, args.format.into(), args.ts_format, &mut out)
                .and_then(|()| out.flush())
            {
                // A closed pipe (`edgeflow gen | head`) is not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other.context("writing to standard output")?,
            }
        }
    }
    Ok(())
}
