//! What a table's listing shows, so that one stray file never spoils every query:
//!
//! * **the latest revision of each window**: a window written again is
//!   `window-<stamp>-r<N+1>.parquet` next to (locally only for a moment, in the bucket
//!   until sync settles) `window-<stamp>-r<N>.parquet`; only the highest `N` of a folder
//!   is listed. Other names (`late-…`, `window-<stamp>-w0of2…`) pass through, and so does
//!   every file of a `<query>_revisions` table, which is the history on purpose.
//! * **well-placed files**: a Parquet file must sit in `date=YYYY-MM-DD/hour=HH/` of its
//!   table; a folder whose partition value does not parse would make DataFusion fail the
//!   whole query when it builds the partition values, so it is left out.
//! * **readable files**: a Parquet file's footer is read (two small range reads) the
//!   first time it is listed; a truncated or garbage file is left out, where DataFusion
//!   would fail every query that touches its table.
//!
//! * **one copy of each row**: a compacted hour file (`hour-<hour>-<digest>.parquet`)
//!   names in its footer the files whose rows it holds; those files, when still listed
//!   next to it (locally for a moment, in the bucket until sync settles), are left out.
//!   Revisions count across it: a window file older than the revision an hour file holds
//!   is left out (the bucket's `r0` while the local hour file holds `r1`), and so are
//!   an hour file's rows of a window written again since (after `--fresh`): those rows
//!   are skipped when the file is read ([`Curated::skipped_rows`]).
//!
//! Whatever is left out is named once in a warning, collected for the caller to print.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use arrow::datatypes::DataType;
use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use parquet::file::metadata::ParquetMetaDataReader;

use crate::sink::compaction;

/// Suffix of the folders holding superseded revisions (the history tables).
const REVISIONS_SUFFIX: &str = "_revisions";
/// Footers read at once when a listing brings many new files (a bucket's latency
/// dominates, not the bytes).
const FOOTER_READS_IN_FLIGHT: usize = 16;

pub use crate::sink::layout::window_revision;

/// Whether the files under `location` are a history table, where every revision counts.
fn in_history_table(location: &Path) -> bool {
    location
        .parts()
        .next()
        .is_some_and(|table| table.as_ref().ends_with(REVISIONS_SUFFIX))
}

/// `metas` without superseded revisions: among the `window-<stamp>-r<N>.parquet` files of
/// one folder with the same stamp, only the highest `N` stays. Order is kept.
pub fn latest_revisions(metas: Vec<ObjectMeta>) -> Vec<ObjectMeta> {
    // Keyed by the whole path up to the revision number, which is folder plus stamp.
    let key = |meta: &ObjectMeta| -> Option<(String, u32)> {
        if in_history_table(&meta.location) {
            return None;
        }
        let (stamp, revision) = window_revision(meta.location.filename()?)?;
        let path = meta.location.as_ref();
        let folder = path.rsplit_once('/').map_or("", |(folder, _)| folder);
        Some((format!("{folder}/{stamp}"), revision))
    };
    let mut latest: HashMap<String, u32> = HashMap::new();
    for meta in &metas {
        if let Some((window, revision)) = key(meta) {
            let highest = latest.entry(window).or_insert(revision);
            *highest = (*highest).max(revision);
        }
    }
    metas
        .into_iter()
        .filter(|meta| key(meta).is_none_or(|(window, revision)| latest[&window] == revision))
        .collect()
}

/// The partition folders below a table in one node's outputs.
pub const NODE_PARTITIONS: &[&str] = &["date", "hour"];
/// The partition folders below a table in a fleet's outputs (see [`super::fleet`]).
pub const FLEET_PARTITIONS: &[&str] = &["node", "date", "hour"];

/// Why a path is not where a table's file or partition folder may be.
fn partition_problem(part: &str, column: &str) -> Option<String> {
    let Some(value) = part
        .strip_prefix(column)
        .and_then(|rest| rest.strip_prefix('='))
    else {
        return Some(format!("expected a `{column}=` folder here"));
    };
    let valid = match column {
        "date" => value.len() == 10 && chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok(),
        "node" => crate::sync::target::check_node_name(value).is_ok(),
        _ => {
            (1..=2).contains(&value.len())
                && value.bytes().all(|b| b.is_ascii_digit())
                && value.parse::<u8>().is_ok_and(|h| h < 24)
        }
    };
    (!valid).then(|| match column {
        "date" => format!("`{value}` is not a date (YYYY-MM-DD)"),
        "node" => format!("`{value}` is not a node name"),
        _ => format!("`{value}` is not an hour (00-23)"),
    })
}

/// The first folder of `location` (relative to the output root) that is not a valid
/// `<table>/<partitions…>` folder (`date=…/hour=…`, or `node=…/date=…/hour=…` for a
/// fleet), with the reason; `is_file` says whether the last part is a file, which must
/// then sit exactly at the last partition's level.
fn misplaced(location: &Path, is_file: bool, partitions: &[&str]) -> Option<(String, String)> {
    let parts: Vec<_> = location.parts().collect();
    let table = parts.first()?.as_ref();
    if table.starts_with('_') || table.starts_with('.') {
        // The journal, logs and dead letters: not tables.
        return None;
    }
    let folders = if is_file {
        &parts[..parts.len() - 1]
    } else {
        &parts[..]
    };
    let mut path = table.to_owned();
    for (part, column) in folders.iter().skip(1).zip(partitions) {
        path = format!("{path}/{}", part.as_ref());
        if let Some(reason) = partition_problem(part.as_ref(), column) {
            return Some((path, reason));
        }
    }
    let depth = partitions.len() + 1;
    let layout: Vec<String> = partitions.iter().map(|c| format!("{c}=…")).collect();
    match (is_file, folders.len()) {
        (true, n) if n == depth => None,
        (true, _) => Some((
            location.to_string(),
            format!("not in a {} folder of its table", layout.join("/")),
        )),
        (false, n) if n <= depth => None,
        (false, _) => Some((location.to_string(), "nested below the hour folders".into())),
    }
}

/// What a readable file's footer says.
#[derive(Clone, Debug, Default)]
struct Footer {
    /// Of a compacted file: the names of the files next to it whose rows it holds.
    covers: Vec<String>,
    /// Of a compacted file: where each run of its rows came from, in row order.
    sources: Vec<(String, u64)>,
    /// Its columns and their types.
    columns: Vec<(String, DataType)>,
}

/// Why a Parquet file cannot be read, judged from its footer (`Err`); when it can, its
/// columns, and the files it covers if it is a compacted file
/// ([`crate::sink::compaction`]).
async fn read_footer(store: &dyn ObjectStore, meta: &ObjectMeta) -> Result<Footer, String> {
    const TAIL: u64 = 8;
    if meta.size < 4 + TAIL {
        return Err(format!("{} bytes is too short for Parquet", meta.size));
    }
    let tail = match store
        .get_range(&meta.location, meta.size - TAIL..meta.size)
        .await
    {
        Ok(tail) => tail,
        Err(e) => return Err(format!("unreadable: {e}")),
    };
    if &tail[4..] != b"PAR1" {
        return Err("no Parquet footer (truncated, or not Parquet)".into());
    }
    let length = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if length + TAIL + 4 > meta.size {
        return Err(format!(
            "footer of {length} bytes does not fit in {} bytes (truncated?)",
            meta.size
        ));
    }
    let footer = match store
        .get_range(&meta.location, meta.size - TAIL - length..meta.size - TAIL)
        .await
    {
        Ok(footer) => footer,
        Err(e) => return Err(format!("unreadable: {e}")),
    };
    let metadata = match ParquetMetaDataReader::decode_metadata(&footer) {
        Ok(metadata) => metadata,
        Err(e) => return Err(format!("corrupt footer: {e}")),
    };
    let file = metadata.file_metadata();
    let schema =
        parquet::arrow::parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
            .map_err(|e| format!("schema not readable as Arrow: {e}"))?;
    let compacted = meta
        .location
        .filename()
        .is_some_and(compaction::is_compacted);
    let (covers, sources) = if compacted {
        (
            compaction::covers(file.key_value_metadata()),
            compaction::row_sources(file.key_value_metadata()),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(Footer {
        covers,
        sources,
        columns: schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect(),
    })
}

/// Why a file's columns cannot be read as its table's: a column of the same name with
/// another type. Text and binary compare by kind: DataFusion reads them as views.
fn column_conflict(columns: &[(String, DataType)], table: &[(String, DataType)]) -> Option<String> {
    let kind = |t: &DataType| match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        other => other.clone(),
    };
    columns.iter().find_map(|(name, data_type)| {
        let (_, expected) = table.iter().find(|(n, _)| n == name)?;
        (kind(expected) != kind(data_type)).then(|| {
            format!("column `{name}` is {data_type} here but {expected} in the table's newest file")
        })
    })
}

/// A file's footer verdict, valid while the file keeps its size and tag.
#[derive(Clone, Debug)]
struct Checked {
    size: u64,
    e_tag: Option<String>,
    readable: bool,
    footer: Footer,
}

/// Footer verdicts and the warnings not yet handed out.
#[derive(Debug, Default)]
struct State {
    checked: HashMap<Path, Checked>,
    /// The columns each table was set up with ([`Curated::expect_columns`]).
    tables: HashMap<String, Vec<(String, DataType)>>,
    /// Compacted files holding rows of a window written again since, by the last listing
    /// that showed them.
    skipped: HashMap<Path, SkippedRows>,
    warned: BTreeSet<String>,
    pending: Vec<String>,
}

/// A read-only store showing, in its listings, only what a table should read (see the
/// module documentation); reads pass through.
#[derive(Debug)]
pub struct Curated {
    inner: Arc<dyn ObjectStore>,
    state: Arc<Mutex<State>>,
    /// The partition folders below a table.
    partitions: &'static [&'static str],
}

impl Curated {
    /// Curated listings of `inner`, whose tables have these `partitions` folders
    /// ([`NODE_PARTITIONS`] or [`FLEET_PARTITIONS`]).
    pub fn new(inner: Arc<dyn ObjectStore>, partitions: &'static [&'static str]) -> Self {
        Curated {
            inner,
            state: Arc::default(),
            partitions,
        }
    }

    /// The partition folders below a table, outermost first.
    pub fn partitions(&self) -> &'static [&'static str] {
        self.partitions
    }

    /// Warnings about files and folders left out since the last call, each given once.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.state).pending)
    }

    /// From now on, files of `table` with a column of the same name but another type
    /// than in `schema` are left out (named in a warning): one such file would fail
    /// every query of the table.
    pub fn expect_columns(&self, table: &str, schema: &arrow::datatypes::Schema) {
        let columns = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        lock(&self.state).tables.insert(table.to_owned(), columns);
    }

    /// Records a warning for the caller, unless it was given before.
    pub fn warn(&self, warning: String) {
        warn(&self.state, warning);
    }

    /// Rows of the compacted file at `location` that the last listing showing it found
    /// superseded (a window written again since).
    pub fn skipped_rows(&self, location: &Path) -> Option<SkippedRows> {
        lock(&self.state).skipped.get(location).cloned()
    }
}

/// The rows of a compacted file to leave out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedRows {
    /// `(first row, rows)` runs, in order, none touching the next.
    pub runs: Vec<(u64, u64)>,
    /// The file's rows.
    pub rows: u64,
}

/// The state, also after a panic elsewhere: it only holds verdicts and messages.
fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn warn(state: &Mutex<State>, warning: String) {
    let mut state = lock(state);
    if state.warned.insert(warning.clone()) {
        state.pending.push(warning);
    }
}

/// `objects` as a table should see them: well placed, latest revisions, readable.
/// Files that are not Parquet pass through (DataFusion and the table list skip them).
async fn curate(
    inner: &dyn ObjectStore,
    state: &Mutex<State>,
    partitions: &[&str],
    objects: Vec<ObjectMeta>,
) -> Vec<ObjectMeta> {
    let is_parquet = |m: &ObjectMeta| m.location.as_ref().ends_with(".parquet");
    let placed: Vec<ObjectMeta> = objects
        .into_iter()
        .filter(|meta| {
            if !is_parquet(meta) {
                return true;
            }
            match misplaced(&meta.location, true, partitions) {
                None => true,
                Some((path, reason)) => {
                    warn(state, format!("skipping {path}: {reason}"));
                    false
                }
            }
        })
        .collect();
    let latest = latest_revisions(placed);
    let unchecked: Vec<ObjectMeta> = {
        let state = lock(state);
        latest
            .iter()
            .filter(|meta| {
                is_parquet(meta)
                    && state.checked.get(&meta.location).is_none_or(|c| {
                        c.size != meta.size || c.e_tag.as_deref() != meta.e_tag.as_deref()
                    })
            })
            .cloned()
            .collect()
    };
    let verdicts: Vec<(ObjectMeta, Result<Footer, String>)> = stream::iter(unchecked)
        .map(|meta| async move {
            let verdict = read_footer(inner, &meta).await;
            (meta, verdict)
        })
        .buffer_unordered(FOOTER_READS_IN_FLIGHT)
        .collect()
        .await;
    for (meta, verdict) in verdicts {
        if let Err(problem) = &verdict {
            warn(state, format!("skipping {}: {problem}", meta.location));
        }
        lock(state).checked.insert(
            meta.location.clone(),
            Checked {
                size: meta.size,
                e_tag: meta.e_tag.clone(),
                readable: verdict.is_ok(),
                footer: verdict.unwrap_or_default(),
            },
        );
    }
    let mut conflicts = Vec::new();
    let guard = lock(state);
    let readable: Vec<ObjectMeta> = latest
        .into_iter()
        .filter(|meta| {
            if !is_parquet(meta) {
                return true;
            }
            let Some(checked) = guard.checked.get(&meta.location).filter(|c| c.readable) else {
                return false;
            };
            let table = meta.location.parts().next();
            let expected = table.and_then(|t| guard.tables.get(t.as_ref()));
            match expected.and_then(|columns| column_conflict(&checked.footer.columns, columns)) {
                Some(why) => {
                    conflicts.push(format!("skipping {}: {why}", meta.location));
                    false
                }
                None => true,
            }
        })
        .collect();
    drop(guard);
    for conflict in conflicts {
        warn(state, conflict);
    }
    let locked = lock(state);
    // Files a readable compacted file next to them covers are read from it alone.
    let folder = |meta: &ObjectMeta| -> String {
        let path = meta.location.as_ref();
        path.rsplit_once('/')
            .map_or("", |(folder, _)| folder)
            .to_owned()
    };
    let mut covered: HashMap<String, BTreeSet<String>> = HashMap::new();
    for meta in &readable {
        if let Some(checked) = locked.checked.get(&meta.location)
            && !checked.footer.covers.is_empty()
        {
            covered
                .entry(folder(meta))
                .or_default()
                .extend(checked.footer.covers.iter().cloned());
        }
    }
    let uncovered: Vec<ObjectMeta> = readable
        .into_iter()
        .filter(|meta| {
            let name = meta.location.filename().unwrap_or_default();
            covered
                .get(&folder(meta))
                .is_none_or(|names| !names.contains(name))
        })
        .collect();
    drop(locked);
    supersede_across_compaction(state, uncovered)
}

/// `metas` without the window files older than the revision of their window that a
/// compacted file next to them holds; the compacted files holding rows of a window
/// written again since get those rows recorded as skipped (or are left out when every
/// row is). Revisions are compared within a folder, as [`latest_revisions`] does.
fn supersede_across_compaction(state: &Mutex<State>, metas: Vec<ObjectMeta>) -> Vec<ObjectMeta> {
    let mut state = lock(state);
    let folder = |location: &Path| -> String {
        location
            .as_ref()
            .rsplit_once('/')
            .map_or("", |(folder, _)| folder)
            .to_owned()
    };
    let sources = |state: &State, meta: &ObjectMeta| -> Vec<(String, u64)> {
        state
            .checked
            .get(&meta.location)
            .map(|c| c.footer.sources.clone())
            .unwrap_or_default()
    };
    let mut newest: HashMap<(String, String), u32> = HashMap::new();
    let mut note = |folder: String, name: &str| {
        if let Some((stamp, revision)) = window_revision(name) {
            let highest = newest.entry((folder, stamp.to_owned())).or_insert(revision);
            *highest = (*highest).max(revision);
        }
    };
    for meta in &metas {
        note(
            folder(&meta.location),
            meta.location.filename().unwrap_or_default(),
        );
        for (source, _) in sources(&state, meta) {
            note(folder(&meta.location), &source);
        }
    }
    let superseded = |folder: &str, name: &str| {
        window_revision(name).is_some_and(|(stamp, revision)| {
            newest
                .get(&(folder.to_owned(), stamp.to_owned()))
                .is_some_and(|&highest| highest > revision)
        })
    };
    let mut kept = Vec::with_capacity(metas.len());
    for meta in metas {
        if in_history_table(&meta.location) {
            kept.push(meta);
            continue;
        }
        let here = folder(&meta.location);
        if superseded(&here, meta.location.filename().unwrap_or_default()) {
            continue;
        }
        let runs = sources(&state, &meta);
        let mut skipped = Vec::new();
        let mut row = 0u64;
        for (source, rows) in &runs {
            if superseded(&here, source) {
                match skipped.last_mut() {
                    Some((first, n)) if *first + *n == row => *n += rows,
                    _ => skipped.push((row, *rows)),
                }
            }
            row += rows;
        }
        if skipped.is_empty() {
            state.skipped.remove(&meta.location);
        } else if skipped == [(0, row)] {
            state.skipped.remove(&meta.location);
            continue;
        } else {
            let skipped = SkippedRows {
                runs: skipped,
                rows: row,
            };
            state.skipped.insert(meta.location.clone(), skipped);
        }
        kept.push(meta);
    }
    kept
}

impl std::fmt::Display for Curated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Curated({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Curated {
    async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(l, p, o).await
    }

    async fn put_multipart_opts(
        &self,
        l: &Path,
        o: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(l, o).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = self.inner.clone();
        let state = self.state.clone();
        let prefix = prefix.cloned();
        let partitions = self.partitions;
        stream::once(async move {
            let listed: Vec<ObjectMeta> = inner.list(prefix.as_ref()).try_collect().await?;
            Ok::<_, object_store::Error>(curate(inner.as_ref(), &state, partitions, listed).await)
        })
        .map_ok(|metas| stream::iter(metas.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let listed = self.inner.list_with_delimiter(prefix).await?;
        let common_prefixes = listed
            .common_prefixes
            .into_iter()
            .filter(|folder| match misplaced(folder, false, self.partitions) {
                None => true,
                Some((path, reason)) => {
                    warn(&self.state, format!("skipping {path}: {reason}"));
                    false
                }
            })
            .collect();
        let objects = curate(
            self.inner.as_ref(),
            &self.state,
            self.partitions,
            listed.objects,
        )
        .await;
        Ok(ListResult {
            common_prefixes,
            objects,
        })
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(path: &str) -> ObjectMeta {
        ObjectMeta {
            location: Path::from(path),
            last_modified: chrono::DateTime::default(),
            size: 100,
            e_tag: None,
            version: None,
        }
    }

    fn paths(metas: &[ObjectMeta]) -> Vec<&str> {
        metas.iter().map(|m| m.location.as_ref()).collect()
    }

    #[test]
    fn revision_names_are_recognised_and_others_are_not() {
        assert_eq!(
            window_revision("window-20260101T000000Z-r0.parquet"),
            Some(("20260101T000000Z", 0))
        );
        assert_eq!(
            window_revision("window-20260101T000000.5Z-r12.parquet"),
            Some(("20260101T000000.5Z", 12))
        );
        for other in [
            "window-20260101T000000Z-w0of2.parquet",
            "late-1767225600000000-w0of2.parquet",
            "window-20260101T000000Z-r.parquet",
            "window--r1.parquet",
            "window-20260101T000000Z-r1x.parquet",
            "window-20260101T000000Z-r1.parquet.inprogress",
            "window-20260101T000000Z-r99999999999.parquet",
        ] {
            assert_eq!(window_revision(other), None, "{other}");
        }
    }

    #[test]
    fn only_the_highest_revision_of_a_window_in_a_folder_stays() {
        let kept = latest_revisions(vec![
            meta("t/date=2026-01-01/hour=00/window-20260101T000000Z-r0.parquet"),
            meta("t/date=2026-01-01/hour=00/window-20260101T000000Z-r2.parquet"),
            meta("t/date=2026-01-01/hour=00/window-20260101T000000Z-r1.parquet"),
            meta("t/date=2026-01-01/hour=00/window-20260101T000100Z-r0.parquet"),
            meta("t/date=2026-01-01/hour=00/window-20260101T000200Z-w0of2.parquet"),
            meta("t/date=2026-01-01/hour=00/window-20260101T000200Z-w1of2.parquet"),
            meta("t_late/date=2026-01-01/hour=00/late-1767225600000000-w0of2.parquet"),
            // The same stamp in another folder is another window.
            meta("u/date=2026-01-01/hour=00/window-20260101T000000Z-r0.parquet"),
        ]);
        assert_eq!(
            paths(&kept),
            [
                "t/date=2026-01-01/hour=00/window-20260101T000000Z-r2.parquet",
                "t/date=2026-01-01/hour=00/window-20260101T000100Z-r0.parquet",
                "t/date=2026-01-01/hour=00/window-20260101T000200Z-w0of2.parquet",
                "t/date=2026-01-01/hour=00/window-20260101T000200Z-w1of2.parquet",
                "t_late/date=2026-01-01/hour=00/late-1767225600000000-w0of2.parquet",
                "u/date=2026-01-01/hour=00/window-20260101T000000Z-r0.parquet",
            ]
        );
    }

    #[test]
    fn history_tables_keep_every_revision() {
        let all = vec![
            meta("t_revisions/date=2026-01-01/hour=00/window-20260101T000000Z-r0.parquet"),
            meta("t_revisions/date=2026-01-01/hour=00/window-20260101T000000Z-r1.parquet"),
        ];
        assert_eq!(latest_revisions(all.clone()), all);
    }

    #[test]
    fn files_and_folders_outside_the_partition_layout_are_named() {
        let file = |p: &str| misplaced(&Path::from(p), true, NODE_PARTITIONS);
        let folder = |p: &str| misplaced(&Path::from(p), false, NODE_PARTITIONS);
        assert_eq!(file("t/date=2026-01-01/hour=07/window-x-r0.parquet"), None);
        assert_eq!(file("t/date=2026-01-01/hour=7/window-x-r0.parquet"), None);
        assert_eq!(folder("t"), None);
        assert_eq!(folder("t/date=2026-12-31"), None);
        assert_eq!(folder("t/date=2026-12-31/hour=23"), None);
        assert_eq!(file("_sync/journal.parquet"), None, "not a table");

        let (path, reason) = folder("t/date=2026-01-01/hour=xx").unwrap_or_default();
        assert_eq!(path, "t/date=2026-01-01/hour=xx");
        assert!(reason.contains("`xx` is not an hour"), "{reason}");
        assert!(folder("t/date=2026-01-01/hour=24").is_some());
        let (path, reason) = file("t/date=garbage/hour=00/window-x-r0.parquet").unwrap_or_default();
        assert_eq!(path, "t/date=garbage");
        assert!(reason.contains("`garbage` is not a date"), "{reason}");
        assert!(folder("t/date=2026-02-30").is_some(), "no such day");
        assert!(folder("t/hour=01").is_some(), "date comes first");
        let (path, reason) = file("t/stray.parquet").unwrap_or_default();
        assert_eq!(path, "t/stray.parquet");
        assert!(reason.contains("not in a date="), "{reason}");
        assert!(file("t/date=2026-01-01/stray.parquet").is_some());
        assert!(file("t/date=2026-01-01/hour=00/deeper/x.parquet").is_some());
        assert!(folder("t/date=2026-01-01/hour=00/deeper").is_some());
    }

    #[test]
    fn a_fleet_table_has_a_node_folder_above_the_date() {
        let file = |p: &str| misplaced(&Path::from(p), true, FLEET_PARTITIONS);
        let folder = |p: &str| misplaced(&Path::from(p), false, FLEET_PARTITIONS);
        assert_eq!(
            file("t/node=edge-1/date=2026-01-01/hour=07/window-x-r0.parquet"),
            None
        );
        assert_eq!(folder("t/node=edge-1"), None);
        assert!(folder("t/node=.x").is_some());
        assert!(folder("t/date=2026-01-01").is_some(), "node comes first");
        let (_, reason) = file("t/node=a/date=2026-01-01/x.parquet").unwrap_or_default();
        assert!(reason.contains("node=…/date=…/hour=…"), "{reason}");
    }
}
