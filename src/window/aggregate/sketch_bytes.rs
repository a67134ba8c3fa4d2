//! Sketch state in the stream state file: each sketch in the library's standard
//! serialised form (the bytes the result files carry), so kept state reloads exactly.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a sketch type goes to and from its standard bytes.
pub trait SketchBytes: Sized {
    /// The standard serialised form.
    fn to_bytes(&self) -> Vec<u8>;
    /// Reads the standard serialised form.
    fn from_bytes(bytes: &[u8]) -> Result<Self, String>;
}

/// The bytes of the sketches of `slots`, in that order.
pub fn of_slots<T: SketchBytes>(sketches: &[Option<T>], slots: &[usize]) -> Vec<Option<Vec<u8>>> {
    slots
        .iter()
        .map(|&s| sketches[s].as_ref().map(SketchBytes::to_bytes))
        .collect()
}

/// Serialises per-slot sketches (`None` for a slot without values). In a readable
/// format (`stream.json`) each sketch is base64 text: a JSON array of numbers would take
/// four times the space and most of the time of saving a window of sketches.
pub fn serialize<S: Serializer, T: SketchBytes>(
    slots: &[Option<T>],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let bytes = slots.iter().map(|s| s.as_ref().map(SketchBytes::to_bytes));
    if serializer.is_human_readable() {
        let text: Vec<Option<String>> = bytes.map(|b| b.map(|b| BASE64.encode(b))).collect();
        text.serialize(serializer)
    } else {
        bytes.collect::<Vec<_>>().serialize(serializer)
    }
}

/// One sketch as a readable format holds it: base64 text, or (as edgeflow wrote it
/// before) an array of byte values.
#[derive(Deserialize)]
#[serde(untagged)]
enum Readable {
    Base64(String),
    Numbers(Vec<u8>),
}

/// Reads per-slot sketches back.
pub fn deserialize<'de, D: Deserializer<'de>, T: SketchBytes>(
    deserializer: D,
) -> Result<Vec<Option<T>>, D::Error> {
    let bytes: Vec<Option<Vec<u8>>> = if deserializer.is_human_readable() {
        Vec::<Option<Readable>>::deserialize(deserializer)?
            .into_iter()
            .map(|r| {
                r.map(|r| match r {
                    Readable::Base64(text) => BASE64.decode(text).map_err(D::Error::custom),
                    Readable::Numbers(bytes) => Ok(bytes),
                })
                .transpose()
            })
            .collect::<Result<_, _>>()?
    } else {
        Vec::deserialize(deserializer)?
    };
    bytes
        .into_iter()
        .map(|b| b.map(|b| T::from_bytes(&b)).transpose())
        .collect::<Result<_, _>>()
        .map_err(D::Error::custom)
}

/// Staged slots ([`super::staged::StagedSlots`]) in the stream state and between
/// processes: a slot still holding values that the sketch can read back
/// ([`Replay::store_values`]) keeps them, so a window resumed by the next run, or merged
/// at another process, still merges by putting values together; any other slot is its
/// sketch's standard bytes, as [`serialize`] writes them. In a readable format a kept
/// slot is `{"values": "<base64>"}`.
pub mod staged {
    use super::*;
    use crate::window::aggregate::staged::{Replay, Staged};

    /// One slot as a readable format holds it.
    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum ReadableSlot {
        Sketch(String),
        Values {
            values: String,
        },
        /// A sketch as edgeflow wrote it before base64: an array of byte values.
        Numbers(Vec<u8>),
    }

    /// One slot as a binary format holds it.
    #[derive(Serialize, Deserialize)]
    enum BinarySlot {
        Sketch(Vec<u8>),
        Values(Vec<u8>),
    }

    fn stored<S: Replay>(slot: &Staged<S>) -> BinarySlot {
        match slot {
            Staged::Values(values) => match S::store_values(values) {
                Some(bytes) => BinarySlot::Values(bytes),
                None => BinarySlot::Sketch(slot.to_bytes()),
            },
            Staged::Sketch(_) => BinarySlot::Sketch(slot.to_bytes()),
        }
    }

    fn loaded<S: Replay>(slot: BinarySlot) -> Result<Staged<S>, String> {
        match slot {
            BinarySlot::Sketch(bytes) => Staged::from_bytes(&bytes),
            BinarySlot::Values(bytes) => S::load_values(&bytes).map(Staged::Values),
        }
    }

    /// Serialises the slots.
    pub fn serialize<S: Replay, Z: Serializer>(
        slots: &[Option<Staged<S>>],
        serializer: Z,
    ) -> Result<Z::Ok, Z::Error> {
        let stored = slots.iter().map(|s| s.as_ref().map(stored));
        if serializer.is_human_readable() {
            let readable: Vec<Option<ReadableSlot>> = stored
                .map(|s| {
                    s.map(|s| match s {
                        BinarySlot::Sketch(bytes) => ReadableSlot::Sketch(BASE64.encode(bytes)),
                        BinarySlot::Values(bytes) => ReadableSlot::Values {
                            values: BASE64.encode(bytes),
                        },
                    })
                })
                .collect();
            readable.serialize(serializer)
        } else {
            stored.collect::<Vec<_>>().serialize(serializer)
        }
    }

    /// Reads the slots back.
    pub fn deserialize<'de, S: Replay, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Option<Staged<S>>>, D::Error> {
        let stored: Vec<Option<BinarySlot>> = if deserializer.is_human_readable() {
            Vec::<Option<ReadableSlot>>::deserialize(deserializer)?
                .into_iter()
                .map(|r| {
                    r.map(|r| match r {
                        ReadableSlot::Sketch(text) => BASE64.decode(text).map(BinarySlot::Sketch),
                        ReadableSlot::Values { values } => {
                            BASE64.decode(values).map(BinarySlot::Values)
                        }
                        ReadableSlot::Numbers(bytes) => Ok(BinarySlot::Sketch(bytes)),
                    })
                    .transpose()
                })
                .collect::<Result<_, _>>()
                .map_err(D::Error::custom)?
        } else {
            Vec::deserialize(deserializer)?
        };
        stored
            .into_iter()
            .map(|s| s.map(loaded).transpose())
            .collect::<Result<_, _>>()
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Raw(Vec<u8>);

    impl SketchBytes for Raw {
        fn to_bytes(&self) -> Vec<u8> {
            self.0.clone()
        }
        fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
            Ok(Raw(bytes.to_vec()))
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Slots {
        #[serde(serialize_with = "serialize", deserialize_with = "deserialize")]
        sketches: Vec<Option<Raw>>,
    }

    #[test]
    fn sketches_are_base64_in_json_and_older_arrays_still_load() -> Result<(), serde_json::Error> {
        let slots = Slots {
            sketches: vec![Some(Raw(vec![0, 1, 254, 255])), None],
        };
        let text = serde_json::to_string(&slots)?;
        assert_eq!(text, r#"{"sketches":["AAH+/w==",null]}"#);
        assert_eq!(serde_json::from_str::<Slots>(&text)?, slots);
        let older = r#"{"sketches":[[0,1,254,255],null]}"#;
        assert_eq!(serde_json::from_str::<Slots>(older)?, slots);
        assert!(serde_json::from_str::<Slots>(r#"{"sketches":["not base64!"]}"#).is_err());
        Ok(())
    }
}
