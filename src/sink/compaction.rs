//! Compaction: the files of an hour folder become one file, so that months of
//! one-minute windows are not hundreds of thousands of files for every reader to list
//! and open.
//!
//! A compacted file, `hour-<hour>-<digest>.parquet`, holds the rows of the files it
//! replaces in their order, in row groups as large as any file's, and names them in its
//! footer: [`COVERS_KEY`] lists every file whose rows it holds (also those held by
//! compacted files it replaces in turn) and [`SOURCES_KEY`] which file each run of rows
//! came from. Its name is a digest of what it covers, so the same files always compact to
//! the same name and bytes, and different ones never share a name (an uploaded object is
//! never overwritten). Large row groups are the point: an hour of one-minute windows as
//! sixty small row groups scanned five times slower than as one.
//!
//! **A row is read once at every moment.** Readers ([`crate::outputs::listing`]) leave
//! out every file that a compacted file next to it covers. Before the compacted file is
//! in place the originals are read; while both exist, only the compacted file; the
//! originals are deleted only after it is durable: locally at once, and in the bucket
//! once the compacted file is there (the sync journal records each original as
//! superseded by it, and removes an old key only after its successor is uploaded).
//!
//! **Every step can be cut short.** A pass that finds originals next to the compacted
//! file that covers them (a crash before they were deleted) finishes the job; a pass
//! that finds a new file in a compacted hour (a late file, a window written again)
//! compacts the hour again, keeping the compacted file's row groups except those of a
//! window revision that the new file replaces.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::metadata::KeyValue;

use super::CommittedFile;
use crate::operators::write_parquet::Notify;
use crate::sink::layout::window_revision;

/// Name prefix of compacted files.
pub const HOUR_PREFIX: &str = "hour-";
/// Footer key: a JSON array of the names of every file whose rows the file holds.
pub const COVERS_KEY: &str = "edgeflow.covers";
/// Footer key: a JSON array of `[file name, rows]`, in row order: where each run of the
/// file's rows came from.
pub const SOURCES_KEY: &str = "edgeflow.row_sources";

/// Why an hour folder could not be compacted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompactionError {
    /// Reading, writing or deleting a file failed.
    #[error("compacting {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be read or the compacted file written as Parquet.
    #[error("compacting {}: {source}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// Why.
        source: parquet::errors::ParquetError,
    },
}

/// What compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Compacted files written.
    pub written: u64,
    /// Files they replaced, deleted.
    pub replaced: u64,
    /// Folders left as they are, each with the reason (logged too).
    pub skipped: Vec<String>,
}

/// Whether `name` is a compacted file's.
pub fn is_compacted(name: &str) -> bool {
    name.starts_with(HOUR_PREFIX) && name.ends_with(".parquet")
}

/// The covered files named in a compacted file's footer metadata; empty for any other.
pub fn covers(metadata: Option<&Vec<KeyValue>>) -> Vec<String> {
    names(metadata, COVERS_KEY)
}

/// Where each run of a compacted file's rows came from (`[file name, rows]`, in row
/// order), from its footer; empty when the footer does not say.
pub fn row_sources(metadata: Option<&Vec<KeyValue>>) -> Vec<(String, u64)> {
    footer_json(metadata, SOURCES_KEY).unwrap_or_default()
}

fn names(metadata: Option<&Vec<KeyValue>>, key: &str) -> Vec<String> {
    footer_json(metadata, key).unwrap_or_default()
}

fn footer_json<T: serde::de::DeserializeOwned>(
    metadata: Option<&Vec<KeyValue>>,
    key: &str,
) -> Option<T> {
    metadata
        .into_iter()
        .flatten()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_deref())
        .and_then(|json| serde_json::from_str(json).ok())
}

/// The end (µs) of the last hour that no reading can change any more under `watermark`:
/// every window starting in it has closed, and its allowed lateness has passed. A
/// SESSION file gathers sessions ending in its span, which a correction can still reach
/// for two gaps more.
pub fn closed_before(plan: &crate::query::QueryPlan, watermark: i64) -> i64 {
    use crate::query::WindowSpec;
    let reach = match plan.window {
        WindowSpec::Tumble { size } | WindowSpec::Hop { size, .. } => size,
        WindowSpec::Session { gap } => {
            WindowSpec::session_file_span(gap).saturating_add(gap.saturating_mul(2))
        }
    };
    watermark
        .saturating_sub(reach)
        .saturating_sub(plan.source.allowed_lateness)
}

/// Compacts the hour folders of `tables` (relative to `root`) whose hour ended at or
/// before `closed_before` (µs): see the module documentation. Folders that hold one
/// file, or only a compacted file and nothing new, are left alone. An hour not closed
/// that an earlier pass compacted (a `--fresh` run writing its windows again) is
/// compacted again whenever files were written next to its hour file: until then a
/// reader of plain files would count those windows twice.
pub fn compact_closed_hours(
    root: &Path,
    tables: &[String],
    closed_before: i64,
    notify: &Notify,
) -> Result<CompactionReport, CompactionError> {
    let mut report = CompactionReport::default();
    for table in tables {
        for (folder, hour) in hour_folders(&root.join(table))? {
            if hour.saturating_add(crate::time::MICROS_PER_HOUR) > closed_before
                && !compacted_with_more(&folder)
            {
                continue;
            }
            // One hour that cannot be compacted keeps its files, readable as they are;
            // the others go on.
            if let Err(e) = compact_folder(root, &folder, hour, notify, &mut report) {
                tracing::warn!(error = %e, "Hour folder not compacted");
                report.skipped.push(e.to_string());
            }
        }
    }
    Ok(report)
}

/// Whether `folder` holds a compacted file and another Parquet file.
fn compacted_with_more(folder: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return false;
    };
    let (mut compacted, mut other) = (false, false);
    for name in entries.flatten().map(|e| e.file_name()) {
        let name = name.to_string_lossy();
        if is_compacted(&name) {
            compacted = true;
        } else if name.ends_with(".parquet") {
            other = true;
        }
    }
    compacted && other
}

/// The `date=…/hour=…` folders under a table folder with their hour's start (µs).
fn hour_folders(table: &Path) -> Result<Vec<(PathBuf, i64)>, CompactionError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| CompactionError::Io { path, source }
    };
    let mut out = Vec::new();
    for date in subfolders(table).map_err(io(table))? {
        let Some(day) = folder_value(&date, "date")
            .and_then(|v| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
        else {
            continue;
        };
        let days = day
            .signed_duration_since(chrono::NaiveDate::default())
            .num_days();
        for hour in subfolders(&date).map_err(io(&date))? {
            let Some(h) = folder_value(&hour, "hour").and_then(|v| v.parse::<i64>().ok()) else {
                continue;
            };
            let start = days * crate::time::MICROS_PER_DAY + h * crate::time::MICROS_PER_HOUR;
            out.push((hour, start));
        }
    }
    Ok(out)
}

fn subfolders(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

fn folder_value<'a>(folder: &'a Path, column: &str) -> Option<&'a str> {
    folder
        .file_name()?
        .to_str()?
        .strip_prefix(column)?
        .strip_prefix('=')
}

/// A Parquet file of the folder, as compaction sees it.
struct Input {
    name: String,
    path: PathBuf,
    /// For a compacted file: what it covers and where each run of its rows came from.
    covers: Vec<String>,
    sources: Vec<(String, u64)>,
}

impl Input {
    fn open(
        path: PathBuf,
    ) -> Result<(Input, ParquetRecordBatchReaderBuilder<File>), CompactionError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let file = File::open(&path).map_err(|source| CompactionError::Io {
            path: path.clone(),
            source,
        })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| {
            CompactionError::Parquet {
                path: path.clone(),
                source,
            }
        })?;
        let metadata = builder.metadata().file_metadata().key_value_metadata();
        let (covers, sources) = if is_compacted(&name) {
            let sources =
                footer_json(metadata, SOURCES_KEY).ok_or_else(|| CompactionError::Parquet {
                    path: path.clone(),
                    source: parquet::errors::ParquetError::General(format!(
                        "a compacted file without a readable {SOURCES_KEY}"
                    )),
                })?;
            (covers(metadata), sources)
        } else {
            (Vec::new(), Vec::new())
        };
        Ok((
            Input {
                name,
                path,
                covers,
                sources,
            },
            builder,
        ))
    }
}

/// Compacts one hour folder.
fn compact_folder(
    root: &Path,
    folder: &Path,
    hour: i64,
    notify: &Notify,
    report: &mut CompactionReport,
) -> Result<(), CompactionError> {
    let relative = |path: &Path| -> String {
        path.strip_prefix(root)
            .ok()
            .and_then(Path::to_str)
            .unwrap_or_default()
            .replace('\\', "/")
    };
    let files: Vec<PathBuf> = super::commit::files_under(folder)
        .map_err(|source| CompactionError::Io {
            path: folder.to_owned(),
            source,
        })?
        .into_iter()
        .filter(|path| path.parent() == Some(folder))
        .collect();
    // One file (compacted or not) is as compact as an hour gets; checking it costs a
    // footer read per hour folder at every checkpoint, for nothing.
    if files.len() < 2 {
        return Ok(());
    }
    let mut opened = Vec::new();
    for path in files {
        match Input::open(path) {
            Ok(input) => opened.push(input),
            Err(e) => {
                // An unreadable file is left where it is, and so is its folder: readers
                // skip it by name, and compacting around it would hide nothing.
                tracing::warn!(error = %e, "Hour folder not compacted");
                report.skipped.push(e.to_string());
                return Ok(());
            }
        }
    }
    let covered: BTreeSet<String> = opened
        .iter()
        .flat_map(|(input, _)| input.covers.iter().cloned())
        .collect();
    let (leftovers, inputs): (Vec<_>, Vec<_>) = opened
        .into_iter()
        .partition(|(input, _)| covered.contains(&input.name));
    // Originals a compacted file here already holds: a pass cut short left them.
    for (input, _) in &leftovers {
        if let Some(into) = inputs
            .iter()
            .find(|(i, _)| i.covers.contains(&input.name))
            .map(|(i, _)| relative(&i.path))
        {
            retire(&relative(&input.path), &input.path, &into, notify)?;
            report.replaced += 1;
        }
    }
    if inputs.len() < 2 {
        return Ok(());
    }
    let schema = inputs[0].1.schema().clone();
    if let Some((odd, _)) = inputs
        .iter()
        .find(|(_, b)| b.schema().fields() != schema.fields())
    {
        let why = format!(
            "{}: its columns differ from {}'s (a changed query); the hour stays as it is",
            relative(&odd.path),
            inputs[0].0.name
        );
        tracing::warn!(reason = %why, "Hour folder not compacted");
        report.skipped.push(why);
        return Ok(());
    }
    // A window written again after its hour was compacted replaces its earlier rows.
    let mut latest: BTreeMap<String, u32> = BTreeMap::new();
    for (input, _) in &inputs {
        if let Some((stamp, revision)) = window_revision(&input.name) {
            let highest = latest.entry(stamp.to_owned()).or_insert(revision);
            *highest = (*highest).max(revision);
        }
    }
    let replaced = |source: &str| {
        window_revision(source).is_some_and(|(stamp, revision)| {
            latest.get(stamp).is_some_and(|&newest| newest > revision)
        })
    };

    let mut covers: BTreeSet<String> = BTreeSet::new();
    for (input, _) in &inputs {
        covers.insert(input.name.clone());
        covers.extend(input.covers.iter().cloned());
    }
    let covers: Vec<String> = covers.into_iter().collect();
    let digest = crate::digest::md5_hex(covers.join("\n").as_bytes());
    let name = format!(
        "{HOUR_PREFIX}{}-{}.parquet",
        crate::time::compact_stamp(hour),
        &digest[..16]
    );
    let target = folder.join(&name);
    let parquet_error = |source| CompactionError::Parquet {
        path: target.clone(),
        source,
    };
    let mut bytes = Vec::new();
    let properties = super::parquet::writer_properties(&schema, &[]);
    let mut writer = ArrowWriter::try_new(&mut bytes, schema.clone(), Some(properties))
        .map_err(parquet_error)?;
    let mut sources: Vec<(String, u64)> = Vec::new();
    let mut rows = 0u64;
    // Rows of revisions a newer one replaces, by the file they came from: they move to
    // the revisions table, as the engine moves a superseded window file.
    let mut superseded: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
    for (input, _) in &inputs {
        // The runs of this file's rows, in order, and whether each is kept.
        let runs: Vec<(String, u64)> = if is_compacted(&input.name) {
            input.sources.clone()
        } else {
            vec![(input.name.clone(), u64::MAX)]
        };
        if !is_compacted(&input.name) && replaced(&input.name) {
            keep_revision_file(root, folder, &input.name, &input.path, notify)?;
            continue;
        }
        let mut runs = runs.into_iter().peekable();
        let mut left_in_run = runs.peek().map_or(0, |(_, n)| *n);
        for batch in read_all(&input.path)? {
            let batch = batch.map_err(|e| CompactionError::Parquet {
                path: input.path.clone(),
                source: e.into(),
            })?;
            let mut offset = 0;
            while offset < batch.num_rows() {
                while left_in_run == 0 {
                    runs.next();
                    left_in_run = runs.peek().map_or(u64::MAX, |(_, n)| *n);
                }
                let Some((source, _)) = runs.peek() else {
                    // Its footer accounts for fewer rows than it holds: compacting it
                    // again could lose the rest. Leave the hour as it is.
                    return Err(CompactionError::Parquet {
                        path: input.path.clone(),
                        source: parquet::errors::ParquetError::General(format!(
                            "more rows than its {SOURCES_KEY} names"
                        )),
                    });
                };
                let take = (batch.num_rows() - offset)
                    .min(usize::try_from(left_in_run).unwrap_or(usize::MAX));
                if replaced(source) {
                    superseded
                        .entry(source.clone())
                        .or_default()
                        .push(batch.slice(offset, take));
                } else {
                    writer
                        .write(&batch.slice(offset, take))
                        .map_err(parquet_error)?;
                    rows += take as u64;
                    match sources.last_mut() {
                        Some((last, n)) if last == source => *n += take as u64,
                        _ => sources.push((source.clone(), take as u64)),
                    }
                }
                offset += take;
                left_in_run -= take as u64;
            }
        }
    }
    let covers_json = serde_json::to_string(&covers).unwrap_or_default();
    let sources_json = serde_json::to_string(&sources).unwrap_or_default();
    writer.append_key_value_metadata(KeyValue::new(COVERS_KEY.into(), covers_json));
    writer.append_key_value_metadata(KeyValue::new(SOURCES_KEY.into(), sources_json));
    writer.close().map_err(parquet_error)?;
    // Durable before the hour file that leaves them out.
    for (source, batches) in &superseded {
        keep_revision_rows(root, folder, source, &schema, batches, notify)?;
    }
    super::commit::commit_bytes(&target, &bytes).map_err(|source| CompactionError::Io {
        path: target.clone(),
        source,
    })?;
    let into = relative(&target);
    (notify.commit)(&CommittedFile {
        relative: into.clone(),
        bytes: bytes.len() as u64,
        rows,
        md5: crate::digest::md5_hex(&bytes),
    });
    report.written += 1;
    // A crash here leaves the originals next to the compacted file that covers them;
    // readers already read them from it, and the next pass deletes them.
    fail::fail_point!("compaction-retire", |arg| Err(CompactionError::Io {
        path: target.clone(),
        source: crate::fault::io_error("compaction-retire", arg),
    }));
    for (input, _) in &inputs {
        retire(&relative(&input.path), &input.path, &into, notify)?;
        report.replaced += 1;
    }
    Ok(())
}

/// Where a superseded revision of the window file `name` in the hour folder `folder` (of
/// a table under `root`) is kept: the same folders under `<table>_revisions`.
fn revision_path(root: &Path, folder: &Path, name: &str) -> Option<PathBuf> {
    let relative = folder.strip_prefix(root).ok()?;
    let mut parts = relative.components();
    let table = parts.next()?.as_os_str().to_str()?;
    Some(
        root.join(format!("{table}_revisions"))
            .join(parts.as_path())
            .join(name),
    )
}

/// Commits `bytes` as the kept revision at `path` (unless a file is there already: a
/// name once written keeps its bytes) and tells sync.
fn commit_revision(
    root: &Path,
    path: &Path,
    bytes: &[u8],
    rows: u64,
    notify: &Notify,
) -> Result<(), CompactionError> {
    if path.exists() {
        return Ok(());
    }
    super::commit::commit_bytes(path, bytes).map_err(|source| CompactionError::Io {
        path: path.to_owned(),
        source,
    })?;
    (notify.commit)(&CommittedFile {
        relative: path
            .strip_prefix(root)
            .ok()
            .and_then(Path::to_str)
            .unwrap_or_default()
            .replace('\\', "/"),
        bytes: bytes.len() as u64,
        rows,
        md5: crate::digest::md5_hex(bytes),
    });
    Ok(())
}

/// Keeps a window file a newer revision replaces (a crash stopped the engine from moving
/// it) in the revisions table, as it is.
fn keep_revision_file(
    root: &Path,
    folder: &Path,
    name: &str,
    path: &Path,
    notify: &Notify,
) -> Result<(), CompactionError> {
    let Some(kept) = revision_path(root, folder, name) else {
        return Ok(());
    };
    let io = |source| CompactionError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = std::fs::read(path).map_err(io)?;
    let rows = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.clone()))
        .map(|b| b.metadata().file_metadata().num_rows().max(0) as u64)
        .unwrap_or(0);
    commit_revision(root, &kept, &bytes, rows, notify)
}

/// Keeps the rows an hour file held of a window revision a newer one replaces, as that
/// revision's file in the revisions table: the history of a window stays whole when
/// its hour was compacted before it was written again.
fn keep_revision_rows(
    root: &Path,
    folder: &Path,
    name: &str,
    schema: &arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
    notify: &Notify,
) -> Result<(), CompactionError> {
    let Some(kept) = revision_path(root, folder, name) else {
        return Ok(());
    };
    let parquet_error = |source| CompactionError::Parquet {
        path: kept.clone(),
        source,
    };
    let batch =
        arrow::compute::concat_batches(schema, batches).map_err(|e| parquet_error(e.into()))?;
    let bytes = super::parquet::encode(&batch, &[]).map_err(parquet_error)?;
    commit_revision(root, &kept, &bytes, batch.num_rows() as u64, notify)
}

/// Every batch of a file, in order, read as they are taken.
fn read_all(path: &Path) -> Result<ParquetRecordBatchReader, CompactionError> {
    let parquet_error = |source| CompactionError::Parquet {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(|source| CompactionError::Io {
        path: path.to_owned(),
        source,
    })?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(parquet_error)?
        .build()
        .map_err(parquet_error)
}

/// Tells sync that `relative` is replaced by `into` (its key goes once `into` is
/// uploaded), then deletes the local file, unless sync could not record it: the file
/// then stays, covered, for the next pass.
fn retire(relative: &str, path: &Path, into: &str, notify: &Notify) -> Result<(), CompactionError> {
    if !(notify.compacted)(relative, into) {
        return Ok(());
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CompactionError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use arrow::record_batch::RecordBatch;

    use super::*;
    use crate::sink::layout::Layout;
    use crate::time::{MICROS_PER_HOUR, MICROS_PER_MINUTE};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// What compaction reported: committed files, and (from, into) of replaced ones.
    #[derive(Default)]
    struct Heard {
        committed: Vec<String>,
        compacted: Vec<(String, String)>,
    }

    fn listening() -> (Notify, Arc<Mutex<Heard>>) {
        let heard = Arc::new(Mutex::new(Heard::default()));
        let (a, b) = (heard.clone(), heard.clone());
        let notify = Notify {
            commit: Arc::new(move |f: &CommittedFile| {
                a.lock()
                    .map(|mut h| h.committed.push(f.relative.clone()))
                    .ok();
            }),
            compacted: Arc::new(move |from: &str, into: &str| {
                b.lock()
                    .map(|mut h| h.compacted.push((from.into(), into.into())))
                    .is_ok()
            }),
            ..Notify::default()
        };
        (notify, heard)
    }

    fn batch(devices: &[&str], bytes: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("device_id", DataType::Utf8, false),
            Field::new("bytes", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(devices.to_vec())),
                Arc::new(Int64Array::from(bytes.to_vec())),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// (device, bytes) of every Parquet file under `dir`, sorted.
    fn rows(dir: &Path) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for path in crate::sink::commit::files_under(dir).unwrap_or_default() {
            for b in read_group_all(&path) {
                let d = b.column(0).as_any().downcast_ref::<StringArray>().cloned();
                let n = b.column(1).as_any().downcast_ref::<Int64Array>().cloned();
                if let (Some(d), Some(n)) = (d, n) {
                    out.extend((0..b.num_rows()).map(|i| (d.value(i).to_owned(), n.value(i))));
                }
            }
        }
        out.sort();
        out
    }

    fn read_group_all(path: &Path) -> Vec<RecordBatch> {
        File::open(path)
            .ok()
            .and_then(|f| ParquetRecordBatchReaderBuilder::try_new(f).ok())
            .and_then(|b| b.build().ok())
            .map(|r| r.filter_map(Result::ok).collect())
            .unwrap_or_default()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    const HOUR: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00Z

    fn write(layout: &Layout, minute: i64, revision: u32, batch: &RecordBatch) -> TestResult {
        let relative = layout.window_file(HOUR + minute * MICROS_PER_MINUTE, revision);
        crate::sink::write_parquet(layout, relative, batch, &[], || {})?;
        Ok(())
    }

    #[test]
    fn a_closed_hour_becomes_one_file_that_holds_every_row_once() -> TestResult {
        let dir = tempfile::tempdir()?;
        let layout = Layout::new(dir.path(), "q", 1, 0);
        write(&layout, 0, 0, &batch(&["a", "b"], &[1, 2]))?;
        write(&layout, 1, 0, &batch(&["a"], &[3]))?;
        write(&layout, 2, 0, &batch(&["c"], &[4]))?;
        // The next hour is still open: left alone.
        write(&layout, 60, 0, &batch(&["a"], &[5]))?;
        write(&layout, 61, 0, &batch(&["a"], &[6]))?;
        let before = rows(&dir.path().join("q"));
        let (notify, heard) = listening();
        let tables = ["q".to_owned()];
        let report = compact_closed_hours(dir.path(), &tables, HOUR + MICROS_PER_HOUR, &notify)?;
        assert_eq!((report.written, report.replaced), (1, 3));
        assert_eq!(rows(&dir.path().join("q")), before);
        let folder = dir.path().join("q/date=2026-01-01/hour=00");
        let files = names(&folder);
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].starts_with("hour-20260101T000000Z-"), "{files:?}");
        assert_eq!(
            names(&dir.path().join("q/date=2026-01-01/hour=01")).len(),
            2
        );

        let (hour, _) = Input::open(folder.join(&files[0]))?;
        assert_eq!(
            hour.covers,
            [
                "window-20260101T000000Z-r0.parquet",
                "window-20260101T000100Z-r0.parquet",
                "window-20260101T000200Z-r0.parquet"
            ]
        );
        let runs: Vec<(&str, u64)> = hour.sources.iter().map(|(n, r)| (n.as_str(), *r)).collect();
        assert_eq!(
            runs,
            [
                ("window-20260101T000000Z-r0.parquet", 2),
                ("window-20260101T000100Z-r0.parquet", 1),
                ("window-20260101T000200Z-r0.parquet", 1)
            ],
            "rows in file order"
        );
        let file = File::open(folder.join(&files[0]))?;
        let metadata = ParquetRecordBatchReaderBuilder::try_new(file)?
            .metadata()
            .clone();
        assert_eq!(
            metadata.num_row_groups(),
            1,
            "one row group for a small hour"
        );
        let heard = heard.lock().map_err(|e| e.to_string())?;
        let into = format!("q/date=2026-01-01/hour=00/{}", files[0]);
        assert_eq!(heard.committed, std::slice::from_ref(&into));
        assert_eq!(heard.compacted.len(), 3);
        assert!(heard.compacted.iter().all(|(_, i)| *i == into));

        // A second pass finds nothing to do.
        let again = compact_closed_hours(dir.path(), &tables, HOUR + MICROS_PER_HOUR, &notify)?;
        assert_eq!((again.written, again.replaced), (0, 0));
        Ok(())
    }

    #[test]
    fn the_same_files_compact_to_the_same_name_and_bytes() -> TestResult {
        let mut compacted = Vec::new();
        for _ in 0..2 {
            let dir = tempfile::tempdir()?;
            let layout = Layout::new(dir.path(), "q", 1, 0);
            write(&layout, 0, 0, &batch(&["a", "b"], &[1, 2]))?;
            write(&layout, 5, 0, &batch(&["c"], &[3]))?;
            let tables = ["q".to_owned()];
            compact_closed_hours(dir.path(), &tables, i64::MAX, &Notify::default())?;
            let folder = dir.path().join("q/date=2026-01-01/hour=00");
            let name = names(&folder).remove(0);
            compacted.push((name.clone(), std::fs::read(folder.join(name))?));
        }
        assert_eq!(compacted[0], compacted[1]);
        Ok(())
    }

    #[test]
    fn new_files_in_a_compacted_hour_are_compacted_again_and_a_revision_replaces_its_rows()
    -> TestResult {
        let dir = tempfile::tempdir()?;
        let layout = Layout::new(dir.path(), "q", 1, 0);
        write(&layout, 0, 0, &batch(&["a", "b"], &[1, 2]))?;
        write(&layout, 1, 0, &batch(&["a"], &[3]))?;
        let tables = ["q".to_owned()];
        compact_closed_hours(dir.path(), &tables, i64::MAX, &Notify::default())?;
        let folder = dir.path().join("q/date=2026-01-01/hour=00");
        let first = names(&folder).remove(0);
        // Minute 0 written again (a run with --fresh), and a new minute.
        write(&layout, 0, 1, &batch(&["a"], &[10]))?;
        write(&layout, 7, 0, &batch(&["d"], &[7]))?;
        let (notify, heard) = listening();
        let report = compact_closed_hours(dir.path(), &tables, i64::MAX, &notify)?;
        assert_eq!((report.written, report.replaced), (1, 3));
        let files = names(&folder);
        assert_eq!(files.len(), 1);
        assert_ne!(files[0], first);
        assert_eq!(
            rows(&dir.path().join("q")),
            [("a".into(), 3), ("a".into(), 10), ("d".into(), 7)]
        );
        let (hour, _) = Input::open(folder.join(&files[0]))?;
        assert!(hour.covers.contains(&first));
        assert!(
            hour.covers
                .contains(&"window-20260101T000000Z-r0.parquet".to_owned())
        );
        let replaced: Vec<String> = heard
            .lock()
            .map_err(|e| e.to_string())?
            .compacted
            .iter()
            .map(|(from, _)| from.rsplit('/').next().unwrap_or_default().to_owned())
            .collect();
        assert!(replaced.contains(&first), "{replaced:?}");
        Ok(())
    }

    #[test]
    fn originals_left_by_a_pass_cut_short_are_removed_by_the_next() -> TestResult {
        let dir = tempfile::tempdir()?;
        let layout = Layout::new(dir.path(), "q", 1, 0);
        write(&layout, 0, 0, &batch(&["a"], &[1]))?;
        write(&layout, 1, 0, &batch(&["b"], &[2]))?;
        let folder = dir.path().join("q/date=2026-01-01/hour=00");
        let originals: Vec<(String, Vec<u8>)> = names(&folder)
            .into_iter()
            .map(|n| {
                let bytes = std::fs::read(folder.join(&n)).unwrap_or_default();
                (n, bytes)
            })
            .collect();
        let tables = ["q".to_owned()];
        compact_closed_hours(dir.path(), &tables, i64::MAX, &Notify::default())?;
        for (name, bytes) in &originals {
            std::fs::write(folder.join(name), bytes)?;
        }
        let (notify, heard) = listening();
        let report = compact_closed_hours(dir.path(), &tables, i64::MAX, &notify)?;
        assert_eq!((report.written, report.replaced), (0, 2));
        assert_eq!(names(&folder).len(), 1);
        assert_eq!(heard.lock().map_err(|e| e.to_string())?.compacted.len(), 2);
        assert_eq!(
            rows(&dir.path().join("q")),
            [("a".into(), 1), ("b".into(), 2)]
        );
        Ok(())
    }
}
