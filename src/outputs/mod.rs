//! SQL over the Parquet outputs with DataFusion, from the local output folder, the synced
//! copy in a bucket, or both at once.
//!
//! Every folder of the output root that holds Parquet files is a table named after it
//! (`device_traffic`, `device_traffic_late`, …) with the Hive partition columns `date`
//! (DATE) and `hour` (INT) added, so filters on them prune whole folders before any file
//! is opened. A bucket that several nodes sync to (`node=NAME/` folders, see
//! [`fleet`]) shows each query's outputs as one table with a `node` column (TEXT) too,
//! which prunes the same way. Local and remote copies are merged by an [`overlay::Overlay`]: a file in
//! both places is read once, from local disk. Tables list through a
//! [`listing::Curated`] store: the latest revision of each window only, and no file or
//! folder that would make every query fail (each named in a warning instead).
//!
//! The outputs are read-only here unless [`Settings::allow_writes`] says otherwise, and
//! query execution is held to [`Settings::memory_limit`].

pub mod fleet;
pub mod format;
pub mod latest;
pub mod listing;
pub mod overlay;
pub mod sketches;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore};

use self::listing::Curated;
use self::overlay::{Layer, Overlay};
use crate::sync::target::Target;

/// The URL the overlay is registered under in DataFusion.
const OUTPUTS_URL: &str = "edgeflow://outputs/";
/// Name prefix of the listing tables behind the views users query.
const HIDDEN_PREFIX: &str = "__files_";

/// Why the outputs could not be queried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputsError {
    /// DataFusion refused or failed the query. Transparent: DataFusion's message already
    /// says everything, and printing it again as the cause would repeat it.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// The statement does not parse.
    #[error("syntax error at {message}")]
    Syntax {
        /// Where (`line L, column C` or the end of the statement), and what was expected.
        message: String,
    },
    /// The query names a table that does not exist.
    #[error("{message}\nknown tables: {known}")]
    UnknownTable {
        /// DataFusion's message.
        message: String,
        /// The tables there are.
        known: String,
    },
    /// Reading a store failed.
    #[error("listing {location}: {source}")]
    Store {
        /// Where.
        location: String,
        /// Why.
        source: object_store::Error,
    },
    /// The statement would change something, and writes are not allowed.
    #[error("{message}: the outputs are read-only here; only queries are allowed")]
    ReadOnly {
        /// DataFusion's description of what was refused.
        message: String,
    },
    /// A fleet's bucket was given with a local root, which is one node's outputs.
    #[error(
        "{remote} holds the outputs of nodes {nodes}: query it alone (without --root), or one node's folder ({remote}/node=NAME) with --root"
    )]
    FleetWithRoot {
        /// The bucket.
        remote: String,
        /// Its nodes.
        nodes: String,
    },
    /// The local root cannot be used.
    #[error("{path}: {message}")]
    Root {
        /// The folder.
        path: String,
        /// Why.
        message: String,
    },
}

/// How statements are run.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Memory that query execution may hold for sorts, joins and aggregations, in bytes;
    /// a query needing more fails with DataFusion's resources-exhausted error (after
    /// spilling to temporary files where an operator can). Default: 1 GiB.
    pub memory_limit: usize,
    /// Whether statements other than queries run: DDL (`CREATE`, `DROP`), DML (`INSERT`,
    /// `COPY`) and others (`SET`). Default: false.
    pub allow_writes: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            memory_limit: 1 << 30,
            allow_writes: false,
        }
    }
}

/// `name` as a SQL identifier, whatever it holds: quoted, inner quotes doubled, so case,
/// dashes, spaces and dots are kept as they are.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A table and what it holds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TableInfo {
    /// Table name (the output folder's name).
    pub name: String,
    /// Parquet files.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// What a statement returned.
#[derive(Debug)]
pub struct QueryResult {
    /// Column names and types.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// Files the plan scans after partition pruning, by path under the output root.
    pub files_scanned: BTreeSet<String>,
}

impl QueryResult {
    /// Rows returned.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Collects the files of every file scan in a physical plan.
fn scanned_files(plan: &dyn ExecutionPlan, files: &mut BTreeSet<String>) {
    if let Some(scan) = plan.downcast_ref::<DataSourceExec>()
        && let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>()
    {
        for group in &config.file_groups {
            files.extend(group.iter().map(|f| f.object_meta.location.to_string()));
        }
    }
    for child in plan.children() {
        scanned_files(child.as_ref(), files);
    }
}

/// The outputs, ready for SQL.
pub struct Outputs {
    ctx: SessionContext,
    tables: Vec<TableInfo>,
    store: Arc<Curated>,
    options: SQLOptions,
}

impl Outputs {
    /// [`Outputs::open_with`] default [`Settings`].
    pub async fn open(root: Option<&Path>, remote: Option<&Target>) -> Result<Self, OutputsError> {
        Self::open_with(root, remote, Settings::default()).await
    }

    /// Opens the outputs under a local `root`, a synced `remote` copy, or both (local
    /// first), and registers a table per output folder. A folder whose table cannot be
    /// set up is left out with a warning (see [`Outputs::take_warnings`]).
    pub async fn open_with(
        root: Option<&Path>,
        remote: Option<&Target>,
        settings: Settings,
    ) -> Result<Self, OutputsError> {
        let mut layers = Vec::new();
        let mut fleet_of: Option<Arc<fleet::Fleet>> = None;
        if let Some(root) = root {
            let fail = |message: String| OutputsError::Root {
                path: root.display().to_string(),
                message,
            };
            if !root.is_dir() {
                return Err(fail(
                    "no such folder (run a query first, or pass --root or --remote)".into(),
                ));
            }
            let store = LocalFileSystem::new_with_prefix(root).map_err(|e| fail(e.to_string()))?;
            layers.push(Layer {
                store: Arc::new(store),
                prefix: ObjectPath::default(),
                name: format!(
                    "file://{}",
                    std::path::absolute(root)
                        .unwrap_or_else(|_| root.to_owned())
                        .display()
                ),
            });
        }
        if let Some(target) = remote {
            let layer = Layer {
                store: target.store.clone(),
                prefix: target.prefix.clone(),
                name: target.url.clone(),
            };
            let nodes = fleet::nodes(&Overlay::new(vec![layer.clone()]))
                .await
                .map_err(|source| OutputsError::Store {
                    location: target.url.clone(),
                    source,
                })?;
            if !nodes.is_empty() && !layers.is_empty() {
                return Err(OutputsError::FleetWithRoot {
                    remote: target.url.trim_end_matches('/').to_owned(),
                    nodes: nodes.join(", "),
                });
            }
            if !nodes.is_empty() {
                fleet_of = Some(Arc::new(fleet::Fleet::new(Arc::new(Overlay::new(vec![
                    layer,
                ])))));
            } else {
                layers.push(layer);
            }
        }
        let store = Arc::new(match fleet_of {
            Some(fleet) => Curated::new(fleet, listing::FLEET_PARTITIONS),
            None => Curated::new(Arc::new(Overlay::new(layers)), listing::NODE_PARTITIONS),
        });
        // No cache of listings: DataFusion's keeps a table's first listing for as long as
        // the session lives, so a shell (or any long-lived reader) would never see the
        // windows written since, nor a compacted hour in place of the files it replaced.
        let caches = CacheManagerConfig::default().with_list_files_cache_limit(0);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(settings.memory_limit, 1.0)
            .with_cache_manager(caches)
            .build_arc()?;
        let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
        for function in sketches::functions() {
            ctx.register_udaf(function);
        }
        let url = url::Url::parse(OUTPUTS_URL)
            .map_err(|e| DataFusionError::Internal(format!("{OUTPUTS_URL}: {e}")))?;
        ctx.register_object_store(&url, store.clone());
        let mut tables = Vec::new();
        for (table, newest) in discover(&store).await? {
            // One folder DataFusion cannot make a table of (files whose schemas conflict,
            // say) must not take the others down with it.
            match register(&ctx, &table.name, &newest, &store).await {
                Ok(schema) => {
                    store.expect_columns(&table.name, &schema);
                    tables.push(table);
                }
                Err(e) => store.warn(format!("skipping table {}: {e}", table.name)),
            }
        }
        let allowed = settings.allow_writes;
        let options = SQLOptions::new()
            .with_allow_ddl(allowed)
            .with_allow_dml(allowed)
            .with_allow_statements(allowed);
        Ok(Outputs {
            ctx,
            tables,
            store,
            options,
        })
    }

    /// Files and folders left out of the tables since the last call (unreadable or
    /// misplaced), one message each, naming them; each is reported once.
    pub fn take_warnings(&self) -> Vec<String> {
        self.store.take_warnings()
    }

    /// The tables, by name.
    pub fn tables(&self) -> &[TableInfo] {
        &self.tables
    }

    /// Runs one SQL statement.
    ///
    /// A file listed for the statement can vanish before it is read: compaction replaced
    /// it (its rows are in the compacted file the next listing shows), or sync moved a
    /// superseded revision. The statement then runs again on a fresh listing, a few
    /// times, rather than fail.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult, OutputsError> {
        let mut attempt = 1;
        loop {
            match self.sql_once(sql).await {
                Err(OutputsError::DataFusion(e)) if attempt < LISTING_ATTEMPTS && vanished(&e) => {
                    tracing::debug!(error = %e, attempt, "A listed file vanished; listing again");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn sql_once(&self, sql: &str) -> Result<QueryResult, OutputsError> {
        let plan = self
            .ctx
            .state()
            .create_logical_plan(sql)
            .await
            .map_err(|e| self.explain(e))?;
        if let Err(e) = self.options.verify_plan(&plan) {
            let message = match e {
                DataFusionError::Plan(message) => message,
                other => other.strip_backtrace(),
            };
            return Err(OutputsError::ReadOnly { message });
        }
        let run = async {
            let frame = self.ctx.execute_logical_plan(plan).await?;
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let plan = frame.create_physical_plan().await?;
            let mut files = BTreeSet::new();
            scanned_files(plan.as_ref(), &mut files);
            let batches = datafusion::physical_plan::collect(plan, self.ctx.task_ctx()).await?;
            Ok::<_, DataFusionError>(QueryResult {
                schema,
                batches,
                files_scanned: files,
            })
        };
        run.await.map_err(|e| self.explain(e))
    }

    /// A table's schema, rows and the time span of its windows (or readings).
    pub async fn describe(&self, table: &str) -> Result<String, OutputsError> {
        let provider = self
            .ctx
            .table_provider(TableReference::bare(table))
            .await
            .map_err(|e| self.explain(e))?;
        let schema = provider.schema();
        let mut text = String::new();
        for field in schema.fields() {
            text.push_str(&format!(
                "  {:<16} {}{}\n",
                field.name(),
                field.data_type(),
                if field.is_nullable() { "" } else { " NOT NULL" }
            ));
        }
        let time = ["window_start", "ts"]
            .into_iter()
            .find(|c| schema.column_with_name(c).is_some());
        let end = if schema.column_with_name("window_end").is_some() {
            "window_end"
        } else {
            time.unwrap_or("")
        };
        let from = quote_ident(table);
        let query = match time {
            Some(start) => format!(
                "SELECT count(*), min({}), max({}) FROM {from}",
                quote_ident(start),
                quote_ident(end)
            ),
            None => format!("SELECT count(*) FROM {from}"),
        };
        let result = self.sql(&query).await?;
        let row = format::first_row(&result.batches);
        text.push_str(&format!(
            "rows    {}\n",
            row.first().cloned().unwrap_or_default()
        ));
        if row.len() == 3 {
            text.push_str(&format!("from    {}\nto      {}\n", row[1], row[2]));
        }
        if let Some(info) = self.tables.iter().find(|t| t.name == table) {
            text.push_str(&format!(
                "files   {} ({:.1} MB)",
                info.files,
                info.bytes as f64 / 1e6
            ));
        }
        Ok(text)
    }

    /// Says where a statement does not parse, and adds the list of known tables to a
    /// table-not-found error.
    fn explain(&self, error: DataFusionError) -> OutputsError {
        if let DataFusionError::SQL(parser, _) = error.find_root() {
            return syntax_error(parser);
        }
        let message = error.to_string();
        if message.contains("not found") && (message.contains("table") || message.contains("Table"))
        {
            let names: Vec<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
            return OutputsError::UnknownTable {
                message,
                known: if names.is_empty() {
                    "(none)".into()
                } else {
                    names.join(", ")
                },
            };
        }
        OutputsError::DataFusion(error)
    }
}

impl OutputsError {
    /// Whether the statement is at fault (its text, a name in it, a refused write), not
    /// the store or files it read.
    pub fn is_users(&self) -> bool {
        match self {
            OutputsError::Syntax { .. }
            | OutputsError::UnknownTable { .. }
            | OutputsError::ReadOnly { .. }
            | OutputsError::FleetWithRoot { .. } => true,
            OutputsError::DataFusion(e) => matches!(
                e.find_root(),
                DataFusionError::Plan(_)
                    | DataFusionError::SchemaError(..)
                    | DataFusionError::SQL(..)
                    | DataFusionError::NotImplemented(_)
            ),
            _ => false,
        }
    }
}

/// A statement that does not parse, as `line L, column C: what was expected`.
fn syntax_error(error: &datafusion::sql::sqlparser::parser::ParserError) -> OutputsError {
    use datafusion::sql::sqlparser::parser::ParserError;
    let text = match error {
        ParserError::TokenizerError(text) | ParserError::ParserError(text) => text.as_str(),
        ParserError::RecursionLimitExceeded => "the statement is nested too deeply",
    };
    // sqlparser ends its messages with " at Line: L, Column: C", except at the end of
    // the statement.
    let located = text.rsplit_once(" at Line: ").and_then(|(what, place)| {
        let (line, column) = place.split_once(", Column: ")?;
        Some(format!("line {line}, column {column}: {what}"))
    });
    let message = located.unwrap_or_else(|| format!("the end of the statement: {text}"));
    OutputsError::Syntax { message }
}

/// How many listings a statement gets when files vanish under it ([`Outputs::sql`]).
const LISTING_ATTEMPTS: u32 = 4;

/// Whether a failure is a listed file that was gone when it was read.
fn vanished(error: &DataFusionError) -> bool {
    let not_found = |e: &(dyn std::error::Error + 'static)| {
        e.downcast_ref::<object_store::Error>()
            .is_some_and(|e| matches!(e, object_store::Error::NotFound { .. }))
    };
    if let DataFusionError::ObjectStore(e) = error.find_root()
        && matches!(**e, object_store::Error::NotFound { .. })
    {
        return true;
    }
    // Parquet and Arrow errors wrap the store's error; walk every source.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if not_found(e) {
            return true;
        }
        source = e.source();
    }
    false
}

/// Output folders with Parquet files in them, each with its newest file; `_`-prefixed
/// folders (logs, journal, dead letters) are not tables.
async fn discover(store: &Curated) -> Result<Vec<(TableInfo, ObjectMeta)>, OutputsError> {
    let store_error = |source| OutputsError::Store {
        location: store.to_string(),
        source,
    };
    let top = store.list_with_delimiter(None).await.map_err(store_error)?;
    let mut tables = Vec::new();
    for prefix in top.common_prefixes {
        let Some(name) = prefix.filename().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('_') || name.starts_with('.') {
            continue;
        }
        let files: Vec<_> = store
            .list(Some(&prefix))
            .try_filter(|m| futures::future::ready(m.location.as_ref().ends_with(".parquet")))
            .try_collect()
            .await
            .map_err(store_error)?;
        let newest = files
            .iter()
            .max_by(|a, b| (a.last_modified, &a.location).cmp(&(b.last_modified, &b.location)))
            .cloned();
        if let Some(newest) = newest {
            tables.push((
                TableInfo {
                    name,
                    files: files.len(),
                    bytes: files.iter().map(|m| m.size).sum(),
                },
                newest,
            ));
        }
    }
    Ok(tables)
}

/// Registers the files of output folder `name` as a hidden listing table and the table
/// users see as a view over it, with the `partitions` folders as columns (`node` TEXT,
/// `date` DATE, `hour` INT).
///
/// The columns are those of the table's `newest` file: the query as it is now (a
/// changed query's older files are read with its columns, missing ones as NULL).
/// Reading every file's footer for them, as DataFusion's inference does, cost a
/// fleet's day of outputs most of a query's time.
///
/// The hour folders are zero-padded (`hour=07`, as Hive layouts are). DataFusion turns an
/// equality on a typed partition column into a folder prefix built from the literal
/// (`hour=7`), which would miss them; so the listing table keeps `hour` as text and the
/// view casts it to an integer, which DataFusion prunes by evaluating the filter on each
/// folder's value instead.
///
/// Every name in the generated SQL is quoted: folder and column names may hold capitals,
/// dashes or spaces.
async fn register(
    ctx: &SessionContext,
    name: &str,
    newest: &ObjectMeta,
    curated: &Arc<Curated>,
) -> Result<SchemaRef, OutputsError> {
    let partitions = curated.partitions();
    let mut url = url::Url::parse(OUTPUTS_URL)
        .map_err(|e| DataFusionError::Internal(format!("{OUTPUTS_URL}: {e}")))?;
    // Pushed as a path segment, so the name is percent-encoded rather than parsed.
    url.path_segments_mut()
        .map_err(|()| DataFusionError::Internal(format!("{OUTPUTS_URL} has no path")))?
        .pop_if_empty()
        .extend([name, ""]);
    let url = ListingTableUrl::try_new(url, None)?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(
            partitions
                .iter()
                .map(|&column| {
                    let data_type = match column {
                        "date" => DataType::Date32,
                        _ => DataType::Utf8,
                    };
                    (column.to_owned(), data_type)
                })
                .collect(),
        );
    let state = ctx.state();
    let store = state.runtime_env().object_store(&url)?;
    let schema = options
        .format
        .infer_schema(&state, &store, std::slice::from_ref(newest))
        .await?;
    // The files' columns, then the partitions' (`hour` cast).
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| quote_ident(f.name()))
        .chain(partitions.iter().map(|&column| match column {
            "hour" => "CAST(\"hour\" AS INT) AS \"hour\"".to_owned(),
            other => quote_ident(other),
        }))
        .collect();
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema.clone());
    let files = format!("{HIDDEN_PREFIX}{name}");
    ctx.register_table(
        TableReference::bare(files.clone()),
        Arc::new(latest::LatestRows::new(
            ListingTable::try_new(config)?,
            curated.clone(),
        )),
    )?;
    ctx.sql(&format!(
        "CREATE VIEW {} AS SELECT {} FROM {}",
        quote_ident(name),
        columns.join(", "),
        quote_ident(&files)
    ))
    .await?;
    Ok(schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn error_of(sql: &str) -> OutputsError {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let outputs = Outputs::open(Some(dir.path()), None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        match outputs.sql(sql).await {
            Ok(_) => panic!("`{sql}` should fail"),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn a_syntax_error_says_where_and_is_the_users() {
        let e = error_of("SELECT 1,\n  'abc FROM t").await;
        assert_eq!(
            e.to_string(),
            "syntax error at line 2, column 3: Unterminated string literal"
        );
        assert!(e.is_users());
        let e = error_of("SELECT (").await;
        assert!(
            e.to_string()
                .starts_with("syntax error at the end of the statement: Expected"),
            "{e}"
        );
        assert!(error_of("SELECT nope").await.is_users());
    }
}
