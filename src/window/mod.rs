//! Window assignment and aggregate state: pure, no I/O, unit-tested.
//!
//! [`assign`] says which windows a reading belongs to; [`aggregate`] holds aggregate
//! state column-wise; [`key`] maps rows to group ids; [`state`] ties them together per
//! worker and decides lateness; [`merge`] combines partial windows at the key's owner;
//! [`session`] stitches panes into sessions there; [`closed`] keeps closed windows at
//! their owner for corrections within the allowed lateness.

pub mod aggregate;
pub mod assign;
pub mod closed;
pub mod key;
pub mod merge;
pub mod session;
pub mod state;
