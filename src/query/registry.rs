//! A device registry table and the `JOIN` that reads it: `CREATE TABLE devices (...)
//! WITH (connector = 'file', path = 'devices.csv', reload = '30s')` and
//! `FROM TUMBLE(readings, ...) r JOIN devices d ON r.device_id = d.device_id`.
//!
//! The registry is not windowed: each window is joined, when it closes, with the version
//! of the registry in force then ([`crate::registry`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sqlparser::ast::{
    BinaryOperator, CreateTable, CreateTableOptions, Expr, Join, JoinConstraint, JoinOperator,
    Spanned, SqlOption, TableFactor,
};

use super::duration::duration_option;
use super::error::{PlanError, PlanResult};
use super::plan::Field;
use super::scalar::sql_type;
use super::schema::{string_option, table_name};
use crate::types::DataType;

/// The registry table a query joins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegistryTable {
    /// Table name.
    pub name: String,
    /// Declared columns, matched by name against the CSV header.
    pub columns: Vec<Field>,
    /// The CSV file, resolved against the query file's folder.
    pub path: PathBuf,
    /// How often the file is checked for changes, microseconds; `None`: read once per run.
    pub reload: Option<i64>,
}

/// How readings without a registry row are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinKind {
    /// Dropped, and counted.
    Inner,
    /// Kept, with the registry's columns NULL.
    Left,
}

/// Where a result key comes from once a window is joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyFrom {
    /// Key `i` of the window's state (a reading column).
    Reading(usize),
    /// Column `i` of the registry.
    Registry(usize),
}

/// A result key of a joined query, in `GROUP BY` order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinedKey {
    /// Column name.
    pub name: String,
    /// Its type.
    pub ty: DataType,
    /// Where it comes from.
    pub from: KeyFrom,
}

/// A windowed aggregate joined with a registry: windows aggregate by the readings' own
/// keys plus the join column (`QueryPlan::keys`); when a window closes, each of its rows
/// finds its registry row and the rows are grouped again by [`RegistryJoin::keys`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegistryJoin {
    /// The registry.
    pub table: RegistryTable,
    /// `INNER` or `LEFT`.
    pub kind: JoinKind,
    /// The registry column joined on: each value names at most one row.
    pub key: usize,
    /// The window-state key holding the readings' join column.
    pub probe: usize,
    /// The result keys.
    pub keys: Vec<JoinedKey>,
    /// The hidden `COUNT(*)` aggregate: how many readings a row without a registry row
    /// drops under `INNER`.
    pub count: usize,
}

impl RegistryJoin {
    /// Where registry column `column` is in a registry row, which leaves the key out
    /// (`None` for the key: it equals the readings' join column).
    pub fn row_position(&self, column: usize) -> Option<usize> {
        match column.cmp(&self.key) {
            std::cmp::Ordering::Less => Some(column),
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Greater => Some(column - 1),
        }
    }

    /// The result keys as group keys (their `column` is unused).
    pub fn result_keys(&self) -> Vec<super::GroupKey> {
        self.keys
            .iter()
            .map(|k| super::GroupKey {
                column: 0,
                name: k.name.clone(),
                ty: k.ty,
            })
            .collect()
    }
}

/// Types a registry column may have.
fn registry_type(ty: DataType) -> bool {
    matches!(
        ty,
        DataType::Text | DataType::BigInt | DataType::Double | DataType::Boolean
    )
}

/// Plans `CREATE TABLE <registry> (...) WITH (connector = 'file', path = ..., reload = ...)`;
/// a relative path is taken from `base`, the query file's folder.
pub fn plan_registry(create: &CreateTable, base: &Path) -> PlanResult<RegistryTable> {
    let span = create.name.span();
    let name = table_name(create)?;
    if create.columns.is_empty() {
        return Err(PlanError::at(
            span,
            "expected the registry's columns, e.g. (device_id TEXT, site TEXT)",
        ));
    }
    let mut columns: Vec<Field> = Vec::with_capacity(create.columns.len());
    for c in &create.columns {
        let ty = sql_type(&c.data_type, c.name.span)?;
        if !registry_type(ty) {
            return Err(PlanError::at(
                c.name.span,
                format!("a registry column is TEXT, BIGINT, DOUBLE or BOOLEAN, not {ty}"),
            ));
        }
        if columns
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(&c.name.value))
        {
            return Err(PlanError::at(
                c.name.span,
                format!("column `{}` is declared twice", c.name.value),
            ));
        }
        columns.push(Field {
            name: c.name.value.clone(),
            ty,
        });
    }
    let options: &[SqlOption] = match &create.table_options {
        CreateTableOptions::With(options) => options,
        _ => {
            return Err(PlanError::at(
                span,
                "expected WITH (connector = 'file', path = '<registry>.csv')",
            ));
        }
    };
    let (mut connector, mut path, mut reload) = (None, None, None);
    for option in options {
        let SqlOption::KeyValue { key, value } = option else {
            return Err(PlanError::at(option.span(), "expected key = 'value'"));
        };
        let text = string_option(value)?;
        match key.value.to_ascii_lowercase().as_str() {
            "connector" => connector = Some((text, value.span())),
            "path" => path = Some(text),
            "reload" => reload = Some(duration_option(&text, value.span(), false)?),
            "format" if text.eq_ignore_ascii_case("csv") => {}
            "format" => {
                return Err(PlanError::at(
                    value.span(),
                    "a registry is read as CSV with a header row: format = 'csv'",
                ));
            }
            "event_time" => {
                return Err(PlanError::at(
                    key.span,
                    "a registry has no event time: only the readings are windowed",
                ));
            }
            other => {
                return Err(PlanError::at(
                    key.span,
                    format!(
                        "unknown option `{other}` for a registry; expected one of: connector, format, path, reload"
                    ),
                ));
            }
        }
    }
    match connector {
        Some((c, _)) if c.eq_ignore_ascii_case("file") => {}
        Some((c, at)) => {
            return Err(PlanError::at(
                at,
                format!("a registry is read from a file: connector = 'file', not '{c}'"),
            ));
        }
        None => {
            return Err(PlanError::at(
                span,
                "expected WITH (connector = 'file', path = '<registry>.csv')",
            ));
        }
    }
    let path = path.ok_or_else(|| {
        PlanError::at(
            span,
            "expected path = '<registry>.csv' (relative to the query file)",
        )
    })?;
    Ok(RegistryTable {
        name,
        columns,
        path: base.join(path),
        reload,
    })
}

/// The table a `JOIN` reads, with its span: for telling the registry's `CREATE TABLE`
/// from the source's.
pub fn joined_table(join: &Join) -> Option<(String, sqlparser::tokenizer::Span)> {
    match &join.relation {
        TableFactor::Table {
            name, args: None, ..
        } => name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| (i.value.clone(), name.span())),
        _ => None,
    }
}

/// The parts of a `JOIN` clause the planner needs.
pub struct JoinClause<'a> {
    /// `INNER` or `LEFT`.
    pub kind: JoinKind,
    /// Names that qualify the registry's columns: its name and alias.
    pub qualifiers: Vec<String>,
    /// The two sides of `ON a = b`.
    pub on: (&'a Expr, &'a Expr),
    /// Where the `ON` condition is, for errors.
    pub on_span: sqlparser::tokenizer::Span,
}

/// Reads `JOIN <registry> [alias] ON a = b`.
pub fn join_clause<'a>(join: &'a Join, table: &RegistryTable) -> PlanResult<JoinClause<'a>> {
    let span = join.relation.span();
    let (kind, constraint) = match &join.join_operator {
        JoinOperator::Join(c) | JoinOperator::Inner(c) => (JoinKind::Inner, c),
        JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (JoinKind::Left, c),
        _ => {
            return Err(PlanError::at(
                span,
                "only INNER and LEFT joins of readings with a registry are supported",
            ));
        }
    };
    let TableFactor::Table { alias, .. } = &join.relation else {
        return Err(PlanError::at(span, "expected a registry table name"));
    };
    let mut qualifiers = vec![table.name.clone()];
    if let Some(alias) = alias {
        qualifiers.push(alias.name.value.clone());
    }
    let usage = "expected ON <reading column> = <registry column>";
    let JoinConstraint::On(on) = constraint else {
        return Err(PlanError::at(span, usage));
    };
    let Expr::BinaryOp {
        left,
        op: BinaryOperator::Eq,
        right,
    } = on
    else {
        return Err(PlanError::at(on.span(), usage));
    };
    Ok(JoinClause {
        kind,
        qualifiers,
        on: (left, right),
        on_span: on.span(),
    })
}
