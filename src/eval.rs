//! Vectorised evaluation of typed expressions over columns.
//!
//! One evaluator serves `WHERE` and aggregate arguments (leaves are batch columns) and the
//! `SELECT` list and `HAVING` (leaves are key, window-bound and aggregate columns). SQL's
//! three-valued logic holds throughout: a NULL operand gives NULL, `AND`/`OR` follow the
//! truth tables, and a filter keeps only rows that are TRUE. Integer overflow and
//! division by zero give NULL rather than stopping the engine.

use std::borrow::Cow;
use std::cmp::Ordering;

use crate::batch::{Column, ColumnValues, Interner};
use crate::query::expr::{BinaryOp, ExprKind, TypedExpr};
use crate::types::{DataType, Value};

/// Resolves expression leaves to columns of `len` rows.
pub struct Scope<'a, L> {
    /// Rows in every column.
    pub len: usize,
    /// The column of a leaf.
    pub leaf: &'a dyn Fn(&L) -> &'a Column,
}

fn and_validity(a: &Option<Vec<bool>>, b: &Option<Vec<bool>>) -> Option<Vec<bool>> {
    match (a, b) {
        (None, None) => None,
        (Some(v), None) | (None, Some(v)) => Some(v.clone()),
        (Some(x), Some(y)) => Some(x.iter().zip(y).map(|(p, q)| *p && *q).collect()),
    }
}

fn constant(value: &Value, ty: DataType, len: usize, interner: &mut Interner) -> Column {
    let values = match (value, ty) {
        (Value::Text(s), _) => ColumnValues::Text(vec![interner.intern(s); len]),
        (Value::BigInt(i), DataType::Double) => ColumnValues::Double(vec![*i as f64; len]),
        (Value::BigInt(i), _) => ColumnValues::BigInt(vec![*i; len]),
        (Value::Double(d), _) => ColumnValues::Double(vec![*d; len]),
        (Value::Boolean(b), _) => ColumnValues::Boolean(vec![*b; len]),
        (Value::Timestamp(t), _) => ColumnValues::Timestamp(vec![*t; len]),
        (Value::Null, ty) => {
            let mut c = Column::with_capacity(ty, len);
            for _ in 0..len {
                c.push_null();
            }
            return c;
        }
    };
    Column {
        values,
        validity: None,
    }
}

/// Evaluates `expr` over `scope`.
pub fn eval<'a, L>(
    expr: &TypedExpr<L>,
    scope: &Scope<'a, L>,
    interner: &mut Interner,
) -> Cow<'a, Column> {
    let len = scope.len;
    match &expr.kind {
        ExprKind::Leaf(leaf) => Cow::Borrowed((scope.leaf)(leaf)),
        ExprKind::Literal(v) => Cow::Owned(constant(v, expr.ty, len, interner)),
        ExprKind::ToDouble(e) => {
            let c = eval(e, scope, interner);
            Cow::Owned(match &c.values {
                ColumnValues::BigInt(v) => Column {
                    values: ColumnValues::Double(v.iter().map(|&i| i as f64).collect()),
                    validity: c.validity.clone(),
                },
                _ => c.into_owned(),
            })
        }
        ExprKind::Negate(e) => {
            let c = eval(e, scope, interner);
            Cow::Owned(match &c.values {
                ColumnValues::BigInt(v) => {
                    let (values, validity) = map_checked(v, &c.validity, |x| x.checked_neg());
                    Column {
                        values: ColumnValues::BigInt(values),
                        validity,
                    }
                }
                ColumnValues::Double(v) => Column {
                    values: ColumnValues::Double(v.iter().map(|x| -x).collect()),
                    validity: c.validity.clone(),
                },
                _ => c.into_owned(),
            })
        }
        ExprKind::Not(e) => {
            let c = eval(e, scope, interner);
            Cow::Owned(match &c.values {
                ColumnValues::Boolean(v) => Column {
                    values: ColumnValues::Boolean(v.iter().map(|x| !x).collect()),
                    validity: c.validity.clone(),
                },
                _ => c.into_owned(),
            })
        }
        ExprKind::IsNull { expr: e, negated } => {
            let c = eval(e, scope, interner);
            let values = match &c.validity {
                None => vec![*negated; len],
                Some(valid) => valid.iter().map(|&ok| ok == *negated).collect(),
            };
            Cow::Owned(Column {
                values: ColumnValues::Boolean(values),
                validity: None,
            })
        }
        ExprKind::InList {
            expr: e,
            list,
            negated,
        } => {
            let c = eval(e, scope, interner);
            let items: Vec<Column> = list
                .iter()
                .filter(|v| !v.is_null())
                .map(|v| constant(v, e.ty, 1, interner))
                .collect();
            let list_has_null = list.iter().any(Value::is_null);
            let mut values = Vec::with_capacity(len);
            let mut validity = Vec::with_capacity(len);
            for row in 0..len {
                if !c.is_valid(row) {
                    validity.push(false);
                    values.push(false);
                    continue;
                }
                let found = items
                    .iter()
                    .any(|item| compare(&c, row, item, 0, interner) == Some(Ordering::Equal));
                validity.push(found || !list_has_null);
                values.push(found != *negated);
            }
            let any_null = validity.iter().any(|v| !v);
            Cow::Owned(Column {
                values: ColumnValues::Boolean(values),
                validity: any_null.then_some(validity),
            })
        }
        ExprKind::Like {
            expr: e,
            pattern,
            negated,
        } => {
            let c = eval(e, scope, interner);
            let values = match &c.values {
                ColumnValues::Text(ids) => ids
                    .iter()
                    .map(|&id| like(interner.get(id), pattern) != *negated)
                    .collect(),
                _ => vec![false; len],
            };
            Cow::Owned(Column {
                values: ColumnValues::Boolean(values),
                validity: c.validity.clone(),
            })
        }
        ExprKind::Binary { op, left, right } => {
            let l = eval(left, scope, interner);
            let r = eval(right, scope, interner);
            Cow::Owned(binary(*op, &l, &r, len, interner))
        }
    }
}

/// Rows where `predicate` is TRUE.
pub fn selection<L>(
    predicate: &TypedExpr<L>,
    scope: &Scope<'_, L>,
    interner: &mut Interner,
) -> Vec<bool> {
    let c = eval(predicate, scope, interner);
    match &c.values {
        ColumnValues::Boolean(v) => match &c.validity {
            None => v.clone(),
            Some(valid) => v.iter().zip(valid).map(|(x, ok)| *x && *ok).collect(),
        },
        _ => vec![false; scope.len],
    }
}

fn map_checked<T: Copy + Default>(
    v: &[T],
    validity: &Option<Vec<bool>>,
    f: impl Fn(T) -> Option<T>,
) -> (Vec<T>, Option<Vec<bool>>) {
    let mut out = Vec::with_capacity(v.len());
    let mut valid = validity.clone().unwrap_or_else(|| vec![true; v.len()]);
    for (i, &x) in v.iter().enumerate() {
        match f(x) {
            Some(y) => out.push(y),
            None => {
                out.push(T::default());
                valid[i] = false;
            }
        }
    }
    let any_null = valid.iter().any(|ok| !ok);
    (out, any_null.then_some(valid))
}

fn zip_checked<T: Copy, R: Copy + Default>(
    l: &[T],
    r: &[T],
    validity: Option<Vec<bool>>,
    f: impl Fn(T, T) -> Option<R>,
) -> (Vec<R>, Option<Vec<bool>>) {
    let mut out = Vec::with_capacity(l.len());
    let mut valid = validity.unwrap_or_else(|| vec![true; l.len()]);
    for (i, (&x, &y)) in l.iter().zip(r).enumerate() {
        match f(x, y) {
            Some(v) => out.push(v),
            None => {
                out.push(R::default());
                valid[i] = false;
            }
        }
    }
    let any_null = valid.iter().any(|ok| !ok);
    (out, any_null.then_some(valid))
}

fn arithmetic_int(op: BinaryOp, x: i64, y: i64) -> Option<i64> {
    match op {
        BinaryOp::Add => x.checked_add(y),
        BinaryOp::Sub => x.checked_sub(y),
        BinaryOp::Mul => x.checked_mul(y),
        BinaryOp::Div => x.checked_div(y),
        BinaryOp::Mod => x.checked_rem(y),
        _ => None,
    }
}

fn arithmetic_float(op: BinaryOp, x: f64, y: f64) -> Option<f64> {
    let v = match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div if y != 0.0 => x / y,
        BinaryOp::Mod if y != 0.0 => x % y,
        _ => return None,
    };
    v.is_finite().then_some(v)
}

fn ordering_matches(op: BinaryOp, o: Ordering) -> bool {
    match op {
        BinaryOp::Eq => o == Ordering::Equal,
        BinaryOp::NotEq => o != Ordering::Equal,
        BinaryOp::Lt => o == Ordering::Less,
        BinaryOp::LtEq => o != Ordering::Greater,
        BinaryOp::Gt => o == Ordering::Greater,
        BinaryOp::GtEq => o != Ordering::Less,
        _ => false,
    }
}

/// Compares row `a` of `x` with row `b` of `y` (same type); `None` if either is NULL.
fn compare(x: &Column, a: usize, y: &Column, b: usize, interner: &Interner) -> Option<Ordering> {
    if !x.is_valid(a) || !y.is_valid(b) {
        return None;
    }
    Some(match (&x.values, &y.values) {
        (ColumnValues::BigInt(p), ColumnValues::BigInt(q))
        | (ColumnValues::Timestamp(p), ColumnValues::Timestamp(q)) => p[a].cmp(&q[b]),
        (ColumnValues::Double(p), ColumnValues::Double(q)) => p[a].total_cmp(&q[b]),
        (ColumnValues::Boolean(p), ColumnValues::Boolean(q)) => p[a].cmp(&q[b]),
        (ColumnValues::Text(p), ColumnValues::Text(q)) => {
            if p[a] == q[b] {
                Ordering::Equal
            } else {
                interner.get(p[a]).cmp(interner.get(q[b]))
            }
        }
        _ => return None,
    })
}

fn binary(op: BinaryOp, l: &Column, r: &Column, len: usize, interner: &Interner) -> Column {
    match op {
        BinaryOp::And | BinaryOp::Or => logic(op, l, r, len),
        _ if op.is_arithmetic() => {
            let validity = and_validity(&l.validity, &r.validity);
            match (&l.values, &r.values) {
                (ColumnValues::BigInt(x), ColumnValues::BigInt(y)) => {
                    let (values, validity) =
                        zip_checked(x, y, validity, |a, b| arithmetic_int(op, a, b));
                    Column {
                        values: ColumnValues::BigInt(values),
                        validity,
                    }
                }
                (ColumnValues::Double(x), ColumnValues::Double(y)) => {
                    let (values, validity) =
                        zip_checked(x, y, validity, |a, b| arithmetic_float(op, a, b));
                    Column {
                        values: ColumnValues::Double(values),
                        validity,
                    }
                }
                _ => Column {
                    values: ColumnValues::BigInt(vec![0; len]),
                    validity: Some(vec![false; len]),
                },
            }
        }
        _ => {
            let validity = and_validity(&l.validity, &r.validity);
            let values: Vec<bool> = match (&l.values, &r.values) {
                // Equality of text compares interned ids: no string is touched.
                (ColumnValues::Text(x), ColumnValues::Text(y))
                    if matches!(op, BinaryOp::Eq | BinaryOp::NotEq) =>
                {
                    x.iter()
                        .zip(y)
                        .map(|(a, b)| (a == b) == (op == BinaryOp::Eq))
                        .collect()
                }
                (ColumnValues::BigInt(x), ColumnValues::BigInt(y))
                | (ColumnValues::Timestamp(x), ColumnValues::Timestamp(y)) => x
                    .iter()
                    .zip(y)
                    .map(|(a, b)| ordering_matches(op, a.cmp(b)))
                    .collect(),
                (ColumnValues::Double(x), ColumnValues::Double(y)) => x
                    .iter()
                    .zip(y)
                    .map(|(a, b)| ordering_matches(op, a.total_cmp(b)))
                    .collect(),
                _ => (0..len)
                    .map(|i| compare(l, i, r, i, interner).is_some_and(|o| ordering_matches(op, o)))
                    .collect(),
            };
            Column {
                values: ColumnValues::Boolean(values),
                validity,
            }
        }
    }
}

fn logic(op: BinaryOp, l: &Column, r: &Column, len: usize) -> Column {
    let (ColumnValues::Boolean(x), ColumnValues::Boolean(y)) = (&l.values, &r.values) else {
        return Column {
            values: ColumnValues::Boolean(vec![false; len]),
            validity: Some(vec![false; len]),
        };
    };
    let mut values = Vec::with_capacity(len);
    let mut validity = Vec::with_capacity(len);
    for i in 0..len {
        let a = l.is_valid(i).then_some(x[i]);
        let b = r.is_valid(i).then_some(y[i]);
        let v = match op {
            BinaryOp::And => match (a, b) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            _ => match (a, b) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
        };
        values.push(v.unwrap_or(false));
        validity.push(v.is_some());
    }
    let any_null = validity.iter().any(|ok| !ok);
    Column {
        values: ColumnValues::Boolean(values),
        validity: any_null.then_some(validity),
    }
}

/// SQL `LIKE` with `%` (any run) and `_` (one character).
pub fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut ti, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || p[pi] == t[ti]) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '%' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        assert!(like("rtr-01", "rtr-%"));
        assert!(like("rtr-01", "%-0_"));
        assert!(!like("rtr-01", "gw-%"));
        assert!(like("", "%"));
        assert!(!like("ab", "a"));
        assert!(like("aXbXc", "a%c"));
    }
}
