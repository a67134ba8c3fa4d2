//! Writing results: Arrow schemas of the outputs, Parquet encoding, atomic commits and
//! the output layout.

pub mod commit;
pub mod layout;
pub mod parquet;

use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

pub use layout::Layout;

use crate::query::QueryPlan;

/// A sink that could not write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The file system refused.
    #[error("writing {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Parquet encoding failed.
    #[error("encoding {}: {source}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ::parquet::errors::ParquetError,
    },
}

/// A file that is durably in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedFile {
    /// Path relative to the output root (`/`-separated): also its object key.
    pub relative: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Rows in it.
    pub rows: u64,
}

fn timestamp() -> ArrowType {
    ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The schema of a query's result files.
pub fn result_schema(plan: &QueryPlan) -> SchemaRef {
    Arc::new(Schema::new(
        plan.outputs
            .iter()
            .map(|o| Field::new(&o.name, o.expr.ty.arrow_type(), o.nullable))
            .collect::<Vec<_>>(),
    ))
}

/// The schema of a query's late files: the source columns, then the window the reading
/// missed and the watermark it met.
pub fn late_schema(plan: &QueryPlan) -> SchemaRef {
    let mut fields: Vec<Field> = plan
        .source
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| Field::new(&c.name, c.ty.arrow_type(), i != plan.source.event_time))
        .collect();
    fields.push(Field::new("window_start", timestamp(), false));
    fields.push(Field::new("window_end", timestamp(), false));
    fields.push(Field::new("watermark", timestamp(), false));
    Arc::new(Schema::new(fields))
}

/// Encodes `batch` and commits it at `relative` under the layout's root.
pub fn write_parquet(
    layout: &Layout,
    relative: String,
    batch: &RecordBatch,
) -> Result<CommittedFile, SinkError> {
    let path = layout.absolute(&relative);
    let bytes = parquet::encode(batch).map_err(|source| SinkError::Parquet {
        path: path.clone(),
        source,
    })?;
    commit::commit_bytes(&path, &bytes).map_err(|source| SinkError::Io { path, source })?;
    Ok(CommittedFile {
        relative,
        bytes: bytes.len() as u64,
        rows: batch.num_rows() as u64,
    })
}
