//! A table's scan without the rows its listing found superseded.
//!
//! A compacted hour file holds the rows of the windows it replaced; a window written
//! again afterwards (a `--fresh` run over a folder whose hours were compacted) is a new
//! file next to it, and its earlier rows must leave the table. The listing
//! ([`Curated`]) finds which runs of a compacted file's rows those are; this wrapper
//! tells the Parquet reader to skip them, file by file, and marks the scan's row counts
//! inexact so that no `count(*)` is answered from the files' footers.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{ScanArgs, ScanResult, Session};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::listing::{ListingTable, PartitionedFile};
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use object_store::path::Path;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};

use super::listing::Curated;

/// A listing table whose scans skip the superseded rows of compacted files.
#[derive(Debug)]
pub struct LatestRows {
    files: ListingTable,
    store: Arc<Curated>,
}

impl LatestRows {
    /// `files`, listed through `store`.
    pub fn new(files: ListingTable, store: Arc<Curated>) -> Self {
        LatestRows { files, store }
    }

    /// `plan` with each compacted file's superseded rows skipped.
    fn skip_superseded(&self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_down(|node| {
            let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
                return Ok(Transformed::no(node));
            };
            let mut changed = false;
            let groups: Vec<FileGroup> = config
                .file_groups
                .iter()
                .map(|group| {
                    let files: Vec<PartitionedFile> = group.iter().cloned().collect();
                    let mut skipping = false;
                    let files: Vec<PartitionedFile> = files
                        .into_iter()
                        .map(|file| match self.selection(&file.object_meta.location) {
                            Some(selection) => {
                                skipping = true;
                                let mut file = file.with_extension(selection);
                                file.statistics = None;
                                file
                            }
                            None => file,
                        })
                        .collect();
                    changed |= skipping;
                    if skipping {
                        FileGroup::new(files)
                    } else {
                        group.clone()
                    }
                })
                .collect();
            if !changed {
                return Ok(Transformed::no(node));
            }
            let statistics = config.statistics().to_inexact();
            let config = FileScanConfigBuilder::from(config.clone())
                .with_file_groups(groups)
                .with_statistics(statistics)
                .build();
            let exec: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
            Ok(Transformed::yes(exec))
        })
        .map(|transformed| transformed.data)
    }

    /// The rows of `location` to read, if the listing found some superseded.
    fn selection(&self, location: &Path) -> Option<ParquetRowSelection> {
        let skipped = self.store.skipped_rows(location)?;
        let mut selectors = Vec::with_capacity(skipped.runs.len() * 2 + 1);
        let mut row = 0u64;
        for (first, rows) in skipped.runs {
            selectors.push(RowSelector::select(to_usize(first.saturating_sub(row))));
            selectors.push(RowSelector::skip(to_usize(rows)));
            row = first + rows;
        }
        selectors.push(RowSelector::select(to_usize(
            skipped.rows.saturating_sub(row),
        )));
        Some(ParquetRowSelection::new(RowSelection::from(selectors)))
    }
}

fn to_usize(rows: u64) -> usize {
    usize::try_from(rows).unwrap_or(usize::MAX)
}

#[async_trait]
impl TableProvider for LatestRows {
    fn schema(&self) -> SchemaRef {
        self.files.schema()
    }

    fn table_type(&self) -> TableType {
        self.files.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.files.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.files.scan(state, projection, filters, limit).await?;
        self.skip_superseded(plan)
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> Result<ScanResult> {
        let plan = self.files.scan_with_args(state, args).await?.into_inner();
        Ok(ScanResult::new(self.skip_superseded(plan)?))
    }
}
