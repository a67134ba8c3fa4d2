//! One read-only view of several stores holding the same output tree (the local output
//! folder and its synced copy in a bucket): a path is read from the first store that has
//! it, and listings are merged, so a file present in both counts once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// A store and the key prefix under which the output tree lives in it.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Prefix of the output root in it.
    pub prefix: Path,
    /// For messages: `file:///…` or `s3://…`.
    pub name: String,
}

impl Layer {
    fn key(&self, relative: &Path) -> Path {
        Path::from_iter(self.prefix.parts().chain(relative.parts()))
    }

    fn relative(&self, key: &Path) -> Option<Path> {
        key.prefix_match(&self.prefix).map(Path::from_iter)
    }
}

/// Read-only union of [`Layer`]s, earlier layers first.
#[derive(Debug)]
pub struct Overlay {
    layers: Arc<Vec<Layer>>,
}

impl Overlay {
    /// An overlay of `layers`; a path is read from the first that has it.
    pub fn new(layers: Vec<Layer>) -> Self {
        Overlay {
            layers: Arc::new(layers),
        }
    }

    /// The layers, for messages.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }
}

impl std::fmt::Display for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.layers.iter().map(|l| l.name.as_str()).collect();
        write!(f, "Overlay({})", names.join(" + "))
    }
}

/// The error of a write to a read-only view of the outputs.
pub(super) fn read_only(operation: &str) -> object_store::Error {
    object_store::Error::NotSupported {
        source: format!("the outputs are read-only here ({operation})").into(),
    }
}

/// Everything under `prefix` in every layer, first layer winning on equal paths.
async fn merged(layers: &[Layer], prefix: Option<&Path>) -> Result<Vec<ObjectMeta>> {
    let mut merged: BTreeMap<Path, ObjectMeta> = BTreeMap::new();
    for layer in layers {
        let key = layer.key(prefix.unwrap_or(&Path::default()));
        let listed: Vec<ObjectMeta> = match layer.store.list(Some(&key)).try_collect().await {
            Ok(listed) => listed,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        for mut meta in listed {
            if let Some(relative) = layer.relative(&meta.location) {
                meta.location = relative.clone();
                merged.entry(relative).or_insert(meta);
            }
        }
    }
    Ok(merged.into_values().collect())
}

#[async_trait]
impl ObjectStore for Overlay {
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
        let mut last = None;
        for layer in self.layers.iter() {
            match layer
                .store
                .get_opts(&layer.key(location), options.clone())
                .await
            {
                Ok(mut result) => {
                    result.meta.location = location.clone();
                    return Ok(result);
                }
                Err(e @ object_store::Error::NotFound { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| object_store::Error::NotFound {
            path: location.to_string(),
            source: "no store holds it".into(),
        }))
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        locations.map(|_| Err(read_only("delete"))).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let layers = self.layers.clone();
        let prefix = prefix.cloned();
        futures::stream::once(async move { merged(&layers, prefix.as_ref()).await })
            .map_ok(|metas| futures::stream::iter(metas.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut prefixes = BTreeSet::new();
        let mut objects: BTreeMap<Path, ObjectMeta> = BTreeMap::new();
        for layer in self.layers.iter() {
            let key = layer.key(prefix.unwrap_or(&Path::default()));
            let listed = match layer.store.list_with_delimiter(Some(&key)).await {
                Ok(listed) => listed,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            prefixes.extend(
                listed
                    .common_prefixes
                    .iter()
                    .filter_map(|p| layer.relative(p)),
            );
            for mut meta in listed.objects {
                if let Some(relative) = layer.relative(&meta.location) {
                    meta.location = relative.clone();
                    objects.entry(relative).or_insert(meta);
                }
            }
        }
        Ok(ListResult {
            common_prefixes: prefixes.into_iter().collect(),
            objects: objects.into_values().collect(),
        })
    }

    async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> Result<()> {
        Err(read_only("copy"))
    }
}
