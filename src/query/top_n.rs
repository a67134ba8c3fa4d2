//! Window Top-N, the pattern of Flink and RisingWave:
//!
//! ```sql
//! SELECT * FROM (
//!     SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end
//!                                  ORDER BY moved DESC) AS rank
//!     FROM (<windowed aggregate>)
//! ) WHERE rank <= 10
//! ```
//!
//! The windowed aggregate is planned as any query; the ranking only picks and orders the
//! rows of each window as it is written, so it keeps no state beyond the aggregate's.
//! Rows that tie on the ORDER BY keys are ranked by the group key, ascending, so the
//! answer never depends on the worker count.

use serde::{Deserialize, Serialize};
use sqlparser::ast::{
    BinaryOperator, Expr, FunctionArguments, GroupByExpr, Ident, Query, Select, SelectItem,
    SetExpr, Spanned, TableFactor, Value, WindowType,
};
use sqlparser::tokenizer::Span;

use super::error::{PlanError, PlanResult};
use super::expr::{ExprKind, OutputLeaf};
use super::plan::{AggregateCall, AggregateFunction, OutputColumn};

/// Most rows a window Top-N may keep per window.
pub const MAX_TOP_N: usize = 100_000;

/// How each window's rows are ranked and cut.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopN {
    /// `ORDER BY` of `ROW_NUMBER()`, over the aggregate's output columns.
    pub order: Vec<SortKey>,
    /// Rows kept per window (`rank <= limit`).
    pub limit: usize,
    /// The result columns.
    pub columns: Vec<TopNColumn>,
}

/// One `ORDER BY` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SortKey {
    /// Index into the aggregate's outputs.
    pub output: usize,
    /// `DESC`.
    pub descending: bool,
    /// `NULLS FIRST` (the default is `NULLS LAST`, as in DuckDB).
    pub nulls_first: bool,
}

/// A result column of a Top-N query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopNColumn {
    /// An output of the aggregate, by index.
    Output(usize),
    /// The rank, `BIGINT` from 1, under this name.
    Rank(String),
}

/// The parts of a Top-N query around its aggregate, not yet resolved against it.
pub struct Shape<'q> {
    outer: &'q [SelectItem],
    middle: &'q [SelectItem],
    rank: Ident,
    order: &'q [sqlparser::ast::OrderByExpr],
    limit: usize,
}

/// The single `SELECT` of `query`, refusing what a stream query cannot do.
fn single_select(query: &Query) -> PlanResult<&Select> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(PlanError::at(query.body.span(), "expected a single SELECT"));
    };
    super::select::reject_unsupported(query, select)?;
    Ok(select)
}

/// The subquery `select` reads from, when it reads from exactly one.
fn derived(select: &Select) -> Option<&Query> {
    match select.from.as_slice() {
        [from] if from.joins.is_empty() => match &from.relation {
            TableFactor::Derived { subquery, .. } => Some(subquery),
            _ => None,
        },
        _ => None,
    }
}

fn no_grouping(select: &Select, what: &str) -> PlanResult<()> {
    let grouped = match &select.group_by {
        GroupByExpr::Expressions(e, _) => !e.is_empty(),
        GroupByExpr::All(_) => true,
    };
    if grouped || select.having.is_some() {
        return Err(PlanError::at(
            select.select_token.0.span,
            format!("{what} of a window Top-N cannot group; aggregate in the innermost SELECT"),
        ));
    }
    Ok(())
}

/// Splits `query` into its windowed aggregate and, when it is a window Top-N, the shape
/// around it.
pub fn split(query: &Query) -> PlanResult<(&Query, Option<Shape<'_>>)> {
    let outer = single_select(query)?;
    let Some(middle_query) = derived(outer) else {
        return Ok((query, None));
    };
    const USAGE: &str = "a subquery in FROM is only supported as a window Top-N: SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY <column> DESC) AS rank FROM (<windowed aggregate>)) WHERE rank <= <n>";
    let middle = single_select(middle_query)?;
    let Some(inner) = derived(middle) else {
        return Err(PlanError::at(middle.select_token.0.span, USAGE));
    };
    no_grouping(outer, "the outer SELECT")?;
    no_grouping(middle, "the ranking SELECT")?;
    if middle.selection.is_some() {
        return Err(PlanError::at(
            middle.select_token.0.span,
            "the ranking SELECT takes no WHERE; filter with HAVING in the aggregate",
        ));
    }
    let mut ranking = None;
    for item in &middle.projection {
        if let SelectItem::ExprWithAlias {
            expr: Expr::Function(f),
            alias,
        } = item
            && f.over.is_some()
        {
            if !f.name.to_string().eq_ignore_ascii_case("ROW_NUMBER") {
                return Err(PlanError::at(
                    f.name.span(),
                    "only ROW_NUMBER() ranks a window Top-N",
                ));
            }
            if ranking.is_some() {
                return Err(PlanError::at(f.name.span(), "expected one ROW_NUMBER()"));
            }
            ranking = Some((f, alias.clone()));
        }
    }
    let Some((row_number, rank)) = ranking else {
        return Err(PlanError::at(
            middle.select_token.0.span,
            format!("expected ROW_NUMBER() OVER (...) AS <name> here: {USAGE}"),
        ));
    };
    let empty_args = match &row_number.args {
        FunctionArguments::None => true,
        FunctionArguments::List(l) => l.args.is_empty(),
        FunctionArguments::Subquery(_) => false,
    };
    if !empty_args {
        return Err(PlanError::at(
            row_number.name.span(),
            "ROW_NUMBER() takes no arguments",
        ));
    }
    let Some(WindowType::WindowSpec(spec)) = &row_number.over else {
        return Err(PlanError::at(
            row_number.name.span(),
            "expected OVER (PARTITION BY window_start, window_end ORDER BY ...)",
        ));
    };
    if spec.window_frame.is_some() || spec.window_name.is_some() {
        return Err(PlanError::at(
            row_number.name.span(),
            "ROW_NUMBER() takes no window frame or named window",
        ));
    }
    let partitions_by_window = !spec.partition_by.is_empty()
        && spec.partition_by.iter().all(|e| {
            matches!(e, Expr::Identifier(i)
                if i.value.eq_ignore_ascii_case("window_start")
                    || i.value.eq_ignore_ascii_case("window_end"))
        });
    if !partitions_by_window {
        return Err(PlanError::at(
            spec.partition_by
                .first()
                .map_or(row_number.name.span(), Spanned::span),
            "a window Top-N ranks within each window: PARTITION BY window_start, window_end",
        ));
    }
    if spec.order_by.is_empty() {
        return Err(PlanError::at(
            row_number.name.span(),
            "expected ORDER BY inside OVER (...): what ranks first",
        ));
    }
    let limit = rank_limit(outer.selection.as_ref(), &rank, outer.select_token.0.span)?;
    Ok((
        inner,
        Some(Shape {
            outer: &outer.projection,
            middle: &middle.projection,
            rank,
            order: &spec.order_by,
            limit,
        }),
    ))
}

/// The `n` of `WHERE rank <= n` (or `rank < n + 1`, or `rank = 1`).
fn rank_limit(selection: Option<&Expr>, rank: &Ident, span: Span) -> PlanResult<usize> {
    let expected = || {
        PlanError::at(
            selection.map_or(span, Spanned::span),
            format!(
                "expected WHERE {} <= <n>: how many rows each window keeps",
                rank.value
            ),
        )
    };
    let Some(Expr::BinaryOp { left, op, right }) = selection else {
        return Err(expected());
    };
    let Expr::Identifier(name) = left.as_ref() else {
        return Err(expected());
    };
    if !name.value.eq_ignore_ascii_case(&rank.value) {
        return Err(expected());
    }
    let Expr::Value(v) = right.as_ref() else {
        return Err(expected());
    };
    let Value::Number(text, _) = &v.value else {
        return Err(expected());
    };
    let n: usize = text.parse().map_err(|_| expected())?;
    let limit = match op {
        BinaryOperator::LtEq => n,
        BinaryOperator::Lt => n.saturating_sub(1),
        BinaryOperator::Eq if n == 1 => 1,
        _ => return Err(expected()),
    };
    if !(1..=MAX_TOP_N).contains(&limit) {
        return Err(PlanError::at(
            right.span(),
            format!("a window Top-N keeps between 1 and {MAX_TOP_N} rows per window"),
        ));
    }
    Ok(limit)
}

/// The names a SELECT list picks from `available` (`*` for all of them).
fn pick<T: Clone>(
    items: &[SelectItem],
    available: &[(String, T)],
    skip: impl Fn(&SelectItem) -> bool,
    what: &str,
) -> PlanResult<Vec<(String, T)>> {
    let mut out = Vec::new();
    for item in items.iter().filter(|i| !skip(i)) {
        match item {
            SelectItem::Wildcard(_) => out.extend(available.iter().cloned()),
            SelectItem::UnnamedExpr(Expr::Identifier(ident)) => {
                let found = available
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&ident.value))
                    .ok_or_else(|| {
                        PlanError::at(
                            ident.span,
                            format!(
                                "unknown column `{}` in {what}; columns: {}",
                                ident.value,
                                names(available)
                            ),
                        )
                    })?;
                out.push(found.clone());
            }
            other => {
                return Err(PlanError::at(
                    other.span(),
                    format!("{what} of a window Top-N lists columns by name, or *"),
                ));
            }
        }
    }
    Ok(out)
}

fn names<T>(columns: &[(String, T)]) -> String {
    columns
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Shape<'_> {
    /// Where the rank column is named.
    pub fn rank_span(&self) -> sqlparser::tokenizer::Span {
        self.rank.span
    }

    /// Resolves the ranking and the result columns against the aggregate's `outputs`.
    pub fn plan(&self, outputs: &[OutputColumn], aggregates: &[AggregateCall]) -> PlanResult<TopN> {
        let inner: Vec<(String, TopNColumn)> = outputs
            .iter()
            .enumerate()
            .map(|(i, o)| (o.name.clone(), TopNColumn::Output(i)))
            .collect();
        let is_ranking = |item: &SelectItem| matches!(item, SelectItem::ExprWithAlias { expr: Expr::Function(f), .. } if f.over.is_some());
        let mut middle = pick(self.middle, &inner, is_ranking, "the ranking SELECT")?;
        if middle
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(&self.rank.value))
        {
            return Err(PlanError::at(
                self.rank.span,
                format!("`{}` is already a column of the aggregate", self.rank.value),
            ));
        }
        middle.push((
            self.rank.value.clone(),
            TopNColumn::Rank(self.rank.value.clone()),
        ));
        let columns = pick(self.outer, &middle, |_| false, "the outer SELECT")?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        let order = self
            .order
            .iter()
            .map(|o| {
                let Expr::Identifier(ident) = &o.expr else {
                    return Err(PlanError::at(
                        o.expr.span(),
                        "ORDER BY of a window Top-N names a column of the aggregate",
                    ));
                };
                let output = outputs
                    .iter()
                    .position(|c| c.name.eq_ignore_ascii_case(&ident.value))
                    .ok_or_else(|| {
                        PlanError::at(
                            ident.span,
                            format!(
                                "unknown column `{}` in ORDER BY; the aggregate's columns: {}",
                                ident.value,
                                names(&inner)
                            ),
                        )
                    })?;
                if let ExprKind::Leaf(OutputLeaf::Aggregate(a, _)) = outputs[output].expr.kind
                    && aggregates[a].func == AggregateFunction::ApproxTopK
                {
                    return Err(PlanError::at(
                        ident.span,
                        "a window Top-N cannot order by a list (APPROX_TOP_K)",
                    ));
                }
                Ok(SortKey {
                    output,
                    descending: o.options.asc == Some(false),
                    nulls_first: o.options.nulls_first == Some(true),
                })
            })
            .collect::<PlanResult<_>>()?;
        Ok(TopN {
            order,
            limit: self.limit,
            columns,
        })
    }
}
