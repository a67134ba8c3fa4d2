//! Sketch state in the stream state file: each sketch in the library's standard
//! serialised form (the bytes the result files carry), so kept state reloads exactly.

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

/// Serialises per-slot sketches (`None` for a slot without values).
pub fn serialize<S: Serializer, T: SketchBytes>(
    slots: &[Option<T>],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let bytes: Vec<Option<Vec<u8>>> = slots
        .iter()
        .map(|s| s.as_ref().map(SketchBytes::to_bytes))
        .collect();
    bytes.serialize(serializer)
}

/// Reads per-slot sketches back.
pub fn deserialize<'de, D: Deserializer<'de>, T: SketchBytes>(
    deserializer: D,
) -> Result<Vec<Option<T>>, D::Error> {
    let bytes: Vec<Option<Vec<u8>>> = Vec::deserialize(deserializer)?;
    bytes
        .into_iter()
        .map(|b| b.map(|b| T::from_bytes(&b)).transpose())
        .collect::<Result<_, _>>()
        .map_err(D::Error::custom)
}
