//! Deterministic synthetic traffic readings.
//!
//! Reading `i` is a pure function of the seed and `i` (a counter-based random stream), so
//! any worker can generate any chunk, `edgeflow gen` writes exactly what the in-process
//! source produces, and a seed reproduces a data set byte for byte.

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::{ChunkSource, OpenInput, SourceError, SourcePoll};
use crate::batch::{Batch, ColumnValues, Interner};
use crate::decode::DecodedChunk;
use crate::query::SourceSchema;
use crate::time::MICROS_PER_MILLI;
use crate::types::DataType;

/// Bytes a generated reading stands for when sizing chunks: about one JSON line.
const READING_BYTES: usize = 128;

/// 2026-01-01T00:00:00Z in epoch milliseconds: the default first reading.
pub const DEFAULT_START_MS: i64 = 1_767_225_600_000;

/// What to generate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeneratorConfig {
    /// Distinct devices (`dev-000000`, ...).
    pub devices: u64,
    /// Readings in total.
    pub readings: u64,
    /// Readings per second of event time, over all devices.
    pub rate: f64,
    /// Each reading's event time is up to this many milliseconds before its place in the
    /// sequence, so the stream is out of order by up to this much.
    pub disorder_ms: u64,
    /// Fraction of readings that arrive one to ten minutes late.
    pub late_fraction: f64,
    /// Random seed.
    pub seed: u64,
    /// Event time of the first reading, epoch milliseconds.
    pub start_ms: i64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            devices: 10_000,
            readings: 1_000_000,
            rate: 10_000.0,
            disorder_ms: 2_000,
            late_fraction: 0.0005,
            seed: 42,
            start_ms: DEFAULT_START_MS,
        }
    }
}

/// One synthetic reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// Device number.
    pub device: u64,
    /// Event time, epoch milliseconds.
    pub ts_ms: i64,
    /// Bytes received.
    pub bytes_in: i64,
    /// Bytes sent.
    pub bytes_out: i64,
    /// Packets.
    pub packets: i64,
    /// Latency in hundredths of a millisecond.
    pub latency_centi: i64,
}

impl Reading {
    /// Latency in milliseconds, exactly as its two-decimal text parses.
    pub fn latency_ms(&self) -> f64 {
        self.latency_centi as f64 / 100.0
    }
}

/// The name of device `d`.
pub fn device_name(d: u64) -> String {
    format!("dev-{d:06}")
}

#[inline]
pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl GeneratorConfig {
    /// Reading `i`.
    #[inline]
    pub fn reading(&self, i: u64) -> Reading {
        let mut s = self.seed ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let device = splitmix(&mut s) % self.devices.max(1);
        let base = self.start_ms + (i as f64 * 1000.0 / self.rate) as i64;
        let jitter = if self.disorder_ms > 0 {
            (splitmix(&mut s) % (self.disorder_ms + 1)) as i64
        } else {
            0
        };
        let late = (splitmix(&mut s) >> 11) as f64 / (1u64 << 53) as f64 <= self.late_fraction
            && self.late_fraction > 0.0;
        let late_by = if late {
            60_000 + (splitmix(&mut s) % 540_000) as i64
        } else {
            0
        };
        let bytes_in = 64 + (splitmix(&mut s) % 150_000) as i64;
        let bytes_out = 64 + (splitmix(&mut s) % 50_000) as i64;
        let packets = 1 + (bytes_in + bytes_out) / 1200 + (splitmix(&mut s) % 4) as i64;
        let latency_centi = 50 + (splitmix(&mut s) % 25_000) as i64;
        Reading {
            device,
            ts_ms: base - jitter - late_by,
            bytes_in,
            bytes_out,
            packets,
            latency_centi,
        }
    }
}

/// How `gen` writes timestamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TimestampFormat {
    /// Integer epoch milliseconds.
    Millis,
    /// RFC 3339 text.
    Rfc3339,
}

/// Writes readings `0..config.readings` as JSON lines or CSV with a header.
pub fn write_readings(
    config: &GeneratorConfig,
    format: crate::decode::Format,
    ts: TimestampFormat,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let csv = format == crate::decode::Format::Csv;
    if csv {
        writeln!(out, "device_id,ts,bytes_in,bytes_out,packets,latency_ms")?;
    }
    for i in 0..config.readings {
        let r = config.reading(i);
        let ts_text = match ts {
            TimestampFormat::Millis => r.ts_ms.to_string(),
            TimestampFormat::Rfc3339 => {
                let text = crate::time::format_rfc3339_micros(r.ts_ms * MICROS_PER_MILLI);
                if csv { text } else { format!("\"{text}\"") }
            }
        };
        let lat = format!("{}.{:02}", r.latency_centi / 100, r.latency_centi % 100);
        if csv {
            writeln!(
                out,
                "dev-{:06},{ts_text},{},{},{},{lat}",
                r.device, r.bytes_in, r.bytes_out, r.packets
            )?;
        } else {
            writeln!(
                out,
                "{{\"device_id\":\"dev-{:06}\",\"ts\":{ts_text},\"bytes_in\":{},\"bytes_out\":{},\"packets\":{},\"latency_ms\":{lat}}}",
                r.device, r.bytes_in, r.bytes_out, r.packets
            )?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum GenField {
    Device,
    Ts,
    BytesIn,
    BytesOut,
    Packets,
    Latency,
}

const FIELDS: [(&str, DataType, GenField); 6] = [
    ("device_id", DataType::Text, GenField::Device),
    ("ts", DataType::Timestamp, GenField::Ts),
    ("bytes_in", DataType::BigInt, GenField::BytesIn),
    ("bytes_out", DataType::BigInt, GenField::BytesOut),
    ("packets", DataType::BigInt, GenField::Packets),
    ("latency_ms", DataType::Double, GenField::Latency),
];

/// The generator as an in-process input.
#[derive(Debug)]
pub struct GeneratorInput {
    config: GeneratorConfig,
    types: Vec<DataType>,
    fields: Vec<GenField>,
    event_time: usize,
    chunk_readings: u64,
    /// Readings an earlier run consumed: generation starts after them.
    skip: u64,
}

impl GeneratorInput {
    /// Maps the declared columns onto generated fields; chunks hold about as many
    /// readings as `chunk_bytes` of JSON lines would. Generation starts at reading
    /// `skip`.
    pub fn new(
        config: GeneratorConfig,
        schema: &SourceSchema,
        chunk_bytes: usize,
        skip: u64,
    ) -> Result<Self, SourceError> {
        let mut fields = Vec::with_capacity(schema.columns.len());
        for c in &schema.columns {
            match FIELDS
                .iter()
                .find(|(name, ty, _)| name.eq_ignore_ascii_case(&c.name) && *ty == c.ty)
            {
                Some((_, _, f)) => fields.push(*f),
                None => {
                    let offered: Vec<String> =
                        FIELDS.iter().map(|(n, t, _)| format!("{n} {t}")).collect();
                    return Err(SourceError::Generator(format!(
                        "the generator cannot fill column `{} {}`; it produces {}",
                        c.name,
                        c.ty,
                        offered.join(", ")
                    )));
                }
            }
        }
        if config.devices == 0 || config.rate.is_nan() || config.rate <= 0.0 {
            return Err(SourceError::Generator(
                "the generator needs at least one device and a positive rate".into(),
            ));
        }
        Ok(GeneratorInput {
            config,
            types: schema.types(),
            fields,
            event_time: schema.event_time,
            chunk_readings: (chunk_bytes / READING_BYTES).max(1) as u64,
            skip,
        })
    }
}

impl OpenInput for GeneratorInput {
    fn worker_source(&self, worker: usize, peers: usize) -> Box<dyn ChunkSource> {
        Box::new(GeneratorChunks {
            config: self.config.clone(),
            types: self.types.clone(),
            fields: self.fields.clone(),
            event_time: self.event_time,
            chunk_readings: self.chunk_readings,
            skip: self.skip,
            next: worker as u64,
            step: peers as u64,
            device_ids: Vec::new(),
        })
    }

    fn line_base(&self) -> u64 {
        1
    }

    fn total_bytes(&self) -> Option<u64> {
        None
    }

    fn position_after(&self, chunks: Option<u64>) -> u64 {
        chunks.map_or(self.config.readings, |k| {
            self.skip
                .saturating_add(k.saturating_mul(self.chunk_readings))
                .min(self.config.readings)
        })
    }
}

struct GeneratorChunks {
    config: GeneratorConfig,
    types: Vec<DataType>,
    fields: Vec<GenField>,
    event_time: usize,
    chunk_readings: u64,
    skip: u64,
    next: u64,
    step: u64,
    /// Interned id + 1 of each device's name, 0 until first used.
    device_ids: Vec<u32>,
}

impl ChunkSource for GeneratorChunks {
    fn poll(&mut self, interner: &mut Interner) -> Result<SourcePoll, SourceError> {
        let k = self.next;
        let first = self.skip + k * self.chunk_readings;
        if first >= self.config.readings {
            return Ok(SourcePoll::Done);
        }
        self.next += self.step;
        let last = (first + self.chunk_readings).min(self.config.readings);
        let n = (last - first) as usize;
        let mut batch = Batch::new(&self.types, n);
        let readings: Vec<Reading> = (first..last).map(|i| self.config.reading(i)).collect();
        for (column, field) in batch.columns.iter_mut().zip(&self.fields) {
            match (&mut column.values, field) {
                (ColumnValues::Text(v), GenField::Device) => {
                    for r in &readings {
                        let d = r.device as usize;
                        if d >= self.device_ids.len() {
                            self.device_ids.resize(d + 1, 0);
                        }
                        if self.device_ids[d] == 0 {
                            self.device_ids[d] = interner.intern(&device_name(r.device)) + 1;
                        }
                        v.push(self.device_ids[d] - 1);
                    }
                }
                (ColumnValues::Timestamp(v), GenField::Ts) => {
                    v.extend(readings.iter().map(|r| r.ts_ms * MICROS_PER_MILLI))
                }
                (ColumnValues::BigInt(v), GenField::BytesIn) => {
                    v.extend(readings.iter().map(|r| r.bytes_in))
                }
                (ColumnValues::BigInt(v), GenField::BytesOut) => {
                    v.extend(readings.iter().map(|r| r.bytes_out))
                }
                (ColumnValues::BigInt(v), GenField::Packets) => {
                    v.extend(readings.iter().map(|r| r.packets))
                }
                (ColumnValues::Double(v), GenField::Latency) => {
                    v.extend(readings.iter().map(Reading::latency_ms))
                }
                _ => {}
            }
        }
        batch.len = n;
        let max_event_time = batch.timestamps(self.event_time).iter().copied().max();
        Ok(SourcePoll::Chunk(
            k,
            DecodedChunk {
                batch,
                bad: Vec::new(),
                lines: n as u64,
                max_event_time,
                bytes: 0,
                // Generated readings have no input bytes to point into.
            },
        ))
    }
}
