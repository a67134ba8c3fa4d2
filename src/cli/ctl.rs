//! `edgeflow ctl`: list, add, start, stop, remove and watch the queries of a running
//! node through its API.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use edgeflow::serve::queries::{QueryDetail, QueryInfo};
use serde_json::Value;

use super::serve::DEFAULT_LISTEN;

/// Arguments of `ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The node's API.
    #[arg(long, env = "EDGEFLOW_NODE", default_value_t = format!("http://{DEFAULT_LISTEN}"))]
    pub node: String,
    /// File holding the token (default: EDGEFLOW_ADMIN_TOKEN, else EDGEFLOW_READ_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) to trust for a node with its own TLS certificate.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `ctl` subcommands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// List the queries.
    List,
    /// Add a query from its file (named after the file) and start it.
    Add {
        /// The query file.
        file: PathBuf,
        /// Name it differently from its file.
        #[arg(long)]
        name: Option<String>,
        /// Add it without starting it.
        #[arg(long)]
        stopped: bool,
    },
    /// Start a stopped query.
    Start {
        /// Query name.
        name: String,
    },
    /// Stop a running query, saying what becomes of its open windows.
    Stop {
        /// Query name.
        name: String,
        /// close: write them as final; keep: write them and resume them at the next
        /// start; discard: give them up.
        #[arg(long, value_parser = ["close", "keep", "discard"])]
        windows: String,
    },
    /// Remove a stopped query from the node (its outputs stay).
    Remove {
        /// Query name.
        name: String,
    },
    /// Figures of one query, or of all.
    Status {
        /// Query name (default: every query).
        name: Option<String>,
        /// Refresh every this long until interrupted (e.g. 2s).
        #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2s", value_parser = crate::cli::duration)]
        watch: Option<Duration>,
    },
}

struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    fn new(args: &CtlArgs) -> anyhow::Result<Client> {
        let token = match &args.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned(),
            ),
            None => std::env::var("EDGEFLOW_ADMIN_TOKEN")
                .or_else(|_| std::env::var("EDGEFLOW_READ_TOKEN"))
                .ok()
                .filter(|t| !t.is_empty()),
        };
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(120));
        if let Some(path) = &args.ca_file {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{}: not a PEM certificate", path.display()))?;
            http = http.add_root_certificate(cert);
        }
        Ok(Client {
            base: args.node.trim_end_matches('/').to_owned(),
            token,
            http: http.build()?,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    /// Calls the API; a non-2xx answer is an error carrying the node's message.
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.runtime.block_on(async {
            let response = request.send().await.with_context(|| {
                format!("cannot reach the node at {url} (is `edgeflow serve` running? --node or EDGEFLOW_NODE say where)")
            })?;
            let status = response.status();
            let text = response.text().await?;
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            if status.is_success() {
                return Ok(value);
            }
            let message = value
                .get("error")
                .and_then(Value::as_str)
                .map_or_else(|| value.to_string(), str::to_owned);
            let at = |key: &str| value.get(key).and_then(Value::as_u64);
            Err(Refused {
                status: status.as_u16(),
                message,
                position: at("line").zip(at("column")),
            }
            .into())
        })
    }
}

/// The node answered with an error status: the status and the node's message, but a
/// query error alone, as `edgeflow check` prints it (`file:line:col: ...`).
#[derive(Debug, thiserror::Error)]
#[error("{}{message}", if position.is_some() { String::new() } else { format!("{status}: ") })]
pub struct Refused {
    /// HTTP status.
    pub status: u16,
    /// The node's message.
    pub message: String,
    /// Line and column of a query error.
    pub position: Option<(u64, u64)>,
}

impl Refused {
    /// A request the caller must fix (bad query, unknown name, wrong state or token), as
    /// opposed to a node that failed.
    pub fn is_users(&self) -> bool {
        (400..500).contains(&self.status)
    }
}

/// Runs `ctl`.
pub fn ctl(args: &CtlArgs) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let json = args.json;
    let mut out = std::io::stdout().lock();
    use reqwest::Method;
    match &args.command {
        CtlCommand::List => {
            let value = client.call(Method::GET, "/api/v1/queries", None)?;
            if json {
                return print_json(&mut out, &value);
            }
            let list: Vec<QueryInfo> =
                serde_json::from_value(value.get("queries").cloned().unwrap_or_default())?;
            print_list(&mut out, &list)?;
        }
        CtlCommand::Add {
            file,
            name,
            stopped,
        } => {
            // A query file the caller named is theirs to fix, as a query error is.
            let sql = std::fs::read_to_string(file)
                .map_err(|e| super::Usage(format!("reading {}: {e}", file.display())))?;
            let name = match name {
                Some(n) => n.clone(),
                None => file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_owned)
                    .context("the file has no name to name the query after; pass --name")?,
            };
            let body = serde_json::json!({ "name": name, "sql": sql, "start": !stopped });
            let value = match client.call(Method::POST, "/api/v1/queries", Some(body)) {
                Ok(value) => value,
                // The node names the query text `<name>.sql`; the user knows it by its
                // path, so a query error reads as `edgeflow check FILE` prints it.
                Err(e) => match e.downcast::<Refused>() {
                    Ok(mut refused) => {
                        if let Some(rest) = refused.message.strip_prefix(&format!("{name}.sql:")) {
                            refused.message = format!("{}:{rest}", file.display());
                        }
                        return Err(refused.into());
                    }
                    Err(e) => return Err(e.context(format!("adding {}", file.display()))),
                },
            };
            print_one(&mut out, json, &value)?;
        }
        CtlCommand::Start { name } => {
            let value =
                client.call(Method::POST, &format!("/api/v1/queries/{name}/start"), None)?;
            print_one(&mut out, json, &value)?;
        }
        CtlCommand::Stop { name, windows } => {
            let value = client.call(
                Method::POST,
                &format!("/api/v1/queries/{name}/stop?windows={windows}"),
                None,
            )?;
            print_one(&mut out, json, &value)?;
        }
        CtlCommand::Remove { name } => {
            let value = client.call(Method::DELETE, &format!("/api/v1/queries/{name}"), None)?;
            if json {
                return print_json(&mut out, &value);
            }
            writeln!(out, "removed {name} (its outputs stay)")?;
        }
        CtlCommand::Status { name, watch } => loop {
            let details = match name {
                Some(n) => vec![client.call(Method::GET, &format!("/api/v1/queries/{n}"), None)?],
                None => {
                    let list = client.call(Method::GET, "/api/v1/queries", None)?;
                    let names: Vec<String> = list
                        .get("queries")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|q| q.get("name")?.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    names
                        .iter()
                        .map(|n| client.call(Method::GET, &format!("/api/v1/queries/{n}"), None))
                        .collect::<anyhow::Result<_>>()?
                }
            };
            if watch.is_some() {
                if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    // Clear the screen and go home, so the figures refresh in place.
                    write!(out, "\x1b[2J\x1b[H")?;
                } else {
                    // Piped: one report after the other, each under a line of its own.
                    writeln!(
                        out,
                        "--- {}",
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )?;
                }
            }
            if json {
                print_json(&mut out, &Value::Array(details))?;
            } else {
                let details: Vec<QueryDetail> = details
                    .into_iter()
                    .map(serde_json::from_value)
                    .collect::<Result<_, _>>()?;
                print_status(&mut out, &details)?;
            }
            out.flush()?;
            match watch {
                Some(interval) => std::thread::sleep(*interval),
                None => break,
            }
        },
    }
    Ok(())
}

fn print_json(out: &mut impl Write, value: &Value) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

fn print_one(out: &mut impl Write, json: bool, value: &Value) -> anyhow::Result<()> {
    if json {
        return print_json(out, value);
    }
    let info: QueryInfo = serde_json::from_value(value.clone())?;
    print_list(out, &[info])
}

fn state(info: &QueryInfo) -> String {
    serde_json::to_value(info.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn print_list(out: &mut impl Write, list: &[QueryInfo]) -> anyhow::Result<()> {
    writeln!(
        out,
        "{:<24} {:<9} {:<28} {:<25} ORIGIN",
        "QUERY", "STATE", "SOURCE", "SINCE"
    )?;
    for q in list {
        writeln!(
            out,
            "{:<24} {:<9} {:<28} {:<25} {}",
            q.name,
            state(q),
            format!("{} ({})", q.table, q.connector),
            q.since,
            q.origin
        )?;
    }
    Ok(())
}

fn print_status(out: &mut impl Write, details: &[QueryDetail]) -> anyhow::Result<()> {
    writeln!(
        out,
        "{:<24} {:<9} {:>11} {:>11} {:>8} {:>10} {:>8} {:>6} {:>6} {:>14}",
        "QUERY",
        "STATE",
        "READINGS/S",
        "WM LAG",
        "WINDOWS",
        "KEYS",
        "ROWS",
        "BAD",
        "LATE",
        "SYNC BACKLOG"
    )?;
    for d in details {
        let lag = d
            .watermark_lag_s
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}s"));
        let backlog = d.sync.as_ref().map_or_else(
            || "-".to_owned(),
            |b| format!("{} ({:.1} MB)", b.files, b.bytes as f64 / 1e6),
        );
        writeln!(
            out,
            "{:<24} {:<9} {:>11.1} {:>11} {:>8} {:>10} {:>8} {:>6} {:>6} {:>14}",
            d.info.name,
            state(&d.info),
            d.readings_per_s,
            lag,
            d.open.windows,
            d.open.keys,
            d.figures.rows,
            d.figures.bad,
            d.figures.late,
            backlog
        )?;
        if let Some(error) = &d.last_error {
            writeln!(out, "  last error: {error}")?;
        }
    }
    Ok(())
}
