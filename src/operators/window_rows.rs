//! The result rows of a closed window, computed from the state its owner merged
//! ([`super::window_merge`]) on the owner's writer thread ([`super::write_parquet`]):
//! aggregates finished, `HAVING` applied, `SELECT` expressions evaluated, Arrow built,
//! and for a window Top-N the rows ranked and cut. The window state itself
//! ([`crate::window`]) knows nothing of SQL output.

use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray, Int64Array, UInt32Array};
use arrow::compute::{SortColumn, SortOptions, lexsort_to_indices, take};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::batch::arrow::to_arrow;
use crate::batch::{Column, ColumnValues, Interner};
use crate::eval::{Scope, eval, selection};
use crate::query::expr::{ExprKind, OutputLeaf};
use crate::query::{QueryPlan, TopN, TopNColumn};
use crate::window::aggregate::{Accumulator, Aggregate, Finished, retype};
use crate::window::key::KeyRows;

/// What a closed window produced.
#[derive(Debug)]
pub struct WindowRows {
    /// Result rows sorted by key.
    pub batch: RecordBatch,
    /// Aggregates that overflowed and were written as NULL.
    pub overflows: u64,
}

/// Computes the result rows of a window from merged state: sorted by key, `HAVING`
/// applied, `SELECT` expressions evaluated, and the `revision` column last.
///
/// Columns that are plainly a key, a window bound or an aggregate go straight to Arrow;
/// only other expressions are evaluated, over key columns interned on demand.
pub fn window_rows(
    plan: &QueryPlan,
    schema: &SchemaRef,
    start: i64,
    end: i64,
    keys: &KeyRows,
    accs: &[Accumulator],
    revision: u32,
) -> Result<WindowRows, ArrowError> {
    let order = if keys.sorted {
        (0..keys.len).collect()
    } else {
        keys.sorted_order()
    };
    let n = order.len();
    let mut interner = Interner::new();
    // Aggregates whose sketch is written, finished with it in one pass over their slots.
    let with_sketch: Vec<bool> = (0..accs.len())
        .map(|a| (0..plan.outputs.len()).any(|i| plan.sketch_of(i) == Some(a)))
        .collect();
    let (agg_columns, agg_sketches, overflows) =
        finish_aggregates(plan, accs, &order, &with_sketch, &mut interner);
    // A session's bounds are its own: first reading, last reading plus the gap.
    let (starts, ends) = match plan.session_times() {
        Some((first, last, gap)) => (
            order
                .iter()
                .map(|&r| accs[first].int_extreme(r).unwrap_or(start))
                .collect(),
            order
                .iter()
                .map(|&r| {
                    accs[last]
                        .int_extreme(r)
                        .map_or(end, |t| t.saturating_add(gap))
                })
                .collect(),
        ),
        None => (vec![start; n], vec![end; n]),
    };
    let starts = Column {
        values: ColumnValues::Timestamp(starts),
        validity: None,
    };
    let ends = Column {
        values: ColumnValues::Timestamp(ends),
        validity: None,
    };
    let evaluated = plan.having.is_some()
        || plan
            .outputs
            .iter()
            .any(|o| !matches!(o.expr.kind, ExprKind::Leaf(_)));
    let key_columns: Vec<Column> = if evaluated {
        keys.columns
            .iter()
            .zip(plan.result_key_types())
            .map(|(c, ty)| c.to_column(&order, ty, &mut interner))
            .collect()
    } else {
        Vec::new()
    };
    let leaf = |leaf: &OutputLeaf| -> &Column {
        match leaf {
            OutputLeaf::Key(i, _) => &key_columns[*i],
            OutputLeaf::Aggregate(i, _) => &agg_columns[*i],
            OutputLeaf::WindowStart => &starts,
            OutputLeaf::WindowEnd => &ends,
        }
    };
    let scope = Scope {
        len: n,
        leaf: &leaf,
    };
    let kept: Option<Vec<usize>> = plan.having.as_ref().map(|h| {
        let keep = selection(h, &scope, &mut interner);
        (0..n).filter(|&i| keep[i]).collect()
    });
    let kept_rows: Vec<usize> = match &kept {
        Some(k) => k.iter().map(|&i| order[i]).collect(),
        None => order.clone(),
    };
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(plan.outputs.len());
    for (i, output) in plan.outputs.iter().enumerate() {
        if let Some(list) = plan
            .plain_aggregate(i)
            .and_then(|a| accs[a].result_column(&kept_rows))
        {
            arrays.push(list);
            continue;
        }
        let array = match &output.expr.kind {
            ExprKind::Leaf(OutputLeaf::Key(i, _)) => {
                keys.columns[*i].to_arrow(&kept_rows, output.expr.ty)
            }
            ExprKind::Leaf(OutputLeaf::Aggregate(i, _)) => {
                to_arrow(&agg_columns[*i], output.expr.ty, &interner, kept.as_deref())
            }
            _ => {
                let column = eval(&output.expr, &scope, &mut interner);
                to_arrow(&column, output.expr.ty, &interner, kept.as_deref())
            }
        };
        arrays.push(array);
    }
    // The sketches were taken for every row in key order; `HAVING` keeps some.
    let sketch_arrays: Vec<Option<ArrayRef>> = agg_sketches
        .iter()
        .map(|bytes| {
            let bytes = bytes.as_ref()?;
            let array = match &kept {
                Some(kept) => BinaryArray::from_iter(kept.iter().map(|&i| bytes[i].as_deref())),
                None => BinaryArray::from_iter(bytes.iter().map(Option::as_deref)),
            };
            Some(Arc::new(array) as ArrayRef)
        })
        .collect();
    let sketches: Vec<Option<ArrayRef>> = (0..plan.outputs.len())
        .map(|i| sketch_arrays[plan.sketch_of(i)?].clone())
        .collect();
    let mut arrays = match &plan.top_n {
        None => with_sketches(arrays, sketches),
        Some(top) => top_rows(top, &arrays, &sketches)?,
    };
    let rows = arrays.first().map_or(0, |a| a.len());
    arrays.push(Arc::new(arrow::array::Int32Array::from(vec![
        revision
            as i32;
        rows
    ])));
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
    Ok(WindowRows { batch, overflows })
}

/// Each row's serialised sketch (`None` for a row without one).
type Sketches = Vec<Option<Vec<u8>>>;

/// An aggregate's result column and, if written, its sketches.
type FinishedAggregate = (Finished, Option<Sketches>);

/// Windows with at least this many rows finish their sketch aggregates on threads of
/// their own; below it, starting a thread costs more than it saves.
const PARALLEL_ROWS: usize = 4096;

/// Finishes every aggregate over `order`: result columns (retyped to the plan's types),
/// sketches where `with_sketch` says so, and the overflow count.
///
/// Building and serialising sketches is most of a sketch query's writing time, and the
/// last window of a run is written while the workers' core is idle: in a big window,
/// each aggregate written with its sketch is finished on a thread of its own. Their
/// results are never text, so they need none of the shared interner's ids.
fn finish_aggregates(
    plan: &QueryPlan,
    accs: &[Accumulator],
    order: &[usize],
    with_sketch: &[bool],
    interner: &mut Interner,
) -> (Vec<Column>, Vec<Option<Sketches>>, u64) {
    let apart = |a: usize| {
        order.len() >= PARALLEL_ROWS
            && with_sketch[a]
            && plan.aggregates[a].output_type != crate::types::DataType::Text
    };
    let finished: Vec<FinishedAggregate> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..accs.len())
            .map(|a| {
                apart(a).then(|| {
                    let acc = &accs[a];
                    scope.spawn(move || acc.finish_with_sketches(order, &mut Interner::new(), true))
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(a, handle)| match handle {
                Some(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                None => accs[a].finish_with_sketches(order, interner, with_sketch[a]),
            })
            .collect()
    });
    let mut overflows = 0;
    let mut sketches = Vec::with_capacity(accs.len());
    let columns = finished
        .into_iter()
        .zip(&plan.aggregates)
        .map(|((finished, s), call)| {
            overflows += finished.overflows;
            sketches.push(s);
            retype(finished.column, call.output_type)
        })
        .collect();
    (columns, sketches, overflows)
}

/// The output columns, each followed by its sketch column if it has one.
fn with_sketches(outputs: Vec<ArrayRef>, sketches: Vec<Option<ArrayRef>>) -> Vec<ArrayRef> {
    outputs
        .into_iter()
        .zip(sketches)
        .flat_map(|(output, sketch)| std::iter::once(output).chain(sketch))
        .collect()
}

/// The first `top.limit` rows of a window by `top.order`, as `top.columns` (an output
/// followed by its sketch column if it has one), in rank order.
///
/// The rows come sorted by group key, so ranking ties by their position ranks them by
/// key, ascending.
fn top_rows(
    top: &TopN,
    outputs: &[ArrayRef],
    sketches: &[Option<ArrayRef>],
) -> Result<Vec<ArrayRef>, ArrowError> {
    let n = outputs.first().map_or(0, |a| a.len());
    let mut sort: Vec<SortColumn> = top
        .order
        .iter()
        .map(|k| SortColumn {
            values: outputs[k.output].clone(),
            options: Some(SortOptions {
                descending: k.descending,
                nulls_first: k.nulls_first,
            }),
        })
        .collect();
    sort.push(SortColumn {
        values: Arc::new(UInt32Array::from_iter_values(0..n as u32)),
        options: None,
    });
    let ranked = lexsort_to_indices(&sort, Some(top.limit))?;
    let mut columns = Vec::new();
    for c in &top.columns {
        match c {
            TopNColumn::Output(i) => {
                columns.push(take(&outputs[*i], &ranked, None)?);
                if let Some(sketch) = &sketches[*i] {
                    columns.push(take(sketch, &ranked, None)?);
                }
            }
            TopNColumn::Rank(_) => columns.push(Arc::new(Int64Array::from_iter_values(
                1..=ranked.len() as i64,
            ))),
        }
    }
    Ok(columns)
}
