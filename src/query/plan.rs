//! The validated plan of a query file: what every later stage reads.
//!
//! Nothing downstream sees SQL text: names are resolved to indexes, types are checked,
//! durations are microseconds.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::expr::{OutputExpr, SourceExpr};
use crate::time::format_duration;
use crate::types::DataType;

/// A declared source column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Name as declared; JSON keys and CSV headers must match it exactly.
    pub name: String,
    /// Declared type.
    pub ty: DataType,
}

/// The source table of a query: `CREATE TABLE ... WITH (event_time = ..., ...)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceSchema {
    /// Table name.
    pub name: String,
    /// Columns in declaration order.
    pub columns: Vec<Field>,
    /// Index of the event-time column (a `TIMESTAMP`).
    pub event_time: usize,
    /// How far behind the largest event time seen a reading may be and still be on time,
    /// in microseconds: the watermark is `max event time seen - max_out_of_orderness`.
    pub max_out_of_orderness: i64,
    /// How long after a window closes (its end passed by the watermark) a reading for it
    /// is still taken, as a correction written as a new revision of the window, in
    /// microseconds; later readings go to the late table. Zero: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub allowed_lateness: i64,
    /// How far ahead of the rest of its chunk a reading may be, in microseconds, before
    /// it is quarantined as a bad clock instead of moving the watermark (see
    /// [`crate::decode::clock`]).
    pub max_future_skew: i64,
    /// Where the readings come from (`connector = ...` and its options).
    pub connector: super::connector::Connector,
}

impl SourceSchema {
    /// The declared column called `name` (exact spelling first, then ignoring case).
    pub fn find(&self, name: &str) -> Option<usize> {
        super::schema::find_column(&self.columns, name)
    }

    /// Column types in order.
    pub fn types(&self) -> Vec<DataType> {
        self.columns.iter().map(|c| c.ty).collect()
    }

    /// Whether one live ingest can serve `other`'s declaration of this table too: the
    /// same columns, event time and connector with its options, which shape and check
    /// every reading once for all its readers. The watermark's options may differ (each
    /// query keeps its own).
    pub fn same_ingest(&self, other: &SourceSchema) -> bool {
        self.name == other.name
            && self.columns == other.columns
            && self.event_time == other.event_time
            && self.connector == other.connector
    }
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// How readings are assigned to windows; all sizes in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowSpec {
    /// Fixed, non-overlapping windows `[k*size, (k+1)*size)`.
    Tumble {
        /// Window length.
        size: i64,
    },
    /// Windows of length `size` starting every `slide`.
    Hop {
        /// Distance between window starts.
        slide: i64,
        /// Window length.
        size: i64,
    },
    /// Per key, readings less than `gap` apart form one session `[first reading,
    /// last reading + gap)`. Computed over `gap`-sized panes (so a reading is late
    /// exactly when it would be under `TUMBLE` of that size) that each key's owner
    /// stitches into sessions; see [`crate::window::session`].
    Session {
        /// The silence that ends a session.
        gap: i64,
    },
}

impl WindowSpec {
    /// The span of event time one result file covers: the window for `TUMBLE` and
    /// `HOP`; for `SESSION`, the sessions ending in one [`WindowSpec::session_file_span`].
    pub fn file_span(&self) -> i64 {
        match *self {
            WindowSpec::Tumble { size } | WindowSpec::Hop { size, .. } => size,
            WindowSpec::Session { gap } => Self::session_file_span(gap),
        }
    }

    /// The sessions ending in `[k * span, (k + 1) * span)` share one file: the
    /// smallest whole number of gaps that is at least a minute, so a short gap does not
    /// make a file per second and every file ends on a pane boundary.
    pub fn session_file_span(gap: i64) -> i64 {
        const MINUTE: i64 = 60_000_000;
        let gaps = (MINUTE + gap - 1) / gap.max(1);
        gap.saturating_mul(gaps.max(1))
    }

    /// Whether this is a `SESSION` window.
    pub fn is_session(&self) -> bool {
        matches!(self, WindowSpec::Session { .. })
    }
}

impl fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowSpec::Tumble { size } => write!(f, "TUMBLE size {}", format_duration(*size)),
            WindowSpec::Hop { slide, size } => {
                write!(
                    f,
                    "HOP size {} every {}",
                    format_duration(*size),
                    format_duration(*slide)
                )
            }
            WindowSpec::Session { gap } => write!(
                f,
                "SESSION gap {}, files of sessions ending in the same {}",
                format_duration(*gap),
                format_duration(Self::session_file_span(*gap))
            ),
        }
    }
}

/// An aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggregateFunction {
    /// `COUNT(*)`
    CountStar,
    /// `COUNT(expr)`: non-null values.
    Count,
    /// `SUM(expr)`
    Sum,
    /// `MIN(expr)`
    Min,
    /// `MAX(expr)`
    Max,
    /// `AVG(expr)`
    Avg,
    /// `STDDEV(expr)`, `STDDEV_SAMP(expr)`: sample standard deviation.
    StddevSamp,
    /// `STDDEV_POP(expr)`: population standard deviation.
    StddevPop,
    /// `VARIANCE(expr)`, `VAR_SAMP(expr)`: sample variance.
    VarSamp,
    /// `VAR_POP(expr)`: population variance.
    VarPop,
    /// `FIRST_VALUE(expr)`: the value of the earliest reading by event time.
    FirstValue,
    /// `LAST_VALUE(expr)`: the value of the latest reading by event time.
    LastValue,
    /// `APPROX_DISTINCT(expr)`: distinct values, from an HLL sketch.
    ApproxDistinct,
    /// `APPROX_PERCENTILE(expr, q)`: the `q` quantile, from a t-digest.
    ApproxPercentile,
    /// `APPROX_TOP_K(expr, k)`: the `k` most frequent values with their counts.
    ApproxTopK,
}

impl AggregateFunction {
    /// SQL name.
    pub fn sql_name(self) -> &'static str {
        match self {
            AggregateFunction::CountStar | AggregateFunction::Count => "COUNT",
            AggregateFunction::Sum => "SUM",
            AggregateFunction::Min => "MIN",
            AggregateFunction::Max => "MAX",
            AggregateFunction::Avg => "AVG",
            AggregateFunction::StddevSamp => "STDDEV_SAMP",
            AggregateFunction::StddevPop => "STDDEV_POP",
            AggregateFunction::VarSamp => "VAR_SAMP",
            AggregateFunction::VarPop => "VAR_POP",
            AggregateFunction::FirstValue => "FIRST_VALUE",
            AggregateFunction::LastValue => "LAST_VALUE",
            AggregateFunction::ApproxDistinct => "APPROX_DISTINCT",
            AggregateFunction::ApproxPercentile => "APPROX_PERCENTILE",
            AggregateFunction::ApproxTopK => "APPROX_TOP_K",
        }
    }

    /// Whether the result file also carries the aggregate's sketch (`<name>_sketch`).
    pub fn has_sketch(self) -> bool {
        matches!(
            self,
            AggregateFunction::ApproxDistinct
                | AggregateFunction::ApproxPercentile
                | AggregateFunction::ApproxTopK
        )
    }
}

/// One aggregate computed per group and window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AggregateCall {
    /// The function.
    pub func: AggregateFunction,
    /// Its argument (`None` for `COUNT(*)`).
    pub arg: Option<SourceExpr>,
    /// Result type.
    pub output_type: DataType,
    /// A constant parameter: the quantile of `APPROX_PERCENTILE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<f64>,
}

impl fmt::Display for AggregateCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.arg, self.param) {
            (None, _) => write!(f, "{}(*)", self.func.sql_name()),
            (Some(arg), None) => write!(f, "{}({arg})", self.func.sql_name()),
            (Some(arg), Some(p)) => write!(f, "{}({arg}, {p})", self.func.sql_name()),
        }
    }
}

/// A group key: a source column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupKey {
    /// Index in the source schema.
    pub column: usize,
    /// Column name.
    pub name: String,
    /// Column type.
    pub ty: DataType,
}

/// One column of the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputColumn {
    /// Name in the Parquet schema.
    pub name: String,
    /// How it is computed from keys, window bounds and aggregates.
    pub expr: OutputExpr,
    /// Whether it can be null.
    pub nullable: bool,
}

/// The name of the sketch column that follows an output `name`.
pub fn sketch_column_name(name: &str) -> String {
    format!("{name}_sketch")
}

/// A checked windowed aggregation, ready to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryPlan {
    /// Query name: the file stem; names the output folder.
    pub name: String,
    /// The file the plan came from.
    pub file: PathBuf,
    /// The source table.
    pub source: SourceSchema,
    /// `WHERE`, applied to readings before windowing.
    pub filter: Option<SourceExpr>,
    /// Window assignment.
    pub window: WindowSpec,
    /// `GROUP BY` columns besides the window.
    pub keys: Vec<GroupKey>,
    /// Distinct aggregates referenced by the output.
    pub aggregates: Vec<AggregateCall>,
    /// `HAVING`, applied to result rows.
    pub having: Option<OutputExpr>,
    /// Result columns of the aggregate, in `SELECT` order.
    pub outputs: Vec<OutputColumn>,
    /// A window Top-N around the aggregate: which of its rows each window keeps, ranked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_n: Option<super::top_n::TopN>,
    /// A device registry the windows are joined with as they close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<super::registry::RegistryJoin>,
}

impl QueryPlan {
    /// The latest event time whose readings can no longer change a window once the
    /// stream's largest event time is `latest`: each window such a reading falls in (a
    /// `SESSION` pane ends within a gap of it) ends at or before the watermark less the
    /// allowed lateness, so the reading is late beyond the allowance.
    pub fn settled_through(&self, latest: i64) -> i64 {
        let margin = self
            .source
            .max_out_of_orderness
            .saturating_add(self.source.allowed_lateness)
            .saturating_add(self.window.file_span());
        latest.saturating_sub(margin)
    }

    /// The types of the result keys: the window state's keys, or after a join, the keys
    /// its rows are grouped by again.
    pub fn result_key_types(&self) -> Vec<DataType> {
        match &self.join {
            Some(join) => join.keys.iter().map(|k| k.ty).collect(),
            None => self.keys.iter().map(|k| k.ty).collect(),
        }
    }

    /// The aggregate whose sketch follows output `i` in result files: when the output is
    /// plainly an aggregate that keeps one.
    pub fn sketch_of(&self, i: usize) -> Option<usize> {
        self.plain_aggregate(i)
            .filter(|&a| self.aggregates[a].func.has_sketch())
    }

    /// For `SESSION`, the aggregates holding each group's first and last event time
    /// (`MIN` and `MAX` of it, the last two aggregates, added by the planner): a
    /// session's bounds, and what its owner stitches by.
    pub fn session_times(&self) -> Option<(usize, usize, i64)> {
        match self.window {
            WindowSpec::Session { gap } => {
                let n = self.aggregates.len();
                Some((n.checked_sub(2)?, n.checked_sub(1)?, gap))
            }
            _ => None,
        }
    }

    /// The aggregate output `i` plainly is, if it is one.
    pub fn plain_aggregate(&self, i: usize) -> Option<usize> {
        match self.outputs[i].expr.kind {
            crate::query::expr::ExprKind::Leaf(crate::query::expr::OutputLeaf::Aggregate(a, _)) => {
                Some(a)
            }
            _ => None,
        }
    }

    /// The Arrow type of output `i` in result files.
    pub fn output_arrow_type(&self, i: usize) -> arrow::datatypes::DataType {
        let ty = self.outputs[i].expr.ty.arrow_type();
        match self.plain_aggregate(i) {
            Some(a) if self.aggregates[a].func == AggregateFunction::ApproxTopK => {
                crate::window::aggregate::approx_top_k::result_type(ty)
            }
            _ => ty,
        }
    }
}

/// How `edgeflow check` shows the type of a value of type `ty` that `func` computes:
/// `APPROX_TOP_K` gives a list of its argument's values with their counts.
fn shown_type(func: Option<AggregateFunction>, ty: &DataType) -> String {
    match func {
        Some(AggregateFunction::ApproxTopK) => format!("LIST<STRUCT<value {ty}, count BIGINT>>"),
        _ => ty.to_string(),
    }
}

impl fmt::Display for QueryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.source;
        writeln!(f, "query       {}  ({})", self.name, self.file.display())?;
        writeln!(f, "source      {}", s.name)?;
        for c in &s.columns {
            writeln!(f, "              {:<20} {}", c.name, c.ty)?;
        }
        writeln!(
            f,
            "event time  {}  (watermark = max seen - {})",
            s.columns[s.event_time].name,
            format_duration(s.max_out_of_orderness)
        )?;
        if s.allowed_lateness > 0 {
            let what = if self.window.is_session() {
                "their gap-sized pane closed correct the sessions they reach (each file they change gets a new revision)"
            } else {
                "their window closed correct it (a new revision)"
            };
            writeln!(
                f,
                "lateness    readings up to {} after {what}; later ones go to the late table",
                format_duration(s.allowed_lateness)
            )?;
        }
        writeln!(
            f,
            "clock       readings more than {} ahead of their chunk's median are quarantined",
            format_duration(s.max_future_skew)
        )?;
        writeln!(f, "connector   {}", s.connector)?;
        if s.connector.is_live() {
            writeln!(
                f,
                "live        readings more than {} ahead of the node's clock are quarantined; {}",
                format_duration(s.connector.max_ahead_of_clock),
                match s.connector.idle_timeout {
                    Some(idle) => format!(
                        "after {} without readings the watermark follows the clock",
                        format_duration(idle)
                    ),
                    None => "the watermark waits for readings (no idle_timeout)".into(),
                }
            )?;
        }
        writeln!(f, "window      {}", self.window)?;
        if let Some(filter) = &self.filter {
            writeln!(f, "filter      {filter}")?;
        }
        if let Some(join) = &self.join {
            let t = &join.table;
            let columns: Vec<String> = t
                .columns
                .iter()
                .map(|c| format!("{} {}", c.name, c.ty))
                .collect();
            writeln!(
                f,
                "registry    {} from {} ({}), {}; {} JOIN on {} = {}.{}",
                t.name,
                t.path.display(),
                columns.join(", "),
                match t.reload {
                    Some(every) => format!("checked every {}", format_duration(every)),
                    None => "read once per run".into(),
                },
                match join.kind {
                    super::registry::JoinKind::Inner => "INNER",
                    super::registry::JoinKind::Left => "LEFT",
                },
                self.keys[join.probe].name,
                t.name,
                t.columns[join.key].name
            )?;
            let keys: Vec<&str> = join.keys.iter().map(|k| k.name.as_str()).collect();
            writeln!(
                f,
                "joined      each window, as it closes, with the registry in force then; grouped by {}",
                if keys.is_empty() {
                    "(none)".into()
                } else {
                    keys.join(", ")
                }
            )?;
        }
        let keys: Vec<&str> = self.keys.iter().map(|k| k.name.as_str()).collect();
        writeln!(
            f,
            "keys        {}",
            if keys.is_empty() {
                "(none)".into()
            } else {
                keys.join(", ")
            }
        )?;
        writeln!(f, "aggregates")?;
        for a in &self.aggregates {
            writeln!(
                f,
                "              {a} -> {}",
                shown_type(Some(a.func), &a.output_type)
            )?;
        }
        if let Some(having) = &self.having {
            writeln!(f, "having      {having}")?;
        }
        writeln!(f, "output")?;
        for (i, o) in self.outputs.iter().enumerate() {
            let null = if o.nullable { "" } else { " NOT NULL" };
            let sketch = self.sketch_of(i).map(|a| self.aggregates[a].func);
            let ty = shown_type(sketch, &o.expr.ty);
            writeln!(f, "              {:<20} {ty}{null}  = {}", o.name, o.expr)?;
            if sketch.is_some() {
                writeln!(
                    f,
                    "              {:<20} BINARY  = its sketch, to merge",
                    sketch_column_name(&o.name)
                )?;
            }
        }
        if let Some(top) = &self.top_n {
            let order: Vec<String> = top
                .order
                .iter()
                .map(|k| {
                    format!(
                        "{}{}",
                        self.outputs[k.output].name,
                        if k.descending { " DESC" } else { "" }
                    )
                })
                .collect();
            let columns: Vec<&str> = top
                .columns
                .iter()
                .map(|c| match c {
                    super::top_n::TopNColumn::Output(i) => self.outputs[*i].name.as_str(),
                    super::top_n::TopNColumn::Rank(name) => name.as_str(),
                })
                .collect();
            writeln!(
                f,
                "top-n       {} rows per window by {}, ties by key; columns {}",
                top.limit,
                order.join(", "),
                columns.join(", ")
            )?;
        }
        Ok(())
    }
}
