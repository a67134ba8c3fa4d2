//! How `stream.json` holds a kept window's keys and aggregate state: one base64 string
//! of the zstd-compressed bincode of both (`packed`), next to the window's readable
//! fields.
//!
//! Binary, because state is not always a JSON number: a `DOUBLE` sum that overflowed
//! holds an infinity (written as NULL and counted), which JSON cannot hold, and a folder
//! whose kept state would not load again could not be continued. Packed, because a
//! window of a million groups is tens of MB as plain JSON and handing those bytes to the
//! page cache was a large share of a run's end. The rest of the file (watermark, inputs,
//! revisions) stays plain JSON for tools and people. Windows packed as JSON (state
//! versions 3 to 5) and stored unpacked (before version 3) still load.

use std::io::Read;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use super::KeptWindow;
use crate::window::aggregate::Accumulator;
use crate::window::key::KeyRows;

/// zstd level: the fastest. Level 3 saves a few percent more for twice the time.
const LEVEL: i32 = 1;

/// Starts a payload in bincode (state version 6 on); a payload without it is the JSON
/// of versions 3 to 5, which starts with `{`.
const BINCODE: &[u8] = b"EFb1";

/// The bincode settings of a payload: variable-length integers (most counts and ids are
/// small), and a bound on what a damaged length can make the reader allocate.
fn bincode_options() -> impl bincode::Options {
    use bincode::Options as _;
    bincode::DefaultOptions::new().with_limit(MAX_UNPACKED)
}

/// Largest packed state accepted back: a bound on what a damaged file can make us
/// allocate, far above any real window (a million groups pack to a few MB).
const MAX_UNPACKED: u64 = 16 << 30;

/// What is compressed.
#[derive(Serialize)]
struct Payload<'a> {
    keys: &'a KeyRows,
    accs: &'a [Accumulator],
}

/// What is decompressed.
#[derive(Deserialize)]
struct OwnedPayload {
    keys: KeyRows,
    accs: Vec<Accumulator>,
}

/// A kept window as `stream.json` holds it.
#[derive(Serialize, Deserialize)]
pub(super) struct Stored {
    start: i64,
    end: i64,
    /// Keys and state, packed (state version 3 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    packed: Option<String>,
    /// Keys, unpacked (before version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keys: Option<KeyRows>,
    /// State, unpacked (before version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    accs: Option<Vec<Accumulator>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    unwritten: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correction: Option<i64>,
}

/// A kept window's keys and state packed ahead of saving ([`KeptWindow::prepack`]),
/// so that packing a big window overlaps the writing of the run's last files. Not part
/// of the window's value: windows equal whether packed ahead or not.
#[derive(Clone, Default)]
pub struct Prepacked(OnceLock<String>);

impl PartialEq for Prepacked {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Prepacked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Prepacked(ready)"
        } else {
            "Prepacked(none)"
        })
    }
}

impl KeptWindow {
    /// Packs the keys and state now, for the next save of the stream state to use. They
    /// must not change after this (a kept window is handed on, never updated). A
    /// failure is left for that save to report.
    pub fn prepack(&self) {
        if self.prepacked.0.get().is_none()
            && let Ok(packed) = pack_payload(self)
        {
            self.prepacked.0.set(packed).ok();
        }
    }
}

/// The `packed` field of `window`: base64 of the zstd of the bincode of keys and state.
fn pack_payload(window: &KeptWindow) -> Result<String, String> {
    use bincode::Options as _;
    let mut payload = BINCODE.to_vec();
    bincode_options()
        .serialize_into(
            &mut payload,
            &Payload {
                keys: &window.keys,
                accs: &window.accs,
            },
        )
        .map_err(|e| format!("window at {}: {e}", window.start))?;
    let compressed = zstd::bulk::compress(&payload, LEVEL)
        .map_err(|e| format!("window at {}: zstd: {e}", window.start))?;
    Ok(BASE64.encode(compressed))
}

/// Keys and state from a decompressed payload, in bincode or (before version 6) JSON.
fn unpack_payload(payload: &[u8]) -> Result<OwnedPayload, String> {
    use bincode::Options as _;
    match payload.strip_prefix(BINCODE) {
        Some(binary) => bincode_options()
            .deserialize(binary)
            .map_err(|e| e.to_string()),
        None => serde_json::from_slice(payload).map_err(|e| e.to_string()),
    }
}

/// Packs `window` for storing.
pub(super) fn pack(window: &KeptWindow) -> Result<Stored, String> {
    let packed = match window.prepacked.0.get() {
        Some(packed) => packed.clone(),
        None => pack_payload(window)?,
    };
    Ok(Stored {
        start: window.start,
        end: window.end,
        packed: Some(packed),
        keys: None,
        accs: None,
        unwritten: window.unwritten,
        correction: window.correction,
    })
}

impl TryFrom<Stored> for KeptWindow {
    type Error = String;

    fn try_from(stored: Stored) -> Result<Self, String> {
        let window = || format!("kept window at {}", stored.start);
        let (keys, accs) = match (stored.packed.as_deref(), stored.keys, stored.accs) {
            (Some(packed), None, None) => {
                let compressed = BASE64
                    .decode(packed)
                    .map_err(|e| format!("{}: packed state is not base64: {e}", window()))?;
                let mut bytes = Vec::new();
                zstd::stream::read::Decoder::new(compressed.as_slice())
                    .and_then(|d| d.take(MAX_UNPACKED).read_to_end(&mut bytes))
                    .map_err(|e| format!("{}: packed state does not decompress: {e}", window()))?;
                let payload = unpack_payload(&bytes)
                    .map_err(|e| format!("{}: packed state: {e}", window()))?;
                (payload.keys, payload.accs)
            }
            (None, Some(keys), Some(accs)) => (keys, accs),
            _ => {
                return Err(format!(
                    "{}: expected either `packed` or both `keys` and `accs`",
                    window()
                ));
            }
        };
        Ok(KeptWindow {
            start: stored.start,
            end: stored.end,
            keys,
            accs,
            unwritten: stored.unwritten,
            correction: stored.correction,
            prepacked: Prepacked::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> KeptWindow {
        let mut acc = Accumulator::new(&crate::query::AggregateCall {
            func: crate::query::AggregateFunction::Count,
            arg: None,
            output_type: crate::types::DataType::BigInt,
            param: None,
        });
        crate::window::aggregate::Aggregate::push_empty(&mut acc);
        KeptWindow {
            start: 60_000_000,
            end: 120_000_000,
            keys: KeyRows::default(),
            accs: vec![acc],
            unwritten: false,
            correction: Some(7),
            prepacked: Prepacked::default(),
        }
    }

    #[test]
    fn a_window_is_stored_packed_and_comes_back_whole() -> Result<(), serde_json::Error> {
        let text = serde_json::to_string(&window())?;
        let value: serde_json::Value = serde_json::from_str(&text)?;
        assert!(value["packed"].is_string(), "{text}");
        assert!(
            value.get("keys").is_none() && value.get("accs").is_none(),
            "{text}"
        );
        assert_eq!(value["start"], 60_000_000);
        assert_eq!(serde_json::from_str::<KeptWindow>(&text)?, window());
        Ok(())
    }

    #[test]
    fn a_window_packed_ahead_is_stored_as_one_packed_when_saved() -> Result<(), serde_json::Error> {
        let ahead = window();
        ahead.prepack();
        assert!(ahead.prepacked.0.get().is_some());
        assert_eq!(
            serde_json::to_string(&ahead)?,
            serde_json::to_string(&window())?
        );
        Ok(())
    }

    #[test]
    fn an_unpacked_window_of_an_older_state_loads() -> Result<(), serde_json::Error> {
        let w = window();
        let older = serde_json::json!({
            "start": w.start, "end": w.end, "keys": w.keys, "accs": w.accs, "correction": 7,
        });
        assert_eq!(serde_json::from_value::<KeptWindow>(older)?, w);
        Ok(())
    }

    /// A `DOUBLE` sum that overflowed holds an infinity (and its compensation NaN), a
    /// variance of such values NaN: the window must load again as it was kept.
    #[test]
    fn a_window_whose_state_is_not_finite_comes_back_whole() -> Result<(), serde_json::Error> {
        use crate::batch::{Column, ColumnValues, Interner};
        use crate::query::AggregateFunction as F;
        use crate::window::aggregate::{Aggregate, Input, Pairs};
        let column = Column {
            values: ColumnValues::Double(vec![1e308, 1e308, -1e300]),
            validity: None,
        };
        let interner = Interner::new();
        let mut pairs = Pairs::default();
        for row in 0..3 {
            pairs.push(row, 0);
        }
        let mut w = window();
        w.accs = [F::Sum, F::StddevSamp]
            .into_iter()
            .map(|func| {
                let mut acc = Accumulator::new(&crate::query::AggregateCall {
                    func,
                    arg: None,
                    output_type: crate::types::DataType::Double,
                    param: None,
                });
                acc.push_empty();
                acc.update(
                    &pairs,
                    Input {
                        arg: Some(&column),
                        times: &[],
                        interner: &interner,
                    },
                );
                acc
            })
            .collect();
        let text = serde_json::to_string(&w)?;
        let back: KeptWindow = serde_json::from_str(&text)?;
        // NaN is not equal to itself: compare what the windows would write.
        assert_eq!(format!("{back:?}"), format!("{w:?}"));
        Ok(())
    }

    #[test]
    fn a_window_packed_as_json_by_an_older_edgeflow_loads() -> Result<(), serde_json::Error> {
        let w = window();
        let json = serde_json::to_vec(&Payload {
            keys: &w.keys,
            accs: &w.accs,
        })?;
        let packed = BASE64.encode(zstd::bulk::compress(&json, LEVEL).unwrap_or_default());
        let older = serde_json::json!({
            "start": w.start, "end": w.end, "packed": packed, "correction": 7,
        });
        assert_eq!(serde_json::from_value::<KeptWindow>(older)?, w);
        Ok(())
    }

    #[test]
    fn damaged_packed_state_is_an_error_naming_the_window() {
        // A bincode payload whose first length claims more than the bound.
        let mut huge = BINCODE.to_vec();
        huge.extend([0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        let huge = BASE64.encode(zstd::bulk::compress(&huge, LEVEL).unwrap_or_default());
        for packed in ["not base64!", "AAAA", &huge] {
            let damaged =
                serde_json::json!({"start": 60_000_000, "end": 120_000_000, "packed": packed});
            let err = serde_json::from_value::<KeptWindow>(damaged)
                .map(|_| ())
                .map_or_else(|e| e.to_string(), |()| panic!("{packed} should not load"));
            assert!(err.contains("kept window at 60000000"), "{err}");
        }
        let neither = serde_json::json!({"start": 0, "end": 1});
        assert!(serde_json::from_value::<KeptWindow>(neither).is_err());
    }
}
