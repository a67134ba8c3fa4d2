//! SQL over the Parquet outputs with DataFusion, from the local output folder, the synced
//! copy in a bucket, or both at once.
//!
//! Every folder of the output root that holds Parquet files is a table named after it
//! (`device_traffic`, `device_traffic_late`, …) with the Hive partition columns `date`
//! (DATE) and `hour` (INT) added, so filters on them prune whole folders before any file
//! is opened. Local and remote copies are merged by an [`overlay::Overlay`]: a file in
//! both places is read once, from local disk.

pub mod format;
pub mod overlay;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;

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
    /// DataFusion refused or failed the query.
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
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
    /// The local root cannot be used.
    #[error("{path}: {message}")]
    Root {
        /// The folder.
        path: String,
        /// Why.
        message: String,
    },
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
}

impl Outputs {
    /// Opens the outputs under a local `root`, a synced `remote` copy, or both (local
    /// first), and registers a table per output folder.
    pub async fn open(root: Option<&Path>, remote: Option<&Target>) -> Result<Self, OutputsError> {
        let mut layers = Vec::new();
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
            layers.push(Layer {
                store: target.store.clone(),
                prefix: target.prefix.clone(),
                name: target.url.clone(),
            });
        }
        let overlay = Arc::new(Overlay::new(layers));
        let ctx = SessionContext::new();
        let url = url::Url::parse(OUTPUTS_URL)
            .map_err(|e| DataFusionError::Internal(format!("{OUTPUTS_URL}: {e}")))?;
        ctx.register_object_store(&url, overlay.clone());
        let tables = discover(&overlay).await?;
        for table in &tables {
            register(&ctx, &table.name).await?;
        }
        Ok(Outputs { ctx, tables })
    }

    /// The tables, by name.
    pub fn tables(&self) -> &[TableInfo] {
        &self.tables
    }

    /// Runs one SQL statement.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult, OutputsError> {
        let run = async {
            let frame = self.ctx.sql(sql).await?;
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
            .table_provider(table)
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
        let query = match time {
            Some(start) => format!("SELECT count(*), min({start}), max({end}) FROM \"{table}\""),
            None => format!("SELECT count(*) FROM \"{table}\""),
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

    /// Adds the list of known tables to a table-not-found error.
    fn explain(&self, error: DataFusionError) -> OutputsError {
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

/// Output folders with Parquet files in them; `_`-prefixed folders (logs, journal, dead
/// letters) are not tables.
async fn discover(overlay: &Overlay) -> Result<Vec<TableInfo>, OutputsError> {
    let store_error = |source| OutputsError::Store {
        location: overlay.to_string(),
        source,
    };
    let top = overlay
        .list_with_delimiter(None)
        .await
        .map_err(store_error)?;
    let mut tables = Vec::new();
    for prefix in top.common_prefixes {
        let Some(name) = prefix.filename().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('_') || name.starts_with('.') {
            continue;
        }
        let files: Vec<_> = overlay
            .list(Some(&prefix))
            .try_filter(|m| futures::future::ready(m.location.as_ref().ends_with(".parquet")))
            .try_collect()
            .await
            .map_err(store_error)?;
        if !files.is_empty() {
            tables.push(TableInfo {
                name,
                files: files.len(),
                bytes: files.iter().map(|m| m.size).sum(),
            });
        }
    }
    Ok(tables)
}

/// Registers the files of output folder `name` as a hidden listing table and the table
/// users see as a view over it.
///
/// The hour folders are zero-padded (`hour=07`, as Hive layouts are). DataFusion turns an
/// equality on a typed partition column into a folder prefix built from the literal
/// (`hour=7`), which would miss them; so the listing table keeps `hour` as text and the
/// view casts it to an integer, which DataFusion prunes by evaluating the filter on each
/// folder's value instead.
async fn register(ctx: &SessionContext, name: &str) -> Result<(), OutputsError> {
    let url = ListingTableUrl::parse(format!("{OUTPUTS_URL}{name}/"))?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![
            ("date".to_owned(), DataType::Date32),
            ("hour".to_owned(), DataType::Utf8),
        ]);
    let schema = options.infer_schema(&ctx.state(), &url).await?;
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("\"{}\"", f.name()))
        .collect();
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    let files = format!("{HIDDEN_PREFIX}{name}");
    ctx.register_table(&files, Arc::new(ListingTable::try_new(config)?))?;
    ctx.sql(&format!(
        "CREATE VIEW \"{name}\" AS SELECT {}, date, CAST(hour AS INT) AS hour FROM \"{files}\"",
        columns.join(", ")
    ))
    .await?;
    Ok(())
}
