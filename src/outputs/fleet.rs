//! A fleet's bucket seen as one output tree.
//!
//! Nodes synced with `--node NAME` each keep their output tree under `node=NAME/`:
//! `node=NAME/<table>/date=…/hour=…/<file>`. A table of the whole fleet needs the node
//! as a partition column *below* the table (`<table>/node=NAME/date=…/hour=…/<file>`),
//! so that one listing table per query reads every node's files and a filter on `node`
//! prunes the others before they are listed. [`Fleet`] presents that second layout over
//! the first: it renames paths both ways and reads nothing itself. Read-only.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::{Path, PathPart};
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use super::overlay::read_only;
use crate::sync::target::NODE_FOLDER_PREFIX;

/// The node names of a tree's top-level folders (`node=NAME/`), sorted; empty when the
/// tree is one node's outputs.
pub async fn nodes(store: &dyn ObjectStore) -> Result<Vec<String>> {
    let top = match store.list_with_delimiter(None).await {
        Ok(top) => top,
        Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(top
        .common_prefixes
        .iter()
        .filter_map(|folder| node_of(folder.filename()?))
        .map(str::to_owned)
        .collect())
}

/// `NAME` of a `node=NAME` folder.
fn node_of(folder: &str) -> Option<&str> {
    folder
        .strip_prefix(NODE_FOLDER_PREFIX)
        .filter(|name| !name.is_empty())
}

/// The fleet layout (`<table>/node=NAME/…`) over a store in the synced layout
/// (`node=NAME/<table>/…`).
#[derive(Debug)]
pub struct Fleet {
    inner: Arc<dyn ObjectStore>,
}

impl Fleet {
    /// `inner`, whose top level holds the `node=NAME/` folders, in the fleet layout.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Fleet { inner }
    }
}

/// `node=N/<table>/rest` from `<table>/node=N/rest`; `None` for a path that names no
/// node (the table level itself, or a folder that is not `node=`).
fn to_synced(path: &Path) -> Option<Path> {
    let mut parts = path.parts();
    let table = parts.next()?;
    let node = parts.next()?;
    node_of(node.as_ref())?;
    Some(Path::from_iter([node, table].into_iter().chain(parts)))
}

/// `<table>/node=N/rest` from `node=N/<table>/rest`; `None` for what lies outside any
/// table of a node (a file right under `node=N/`, or no node folder at all).
fn to_fleet(path: &Path) -> Option<Path> {
    let parts: Vec<PathPart<'_>> = path.parts().collect();
    if parts.len() < 2 || node_of(parts[0].as_ref()).is_none() {
        return None;
    }
    let mut parts = parts.into_iter();
    let node = parts.next()?;
    let table = parts.next()?;
    Some(Path::from_iter([table, node].into_iter().chain(parts)))
}

/// [`to_fleet`] for a file, which must lie inside a table of a node.
fn file_to_fleet(path: &Path) -> Option<Path> {
    (path.parts().count() >= 3)
        .then(|| to_fleet(path))
        .flatten()
}

fn not_in_a_node(path: &Path) -> object_store::Error {
    object_store::Error::NotFound {
        path: path.to_string(),
        source: "not inside a node=NAME folder of a table".into(),
    }
}

/// The synced-layout prefixes to list for a fleet-layout prefix: every node's copy of
/// a table, one node's, or everything.
async fn synced_prefixes(inner: &dyn ObjectStore, prefix: Option<&Path>) -> Result<Vec<Path>> {
    let Some(prefix) = prefix.filter(|p| p.parts().next().is_some()) else {
        return Ok(nodes(inner)
            .await?
            .into_iter()
            .map(|node| Path::from(format!("{NODE_FOLDER_PREFIX}{node}")))
            .collect());
    };
    if let Some(synced) = to_synced(prefix) {
        return Ok(vec![synced]);
    }
    let mut parts = prefix.parts();
    let table = parts.next();
    if parts.next().is_some() {
        // `<table>/<not a node folder>/…` holds nothing in the fleet layout.
        return Ok(Vec::new());
    }
    Ok(nodes(inner)
        .await?
        .into_iter()
        .map(|node| {
            let node = PathPart::from(format!("{NODE_FOLDER_PREFIX}{node}"));
            Path::from_iter([node].into_iter().chain(table.clone()))
        })
        .collect())
}

impl std::fmt::Display for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fleet({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Fleet {
    async fn put_opts(&self, _: &Path, _: PutPayload, _: PutOptions) -> Result<PutResult> {
        Err(read_only("put"))
    }

    async fn put_multipart_opts(
        &self,
        _: &Path,
        _: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        Err(read_only("multipart put"))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let synced = to_synced(location).ok_or_else(|| not_in_a_node(location))?;
        let mut result = self.inner.get_opts(&synced, options).await?;
        result.meta.location = location.clone();
        Ok(result)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        locations.map(|_| Err(read_only("delete"))).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = self.inner.clone();
        let prefix = prefix.cloned();
        stream::once(async move {
            let mut listed = Vec::new();
            for synced in synced_prefixes(inner.as_ref(), prefix.as_ref()).await? {
                let metas: Vec<ObjectMeta> = inner.list(Some(&synced)).try_collect().await?;
                listed.extend(metas.into_iter().filter_map(|mut meta| {
                    meta.location = file_to_fleet(&meta.location)?;
                    Some(meta)
                }));
            }
            listed.sort_by(|a, b| a.location.cmp(&b.location));
            Ok::<_, object_store::Error>(listed)
        })
        .map_ok(|metas| stream::iter(metas.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let at_top = prefix.is_none_or(|p| p.parts().next().is_none());
        let mut folders = BTreeSet::new();
        let mut objects = Vec::new();
        for synced in synced_prefixes(self.inner.as_ref(), prefix).await? {
            let listed = match self.inner.list_with_delimiter(Some(&synced)).await {
                Ok(listed) => listed,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            if at_top {
                // The tables: every node's table folders, each once.
                folders.extend(
                    listed
                        .common_prefixes
                        .iter()
                        .filter_map(|f| f.filename().map(Path::from)),
                );
                continue;
            }
            if prefix.is_some_and(|p| p.parts().count() == 1) {
                // A table: its node folders, for those nodes that have it.
                let holds_something =
                    !listed.common_prefixes.is_empty() || !listed.objects.is_empty();
                if let Some(folder) = to_fleet(&synced).filter(|_| holds_something) {
                    folders.insert(folder);
                }
                continue;
            }
            folders.extend(listed.common_prefixes.iter().filter_map(to_fleet));
            objects.extend(listed.objects.into_iter().filter_map(|mut meta| {
                meta.location = file_to_fleet(&meta.location)?;
                Some(meta)
            }));
        }
        Ok(ListResult {
            common_prefixes: folders.into_iter().collect(),
            objects,
        })
    }

    async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> Result<()> {
        Err(read_only("copy"))
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    use super::*;

    fn path(text: &str) -> Path {
        Path::from(text)
    }

    #[test]
    fn paths_are_renamed_both_ways_and_nothing_outside_a_node_is_shown() {
        let synced = path("node=a/t/date=2026-01-01/hour=00/window-x-r0.parquet");
        let fleet = path("t/node=a/date=2026-01-01/hour=00/window-x-r0.parquet");
        assert_eq!(to_fleet(&synced), Some(fleet.clone()));
        assert_eq!(to_synced(&fleet), Some(synced));
        assert_eq!(file_to_fleet(&path("node=a/stray.txt")), None);
        assert_eq!(to_fleet(&path("other/t/x.parquet")), None);
        assert_eq!(to_fleet(&path("node=/t/x.parquet")), None);
        assert_eq!(to_synced(&path("t")), None);
        assert_eq!(to_synced(&path("t/date=2026-01-01")), None);
    }

    #[tokio::test]
    async fn a_table_lists_every_nodes_files_and_a_node_prefix_only_its_own()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let inner = Arc::new(InMemory::new());
        for key in [
            "node=a/t/date=2026-01-01/hour=00/window-1-r0.parquet",
            "node=b/t/date=2026-01-01/hour=00/window-1-r0.parquet",
            "node=b/u/date=2026-01-01/hour=01/window-2-r0.parquet",
            "node=b/_logs/edgeflow.log",
            "node=b/stray.txt",
            "loose/t/date=2026-01-01/hour=00/window-1-r0.parquet",
        ] {
            inner.put(&path(key), b"x".to_vec().into()).await?;
        }
        let fleet = Fleet::new(inner);
        let top = fleet.list_with_delimiter(None).await?;
        let tables: Vec<String> = top.common_prefixes.iter().map(|p| p.to_string()).collect();
        assert_eq!(tables, ["_logs", "t", "u"]);
        let t = fleet.list_with_delimiter(Some(&path("t"))).await?;
        let folders: Vec<String> = t.common_prefixes.iter().map(|p| p.to_string()).collect();
        assert_eq!(folders, ["t/node=a", "t/node=b"]);
        let all: Vec<ObjectMeta> = fleet.list(Some(&path("t"))).try_collect().await?;
        let all: Vec<String> = all.iter().map(|m| m.location.to_string()).collect();
        assert_eq!(
            all,
            [
                "t/node=a/date=2026-01-01/hour=00/window-1-r0.parquet",
                "t/node=b/date=2026-01-01/hour=00/window-1-r0.parquet",
            ]
        );
        let b: Vec<ObjectMeta> = fleet.list(Some(&path("t/node=b"))).try_collect().await?;
        assert_eq!(b.len(), 1);
        let read = fleet.get(&b[0].location).await?;
        assert_eq!(read.meta.location, b[0].location);
        assert_eq!(read.bytes().await?.as_ref(), b"x");
        assert!(
            fleet
                .put(&b[0].location, b"y".to_vec().into())
                .await
                .is_err()
        );
        Ok(())
    }
}
