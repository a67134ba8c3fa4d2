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
//! form), and NULL sketches (windows without values) are skipped.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, ListArray, StringArray, StructArray};
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
            format!("{}_sketch", args.name),
            DataType::Binary,
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(match self.kind {
            Kind::Distinct => Box::new(Merging(DistinctMerge::default())),
            Kind::Percentile => {
                let q = constant(&args, 1).filter(|q| (0.0..=1.0).contains(q));
                let Some(q) = q else {
                    return plan_err!(
                        "merge_percentile(sketch, q): q is a constant between 0 and 1, e.g. 0.99"
                    );
                };
                Box::new(Merging(PercentileMerge { q, digest: None }))
            }
            Kind::TopK => {
                let k = constant(&args, 1)
                    .filter(|k| k.fract() == 0.0 && (1.0..=MAX_K as f64).contains(k));
                let Some(k) = k else {
                    return plan_err!("merge_top_k(sketch, k): k is a constant from 1 to {MAX_K}");
                };
                Box::new(Merging(TopKMerge {
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
    /// Merges one more sketch.
    fn add(&mut self, bytes: &[u8]) -> Result<()>;
    /// The merged sketch's bytes (`None` before any).
    fn bytes(&mut self) -> Option<Vec<u8>>;
    /// The function's answer.
    fn answer(&mut self) -> Result<ScalarValue>;
    /// Memory held, roughly.
    fn size(&self) -> usize;
}

/// A merge function's accumulator: input values and partial states alike are sketches.
#[derive(Debug)]
struct Merging<M: Merged>(M);

impl<M: Merged> Accumulator for Merging<M> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        values
            .first()
            .map_or(Ok(()), |c| each_sketch(c, |bytes| self.0.add(bytes)))
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.update_batch(states)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(self.0.bytes())])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.0.answer()
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.0.size()
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
