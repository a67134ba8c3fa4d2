//! Writing results: Arrow schemas of the outputs, Parquet encoding, atomic commits and
//! the output layout.

pub mod commit;
pub mod compaction;
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
    /// MD5 of the content, hex ([`crate::digest::md5_hex`]).
    pub md5: String,
}

/// A result file replaced by a newer revision: moved locally from `from` to `to` (both
/// relative to the output root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superseded {
    /// Where it was, in the result table.
    pub from: String,
    /// Where it is now, in `<query>_revisions/`.
    pub to: String,
}

fn timestamp() -> ArrowType {
    ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Name of the column that numbers the revisions of a window's rows (0 first).
pub const REVISION_COLUMN: &str = "revision";

/// The schema of a query's result files: the `SELECT` list, then [`REVISION_COLUMN`].
pub fn result_schema(plan: &QueryPlan) -> SchemaRef {
    use crate::query::TopNColumn;
    // An output, followed by its sketch column if it has one.
    let with_sketch = |i: usize| {
        let o = &plan.outputs[i];
        let output = Field::new(&o.name, plan.output_arrow_type(i), o.nullable);
        std::iter::once(output).chain(plan.sketch_of(i).map(|_| {
            Field::new(
                crate::query::sketch_column_name(&o.name),
                ArrowType::Binary,
                true,
            )
        }))
    };
    let mut fields: Vec<Field> = match &plan.top_n {
        None => (0..plan.outputs.len()).flat_map(with_sketch).collect(),
        Some(top) => top
            .columns
            .iter()
            .flat_map(|c| -> Vec<Field> {
                match c {
                    TopNColumn::Output(i) => with_sketch(*i).collect(),
                    TopNColumn::Rank(name) => vec![Field::new(name, ArrowType::Int64, false)],
                }
            })
            .collect(),
    };
    fields.push(Field::new(REVISION_COLUMN, ArrowType::Int32, false));
    Arc::new(Schema::new(fields))
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

/// The result column that is a window's only group key, if the query has exactly one
/// key and selects it plainly: its values are unique in every result file.
pub fn unique_result_column(plan: &QueryPlan) -> Option<String> {
    use crate::query::expr::{ExprKind, OutputLeaf};
    if plan.result_key_types().len() != 1 {
        return None;
    }
    let key = plan
        .outputs
        .iter()
        .position(|o| matches!(o.expr.kind, ExprKind::Leaf(OutputLeaf::Key(0, _))))?;
    let kept = plan
        .top_n
        .as_ref()
        .is_none_or(|top| top.columns.contains(&crate::query::TopNColumn::Output(key)));
    kept.then(|| plan.outputs[key].name.clone())
}

/// Encodes `batch` and commits it at `relative` under the layout's root; `unique` names
/// columns whose values are all different (see [`parquet::writer_properties`]).
/// `durable` runs as soon as the file is durable, before the checksum for the sync
/// journal is computed, so close-to-durable latency measures exactly that.
pub fn write_parquet(
    layout: &Layout,
    relative: String,
    batch: &RecordBatch,
    unique: &[&str],
    durable: impl FnOnce(),
) -> Result<CommittedFile, SinkError> {
    let bytes = parquet::encode(batch, unique).map_err(|source| SinkError::Parquet {
        path: layout.absolute(&relative),
        source,
    })?;
    commit_encoded(layout, relative, &bytes, batch.num_rows(), durable)
}

/// Commits the encoded file `bytes` (of `rows` rows) at `relative` under the layout's
/// root, as [`write_parquet`] does once it has encoded.
pub fn commit_encoded(
    layout: &Layout,
    relative: String,
    bytes: &[u8],
    rows: usize,
    durable: impl FnOnce(),
) -> Result<CommittedFile, SinkError> {
    let path = layout.absolute(&relative);
    commit::commit_bytes(&path, bytes).map_err(|source| SinkError::Io { path, source })?;
    durable();
    let md5 = crate::digest::md5_hex(bytes);
    Ok(CommittedFile {
        md5,
        relative,
        bytes: bytes.len() as u64,
        rows: rows as u64,
    })
}
