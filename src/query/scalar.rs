//! SQL expressions to typed expressions: name resolution through a [`Resolver`], type
//! checking and coercion (`BIGINT` meets `DOUBLE`, text literals meet `TIMESTAMP`).

use sqlparser::ast::{
    self, BinaryOperator, CastKind, Expr, Function, Ident, Spanned, UnaryOperator,
    Value as SqlValue,
};
use sqlparser::tokenizer::Span;

use super::error::{PlanError, PlanResult};
use super::expr::{BinaryOp, ExprKind, TypedExpr};
use crate::time::parse_rfc3339;
use crate::types::{DataType, Value};

/// Resolves the names an expression refers to.
pub trait Resolver {
    /// What leaves refer to.
    type Leaf: Clone;
    /// A (possibly qualified) column name.
    fn column(&mut self, idents: &[Ident], span: Span) -> PlanResult<TypedExpr<Self::Leaf>>;
    /// A function call.
    fn function(&mut self, function: &Function) -> PlanResult<TypedExpr<Self::Leaf>>;
}

/// How deep expressions may nest: far beyond any real query, and shallow enough that
/// planning and evaluating (both recursive) stay within a thread's stack.
pub const MAX_EXPR_DEPTH: usize = 64;

/// Plans `expr` with names resolved by `resolver`.
pub fn plan_expr<R: Resolver>(expr: &Expr, resolver: &mut R) -> PlanResult<TypedExpr<R::Leaf>> {
    plan_expr_at(expr, resolver, 1)
}

/// [`plan_expr`] for an expression `depth` levels down.
fn plan_expr_at<R: Resolver>(
    expr: &Expr,
    resolver: &mut R,
    depth: usize,
) -> PlanResult<TypedExpr<R::Leaf>> {
    let span = expr.span();
    if depth > MAX_EXPR_DEPTH {
        return Err(PlanError::at(
            span,
            format!(
                "expression nested more than {MAX_EXPR_DEPTH} levels deep; for long lists of alternatives use IN (...)"
            ),
        ));
    }
    match expr {
        Expr::Identifier(ident) => resolver.column(std::slice::from_ref(ident), span),
        Expr::CompoundIdentifier(idents) => resolver.column(idents, span),
        Expr::Value(v) => literal(&v.value, span).map(|(value, ty)| TypedExpr {
            kind: ExprKind::Literal(value),
            ty,
        }),
        Expr::TypedString(ts) => typed_string(ts, span),
        Expr::Nested(inner) => plan_expr_at(inner, resolver, depth + 1),
        Expr::Function(f) => resolver.function(f),
        Expr::UnaryOp { op, expr: inner } => {
            let inner_span = inner.span();
            let e = plan_expr_at(inner, resolver, depth + 1)?;
            match op {
                UnaryOperator::Not => {
                    expect_type(&e, DataType::Boolean, inner_span, "NOT")?;
                    Ok(TypedExpr {
                        kind: ExprKind::Not(Box::new(e)),
                        ty: DataType::Boolean,
                    })
                }
                UnaryOperator::Minus => {
                    if let ExprKind::Literal(v) = &e.kind {
                        let negated = match v {
                            Value::BigInt(i) => i.checked_neg().map(Value::BigInt),
                            Value::Double(d) => Some(Value::Double(-d)),
                            _ => None,
                        };
                        if let Some(v) = negated {
                            return Ok(TypedExpr {
                                kind: ExprKind::Literal(v),
                                ty: e.ty,
                            });
                        }
                    }
                    if !e.ty.is_numeric() {
                        return Err(PlanError::at(
                            inner_span,
                            format!("expected a number after '-', found {}", e.ty),
                        ));
                    }
                    let ty = e.ty;
                    Ok(TypedExpr {
                        kind: ExprKind::Negate(Box::new(e)),
                        ty,
                    })
                }
                UnaryOperator::Plus => {
                    if !e.ty.is_numeric() {
                        return Err(PlanError::at(
                            inner_span,
                            format!("expected a number after '+', found {}", e.ty),
                        ));
                    }
                    Ok(e)
                }
                other => Err(PlanError::at(
                    span,
                    format!("operator {other} is not supported"),
                )),
            }
        }
        Expr::BinaryOp { left, op, right } => {
            let op = binary_op(op, span)?;
            let l = plan_expr_at(left, resolver, depth + 1)?;
            let r = plan_expr_at(right, resolver, depth + 1)?;
            binary(op, l, r, left.span(), right.span())
        }
        Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
            let e = plan_expr_at(inner, resolver, depth + 1)?;
            let negated = matches!(expr, Expr::IsNotNull(_));
            Ok(TypedExpr {
                kind: ExprKind::IsNull {
                    expr: Box::new(e),
                    negated,
                },
                ty: DataType::Boolean,
            })
        }
        Expr::InList {
            expr: inner,
            list,
            negated,
        } => {
            let e = plan_expr_at(inner, resolver, depth + 1)?;
            let mut values = Vec::with_capacity(list.len());
            for item in list {
                let item_span = item.span();
                let planned = plan_expr_at(item, resolver, depth + 1)?;
                let ExprKind::Literal(value) = planned.kind else {
                    return Err(PlanError::at(
                        item_span,
                        "expected a constant in the IN list",
                    ));
                };
                values.push(coerce_literal(value, planned.ty, e.ty, item_span)?);
            }
            Ok(TypedExpr {
                kind: ExprKind::InList {
                    expr: Box::new(e),
                    list: values,
                    negated: *negated,
                },
                ty: DataType::Boolean,
            })
        }
        Expr::Between {
            expr: inner,
            negated,
            low,
            high,
        } => {
            let e = plan_expr_at(inner, resolver, depth + 1)?;
            let lo = plan_expr_at(low, resolver, depth + 1)?;
            let hi = plan_expr_at(high, resolver, depth + 1)?;
            let ge = binary(BinaryOp::GtEq, e.clone(), lo, inner.span(), low.span())?;
            let le = binary(BinaryOp::LtEq, e, hi, inner.span(), high.span())?;
            let both = TypedExpr {
                kind: ExprKind::Binary {
                    op: BinaryOp::And,
                    left: Box::new(ge),
                    right: Box::new(le),
                },
                ty: DataType::Boolean,
            };
            Ok(if *negated {
                TypedExpr {
                    kind: ExprKind::Not(Box::new(both)),
                    ty: DataType::Boolean,
                }
            } else {
                both
            })
        }
        Expr::Like {
            negated,
            any: false,
            expr: inner,
            pattern,
            escape_char: None,
        } => {
            let e = plan_expr_at(inner, resolver, depth + 1)?;
            expect_type(&e, DataType::Text, inner.span(), "LIKE")?;
            let pattern = match pattern.as_ref() {
                Expr::Value(v) => match &v.value {
                    SqlValue::SingleQuotedString(s) => s.clone(),
                    _ => {
                        return Err(PlanError::at(
                            pattern.span(),
                            "expected a text pattern after LIKE",
                        ));
                    }
                },
                _ => {
                    return Err(PlanError::at(
                        pattern.span(),
                        "expected a text pattern after LIKE",
                    ));
                }
            };
            Ok(TypedExpr {
                kind: ExprKind::Like {
                    expr: Box::new(e),
                    pattern,
                    negated: *negated,
                },
                ty: DataType::Boolean,
            })
        }
        Expr::Cast {
            kind: CastKind::Cast | CastKind::DoubleColon,
            expr: inner,
            data_type,
            ..
        } => {
            let e = plan_expr_at(inner, resolver, depth + 1)?;
            let target = sql_type(data_type, span)?;
            cast(e, target, span)
        }
        other => Err(PlanError::at(
            span,
            format!("expression `{other}` is not supported here"),
        )),
    }
}

/// Maps a declared SQL type to an edgeflow type.
pub fn sql_type(ty: &ast::DataType, span: Span) -> PlanResult<DataType> {
    use ast::DataType as S;
    Ok(match ty {
        S::Text
        | S::String(_)
        | S::Varchar(_)
        | S::CharVarying(_)
        | S::CharacterVarying(_)
        | S::Nvarchar(_) => DataType::Text,
        S::BigInt(_)
        | S::Int(_)
        | S::Integer(_)
        | S::Int8(_)
        | S::Int64
        | S::SmallInt(_)
        | S::Int4(_) => DataType::BigInt,
        S::Double(_) | S::DoublePrecision | S::Float(_) | S::Float8 | S::Float64 | S::Real => {
            DataType::Double
        }
        S::Boolean | S::Bool => DataType::Boolean,
        S::Timestamp(_, _) | S::TimestampNtz(_) | S::Datetime(_) => DataType::Timestamp,
        other => {
            return Err(PlanError::at(
                span,
                format!(
                    "type {other} is not supported; use TEXT, BIGINT, DOUBLE, BOOLEAN or TIMESTAMP"
                ),
            ));
        }
    })
}

fn literal(value: &SqlValue, span: Span) -> PlanResult<(Value, DataType)> {
    Ok(match value {
        SqlValue::Number(text, _) => match text.parse::<i64>() {
            Ok(i) => (Value::BigInt(i), DataType::BigInt),
            Err(_) => match text.parse::<f64>() {
                Ok(d) if d.is_finite() => (Value::Double(d), DataType::Double),
                _ => {
                    return Err(PlanError::at(
                        span,
                        format!("expected a number, found {text}"),
                    ));
                }
            },
        },
        SqlValue::SingleQuotedString(s) => (Value::Text(s.clone()), DataType::Text),
        SqlValue::Boolean(b) => (Value::Boolean(*b), DataType::Boolean),
        // NULL takes its type from its context; Text is a placeholder until then.
        SqlValue::Null => (Value::Null, DataType::Text),
        other => {
            return Err(PlanError::at(
                span,
                format!("literal {other} is not supported"),
            ));
        }
    })
}

fn typed_string<L>(ts: &ast::TypedString, span: Span) -> PlanResult<TypedExpr<L>> {
    let ty = sql_type(&ts.data_type, span)?;
    let SqlValue::SingleQuotedString(text) = &ts.value.value else {
        return Err(PlanError::at(span, "expected a quoted constant"));
    };
    let value = coerce_literal(Value::Text(text.clone()), DataType::Text, ty, span)?;
    Ok(TypedExpr {
        kind: ExprKind::Literal(value),
        ty,
    })
}

/// Converts a literal to `target` where SQL allows it implicitly.
fn coerce_literal(value: Value, from: DataType, target: DataType, span: Span) -> PlanResult<Value> {
    match (value, target) {
        (Value::Null, _) => Ok(Value::Null),
        (v, t) if from == t => Ok(v),
        (Value::BigInt(i), DataType::Double) => Ok(Value::Double(i as f64)),
        (Value::Text(s), DataType::Timestamp) => parse_rfc3339(s.as_bytes())
            .map(Value::Timestamp)
            .map_err(|e| PlanError::at(span, format!("'{s}': {e}"))),
        (v, t) => Err(PlanError::at(
            span,
            format!("expected a {t} constant, found {v}"),
        )),
    }
}

fn expect_type<L>(e: &TypedExpr<L>, ty: DataType, span: Span, context: &str) -> PlanResult<()> {
    if e.ty == ty || matches!(e.kind, ExprKind::Literal(Value::Null)) {
        Ok(())
    } else {
        Err(PlanError::at(
            span,
            format!("{context} expects {ty}, found {}", e.ty),
        ))
    }
}

fn binary_op(op: &BinaryOperator, span: Span) -> PlanResult<BinaryOp> {
    Ok(match op {
        BinaryOperator::Plus => BinaryOp::Add,
        BinaryOperator::Minus => BinaryOp::Sub,
        BinaryOperator::Multiply => BinaryOp::Mul,
        BinaryOperator::Divide => BinaryOp::Div,
        BinaryOperator::Modulo => BinaryOp::Mod,
        BinaryOperator::Eq => BinaryOp::Eq,
        BinaryOperator::NotEq => BinaryOp::NotEq,
        BinaryOperator::Lt => BinaryOp::Lt,
        BinaryOperator::LtEq => BinaryOp::LtEq,
        BinaryOperator::Gt => BinaryOp::Gt,
        BinaryOperator::GtEq => BinaryOp::GtEq,
        BinaryOperator::And => BinaryOp::And,
        BinaryOperator::Or => BinaryOp::Or,
        other => {
            return Err(PlanError::at(
                span,
                format!("operator {other} is not supported"),
            ));
        }
    })
}

fn to_double<L>(e: TypedExpr<L>) -> TypedExpr<L> {
    match e.kind {
        ExprKind::Literal(Value::BigInt(i)) => TypedExpr {
            kind: ExprKind::Literal(Value::Double(i as f64)),
            ty: DataType::Double,
        },
        ExprKind::Literal(Value::Null) => TypedExpr {
            kind: ExprKind::Literal(Value::Null),
            ty: DataType::Double,
        },
        _ if e.ty == DataType::BigInt => TypedExpr {
            kind: ExprKind::ToDouble(Box::new(e)),
            ty: DataType::Double,
        },
        _ => e,
    }
}

/// Gives an untyped `NULL` or a text literal the type of the other operand.
fn align_literal<L>(e: TypedExpr<L>, target: DataType, span: Span) -> PlanResult<TypedExpr<L>> {
    match e.kind {
        ExprKind::Literal(v) if e.ty != target && (v.is_null() || e.ty == DataType::Text) => {
            let value = coerce_literal(v, e.ty, target, span)?;
            Ok(TypedExpr {
                kind: ExprKind::Literal(value),
                ty: target,
            })
        }
        kind => Ok(TypedExpr { kind, ty: e.ty }),
    }
}

fn binary<L>(
    op: BinaryOp,
    l: TypedExpr<L>,
    r: TypedExpr<L>,
    ls: Span,
    rs: Span,
) -> PlanResult<TypedExpr<L>> {
    let l_null = matches!(l.kind, ExprKind::Literal(Value::Null));
    let r_null = matches!(r.kind, ExprKind::Literal(Value::Null));
    let (l, r) = if l_null && !r_null {
        (align_literal(l, r.ty, ls)?, r)
    } else if r_null && !l_null {
        let ty = l.ty;
        (l, align_literal(r, ty, rs)?)
    } else {
        (l, r)
    };
    match op {
        BinaryOp::And | BinaryOp::Or => {
            let sym = if op == BinaryOp::And { "AND" } else { "OR" };
            expect_type(&l, DataType::Boolean, ls, sym)?;
            expect_type(&r, DataType::Boolean, rs, sym)?;
            let kind = ExprKind::Binary {
                op,
                left: Box::new(l),
                right: Box::new(r),
            };
            Ok(TypedExpr {
                kind,
                ty: DataType::Boolean,
            })
        }
        _ if op.is_arithmetic() => {
            if !l.ty.is_numeric() {
                return Err(PlanError::at(
                    ls,
                    format!("arithmetic expects numbers, found {}", l.ty),
                ));
            }
            if !r.ty.is_numeric() {
                return Err(PlanError::at(
                    rs,
                    format!("arithmetic expects numbers, found {}", r.ty),
                ));
            }
            let (l, r, ty) = if l.ty == DataType::BigInt && r.ty == DataType::BigInt {
                (l, r, DataType::BigInt)
            } else {
                (to_double(l), to_double(r), DataType::Double)
            };
            Ok(TypedExpr {
                kind: ExprKind::Binary {
                    op,
                    left: Box::new(l),
                    right: Box::new(r),
                },
                ty,
            })
        }
        _ => {
            // Comparison: numbers with numbers, text literals with timestamps, like with like.
            let (l, r) = if l.ty.is_numeric() && r.ty.is_numeric() && l.ty != r.ty {
                (to_double(l), to_double(r))
            } else if l.ty == DataType::Timestamp && r.ty == DataType::Text {
                (l, align_literal(r, DataType::Timestamp, rs)?)
            } else if r.ty == DataType::Timestamp && l.ty == DataType::Text {
                (align_literal(l, DataType::Timestamp, ls)?, r)
            } else {
                (l, r)
            };
            if l.ty != r.ty {
                return Err(PlanError::at(
                    rs,
                    format!("cannot compare {} with {}", l.ty, r.ty),
                ));
            }
            Ok(TypedExpr {
                kind: ExprKind::Binary {
                    op,
                    left: Box::new(l),
                    right: Box::new(r),
                },
                ty: DataType::Boolean,
            })
        }
    }
}

fn cast<L>(e: TypedExpr<L>, target: DataType, span: Span) -> PlanResult<TypedExpr<L>> {
    match (e.ty, target) {
        (from, to) if from == to => Ok(e),
        (DataType::BigInt, DataType::Double) => Ok(to_double(e)),
        _ => match e.kind {
            ExprKind::Literal(v) => {
                let from = e.ty;
                let value = coerce_literal(v, from, target, span)?;
                Ok(TypedExpr {
                    kind: ExprKind::Literal(value),
                    ty: target,
                })
            }
            _ => Err(PlanError::at(
                span,
                format!("cannot cast {} to {target}", e.ty),
            )),
        },
    }
}
