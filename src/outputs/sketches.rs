//! Merge functions over the sketch columns of result files, for `edgeflow query`:
//! results roll up across windows, devices and nodes by merging sketches, never by
//! averaging estimates.
//!
//! * `merge_distinct(sketch)`: distinct values of the union of HLL sketches (`BIGINT`);
//! * `merge_percentile(sketch, q)`: the `q` quantile of the merged t-digests (`DOUBLE`);
//! * `merge_top_k(sketch, k)`: the `k` most frequent values of the merged frequent-items
//!   sketches, as `APPROX_TOP_K` lists them (values as text, integer ones too).
//!
//! Both also take the sketches of other DataSketches libraries (the standard serialised
//! form), and NULL sketches (windows without values) are skipped. The same sketches
//! give the same answer however the query engine splits the scan (`Merging`).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int64Array, ListArray, StringArray, StructArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::ColumnarValue;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};
use datasketches::frequencies::{ErrorType, FrequentItemsSketch};
use datasketches::hll::HllSketch;
use datasketches::tdigest::TDigestMut;

use crate::window::aggregate::approx_distinct::union;
use crate::window::aggregate::approx_top_k::{MAX_K, result_type, top};

/// The merge functions, to register on a session.
pub fn functions() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::from(Merge::new(Kind::Distinct)),
        AggregateUDF::from(Merge::new(Kind::Percentile)),
        AggregateUDF::from(Merge::new(Kind::TopK)),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Distinct,
    Percentile,
    TopK,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Merge {
    kind: Kind,
    signature: Signature,
}

impl Merge {
    fn new(kind: Kind) -> Self {
        let arity = match kind {
            Kind::Distinct => 1,
            Kind::Percentile | Kind::TopK => 2,
        };
        Merge {
            kind,
            signature: Signature::any(arity, Volatility::Immutable),
        }
    }
}

/// The sketch bytes of every non-null value of a binary column.
fn each_sketch(column: &ArrayRef, mut f: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    match column.data_type() {
        DataType::Binary => column
            .as_binary::<i32>()
            .iter()
            .flatten()
            .try_for_each(&mut f),
        DataType::LargeBinary => column
            .as_binary::<i64>()
            .iter()
            .flatten()
            .try_for_each(&mut f),
        DataType::BinaryView => column
            .as_binary_view()
            .iter()
            .flatten()
            .try_for_each(&mut f),
        other => exec_err!("expected a sketch column (binary), found {other}"),
    }
}

impl AggregateUDFImpl for Merge {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Distinct => "merge_distinct",
            Kind::Percentile => "merge_percentile",
            Kind::TopK => "merge_top_k",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if !matches!(
            args.first(),
            Some(DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::Null)
        ) {
            return plan_err!(
                "{}: the first argument is a sketch column (`<name>_sketch`), found {}",
                self.name(),
                args.first().map_or("nothing".into(), ToString::to_string)
            );
        }
        Ok(match self.kind {
            Kind::Distinct => DataType::Int64,
            Kind::Percentile => DataType::Float64,
            Kind::TopK => result_type(DataType::Utf8),
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}_sketches", args.name),
            sketch_list_type(),
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(match self.kind {
            Kind::Distinct => Box::new(Merging::new(DistinctMerge::default())),
            Kind::Percentile => {
                let q = constant(&args, 1).filter(|q| (0.0..=1.0).contains(q));
                let Some(q) = q else {
                    return plan_err!(
                        "merge_percentile(sketch, q): q is a constant between 0 and 1, e.g. 0.99"
                    );
                };
                Box::new(Merging::new(PercentileMerge { q, digest: None }))
            }
            Kind::TopK => {
                let k = constant(&args, 1)
                    .filter(|k| k.fract() == 0.0 && (1.0..=MAX_K as f64).contains(k));
                let Some(k) = k else {
                    return plan_err!("merge_top_k(sketch, k): k is a constant from 1 to {MAX_K}");
                };
                Box::new(Merging::new(TopKMerge {
                    k: k as usize,
                    sketch: None,
                }))
            }
        })
    }
}

/// Argument `i` when it is a numeric constant.
fn constant(args: &AccumulatorArgs, i: usize) -> Option<f64> {
    // A constant evaluates without input rows; a column cannot.
    let empty = RecordBatch::new_empty(Arc::new(Schema::empty()));
    match args.exprs.get(i)?.evaluate(&empty).ok()? {
        ColumnarValue::Scalar(ScalarValue::Float64(Some(v))) => Some(v),
        ColumnarValue::Scalar(ScalarValue::Float32(Some(v))) => Some(f64::from(v)),
        ColumnarValue::Scalar(ScalarValue::Int64(Some(v))) => Some(v as f64),
        _ => None,
    }
}

/// What a merge function keeps: sketches merged so far, from their standard bytes.
trait Merged: std::fmt::Debug + Send + Sync + 'static {
    /// Whether the merged sketch depends on the order of the merges (a t-digest compacts
    /// and a frequent-items sketch purges at points that depend on it; an HLL union does
    /// not).
    const ORDERED: bool;
    /// Merges one more sketch.
    fn add(&mut self, bytes: &[u8]) -> Result<()>;
    /// The merged sketch's bytes (`None` before any).
    fn bytes(&mut self) -> Option<Vec<u8>>;
    /// The function's answer.
    fn answer(&mut self) -> Result<ScalarValue>;
    /// Memory held, roughly.
    fn size(&self) -> usize;
}

/// A merge state's type: sketches, each in its standard bytes.
fn sketch_list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Binary, true)))
}

/// A merge function's accumulator: input values and partial states alike are sketches.
///
/// Where the order of merges matters ([`Merged::ORDERED`]), a group's sketches wait and
/// are merged sorted by their bytes when the answer is asked for: the query engine splits
/// a scan over threads and merges their partial states in whatever order they finish,
/// and the same files must give the same answer every time. That keeps a group's
/// sketches in memory until then, as `array_agg` keeps its values.
#[derive(Debug)]
struct Merging<M: Merged> {
    merged: M,
    waiting: Vec<Vec<u8>>,
    waiting_bytes: usize,
}

impl<M: Merged> Merging<M> {
    fn new(merged: M) -> Self {
        Merging {
            merged,
            waiting: Vec::new(),
            waiting_bytes: 0,
        }
    }

    fn take(&mut self, bytes: &[u8]) -> Result<()> {
        if !M::ORDERED {
            return self.merged.add(bytes);
        }
        self.waiting_bytes += bytes.len();
        self.waiting.push(bytes.to_vec());
        Ok(())
    }

    /// Merges the waiting sketches, in the order of their bytes.
    fn settle(&mut self) -> Result<()> {
        let mut waiting = std::mem::take(&mut self.waiting);
        self.waiting_bytes = 0;
        waiting.sort_unstable();
        waiting.iter().try_for_each(|bytes| self.merged.add(bytes))
    }
}

impl<M: Merged> Accumulator for Merging<M> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        values
            .first()
            .map_or(Ok(()), |c| each_sketch(c, |bytes| self.take(bytes)))
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(states) = states.first() else {
            return Ok(());
        };
        let Some(lists) = states.as_list_opt::<i32>() else {
            return exec_err!(
                "a merge state is a list of sketches, found {}",
                states.data_type()
            );
        };
        lists
            .iter()
            .flatten()
            .try_for_each(|sketches| each_sketch(&sketches, |bytes| self.take(bytes)))
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let sketches = match M::ORDERED {
            true => std::mem::take(&mut self.waiting),
            false => self.merged.bytes().into_iter().collect(),
        };
        self.waiting_bytes = 0;
        let values = BinaryArray::from_iter_values(&sketches);
        let list = ListArray::try_new(
            Arc::new(Field::new_list_field(DataType::Binary, true)),
            OffsetBuffer::from_lengths([values.len()]),
            Arc::new(values),
            None,
        )?;
        Ok(vec![ScalarValue::List(Arc::new(list))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.settle()?;
        self.merged.answer()
    }

    fn size(&self) -> usize {
        size_of::<Self>()
            + self.merged.size()
            + self.waiting_bytes
            + self.waiting.capacity() * size_of::<Vec<u8>>()
    }
}

fn not_a(function: &str, what: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!("{function}: not {what}: {e}"))
}

#[derive(Debug, Default)]
struct DistinctMerge {
    sketch: Option<HllSketch>,
}

impl Merged for DistinctMerge {
    const ORDERED: bool = false;

    fn add(&mut self, bytes: &[u8]) -> Result<()> {
        let theirs = HllSketch::deserialize(bytes)
            .map_err(|e| not_a("merge_distinct", "an HLL sketch", e))?;
        self.sketch = Some(match &self.sketch {
            None => theirs,
            Some(ours) => union(ours, &theirs),
        });
        Ok(())
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        self.sketch.as_ref().map(HllSketch::serialize)
    }

    fn answer(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(
            self.sketch
                .as_ref()
                .map_or(0, |s| s.estimate().round() as i64),
        )))
    }

    fn size(&self) -> usize {
        self.sketch.as_ref().map_or(0, HllSketch::estimated_size)
    }
}

#[derive(Debug)]
struct PercentileMerge {
    q: f64,
    digest: Option<TDigestMut>,
}

impl Merged for PercentileMerge {
    const ORDERED: bool = true;

    fn add(&mut self, bytes: &[u8]) -> Result<()> {
        let theirs = TDigestMut::deserialize(bytes)
            .map_err(|e| not_a("merge_percentile", "a t-digest", e))?;
        match &mut self.digest {
            Some(ours) => ours.merge(&theirs),
            None => self.digest = Some(theirs),
        }
        Ok(())
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        self.digest.as_mut().map(TDigestMut::serialize)
    }

    fn answer(&mut self) -> Result<ScalarValue> {
        let q = self.q;
        Ok(ScalarValue::Float64(
            self.digest
                .as_mut()
                .and_then(|d| d.quantile(q).ok().flatten()),
        ))
    }

    fn size(&self) -> usize {
        self.digest.as_ref().map_or(0, TDigestMut::estimated_size)
    }
}

#[derive(Debug)]
struct TopKMerge {
    k: usize,
    sketch: Option<FrequentItemsSketch<String>>,
}

impl Merged for TopKMerge {
    const ORDERED: bool = true;

    fn add(&mut self, bytes: &[u8]) -> Result<()> {
        // Integer values are listed as text: one result type for both kinds.
        let theirs = match FrequentItemsSketch::<String>::deserialize(bytes) {
            Ok(s) => s,
            Err(_) => {
                let what = "a frequent items sketch";
                let ints = FrequentItemsSketch::<i64>::deserialize(bytes)
                    .map_err(|e| not_a("merge_top_k", what, e))?;
                let mut text = FrequentItemsSketch::<String>::new(ints.max_map_size())
                    .map_err(|e| not_a("merge_top_k", what, e))?;
                for row in ints.frequent_items_with_threshold(ErrorType::NoFalseNegatives, 0) {
                    text.update_with_count(row.item().to_string(), row.estimate());
                }
                text
            }
        };
        match &mut self.sketch {
            Some(ours) => ours.merge(&theirs),
            None => self.sketch = Some(theirs),
        }
        Ok(())
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        self.sketch.as_ref().map(FrequentItemsSketch::serialize)
    }

    fn answer(&mut self) -> Result<ScalarValue> {
        let rows = self
            .sketch
            .as_ref()
            .map(|s| top(s, self.k))
            .unwrap_or_default();
        let values: ArrayRef = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0)));
        let counts: ArrayRef = Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| i64::try_from(r.1).unwrap_or(i64::MAX)),
        ));
        let DataType::List(item) = result_type(DataType::Utf8) else {
            return exec_err!("merge_top_k: result type is not a list");
        };
        let DataType::Struct(fields) = item.data_type() else {
            return exec_err!("merge_top_k: list item is not a struct");
        };
        let entries = StructArray::try_new(fields.clone(), vec![values, counts], None)?;
        let list = ListArray::try_new(
            item,
            OffsetBuffer::from_lengths([entries.len()]),
            Arc::new(entries),
            None,
        )?;
        Ok(ScalarValue::List(Arc::new(list)))
    }

    fn size(&self) -> usize {
        self.sketch
            .as_ref()
            .map_or(0, FrequentItemsSketch::estimated_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// Sketches that compact and purge: their merge depends on its order.
    fn sketches() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut state = 7u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        let (mut digests, mut items) = (Vec::new(), Vec::new());
        for _ in 0..64 {
            let mut digest = TDigestMut::new(100).unwrap_or_else(|e| panic!("{e}"));
            let mut frequent =
                FrequentItemsSketch::<String>::new(8).unwrap_or_else(|e| panic!("{e}"));
            for _ in 0..300 {
                digest.update((next() % 10_000) as f64);
                frequent.update(format!("v{}", next() % 40));
            }
            digests.push(digest.serialize());
            items.push(frequent.serialize());
        }
        (digests, items)
    }

    /// The answer over `rows` (digest, items) split into `parts` partitions.
    fn answer(rows: &[(Vec<u8>, Vec<u8>)], parts: usize) -> String {
        let schema = Arc::new(Schema::new(vec![
            Field::new("d", DataType::Binary, true),
            Field::new("t", DataType::Binary, true),
        ]));
        let partitions: Vec<Vec<RecordBatch>> = rows
            .chunks(rows.len().div_ceil(parts))
            .map(|chunk| {
                let d = BinaryArray::from_iter_values(chunk.iter().map(|r| &r.0));
                let t = BinaryArray::from_iter_values(chunk.iter().map(|r| &r.1));
                RecordBatch::try_new(schema.clone(), vec![Arc::new(d), Arc::new(t)])
                    .map(|b| vec![b])
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        runtime.block_on(async {
            let ctx =
                SessionContext::new_with_config(SessionConfig::new().with_target_partitions(parts));
            for function in functions() {
                ctx.register_udaf(function);
            }
            let table =
                MemTable::try_new(schema.clone(), partitions).unwrap_or_else(|e| panic!("{e}"));
            ctx.register_table("s", Arc::new(table))
                .unwrap_or_else(|e| panic!("{e}"));
            let query = "SELECT merge_percentile(d, 0.5), merge_percentile(d, 0.99), \
                         merge_top_k(t, 3) FROM s";
            let frame = ctx.sql(query).await.unwrap_or_else(|e| panic!("{e}"));
            let batches = frame.collect().await.unwrap_or_else(|e| panic!("{e}"));
            arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap_or_else(|e| panic!("{e}"))
                .to_string()
        })
    }

    #[test]
    fn the_same_sketches_give_the_same_answer_however_the_scan_is_split() {
        let (digests, items) = sketches();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = digests.into_iter().zip(items).collect();
        let whole = answer(&rows, 1);
        let mut reversed = rows.clone();
        reversed.reverse();
        for parts in [2, 4, 7] {
            assert_eq!(answer(&rows, parts), whole, "{parts} partitions");
            assert_eq!(
                answer(&reversed, parts),
                whole,
                "{parts} partitions, reversed"
            );
        }
    }
}
