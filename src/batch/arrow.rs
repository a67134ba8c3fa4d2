//! Columns to Arrow arrays, for the Parquet sink.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, StringBuilder, TimestampMicrosecondArray,
};
use arrow::buffer::NullBuffer;

use super::{Column, ColumnValues, Interner};
use crate::types::DataType;

fn pick<T: Copy>(values: &[T], rows: Option<&[usize]>) -> Vec<T> {
    match rows {
        None => values.to_vec(),
        Some(rows) => rows.iter().map(|&r| values[r]).collect(),
    }
}

fn nulls(column: &Column, rows: Option<&[usize]>) -> Option<NullBuffer> {
    column
        .validity
        .as_ref()
        .map(|v| NullBuffer::from(pick(v, rows)))
}

/// Converts `column` (of type `ty`) to an Arrow array, taking only `rows` when given.
pub fn to_arrow(
    column: &Column,
    ty: DataType,
    interner: &Interner,
    rows: Option<&[usize]>,
) -> ArrayRef {
    let n = nulls(column, rows);
    match &column.values {
        ColumnValues::Text(ids) => {
            let ids = pick(ids, rows);
            let mut b = StringBuilder::with_capacity(ids.len(), ids.len() * 12);
            for (i, &id) in ids.iter().enumerate() {
                if n.as_ref().is_none_or(|n| n.is_valid(i)) {
                    b.append_value(interner.get(id));
                } else {
                    b.append_null();
                }
            }
            Arc::new(b.finish())
        }
        ColumnValues::BigInt(v) | ColumnValues::Timestamp(v) if ty == DataType::Timestamp => {
            Arc::new(TimestampMicrosecondArray::new(pick(v, rows).into(), n).with_timezone("UTC"))
        }
        ColumnValues::BigInt(v) | ColumnValues::Timestamp(v) => {
            Arc::new(Int64Array::new(pick(v, rows).into(), n))
        }
        ColumnValues::Double(v) => Arc::new(Float64Array::new(pick(v, rows).into(), n)),
        ColumnValues::Boolean(v) => Arc::new(BooleanArray::new(pick(v, rows).into(), n)),
    }
}
