//! Query files: SQL text to a validated [`QueryPlan`].
//!
//! A query file holds a `CREATE TABLE` that declares the source readings and one windowed
//! `SELECT`, possibly ranked as a window Top-N ([`top_n`]). sqlparser (the parser DataFusion uses) parses; this module resolves names,
//! checks types and reports mistakes as `file:line:column: what was expected`.

pub mod connector;
mod duration;
mod error;
pub mod expr;
#[cfg(test)]
mod fuzz;
mod plan;
pub mod registry;
mod scalar;
mod schema;
mod select;
pub mod top_n;

use std::path::{Path, PathBuf};

use sqlparser::ast::{CreateTable, Query, SetExpr, Spanned, Statement};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

pub use duration::parse_duration;
pub use error::{PlanError, Position, QueryError};
pub use plan::{
    AggregateCall, AggregateFunction, Field, GroupKey, OutputColumn, QueryPlan, SourceSchema,
    WindowSpec, sketch_column_name,
};
pub use top_n::{SortKey, TopN, TopNColumn};

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

/// Whether `name` can name a query: it names output folders and files, so nothing that
/// could climb out of the output root (`..`) or need quoting.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Plans query text; `name` must match `[A-Za-z0-9_-]+`; `file` is only used in error
/// messages and the plan.
pub fn parse(name: &str, file: &Path, text: &str) -> Result<QueryPlan, QueryError> {
    if !is_valid_name(name) {
        return Err(QueryError::BadName {
            file: file.to_owned(),
            name: name.to_owned(),
        });
    }
    plan_text(name, file, text).map_err(|e| e.in_file(file.to_owned()))
}

/// sqlparser's own recursion limit, well above [`scalar::MAX_EXPR_DEPTH`] so that our
/// check, which knows the position, is the one that fires; sqlparser guards its stack
/// itself (`recursive-protection`).
const PARSER_RECURSION_LIMIT: usize = 4 * scalar::MAX_EXPR_DEPTH;

fn plan_text(name: &str, file: &Path, text: &str) -> Result<QueryPlan, PlanError> {
    let statements = Parser::new(&GenericDialect {})
        .with_recursion_limit(PARSER_RECURSION_LIMIT)
        .try_with_sql(text)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| match e {
            sqlparser::parser::ParserError::RecursionLimitExceeded => PlanError {
                position: deepest_parenthesis(text),
                message: format!(
                    "expression nested more than {} levels deep",
                    scalar::MAX_EXPR_DEPTH
                ),
            },
            e => PlanError::from_parser(&e),
        })?;
    let mut creates = Vec::new();
    let mut query = None;
    for statement in &statements {
        match statement {
            Statement::CreateTable(c) if query.is_none() && creates.len() < 2 => creates.push(c),
            Statement::Query(q) if !creates.is_empty() && query.is_none() => query = Some(q),
            Statement::CreateTable(c) if query.is_none() => {
                return Err(PlanError::at(
                    c.name.span(),
                    "expected at most two CREATE TABLEs: the readings and a registry to join",
                ));
            }
            Statement::Query(q) if creates.is_empty() => {
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
    let Some(first) = creates.first() else {
        return Err(PlanError::at(
            sqlparser::tokenizer::Span::empty(),
            "expected CREATE TABLE <source> (...) WITH (event_time = '<column>')",
        ));
    };
    let Some(query) = query else {
        return Err(PlanError::at(
            first.name.span(),
            "expected a SELECT after CREATE TABLE",
        ));
    };
    let base = file.parent().unwrap_or(Path::new(""));
    let (aggregate, top_n) = top_n::split(query)?;
    let (create, registry) = split_tables(&creates, aggregate)?;
    let source = schema::plan_source(create, base)?;
    let registry = registry
        .map(|r| registry::plan_registry(r, base))
        .transpose()?;
    let select = select::plan_select(aggregate, &source, registry.as_ref())?;
    if let (Some(t), true) = (&top_n, select.window.is_session()) {
        return Err(PlanError::at(
            t.rank_span(),
            "a window Top-N ranks the rows of one window, and every session is a window of its own; rank over TUMBLE or HOP",
        ));
    }
    let top_n = top_n
        .map(|t| t.plan(&select.outputs, &select.aggregates))
        .transpose()?;
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
        top_n,
        join: select.join,
    })
}

/// Tells the readings' `CREATE TABLE` from the registry's: the registry is the table the
/// SELECT joins.
fn split_tables<'a>(
    creates: &[&'a CreateTable],
    query: &Query,
) -> Result<(&'a CreateTable, Option<&'a CreateTable>), PlanError> {
    let table_name = |c: &CreateTable| schema::table_name(c).unwrap_or_default();
    let joined = match query.body.as_ref() {
        SetExpr::Select(select) => select
            .from
            .first()
            .and_then(|f| f.joins.first())
            .and_then(registry::joined_table),
        _ => None,
    };
    match (creates, joined) {
        ([only], _) => Ok((only, None)),
        ([a, b], Some((name, span))) => {
            if table_name(b).eq_ignore_ascii_case(&name) {
                Ok((a, Some(b)))
            } else if table_name(a).eq_ignore_ascii_case(&name) {
                Ok((b, Some(a)))
            } else {
                Err(PlanError::at(
                    span,
                    format!(
                        "unknown table `{name}`; declared are `{}` and `{}`",
                        table_name(a),
                        table_name(b)
                    ),
                ))
            }
        }
        ([_, b, ..], _) => Err(PlanError::at(
            b.name.span(),
            "a second CREATE TABLE declares a registry to JOIN, but the SELECT joins no table",
        )),
        ([], _) => Err(PlanError::at(
            sqlparser::tokenizer::Span::empty(),
            "expected CREATE TABLE <source> (...)",
        )),
    }
}

/// Where parentheses first nest deepest in `text` (quotes and `--` comments skipped):
/// the position for a nesting error sqlparser reports without one.
fn deepest_parenthesis(text: &str) -> Position {
    let (mut depth, mut deepest, mut at) = (0usize, 0usize, Position { line: 1, column: 1 });
    let (mut line, mut column) = (1u64, 0u64);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        column += 1;
        match (c, quote) {
            ('\n', _) => {
                line += 1;
                column = 0;
                comment = false;
            }
            _ if comment => {}
            (q, Some(open)) if q == open => quote = None,
            (_, Some(_)) => {}
            ('\'' | '"', None) => quote = Some(c),
            ('-', None) if chars.peek() == Some(&'-') => comment = true,
            ('(', None) => {
                depth += 1;
                if depth > deepest {
                    deepest = depth;
                    at = Position { line, column };
                }
            }
            (')', None) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    at
}
