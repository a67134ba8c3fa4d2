//! The SQL types edgeflow understands, and their values outside the hot path.
//!
//! Inside the dataflow, values live in typed columns ([`crate::batch`]); [`Value`] is for
//! literals in queries and for the few rows that are handled one at a time (closed-window
//! output expressions, late readings, tests).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A column type of a source schema or of an output column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataType {
    /// UTF-8 text (`TEXT`, `VARCHAR`, `STRING`).
    Text,
    /// 64-bit signed integer (`BIGINT`, `INT`, `INTEGER`).
    BigInt,
    /// 64-bit float (`DOUBLE`, `FLOAT`, `REAL`).
    Double,
    /// `BOOLEAN`.
    Boolean,
    /// Instant in UTC, microseconds since the Unix epoch (`TIMESTAMP`).
    Timestamp,
}

impl DataType {
    /// The SQL spelling used in plans and error messages.
    pub fn sql_name(self) -> &'static str {
        match self {
            DataType::Text => "TEXT",
            DataType::BigInt => "BIGINT",
            DataType::Double => "DOUBLE",
            DataType::Boolean => "BOOLEAN",
            DataType::Timestamp => "TIMESTAMP",
        }
    }

    /// Whether arithmetic applies to the type.
    pub fn is_numeric(self) -> bool {
        matches!(self, DataType::BigInt | DataType::Double)
    }

    /// The Arrow type the Parquet sink writes for this type.
    pub fn arrow_type(self) -> arrow::datatypes::DataType {
        use arrow::datatypes::{DataType as A, TimeUnit};
        match self {
            DataType::Text => A::Utf8,
            DataType::BigInt => A::Int64,
            DataType::Double => A::Float64,
            DataType::Boolean => A::Boolean,
            DataType::Timestamp => A::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sql_name())
    }
}

/// One SQL value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// `TEXT`.
    Text(String),
    /// `BIGINT`.
    BigInt(i64),
    /// `DOUBLE`.
    Double(f64),
    /// `BOOLEAN`.
    Boolean(bool),
    /// `TIMESTAMP`, microseconds since the Unix epoch.
    Timestamp(i64),
}

impl Value {
    /// The type of a non-null value.
    pub fn data_type(&self) -> Option<DataType> {
        match self {
            Value::Null => None,
            Value::Text(_) => Some(DataType::Text),
            Value::BigInt(_) => Some(DataType::BigInt),
            Value::Double(_) => Some(DataType::Double),
            Value::Boolean(_) => Some(DataType::Boolean),
            Value::Timestamp(_) => Some(DataType::Timestamp),
        }
    }

    /// Whether the value is SQL `NULL`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as a double, for numeric values.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::BigInt(v) => Some(*v as f64),
            Value::Double(v) => Some(*v),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Value::BigInt(v) => write!(f, "{v}"),
            Value::Double(v) => write!(f, "{v:?}"),
            Value::Boolean(v) => write!(f, "{}", if *v { "TRUE" } else { "FALSE" }),
            Value::Timestamp(us) => {
                write!(f, "TIMESTAMP '{}'", crate::time::format_rfc3339_micros(*us))
            }
        }
    }
}
