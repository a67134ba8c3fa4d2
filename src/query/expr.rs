//! Typed scalar expressions, generic over what their leaves refer to.
//!
//! The same tree shape serves `WHERE` and aggregate arguments (leaves are source columns)
//! and `SELECT`/`HAVING` (leaves are group keys, window bounds and aggregate results), so
//! both are checked by one planner and run by one evaluator ([`crate::eval`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::{DataType, Value};

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinaryOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/` (integer division for two `BIGINT`s; `NULL` when dividing by zero)
    Div,
    /// `%`
    Mod,
    /// `=`
    Eq,
    /// `<>`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
    /// `AND`
    And,
    /// `OR`
    Or,
}

impl BinaryOp {
    /// Whether the operator compares two values.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq
                | BinaryOp::NotEq
                | BinaryOp::Lt
                | BinaryOp::LtEq
                | BinaryOp::Gt
                | BinaryOp::GtEq
        )
    }

    /// Whether the operator is arithmetic.
    pub fn is_arithmetic(self) -> bool {
        matches!(
            self,
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod
        )
    }

    fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::And => "AND",
            BinaryOp::Or => "OR",
        }
    }
}

/// An expression with its result type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TypedExpr<L> {
    /// The expression.
    pub kind: ExprKind<L>,
    /// Its type.
    pub ty: DataType,
}

/// The shape of an expression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ExprKind<L> {
    /// A column-like reference.
    Leaf(L),
    /// A constant (`Value::Null` takes the type of its context).
    Literal(Value),
    /// `BIGINT` to `DOUBLE`, inserted where types meet.
    ToDouble(Box<TypedExpr<L>>),
    /// Unary minus.
    Negate(Box<TypedExpr<L>>),
    /// `NOT`.
    Not(Box<TypedExpr<L>>),
    /// A binary operation.
    Binary {
        /// Operator.
        op: BinaryOp,
        /// Left operand.
        left: Box<TypedExpr<L>>,
        /// Right operand.
        right: Box<TypedExpr<L>>,
    },
    /// `IS [NOT] NULL`.
    IsNull {
        /// Tested expression.
        expr: Box<TypedExpr<L>>,
        /// `IS NOT NULL`.
        negated: bool,
    },
    /// `[NOT] IN (literal, ...)`.
    InList {
        /// Tested expression.
        expr: Box<TypedExpr<L>>,
        /// Constants of the expression's type.
        list: Vec<Value>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `[NOT] LIKE 'pattern'` with `%` and `_`.
    Like {
        /// Tested text.
        expr: Box<TypedExpr<L>>,
        /// The pattern.
        pattern: String,
        /// `NOT LIKE`.
        negated: bool,
    },
}

impl<L> TypedExpr<L> {
    /// A leaf of a type.
    pub fn leaf(leaf: L, ty: DataType) -> Self {
        TypedExpr {
            kind: ExprKind::Leaf(leaf),
            ty,
        }
    }

    /// Visits every leaf.
    pub fn for_each_leaf(&self, f: &mut impl FnMut(&L)) {
        match &self.kind {
            ExprKind::Leaf(l) => f(l),
            ExprKind::Literal(_) => {}
            ExprKind::ToDouble(e) | ExprKind::Negate(e) | ExprKind::Not(e) => e.for_each_leaf(f),
            ExprKind::Binary { left, right, .. } => {
                left.for_each_leaf(f);
                right.for_each_leaf(f);
            }
            ExprKind::IsNull { expr, .. }
            | ExprKind::InList { expr, .. }
            | ExprKind::Like { expr, .. } => expr.for_each_leaf(f),
        }
    }

    /// Whether the expression can be `NULL` for some input.
    pub fn nullable(&self, leaf_nullable: &impl Fn(&L) -> bool) -> bool {
        match &self.kind {
            ExprKind::Leaf(l) => leaf_nullable(l),
            ExprKind::Literal(v) => v.is_null(),
            ExprKind::IsNull { .. } => false,
            // Division and overflow produce NULL, so any arithmetic may.
            ExprKind::Binary { op, .. } if op.is_arithmetic() => true,
            ExprKind::ToDouble(e) | ExprKind::Negate(e) | ExprKind::Not(e) => {
                e.nullable(leaf_nullable)
            }
            ExprKind::Binary { left, right, .. } => {
                left.nullable(leaf_nullable) || right.nullable(leaf_nullable)
            }
            ExprKind::InList { expr, list, .. } => {
                expr.nullable(leaf_nullable) || list.iter().any(Value::is_null)
            }
            ExprKind::Like { expr, .. } => expr.nullable(leaf_nullable),
        }
    }
}

impl<L: fmt::Display> fmt::Display for TypedExpr<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Leaf(l) => write!(f, "{l}"),
            ExprKind::Literal(v) => write!(f, "{v}"),
            ExprKind::ToDouble(e) => write!(f, "{e}"),
            ExprKind::Negate(e) => write!(f, "-{e}"),
            ExprKind::Not(e) => write!(f, "NOT ({e})"),
            ExprKind::Binary { op, left, right } => write!(f, "({left} {} {right})", op.symbol()),
            ExprKind::IsNull { expr, negated } => {
                write!(f, "{expr} IS {}NULL", if *negated { "NOT " } else { "" })
            }
            ExprKind::InList {
                expr,
                list,
                negated,
            } => {
                let items: Vec<String> = list.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "{expr} {}IN ({})",
                    if *negated { "NOT " } else { "" },
                    items.join(", ")
                )
            }
            ExprKind::Like {
                expr,
                pattern,
                negated,
            } => {
                write!(
                    f,
                    "{expr} {}LIKE '{pattern}'",
                    if *negated { "NOT " } else { "" }
                )
            }
        }
    }
}

/// A reference to a source column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnRef {
    /// Index in the source schema.
    pub index: usize,
    /// Column name, for plans and messages.
    pub name: String,
}

impl fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A scalar expression over source columns (`WHERE`, aggregate arguments).
pub type SourceExpr = TypedExpr<ColumnRef>;

/// What an output expression can refer to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OutputLeaf {
    /// The `i`th group key.
    Key(usize, String),
    /// `window_start`.
    WindowStart,
    /// `window_end`.
    WindowEnd,
    /// The result of the `i`th aggregate.
    Aggregate(usize, String),
}

impl fmt::Display for OutputLeaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputLeaf::Key(_, name) | OutputLeaf::Aggregate(_, name) => f.write_str(name),
            OutputLeaf::WindowStart => f.write_str("window_start"),
            OutputLeaf::WindowEnd => f.write_str("window_end"),
        }
    }
}

/// A scalar expression over the grouped result (`SELECT`, `HAVING`).
pub type OutputExpr = TypedExpr<OutputLeaf>;
