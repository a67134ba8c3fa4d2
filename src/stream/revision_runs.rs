//! How `stream.json` holds the last revision of every window written: as runs of
//! windows that start a fixed step apart and share a revision, `[from, every, count,
//! revision]`.
//!
//! The map has an entry for every window a folder ever wrote, kept for as long as the
//! folder lives (a window written again, by a correction or a `--fresh` rerun, must
//! never reuse a name). As a plain map that is 22 bytes a window: after a year of
//! one-minute windows, 11 MB of JSON written at every checkpoint and at the end of
//! every run. Windows are written at their regular starts, nearly all at revision 0, so
//! a year of them is one run; a gap or a revised window starts another. State files
//! (version 4 and before) hold the plain map, which still loads.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserializer, Serializer};

/// Most windows a stored map may name: beyond any real folder (a year and a half of
/// one-second windows), it keeps what a damaged file can make us allocate to a few GB.
const MAX_WINDOWS: u64 = 50_000_000;

/// Windows `from`, `from + every`, ... (`count` of them, the last at `last`), each last
/// written at `revision`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Run {
    from: i64,
    every: i64,
    count: u64,
    last: i64,
    revision: u32,
}

impl Run {
    fn one(start: i64, revision: u32) -> Self {
        Run {
            from: start,
            every: 0,
            count: 1,
            last: start,
            revision,
        }
    }

    /// The run with `start` added, if `start` continues it.
    fn extended(self, start: i64, revision: u32) -> Option<Run> {
        if revision != self.revision {
            return None;
        }
        let step = start.checked_sub(self.last).filter(|&s| s > 0)?;
        (self.count == 1 || step == self.every).then_some(Run {
            every: step,
            count: self.count + 1,
            last: start,
            ..self
        })
    }
}

/// The runs of `revisions`, in order of start.
fn runs(revisions: &BTreeMap<i64, u32>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (&start, &revision) in revisions {
        match runs.last().and_then(|run| run.extended(start, revision)) {
            Some(longer) => {
                if let Some(last) = runs.last_mut() {
                    *last = longer;
                }
            }
            None => runs.push(Run::one(start, revision)),
        }
    }
    runs
}

/// Writes `revisions` as its runs.
pub fn serialize<S: Serializer>(
    revisions: &BTreeMap<i64, u32>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let runs = runs(revisions);
    let mut seq = serializer.serialize_seq(Some(runs.len()))?;
    for run in runs {
        seq.serialize_element(&(run.from, run.every, run.count, run.revision))?;
    }
    seq.end()
}

/// Reads the runs [`serialize`] writes, or the plain map of older state files.
pub fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<i64, u32>, D::Error> {
    deserializer.deserialize_any(RevisionsVisitor)
}

struct RevisionsVisitor;

impl<'de> Visitor<'de> for RevisionsVisitor {
    type Value = BTreeMap<i64, u32>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("runs of window revisions, [from, every, count, revision]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut revisions = BTreeMap::new();
        let mut total: u64 = 0;
        while let Some((from, every, count, revision)) =
            seq.next_element::<(i64, i64, u64, u32)>()?
        {
            total = total.saturating_add(count);
            if count == 0 || total > MAX_WINDOWS || (count > 1 && every <= 0) {
                return Err(de::Error::custom(format!(
                    "a run of {count} windows from {from} every {every} (at most {MAX_WINDOWS} windows, a step above 0)"
                )));
            }
            let mut start = from;
            for i in 0..count {
                revisions.insert(start, revision);
                if i + 1 < count {
                    start = start.checked_add(every).ok_or_else(|| {
                        de::Error::custom(format!(
                            "a run of {count} windows from {from} every {every} passes the largest time"
                        ))
                    })?;
                }
            }
        }
        Ok(revisions)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut revisions = BTreeMap::new();
        while let Some((start, revision)) = map.next_entry::<StartKey, u32>()? {
            revisions.insert(start.0, revision);
        }
        Ok(revisions)
    }
}

/// A window start as a key of the plain map: JSON keys are strings.
struct StartKey(i64);

impl<'de> de::Deserialize<'de> for StartKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse()
            .map(StartKey)
            .map_err(|_| de::Error::custom(format!("window start {text:?} is not a number")))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Held {
        #[serde(with = "super")]
        revisions: BTreeMap<i64, u32>,
    }

    fn round_trip(revisions: &BTreeMap<i64, u32>) -> (String, BTreeMap<i64, u32>) {
        let held = Held {
            revisions: revisions.clone(),
        };
        let json = serde_json::to_string(&held).unwrap_or_else(|e| panic!("{e}"));
        let back: Held = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
        (json, back.revisions)
    }

    const MINUTE: i64 = 60_000_000;

    /// A year of one-minute windows with an hour missing and two windows revised: a few
    /// runs, not half a million entries.
    #[test]
    fn a_year_of_regular_windows_is_a_few_runs() {
        let mut revisions: BTreeMap<i64, u32> = (0..525_600)
            .filter(|m| !(1_000..1_060).contains(m))
            .map(|m| (1_767_225_600_000_000 + m * MINUTE, 0))
            .collect();
        revisions.insert(1_767_225_600_000_000 + 200_000 * MINUTE, 2);
        revisions.insert(1_767_225_600_000_000 + 200_001 * MINUTE, 1);
        let (json, back) = round_trip(&revisions);
        assert_eq!(back, revisions);
        assert_eq!(runs(&revisions).len(), 5, "{json}");
        assert!(json.len() < 300, "{json}");
    }

    /// Starts too far apart for their step to be an `i64` each start their own run.
    #[test]
    fn starts_at_the_ends_of_time_round_trip() {
        let revisions = BTreeMap::from([
            (i64::MIN, 0),
            (-6e18 as i64, 0),
            (0, 0),
            (6e18 as i64, 0),
            (i64::MAX, 0),
        ]);
        let (json, back) = round_trip(&revisions);
        assert_eq!(back, revisions, "{json}");
    }

    #[test]
    fn the_plain_map_of_older_state_files_loads() {
        let json = r#"{"revisions":{"60000000":0,"120000000":3,"-60000000":1}}"#;
        let held: Held = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        let want = BTreeMap::from([(-MINUTE, 1), (MINUTE, 0), (2 * MINUTE, 3)]);
        assert_eq!(held.revisions, want);
    }

    #[test]
    fn damaged_runs_are_refused() {
        for runs in [
            "[[0,60,0,0]]",
            "[[0,0,5,0]]",
            "[[0,-60,2,0]]",
            "[[0,60,50000001,0]]",
            "[[9223372036854775000,60000000,100,0]]",
            "[[0,60,2]]",
        ] {
            let json = format!(r#"{{"revisions":{runs}}}"#);
            assert!(
                serde_json::from_str::<Held>(&json).is_err(),
                "{json} was accepted"
            );
        }
    }

    proptest! {
        /// Any map comes back as it was, however its starts and revisions fall.
        #[test]
        fn any_revisions_round_trip(
            steps in prop::collection::vec((1i64..4, 0u32..3), 0..200),
            first in -5i64..5,
        ) {
            let mut start = first * MINUTE;
            let mut revisions = BTreeMap::new();
            for (step, revision) in steps {
                start += step * MINUTE;
                revisions.insert(start, revision);
            }
            let (_, back) = round_trip(&revisions);
            prop_assert_eq!(back, revisions);
        }
    }
}
