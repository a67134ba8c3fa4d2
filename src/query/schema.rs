//! `CREATE TABLE` to [`SourceSchema`].

use sqlparser::ast::{
    CreateTable, CreateTableOptions, Expr, Spanned, SqlOption, Value as SqlValue,
};

use super::connector::{TableOption, plan_connector};
use super::duration::duration_option;
use super::error::{PlanError, PlanResult};
use super::plan::{Field, SourceSchema};
use super::scalar::sql_type;
use crate::types::DataType;

/// Default `max_future_skew`: a reading an hour ahead of the readings around it is a bad
/// clock, not traffic.
pub const DEFAULT_MAX_FUTURE_SKEW: i64 = 3_600_000_000;

/// Finds a declared column by name: exact spelling first, then ignoring case.
pub fn find_column(columns: &[Field], name: &str) -> Option<usize> {
    columns.iter().position(|c| c.name == name).or_else(|| {
        columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    })
}

/// The name a `CREATE TABLE` declares.
pub(super) fn table_name(create: &CreateTable) -> PlanResult<String> {
    create
        .name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.clone())
        .ok_or_else(|| PlanError::at(create.name.span(), "expected a table name"))
}

pub(super) fn string_option(expr: &Expr) -> PlanResult<String> {
    match expr {
        Expr::Value(v) => match &v.value {
            SqlValue::SingleQuotedString(s) => Ok(s.clone()),
            _ => Err(PlanError::at(expr.span(), "expected a quoted string")),
        },
        Expr::Identifier(ident) => Ok(ident.value.clone()),
        _ => Err(PlanError::at(expr.span(), "expected a quoted string")),
    }
}

/// Plans the source table declaration; relative paths in its options are taken from
/// `base`, the query file's folder.
pub fn plan_source(create: &CreateTable, base: &std::path::Path) -> PlanResult<SourceSchema> {
    let span = create.name.span();
    let name = table_name(create)?;
    if create.columns.is_empty() {
        return Err(PlanError::at(
            span,
            "expected at least one column in CREATE TABLE",
        ));
    }
    let mut columns: Vec<Field> = Vec::with_capacity(create.columns.len());
    for c in &create.columns {
        let ty = sql_type(&c.data_type, c.name.span)?;
        if columns
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(&c.name.value))
        {
            return Err(PlanError::at(
                c.name.span,
                format!("column `{}` is declared twice", c.name.value),
            ));
        }
        if matches!(
            c.name.value.to_ascii_lowercase().as_str(),
            "window_start" | "window_end"
        ) {
            return Err(PlanError::at(
                c.name.span,
                format!("`{}` is reserved for window bounds", c.name.value),
            ));
        }
        columns.push(Field {
            name: c.name.value.clone(),
            ty,
        });
    }
    let options: &[SqlOption] = match &create.table_options {
        CreateTableOptions::With(options) => options,
        CreateTableOptions::None => &[],
        _ => {
            return Err(PlanError::at(
                span,
                "expected options as WITH (event_time = '<column>', ...)",
            ));
        }
    };
    let mut table_options = Vec::with_capacity(options.len());
    for option in options {
        let SqlOption::KeyValue { key, value } = option else {
            return Err(PlanError::at(option.span(), "expected key = 'value'"));
        };
        let key_name = key.value.to_ascii_lowercase();
        if let Some(first) = table_options
            .iter()
            .find(|o: &&TableOption| o.key == key_name)
        {
            return Err(PlanError::at(
                key.span,
                format!(
                    "option `{key_name}` is given twice (first at line {})",
                    first.key_span.start.line
                ),
            ));
        }
        table_options.push(TableOption {
            key: key_name,
            value: string_option(value)?,
            key_span: key.span,
            value_span: value.span(),
        });
    }
    let mut event_time = None;
    let mut max_ooo = 0;
    let mut allowed_lateness = 0;
    let mut max_future_skew = DEFAULT_MAX_FUTURE_SKEW;
    for option in &table_options {
        match option.key.as_str() {
            "event_time" => {
                let column = &option.value;
                let index = find_column(&columns, column).ok_or_else(|| {
                    PlanError::at(
                        option.value_span,
                        format!("event_time names `{column}`, which is not a declared column"),
                    )
                })?;
                if columns[index].ty != DataType::Timestamp {
                    return Err(PlanError::at(
                        option.value_span,
                        format!(
                            "event_time column `{column}` must be TIMESTAMP, not {}",
                            columns[index].ty
                        ),
                    ));
                }
                event_time = Some(index);
            }
            "max_out_of_orderness" => {
                max_ooo = duration_option(&option.value, option.value_span, true)?;
            }
            "allowed_lateness" => {
                allowed_lateness = duration_option(&option.value, option.value_span, true)?;
            }
            "max_future_skew" => {
                max_future_skew = duration_option(&option.value, option.value_span, false)?;
            }
            _ => {}
        }
    }
    let connector = plan_connector(&table_options, &columns, span, base)?;
    let event_time = event_time.ok_or_else(|| {
        PlanError::at(
            span,
            "expected WITH (event_time = '<timestamp column>') to say which column is event time",
        )
    })?;
    Ok(SourceSchema {
        name,
        columns,
        event_time,
        max_out_of_orderness: max_ooo,
        allowed_lateness,
        max_future_skew,
        connector,
    })
}
