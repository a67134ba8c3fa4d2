//! The `SELECT ... FROM TUMBLE(...) GROUP BY ...` statement to the rest of the plan.

use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, Query,
    Select, SelectItem, SetExpr, Spanned, TableFactor,
};
use sqlparser::tokenizer::Span;

use super::duration::interval_expr;
use super::error::{PlanError, PlanResult};
use super::expr::{ColumnRef, ExprKind, OutputExpr, OutputLeaf, SourceExpr, TypedExpr};
use super::plan::{
    AggregateCall, AggregateFunction, GroupKey, OutputColumn, SourceSchema, WindowSpec,
};
use super::registry::{JoinClause, JoinedKey, KeyFrom, RegistryJoin, RegistryTable, join_clause};
use super::scalar::{Resolver, plan_expr};
use super::schema::find_column;
use crate::time::format_duration;
use crate::types::DataType;

/// Everything a SELECT contributes to the plan.
pub struct SelectPlan {
    pub filter: Option<SourceExpr>,
    pub window: WindowSpec,
    pub keys: Vec<GroupKey>,
    pub aggregates: Vec<AggregateCall>,
    pub having: Option<OutputExpr>,
    pub outputs: Vec<OutputColumn>,
    pub join: Option<RegistryJoin>,
}

const AGGREGATES: &str = "COUNT, SUM, MIN, MAX, AVG, STDDEV, STDDEV_POP, VARIANCE, VAR_POP, FIRST_VALUE, LAST_VALUE, APPROX_DISTINCT, APPROX_PERCENTILE, APPROX_TOP_K";

/// Shortest window size or hop slide, in microseconds (1 ms): below it a window holds
/// next to nothing and their count per second of input explodes.
pub const MIN_WINDOW_MICROS: i64 = 1_000;

/// Most windows one reading may fall in (`HOP` size / slide): each costs a state update
/// and a partial row per reading.
pub const MAX_WINDOWS_PER_READING: i64 = 100;

fn is_window_bound(name: &str) -> Option<OutputLeaf> {
    match name.to_ascii_lowercase().as_str() {
        "window_start" => Some(OutputLeaf::WindowStart),
        "window_end" => Some(OutputLeaf::WindowEnd),
        _ => None,
    }
}

/// Which table a column name resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Readings,
    Registry,
}

/// The registry a query joins, as names resolve against it.
struct Joined<'a> {
    table: &'a RegistryTable,
    qualifiers: Vec<String>,
}

/// Resolves names to source columns: `WHERE` and aggregate arguments.
struct SourceResolver<'a> {
    schema: &'a SourceSchema,
    qualifiers: &'a [String],
    registry: Option<&'a Joined<'a>>,
    context: &'static str,
}

impl SourceResolver<'_> {
    /// The table and column a (possibly qualified) name refers to; an unqualified name
    /// both tables have is ambiguous.
    fn side_of<'i>(&self, idents: &'i [Ident], span: Span) -> PlanResult<(Side, &'i Ident)> {
        let qualifies = |qualifiers: &[String], table: &Ident| {
            qualifiers
                .iter()
                .any(|q| q.eq_ignore_ascii_case(&table.value))
        };
        match idents {
            [column] => {
                let Some(joined) = self.registry else {
                    return Ok((Side::Readings, column));
                };
                let in_registry = find_column(&joined.table.columns, &column.value).is_some();
                let in_readings = find_column(&self.schema.columns, &column.value).is_some();
                match (in_readings, in_registry) {
                    (true, true) => Err(PlanError::at(
                        column.span,
                        format!(
                            "`{}` is a column of both `{}` and `{}`; qualify it, e.g. {}.{}",
                            column.value,
                            self.schema.name,
                            joined.table.name,
                            self.qualifiers.last().map_or("", String::as_str),
                            column.value
                        ),
                    )),
                    (false, true) => Ok((Side::Registry, column)),
                    _ => Ok((Side::Readings, column)),
                }
            }
            [table, column] if qualifies(self.qualifiers, table) => Ok((Side::Readings, column)),
            [table, column]
                if self
                    .registry
                    .is_some_and(|r| qualifies(&r.qualifiers, table)) =>
            {
                Ok((Side::Registry, column))
            }
            [table, _] => Err(PlanError::at(
                table.span,
                format!(
                    "unknown table `{}`; the query reads `{}`{}",
                    table.value,
                    self.schema.name,
                    self.registry
                        .map(|r| format!(" and `{}`", r.table.name))
                        .unwrap_or_default()
                ),
            )),
            _ => Err(PlanError::at(span, "expected a column name")),
        }
    }

    /// The registry column `ident` names.
    fn registry_column(&self, ident: &Ident) -> PlanResult<usize> {
        let Some(joined) = self.registry else {
            return Err(self.unknown_column(ident));
        };
        find_column(&joined.table.columns, &ident.value).ok_or_else(|| {
            let names: Vec<&str> = joined
                .table
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            PlanError::at(
                ident.span,
                format!(
                    "unknown column `{}`; {} has: {}",
                    ident.value,
                    joined.table.name,
                    names.join(", ")
                ),
            )
        })
    }

    fn unknown_column(&self, ident: &Ident) -> PlanError {
        let names: Vec<&str> = self
            .schema
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        PlanError::at(
            ident.span,
            format!(
                "unknown column `{}`; {} has: {}",
                ident.value,
                self.schema.name,
                names.join(", ")
            ),
        )
    }
}

impl Resolver for SourceResolver<'_> {
    type Leaf = ColumnRef;

    fn column(&mut self, idents: &[Ident], span: Span) -> PlanResult<SourceExpr> {
        let (side, ident) = self.side_of(idents, span)?;
        if side == Side::Registry {
            let table = self.registry.map_or("", |r| r.table.name.as_str());
            return Err(PlanError::at(
                ident.span,
                format!(
                    "`{}` is a column of the registry `{table}`, which is joined when a window closes; {} can only use the readings' columns: group by it instead (HAVING can test it)",
                    ident.value, self.context
                ),
            ));
        }
        if is_window_bound(&ident.value).is_some() {
            return Err(PlanError::at(
                ident.span,
                format!(
                    "`{}` is only known after windowing; use it in SELECT, GROUP BY or HAVING",
                    ident.value
                ),
            ));
        }
        let index = find_column(&self.schema.columns, &ident.value)
            .ok_or_else(|| self.unknown_column(ident))?;
        let field = &self.schema.columns[index];
        Ok(TypedExpr::leaf(
            ColumnRef {
                index,
                name: field.name.clone(),
            },
            field.ty,
        ))
    }

    fn function(&mut self, function: &Function) -> PlanResult<SourceExpr> {
        let name = function.name.to_string();
        let span = function.name.span();
        if aggregate_function(&name).is_some() {
            Err(PlanError::at(
                span,
                format!(
                    "aggregate function {} is not allowed in {}",
                    name.to_uppercase(),
                    self.context
                ),
            ))
        } else {
            Err(PlanError::at(span, format!("unknown function `{name}`")))
        }
    }
}

const LIST_ONLY: &str = "APPROX_TOP_K gives a list of values and counts: select it as it is (with an alias), not inside an expression or HAVING";

/// Whether `expr` uses an aggregate whose result is a list.
fn uses_list(expr: &OutputExpr, aggregates: &[AggregateCall]) -> bool {
    let mut found = false;
    expr.for_each_leaf(&mut |leaf| {
        if let OutputLeaf::Aggregate(i, _) = leaf {
            found |= aggregates[*i].func == AggregateFunction::ApproxTopK;
        }
    });
    found
}

/// The `k` of `APPROX_TOP_K`: an integer from 1 to 100.
fn top_k(e: &Expr) -> PlanResult<usize> {
    let max = crate::window::aggregate::approx_top_k::MAX_K;
    let bad = || {
        PlanError::at(
            e.span(),
            format!("expected how many values to list, 1 to {max}"),
        )
    };
    let Expr::Value(v) = e else { return Err(bad()) };
    let sqlparser::ast::Value::Number(text, _) = &v.value else {
        return Err(bad());
    };
    match text.parse::<usize>() {
        Ok(k) if (1..=max).contains(&k) => Ok(k),
        _ => Err(bad()),
    }
}

/// The quantile argument of `APPROX_PERCENTILE`: a number between 0 and 1.
fn quantile(e: &Expr) -> PlanResult<f64> {
    let bad = || {
        PlanError::at(
            e.span(),
            "expected a quantile between 0 and 1, e.g. 0.99 for the 99th percentile",
        )
    };
    let Expr::Value(v) = e else { return Err(bad()) };
    let sqlparser::ast::Value::Number(text, _) = &v.value else {
        return Err(bad());
    };
    let q: f64 = text.parse().map_err(|_| bad())?;
    if (0.0..=1.0).contains(&q) {
        Ok(q)
    } else {
        Err(bad())
    }
}

fn aggregate_function(name: &str) -> Option<AggregateFunction> {
    Some(match name.to_ascii_uppercase().as_str() {
        "COUNT" => AggregateFunction::Count,
        "SUM" => AggregateFunction::Sum,
        "MIN" => AggregateFunction::Min,
        "MAX" => AggregateFunction::Max,
        "AVG" | "MEAN" => AggregateFunction::Avg,
        "STDDEV" | "STDDEV_SAMP" => AggregateFunction::StddevSamp,
        "STDDEV_POP" => AggregateFunction::StddevPop,
        "VARIANCE" | "VAR_SAMP" => AggregateFunction::VarSamp,
        "VAR_POP" => AggregateFunction::VarPop,
        "FIRST_VALUE" => AggregateFunction::FirstValue,
        "LAST_VALUE" => AggregateFunction::LastValue,
        "APPROX_DISTINCT" | "APPROX_COUNT_DISTINCT" => AggregateFunction::ApproxDistinct,
        "APPROX_PERCENTILE" | "APPROX_PERCENTILE_CONT" | "APPROX_QUANTILE" => {
            AggregateFunction::ApproxPercentile
        }
        "APPROX_TOP_K" | "APPROX_MOST_FREQUENT" => AggregateFunction::ApproxTopK,
        _ => return None,
    })
}

/// Resolves names to keys, window bounds and aggregates: `SELECT` and `HAVING`.
struct OutputResolver<'a> {
    source: SourceResolver<'a>,
    /// The result keys: which table and column each is, its name and type.
    keys: &'a [(Side, usize, String, DataType)],
    aggregates: Vec<AggregateCall>,
}

impl OutputResolver<'_> {
    fn aggregate(&mut self, function: &Function) -> PlanResult<OutputExpr> {
        let span = function.name.span();
        let name = function.name.to_string();
        let Some(func) = aggregate_function(&name) else {
            return Err(PlanError::at(
                span,
                format!("unknown function `{name}`; aggregates available: {AGGREGATES}"),
            ));
        };
        if function.filter.is_some() || function.over.is_some() || !function.within_group.is_empty()
        {
            return Err(PlanError::at(
                span,
                "FILTER, OVER and WITHIN GROUP are not supported on aggregates",
            ));
        }
        let FunctionArguments::List(list) = &function.args else {
            return Err(PlanError::at(
                span,
                format!("expected arguments: {}(<expression>)", name.to_uppercase()),
            ));
        };
        if list.duplicate_treatment.is_some() {
            return Err(PlanError::at(
                span,
                "DISTINCT inside aggregates is not supported",
            ));
        }
        let mut param = None;
        let arg = match list.args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]
                if func == AggregateFunction::Count =>
            {
                None
            }
            [
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)),
                FunctionArg::Unnamed(FunctionArgExpr::Expr(q)),
            ] if func == AggregateFunction::ApproxPercentile => {
                param = Some(quantile(q)?);
                Some(e)
            }
            [
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)),
                FunctionArg::Unnamed(FunctionArgExpr::Expr(k)),
            ] if func == AggregateFunction::ApproxTopK => {
                param = Some(top_k(k)? as f64);
                Some(e)
            }
            _ if func == AggregateFunction::ApproxTopK => {
                return Err(PlanError::at(
                    span,
                    "expected APPROX_TOP_K(<expression>, <how many values, 1 to 100>)",
                ));
            }
            _ if func == AggregateFunction::ApproxPercentile => {
                return Err(PlanError::at(
                    span,
                    "expected APPROX_PERCENTILE(<expression>, <quantile between 0 and 1>)",
                ));
            }
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] => Some(e),
            _ => {
                return Err(PlanError::at(
                    span,
                    format!(
                        "expected one argument: {}(<expression>)",
                        name.to_uppercase()
                    ),
                ));
            }
        };
        let call = match arg {
            None => AggregateCall {
                func: AggregateFunction::CountStar,
                arg: None,
                output_type: DataType::BigInt,
                param: None,
            },
            Some(e) => {
                self.source.context = "aggregate arguments";
                let planned = plan_expr(e, &mut self.source)?;
                let output_type = match func {
                    AggregateFunction::Count
                    | AggregateFunction::CountStar
                    | AggregateFunction::ApproxDistinct => DataType::BigInt,
                    AggregateFunction::Sum
                    | AggregateFunction::Avg
                    | AggregateFunction::StddevSamp
                    | AggregateFunction::StddevPop
                    | AggregateFunction::VarSamp
                    | AggregateFunction::VarPop
                    | AggregateFunction::ApproxPercentile
                        if !planned.ty.is_numeric() =>
                    {
                        return Err(PlanError::at(
                            e.span(),
                            format!("{} expects a number, found {}", func.sql_name(), planned.ty),
                        ));
                    }
                    AggregateFunction::Sum => planned.ty,
                    AggregateFunction::Avg
                    | AggregateFunction::StddevSamp
                    | AggregateFunction::StddevPop
                    | AggregateFunction::VarSamp
                    | AggregateFunction::VarPop
                    | AggregateFunction::ApproxPercentile => DataType::Double,
                    AggregateFunction::ApproxTopK
                        if !matches!(
                            planned.ty,
                            DataType::Text | DataType::BigInt | DataType::Timestamp
                        ) =>
                    {
                        return Err(PlanError::at(
                            e.span(),
                            format!(
                                "APPROX_TOP_K counts TEXT, BIGINT or TIMESTAMP values, found {}",
                                planned.ty
                            ),
                        ));
                    }
                    // The result is a list built by the aggregate itself; the type here
                    // is its values'.
                    AggregateFunction::Min
                    | AggregateFunction::Max
                    | AggregateFunction::FirstValue
                    | AggregateFunction::LastValue
                    | AggregateFunction::ApproxTopK => planned.ty,
                };
                AggregateCall {
                    func,
                    arg: Some(planned),
                    output_type,
                    param,
                }
            }
        };
        let output_type = call.output_type;
        let label = call.to_string();
        let index = match self.aggregates.iter().position(|a| *a == call) {
            Some(i) => i,
            None => {
                self.aggregates.push(call);
                self.aggregates.len() - 1
            }
        };
        Ok(TypedExpr::leaf(
            OutputLeaf::Aggregate(index, label),
            output_type,
        ))
    }
}

impl Resolver for OutputResolver<'_> {
    type Leaf = OutputLeaf;

    fn column(&mut self, idents: &[Ident], span: Span) -> PlanResult<OutputExpr> {
        let (side, ident) = self.source.side_of(idents, span)?;
        if let Some(bound) = is_window_bound(&ident.value) {
            return Ok(TypedExpr::leaf(bound, DataType::Timestamp));
        }
        let index = match side {
            Side::Readings => find_column(&self.source.schema.columns, &ident.value)
                .ok_or_else(|| self.source.unknown_column(ident))?,
            Side::Registry => self.source.registry_column(ident)?,
        };
        match self.keys.iter().position(|k| k.0 == side && k.1 == index) {
            Some(k) => Ok(TypedExpr::leaf(
                OutputLeaf::Key(k, self.keys[k].2.clone()),
                self.keys[k].3,
            )),
            None => Err(PlanError::at(
                ident.span,
                format!(
                    "column `{}` must appear in GROUP BY or inside an aggregate function",
                    ident.value
                ),
            )),
        }
    }

    fn function(&mut self, function: &Function) -> PlanResult<OutputExpr> {
        self.aggregate(function)
    }
}

fn table_function_args(args: &[FunctionArg], span: Span, usage: &str) -> PlanResult<Vec<Expr>> {
    args.iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e.clone()),
            _ => Err(PlanError::at(span, format!("expected {usage}"))),
        })
        .collect()
}

/// The window, the names that qualify the readings' columns, and the registry join.
type FromPlan<'a> = (WindowSpec, Vec<String>, Option<JoinClause<'a>>);

fn plan_window<'a>(
    select: &'a Select,
    schema: &SourceSchema,
    registry: Option<&RegistryTable>,
) -> PlanResult<FromPlan<'a>> {
    let span = select.select_token.0.span;
    let usage = format!(
        "FROM TUMBLE({}, <event time column>, INTERVAL '1' MINUTE)",
        schema.name
    );
    let [from] = select.from.as_slice() else {
        return Err(PlanError::at(
            span,
            format!("expected one window table function: {usage}"),
        ));
    };
    let join = match (from.joins.as_slice(), registry) {
        ([], _) => None,
        ([join], Some(table)) => Some(join_clause(join, table)?),
        ([join], None) => {
            return Err(PlanError::at(
                join.relation.span(),
                "a JOIN reads a device registry: declare it with CREATE TABLE <name> (...) WITH (connector = 'file', path = '<registry>.csv')",
            ));
        }
        ([_, second, ..], _) => {
            return Err(PlanError::at(
                second.relation.span(),
                "a query joins at most one registry",
            ));
        }
    };
    let TableFactor::Table {
        name,
        args: Some(tvf),
        alias,
        ..
    } = &from.relation
    else {
        return Err(PlanError::at(
            from.relation.span(),
            format!("expected a window table function: {usage}"),
        ));
    };
    let function = name.to_string().to_ascii_uppercase();
    let fspan = name.span();
    let usage = match function.as_str() {
        "TUMBLE" => format!("TUMBLE({}, <event time column>, <size>)", schema.name),
        "HOP" => format!("HOP({}, <event time column>, <slide>, <size>)", schema.name),
        "SESSION" => format!("SESSION({}, <event time column>, <gap>)", schema.name),
        other => {
            return Err(PlanError::at(
                fspan,
                format!("unknown window function `{other}`; expected TUMBLE, HOP or SESSION"),
            ));
        }
    };
    let args = table_function_args(&tvf.args, fspan, &usage)?;
    let expected = if function == "HOP" { 4 } else { 3 };
    if args.len() != expected {
        return Err(PlanError::at(
            fspan,
            format!("expected {expected} arguments: {usage}"),
        ));
    }
    match &args[0] {
        Expr::Identifier(table) if table.value.eq_ignore_ascii_case(&schema.name) => {}
        other => {
            return Err(PlanError::at(
                other.span(),
                format!(
                    "expected the source table `{}` as the first argument of {function}",
                    schema.name
                ),
            ));
        }
    }
    let event_time = &schema.columns[schema.event_time].name;
    match &args[1] {
        Expr::Identifier(col) if col.value.eq_ignore_ascii_case(event_time) => {}
        Expr::Identifier(col) => {
            return Err(PlanError::at(
                col.span,
                format!(
                    "windows are on the event-time column `{event_time}`, not `{}`",
                    col.value
                ),
            ));
        }
        other => {
            return Err(PlanError::at(
                other.span(),
                format!("expected the event-time column `{event_time}`"),
            ));
        }
    }
    let at_least_minimum = |arg: &Expr, us: i64, what: &str| {
        if us < MIN_WINDOW_MICROS {
            Err(PlanError::at(
                arg.span(),
                format!(
                    "{what} is {}, below the minimum of {}",
                    format_duration(us),
                    format_duration(MIN_WINDOW_MICROS)
                ),
            ))
        } else {
            Ok(us)
        }
    };
    let window = if function == "SESSION" {
        WindowSpec::Session {
            gap: at_least_minimum(
                &args[2],
                interval_expr(&args[2], "session gap")?,
                "session gap",
            )?,
        }
    } else if function == "TUMBLE" {
        WindowSpec::Tumble {
            size: at_least_minimum(
                &args[2],
                interval_expr(&args[2], "window size")?,
                "window size",
            )?,
        }
    } else {
        let slide = at_least_minimum(&args[2], interval_expr(&args[2], "hop slide")?, "hop slide")?;
        let size = at_least_minimum(
            &args[3],
            interval_expr(&args[3], "window size")?,
            "window size",
        )?;
        if size / slide > MAX_WINDOWS_PER_READING {
            return Err(PlanError::at(
                args[3].span(),
                format!(
                    "a window size of {} every {} puts each reading in {} windows; at most {MAX_WINDOWS_PER_READING} are allowed",
                    format_duration(size),
                    format_duration(slide),
                    size / slide
                ),
            ));
        }
        if size % slide != 0 {
            return Err(PlanError::at(
                args[3].span(),
                "expected a window size that is a whole multiple of the slide",
            ));
        }
        WindowSpec::Hop { slide, size }
    };
    let mut qualifiers = vec![schema.name.clone()];
    if let Some(alias) = alias {
        qualifiers.push(alias.name.value.clone());
    }
    Ok((window, qualifiers, join))
}

pub(super) fn reject_unsupported(query: &Query, select: &Select) -> PlanResult<()> {
    let span = select.select_token.0.span;
    let checks: [(bool, &str); 9] = [
        (
            query.with.is_some(),
            "WITH (common table expressions) is not supported",
        ),
        (
            query.order_by.is_some(),
            "ORDER BY is not supported in a streaming query: files are sorted by key",
        ),
        (
            query.limit_clause.is_some(),
            "LIMIT is not supported in a streaming query",
        ),
        (
            select.distinct.is_some(),
            "SELECT DISTINCT is not supported",
        ),
        (select.top.is_some(), "TOP is not supported"),
        (select.into.is_some(), "SELECT INTO is not supported"),
        (
            !select.lateral_views.is_empty(),
            "LATERAL VIEW is not supported",
        ),
        (select.qualify.is_some(), "QUALIFY is not supported"),
        (
            !select.named_window.is_empty(),
            "WINDOW clauses are not supported; use TUMBLE or HOP in FROM",
        ),
    ];
    for (bad, message) in checks {
        if bad {
            return Err(PlanError::at(span, message));
        }
    }
    Ok(())
}

fn output_name(item: &Expr) -> String {
    match item {
        Expr::Identifier(ident) => ident.value.clone(),
        Expr::CompoundIdentifier(idents) => {
            idents.last().map(|i| i.value.clone()).unwrap_or_default()
        }
        other => other.to_string().to_ascii_lowercase(),
    }
}

/// Plans the SELECT statement against the source schema and the registry it may join.
pub fn plan_select(
    query: &Query,
    schema: &SourceSchema,
    registry: Option<&RegistryTable>,
) -> PlanResult<SelectPlan> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(PlanError::at(query.body.span(), "expected a single SELECT"));
    };
    reject_unsupported(query, select)?;
    let (window, qualifiers, join) = plan_window(select, schema, registry)?;
    let joined = join.as_ref().zip(registry).map(|(j, table)| Joined {
        table,
        qualifiers: j.qualifiers.clone(),
    });

    let mut source = SourceResolver {
        schema,
        qualifiers: &qualifiers,
        registry: joined.as_ref(),
        context: "WHERE",
    };
    let filter = match &select.selection {
        Some(e) => {
            let planned = plan_expr(e, &mut source)?;
            if planned.ty != DataType::Boolean {
                return Err(PlanError::at(
                    e.span(),
                    format!("WHERE expects a BOOLEAN condition, found {}", planned.ty),
                ));
            }
            Some(planned)
        }
        None => None,
    };

    let GroupByExpr::Expressions(group_by, modifiers) = &select.group_by else {
        return Err(PlanError::at(
            select.select_token.0.span,
            "GROUP BY ALL is not supported; list the keys",
        ));
    };
    if !modifiers.is_empty() {
        return Err(PlanError::at(
            select.select_token.0.span,
            "GROUP BY modifiers are not supported",
        ));
    }
    // The result keys in GROUP BY order; without a join, the window state's keys.
    let mut result_keys: Vec<(Side, usize, String, DataType)> = Vec::new();
    let mut groups_window = false;
    for g in group_by {
        let (side, ident) = match g {
            Expr::Identifier(ident) => source.side_of(std::slice::from_ref(ident), g.span())?,
            Expr::CompoundIdentifier(idents) => source.side_of(idents, g.span())?,
            other => return Err(PlanError::at(other.span(), "GROUP BY accepts column names")),
        };
        if is_window_bound(&ident.value).is_some() {
            groups_window = true;
            continue;
        }
        let (index, field) = match side {
            Side::Readings => {
                let index = find_column(&schema.columns, &ident.value)
                    .ok_or_else(|| source.unknown_column(ident))?;
                (index, &schema.columns[index])
            }
            Side::Registry => {
                let index = source.registry_column(ident)?;
                let table = joined.as_ref().map(|j| j.table);
                match table {
                    Some(t) => (index, &t.columns[index]),
                    None => return Err(source.unknown_column(ident)),
                }
            }
        };
        if result_keys.iter().any(|k| k.0 == side && k.1 == index) {
            return Err(PlanError::at(
                ident.span,
                format!("`{}` appears twice in GROUP BY", ident.value),
            ));
        }
        result_keys.push((side, index, field.name.clone(), field.ty));
    }
    if !groups_window {
        let span = group_by
            .first()
            .map(Spanned::span)
            .unwrap_or(select.select_token.0.span);
        return Err(PlanError::at(
            span,
            "expected GROUP BY ..., window_start, window_end: a windowed aggregation groups by its window",
        ));
    }
    // The window state groups by the readings' keys (and the join column).
    let mut keys: Vec<GroupKey> = result_keys
        .iter()
        .filter(|k| k.0 == Side::Readings)
        .map(|k| GroupKey {
            column: k.1,
            name: k.2.clone(),
            ty: k.3,
        })
        .collect();
    let join_on = match (&join, &joined) {
        (Some(clause), Some(j)) => Some(plan_join_on(clause, &source, schema, j.table, &mut keys)?),
        _ => None,
    };

    let mut output = OutputResolver {
        source: SourceResolver {
            schema,
            qualifiers: &qualifiers,
            registry: joined.as_ref(),
            context: "aggregate arguments",
        },
        keys: &result_keys,
        aggregates: Vec::new(),
    };
    let mut outputs: Vec<OutputColumn> = Vec::new();
    // Names of the sketch columns that follow outputs of sketch aggregates.
    let mut sketch_names: Vec<String> = Vec::new();
    for item in &select.projection {
        let (expr, name, span) = match item {
            SelectItem::UnnamedExpr(e) => (e, output_name(e), e.span()),
            SelectItem::ExprWithAlias { expr, alias } => (expr, alias.value.clone(), alias.span),
            other => {
                return Err(PlanError::at(
                    other.span(),
                    "SELECT * is not supported in a windowed aggregation; list the columns",
                ));
            }
        };
        let planned = plan_expr(expr, &mut output)?;
        if matches!(planned.kind, ExprKind::Literal(crate::types::Value::Null)) {
            return Err(PlanError::at(
                span,
                "an untyped NULL cannot be an output column",
            ));
        }
        if outputs.iter().any(|o| o.name.eq_ignore_ascii_case(&name))
            || sketch_names.iter().any(|s| s.eq_ignore_ascii_case(&name))
        {
            return Err(PlanError::at(
                span,
                format!(
                    "output column `{name}` appears twice (an approximate aggregate's result is followed by its `<name>_sketch` column); give it an alias"
                ),
            ));
        }
        if let ExprKind::Leaf(OutputLeaf::Aggregate(i, _)) = planned.kind
            && output.aggregates[i].func.has_sketch()
        {
            let sketch = super::plan::sketch_column_name(&name);
            if outputs.iter().any(|o| o.name.eq_ignore_ascii_case(&sketch)) {
                return Err(PlanError::at(
                    span,
                    format!(
                        "this output's sketch column `{sketch}` clashes with an output of that name; give one an alias"
                    ),
                ));
            }
            sketch_names.push(sketch);
        }
        if name.eq_ignore_ascii_case(crate::sink::REVISION_COLUMN) {
            return Err(PlanError::at(
                span,
                format!(
                    "`{name}` is the column edgeflow adds to number a window's revisions; give this output another alias"
                ),
            ));
        }
        let aggregates = &output.aggregates;
        let nullable = planned.nullable(&|leaf: &OutputLeaf| match leaf {
            OutputLeaf::WindowStart | OutputLeaf::WindowEnd => false,
            OutputLeaf::Key(_, _) => true,
            OutputLeaf::Aggregate(i, _) => !matches!(
                aggregates[*i].func,
                AggregateFunction::CountStar
                    | AggregateFunction::Count
                    | AggregateFunction::ApproxDistinct
                    | AggregateFunction::ApproxTopK
            ),
        });
        if !matches!(planned.kind, ExprKind::Leaf(_)) && uses_list(&planned, &output.aggregates) {
            return Err(PlanError::at(span, LIST_ONLY));
        }
        outputs.push(OutputColumn {
            name,
            expr: planned,
            nullable,
        });
    }
    let having = match &select.having {
        Some(e) => {
            let planned = plan_expr(e, &mut output)?;
            if uses_list(&planned, &output.aggregates) {
                return Err(PlanError::at(e.span(), LIST_ONLY));
            }
            if planned.ty != DataType::Boolean {
                return Err(PlanError::at(
                    e.span(),
                    format!("HAVING expects a BOOLEAN condition, found {}", planned.ty),
                ));
            }
            Some(planned)
        }
        None => None,
    };
    let mut aggregates = output.aggregates;
    if window.is_session() {
        // A session's bounds are its first and last reading: kept as two more
        // aggregates (`QueryPlan::session_times`), the last two.
        let ts: SourceExpr = TypedExpr::leaf(
            ColumnRef {
                index: schema.event_time,
                name: schema.columns[schema.event_time].name.clone(),
            },
            DataType::Timestamp,
        );
        for func in [AggregateFunction::Min, AggregateFunction::Max] {
            aggregates.push(AggregateCall {
                func,
                arg: Some(ts.clone()),
                output_type: DataType::Timestamp,
                param: None,
            });
        }
    }
    let join = match (join, join_on, registry) {
        (Some(clause), Some((key, probe)), Some(table)) => {
            if window.is_session() {
                return Err(PlanError::at(
                    clause.on_span,
                    "a registry join groups windows by registry columns when they close; SESSION windows are per key: join over TUMBLE or HOP",
                ));
            }
            // Counts the readings behind each row, so those an INNER join drops are
            // counted: the query's own COUNT(*) if it has one.
            let count_star = AggregateCall {
                func: AggregateFunction::CountStar,
                arg: None,
                output_type: DataType::BigInt,
                param: None,
            };
            let count = match aggregates.iter().position(|a| *a == count_star) {
                Some(i) => i,
                None => {
                    aggregates.push(count_star);
                    aggregates.len() - 1
                }
            };
            let joined_keys = result_keys
                .iter()
                .map(|k| JoinedKey {
                    name: k.2.clone(),
                    ty: k.3,
                    from: match k.0 {
                        Side::Readings => {
                            KeyFrom::Reading(keys.iter().position(|g| g.column == k.1).unwrap_or(0))
                        }
                        Side::Registry => KeyFrom::Registry(k.1),
                    },
                })
                .collect();
            Some(RegistryJoin {
                table: table.clone(),
                kind: clause.kind,
                key,
                probe,
                keys: joined_keys,
                count,
            })
        }
        _ => None,
    };
    Ok(SelectPlan {
        filter,
        window,
        keys,
        aggregates,
        having,
        outputs,
        join,
    })
}

/// Checks `ON a = b` (one side a reading column, the other a registry column of the
/// same type, TEXT or BIGINT) and makes the reading column a window-state key; returns
/// the registry column and that key.
fn plan_join_on(
    clause: &JoinClause<'_>,
    source: &SourceResolver<'_>,
    schema: &SourceSchema,
    table: &RegistryTable,
    keys: &mut Vec<GroupKey>,
) -> PlanResult<(usize, usize)> {
    let usage = "expected ON <reading column> = <registry column>";
    let side = |e: &Expr| -> PlanResult<(Side, usize, Span)> {
        let (side, ident) = match e {
            Expr::Identifier(ident) => source.side_of(std::slice::from_ref(ident), e.span())?,
            Expr::CompoundIdentifier(idents) => source.side_of(idents, e.span())?,
            other => return Err(PlanError::at(other.span(), usage)),
        };
        let index = match side {
            Side::Readings => find_column(&schema.columns, &ident.value)
                .ok_or_else(|| source.unknown_column(ident))?,
            Side::Registry => source.registry_column(ident)?,
        };
        Ok((side, index, ident.span))
    };
    let (a, b) = (side(clause.on.0)?, side(clause.on.1)?);
    let ((_, column, at), (_, key, _)) = match (a.0, b.0) {
        (Side::Readings, Side::Registry) => (a, b),
        (Side::Registry, Side::Readings) => (b, a),
        _ => return Err(PlanError::at(clause.on_span, usage)),
    };
    let (reading, registry) = (&schema.columns[column], &table.columns[key]);
    if reading.ty != registry.ty || !matches!(reading.ty, DataType::Text | DataType::BigInt) {
        return Err(PlanError::at(
            at,
            format!(
                "a join compares TEXT or BIGINT columns of one type; `{}.{}` is {} and `{}.{}` is {}",
                schema.name, reading.name, reading.ty, table.name, registry.name, registry.ty
            ),
        ));
    }
    let probe = match keys.iter().position(|k| k.column == column) {
        Some(i) => i,
        None => {
            keys.push(GroupKey {
                column,
                name: reading.name.clone(),
                ty: reading.ty,
            });
            keys.len() - 1
        }
    };
    Ok((key, probe))
}
