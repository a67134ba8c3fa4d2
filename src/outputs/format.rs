//! Query results as an aligned table, CSV with a header, JSON lines or Parquet.

use std::io::Write;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// How results are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// An aligned table for a terminal.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row, per line.
    Json,
    /// A Parquet file (needs --out).
    Parquet,
}

/// Why results could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Encoding failed.
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    /// Parquet encoding failed.
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Writing failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Writes `batches` (of `schema`) to `out` in `format`.
pub fn write<W: Write + Send>(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: OutputFormat,
    mut out: W,
) -> Result<(), FormatError> {
    match format {
        OutputFormat::Table => {
            let empty;
            let shown = if batches.is_empty() {
                empty = [RecordBatch::new_empty(schema.clone())];
                &empty[..]
            } else {
                batches
            };
            let table = arrow::util::pretty::pretty_format_batches(shown)?;
            writeln!(out, "{table}")?;
        }
        OutputFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            if batches.is_empty() {
                writer.write(&nested_as_text(&RecordBatch::new_empty(schema.clone()))?)?;
            }
            for batch in batches {
                writer.write(&nested_as_text(batch)?)?;
            }
        }
        OutputFormat::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
        OutputFormat::Parquet => {
            let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema.clone(), None)?;
            for batch in batches {
                writer.write(batch)?;
            }
            writer.close()?;
        }
    }
    out.flush()?;
    Ok(())
}

/// `batch` with list, struct and map columns (which CSV cannot hold, e.g. an
/// `APPROX_TOP_K` list) written as the text the table format shows for them.
fn nested_as_text(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{ArrayRef, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| f.data_type().is_nested())
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if !field.data_type().is_nested() {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
            continue;
        }
        let text = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())?;
        let values: StringArray = (0..column.len())
            .map(|i| (!column.is_null(i)).then(|| text.value(i).to_string()))
            .collect();
        fields.push(Field::new(field.name(), DataType::Utf8, true));
        columns.push(std::sync::Arc::new(values));
    }
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)
}

/// The first row of a result as display strings (empty if there is none).
pub fn first_row(batches: &[RecordBatch]) -> Vec<String> {
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Vec::new();
    };
    let options = FormatOptions::default().with_null("NULL");
    batch
        .columns()
        .iter()
        .map(|column| {
            ArrayFormatter::try_new(column.as_ref(), &options)
                .map(|f| f.value(0).to_string())
                .unwrap_or_default()
        })
        .collect()
}
