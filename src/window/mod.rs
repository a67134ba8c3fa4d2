//! Window assignment and aggregate state: pure, no I/O, unit-tested.
//!
//! [`assign`] says which windows a reading belongs to; [`accumulator`] holds aggregate
//! state column-wise; [`key`] maps rows to group ids; [`state`] ties them together per
//! worker and decides lateness; [`merge`] combines partial windows at the key's owner.

pub mod accumulator;
pub mod assign;
pub mod key;
pub mod merge;
pub mod state;
