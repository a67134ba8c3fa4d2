//! The owner side of two-phase aggregation: merge the partial windows every worker sent
//! for a window, then compute the result rows.

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::accumulator::{Accumulator, retype};
use super::key::{KeyIndex, KeyRows};
use super::state::{PartialWindow, RESUMED};
use crate::batch::arrow::to_arrow;
use crate::batch::{Column, ColumnValues, Interner};
use crate::eval::{Scope, eval, selection};
use crate::query::QueryPlan;
use crate::query::expr::{ExprKind, OutputLeaf};

/// Collects the partials of one window.
#[derive(Debug, Default)]
pub struct WindowMerger {
    parts: Vec<PartialWindow>,
    fresh: bool,
    disjoint: bool,
}

/// What a closed window produced.
#[derive(Debug)]
pub struct WindowRows {
    /// Result rows sorted by key.
    pub batch: RecordBatch,
    /// Integer sums that overflowed and were written as NULL.
    pub overflows: u64,
}

impl WindowMerger {
    /// A merger of parts that share no key (each already merged at its key's owner):
    /// merging them is appending them.
    pub fn disjoint() -> Self {
        WindowMerger {
            disjoint: true,
            ..WindowMerger::default()
        }
    }

    /// Adds one worker's partial.
    pub fn add(&mut self, part: PartialWindow) {
        self.fresh |= part.from != RESUMED;
        self.parts.push(part);
    }

    /// Whether this run added readings to the window (beyond what a previous run kept).
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Merges the partials: keys and accumulators with one slot per distinct key.
    pub fn merge(mut self) -> Option<(KeyRows, Vec<Accumulator>)> {
        // Merge in a fixed order (kept state first, then by worker) so that float sums
        // combine the same way on every run.
        self.parts.sort_by_key(|p| (p.from != RESUMED, p.from));
        let disjoint = self.disjoint;
        let mut parts = self.parts.into_iter();
        let first = parts.next()?;
        let first_meta = PartialWindow {
            keys: KeyRows::default(),
            accs: Vec::new(),
            ..first
        };
        let mut keys = first.keys;
        let mut accs = first.accs;
        let mut rest = parts.peekable();
        if rest.peek().is_none() {
            return Some((keys, accs));
        }
        if disjoint {
            let mut parts: Vec<PartialWindow> = std::iter::once(PartialWindow {
                keys,
                accs,
                ..first_meta
            })
            .chain(rest)
            .collect();
            return Some(append_disjoint(&mut parts));
        }
        // Index the first part's keys, then fold every other part in.
        let mut index = KeyIndex::default();
        let mut indexed = keys.empty_like();
        let mut merged_accs: Vec<Accumulator> = accs.iter().map(Accumulator::empty_like).collect();
        for row in 0..keys.len {
            index.find_or_insert(&mut indexed, &keys, row);
            for (to, from) in merged_accs.iter_mut().zip(&accs) {
                to.push_from(from, row);
            }
        }
        for part in rest {
            for row in 0..part.keys.len {
                let (at, new) = index.find_or_insert(&mut indexed, &part.keys, row);
                for (to, from) in merged_accs.iter_mut().zip(&part.accs) {
                    if new {
                        to.push_from(from, row);
                    } else {
                        to.merge_slot(at, from, row);
                    }
                }
            }
        }
        keys = indexed;
        accs = merged_accs;
        Some((keys, accs))
    }
}

/// Appends parts that share no key; when each is sorted, a merge of the sorted runs
/// keeps the result sorted, so the owner never sorts a big window.
fn append_disjoint(parts: &mut [PartialWindow]) -> (KeyRows, Vec<Accumulator>) {
    let mut keys = parts[0].keys.empty_like();
    let mut accs: Vec<Accumulator> = parts[0].accs.iter().map(Accumulator::empty_like).collect();
    let mut push = |part: &PartialWindow, row: usize, keys: &mut KeyRows| {
        keys.push_from(&part.keys, row);
        for (to, from) in accs.iter_mut().zip(&part.accs) {
            to.push_from(from, row);
        }
    };
    if parts.iter().all(|p| p.keys.sorted) {
        let mut next = vec![0usize; parts.len()];
        loop {
            let mut best: Option<usize> = None;
            for (i, part) in parts.iter().enumerate() {
                if next[i] >= part.keys.len {
                    continue;
                }
                best = match best {
                    Some(b) if parts[b].keys.cmp_rows(next[b], &part.keys, next[i]).is_le() => {
                        Some(b)
                    }
                    _ => Some(i),
                };
            }
            let Some(b) = best else { break };
            push(&parts[b], next[b], &mut keys);
            next[b] += 1;
        }
        keys.sorted = true;
    } else {
        for part in parts.iter() {
            for row in 0..part.keys.len {
                push(part, row, &mut keys);
            }
        }
    }
    (keys, accs)
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
    let mut overflows = 0;
    let agg_columns: Vec<Column> = accs
        .iter()
        .zip(&plan.aggregates)
        .map(|(acc, call)| {
            let (column, o) = acc.finish(&order, &mut interner);
            overflows += o;
            retype(column, call.output_type)
        })
        .collect();
    let starts = Column {
        values: ColumnValues::Timestamp(vec![start; n]),
        validity: None,
    };
    let ends = Column {
        values: ColumnValues::Timestamp(vec![end; n]),
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
            .zip(&plan.keys)
            .map(|(c, k)| c.to_column(&order, k.ty, &mut interner))
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
    let mut arrays = Vec::with_capacity(plan.outputs.len());
    for output in &plan.outputs {
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
    let rows = arrays.first().map_or(0, |a| a.len());
    arrays.push(std::sync::Arc::new(arrow::array::Int32Array::from(vec![
        revision as i32;
        rows
    ])));
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
    Ok(WindowRows { batch, overflows })
}
