//! Query files: SQL text to a validated [`QueryPlan`].
//!
//! A query file holds a `CREATE TABLE` that declares the source readings and one windowed
//! `SELECT`. sqlparser (the parser DataFusion uses) parses; this module resolves names,
//! checks types and reports mistakes as `file:line:column: what was expected`.

mod duration;
mod error;
pub mod expr;
mod plan;
mod scalar;
mod schema;
mod select;

use std::path::{Path, PathBuf};

use sqlparser::ast::{Spanned, Statement};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

pub use duration::parse_duration;
pub use error::{PlanError, Position, QueryError};
pub use plan::{
    AggregateCall, AggregateFunction, Field, GroupKey, OutputColumn, QueryPlan, SourceSchema,
    WindowSpec,
};

/// Reads and plans a query file; the query is named after the file stem.
pub fn load(path: &Path) -> Result<QueryPlan, QueryError> {
    let text = std::fs::read_to_string(path).map_err(|source| QueryError::Read {
        file: path.to_owned(),
        source,
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "query".into());
    parse(&name, path, &text)
}

/// Plans query text; `file` is only used in error messages and the plan.
pub fn parse(name: &str, file: &Path, text: &str) -> Result<QueryPlan, QueryError> {
    plan_text(name, file, text).map_err(|e| e.in_file(file.to_owned()))
}

fn plan_text(name: &str, file: &Path, text: &str) -> Result<QueryPlan, PlanError> {
    let statements =
        Parser::parse_sql(&GenericDialect {}, text).map_err(|e| PlanError::from_parser(&e))?;
    let mut create = None;
    let mut query = None;
    for statement in &statements {
        match statement {
            Statement::CreateTable(c) if create.is_none() && query.is_none() => create = Some(c),
            Statement::Query(q) if create.is_some() && query.is_none() => query = Some(q),
            Statement::CreateTable(c) if create.is_some() => {
                return Err(PlanError::at(
                    c.name.span(),
                    "expected one CREATE TABLE: a query reads one source",
                ));
            }
            Statement::Query(q) if create.is_none() => {
                return Err(PlanError::at(
                    q.span(),
                    "expected CREATE TABLE <source> (...) before the SELECT",
                ));
            }
            other => {
                return Err(PlanError::at(
                    other.span(),
                    "expected CREATE TABLE followed by one SELECT",
                ));
            }
        }
    }
    let Some(create) = create else {
        return Err(PlanError::at(
            sqlparser::tokenizer::Span::empty(),
            "expected CREATE TABLE <source> (...) WITH (event_time = '<column>')",
        ));
    };
    let Some(query) = query else {
        return Err(PlanError::at(
            create.name.span(),
            "expected a SELECT after CREATE TABLE",
        ));
    };
    let source = schema::plan_source(create)?;
    let select = select::plan_select(query, &source)?;
    Ok(QueryPlan {
        name: name.to_owned(),
        file: PathBuf::from(file),
        source,
        filter: select.filter,
        window: select.window,
        keys: select.keys,
        aggregates: select.aggregates,
        having: select.having,
        outputs: select.outputs,
    })
}
