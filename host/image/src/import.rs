//! Importing image archives: an OCI image layout in a tar (`oci-layout`,
//! `index.json`, `blobs/`), or a docker-archive (`docker save`:
//! `manifest.json` with `Config`, `RepoTags` and `Layers`), either one
//! plain or gzip-compressed.
//!
//! Everything is staged and verified (blob digests and sizes, layer diff
//! ids) before anything is moved into the store, so a bad archive leaves the
//! store as it was.
//!
//! Names come from the index's `io.containerd.image.name` annotation, else
//! from `org.opencontainers.image.ref.name` when that is a name rather than a
//! bare tag, else from a `manifest.json` beside the index (docker 25+ writes
//! both). An image with no name is imported all the same and found by id.
//! For a docker-archive, the store writes an OCI manifest for each image.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::digest::Digest;
use crate::error::{ImageError, IoContext};
use crate::oci::{self, Descriptor, Index, Manifest, ManifestKind, Platform};
use crate::reference::Reference;
use crate::store::{Image, ImageStore, StageError, Staging};

/// Small documents of a layout read into memory.
const DOCUMENTS: [&str; 4] = ["oci-layout", "index.json", "manifest.json", "repositories"];
const MAX_DOCUMENT: u64 = 8 << 20;

/// One image of a docker-archive's `manifest.json`.
#[derive(Debug, Deserialize)]
struct DockerArchiveImage {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// What an archive's tar holds, once staged.
struct Contents {
    documents: HashMap<String, Vec<u8>>,
    /// Every other file: its path and the staged blob with its content.
    files: HashMap<String, Digest>,
    /// Symlinks (docker 25+ links `<id>/layer.tar` into `blobs/`).
    links: HashMap<String, String>,
}

impl Contents {
    fn lookup(&self, path: &str) -> Option<&Digest> {
        let mut p = clean(path)?;
        for _ in 0..16 {
            if let Some(d) = self.files.get(&p) {
                return Some(d);
            }
            p = self.links.get(&p)?.clone();
        }
        None
    }
}

/// A relative archive path without `.` components; `None` if it climbs out.
fn clean(path: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n.to_str()?),
            Component::ParentDir => {
                out.pop()?;
            }
            _ => {}
        }
    }
    Some(out.join("/"))
}

impl ImageStore {
    /// Imports an OCI image layout tar or a docker-archive (plain or
    /// gzip-compressed) and returns the images it held. Blob digests and
    /// layer diff ids are verified; on any error the store is unchanged.
    pub fn import(&self, archive: &Path) -> Result<Vec<Image>, ImageError> {
        let _span = tracing::info_span!("image_import", archive = %archive.display()).entered();
        let bad = |reason: String| ImageError::InvalidArchive {
            path: archive.to_path_buf(),
            reason,
        };
        let file = File::open(archive).ctx(|| format!("cannot open {}", archive.display()))?;
        let mut staging = self.stage()?;
        let contents = read_archive(file, &mut staging).map_err(|e| match e {
            ArchiveError::Bad(reason) => bad(reason),
            ArchiveError::Store(e) => *e,
        })?;
        let images = if contents.documents.contains_key("index.json") {
            oci_layout_images(&contents, &staging)
        } else if contents.documents.contains_key("manifest.json") {
            docker_archive_images(&contents, &mut staging)
        } else {
            Err(ArchiveError::Bad(
                "not an OCI image layout or docker-archive: it has neither index.json nor manifest.json".into(),
            ))
        }
        .map_err(|e| match e {
            ArchiveError::Bad(reason) => bad(reason),
            ArchiveError::Store(e) => *e,
        })?;
        let images = staging.commit(&images)?;
        for i in &images {
            tracing::info!(id = %i.id, references = ?i.references, "image imported");
        }
        Ok(images)
    }
}

enum ArchiveError {
    Bad(String),
    Store(Box<ImageError>),
}

fn staged(what: &str, e: StageError) -> ArchiveError {
    match e {
        StageError::Read(e) => ArchiveError::Bad(format!(
            "cannot read {what}: {e} (truncated or corrupt archive)"
        )),
        StageError::Write(e) => ArchiveError::Store(e),
        StageError::Content(c) => ArchiveError::Bad(format!("{what}: {c}")),
    }
}

/// Reads the archive, staging every file.
fn read_archive(file: File, staging: &mut Staging<'_>) -> Result<Contents, ArchiveError> {
    let mut r = BufReader::with_capacity(1 << 16, file);
    let head = r
        .fill_buf()
        .map_err(|e| ArchiveError::Bad(format!("cannot read: {e}")))?;
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else {
        Box::new(r)
    };
    let mut ar = tar::Archive::new(reader);
    let not_tar = |e: std::io::Error| {
        ArchiveError::Bad(format!("not a tar archive, or a truncated one: {e}"))
    };
    let mut contents = Contents {
        documents: HashMap::new(),
        files: HashMap::new(),
        links: HashMap::new(),
    };
    for entry in ar.entries().map_err(not_tar)? {
        let mut entry = entry.map_err(not_tar)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(path) = clean(&raw) else {
            return Err(ArchiveError::Bad(format!(
                "entry {raw:?} climbs out of the archive"
            )));
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let parent = Path::new(&path).parent().unwrap_or(Path::new(""));
                if let Some(t) = clean(&parent.join(target).to_string_lossy()) {
                    contents.links.insert(path, t);
                }
                continue;
            }
            _ => continue,
        }
        if DOCUMENTS.contains(&path.as_str()) {
            let mut bytes = Vec::new();
            (&mut entry)
                .take(MAX_DOCUMENT + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| staged(&path, StageError::Read(e)))?;
            if bytes.len() as u64 > MAX_DOCUMENT {
                return Err(ArchiveError::Bad(format!(
                    "{path} is larger than {MAX_DOCUMENT} bytes"
                )));
            }
            contents.documents.insert(path, bytes);
            continue;
        }
        let size = entry.size();
        let named = path
            .strip_prefix("blobs/sha256/")
            .and_then(|h| Digest::parse(&format!("sha256:{h}")).ok());
        let (digest, _) = staging
            .write_blob(&mut entry, named.as_ref(), Some(size))
            .map_err(|e| staged(&path, e))?;
        contents.files.insert(path, digest);
    }
    if let Some(layout) = contents.documents.get("oci-layout") {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Layout {
            image_layout_version: String,
        }
        let l: Layout = serde_json::from_slice(layout)
            .map_err(|e| ArchiveError::Bad(format!("invalid oci-layout: {e}")))?;
        if !l.image_layout_version.starts_with("1.") {
            return Err(ArchiveError::Bad(format!(
                "unsupported OCI layout version {:?}",
                l.image_layout_version
            )));
        }
    }
    Ok(contents)
}

/// The images of an OCI layout, with their names.
fn oci_layout_images(
    contents: &Contents,
    staging: &Staging<'_>,
) -> Result<Vec<(Digest, Vec<Reference>)>, ArchiveError> {
    let index: Index = serde_json::from_slice(&contents.documents["index.json"])
        .map_err(|e| ArchiveError::Bad(format!("invalid index.json: {e}")))?;
    let host = Platform::host();
    // docker 25+ also writes manifest.json: its RepoTags name images whose
    // index entries carry only a tag.
    let docker_names = docker_names_by_config(contents);
    let mut images: Vec<(Digest, Vec<Reference>)> = Vec::new();
    for desc in &index.manifests {
        if let Some(p) = &desc.platform {
            if p.os != host.os || p.architecture != host.architecture {
                continue;
            }
        }
        let digest = manifest_for_platform(desc, staging, &host)?;
        let manifest = staging
            .verify_image(&digest)
            .map_err(|e| staged(&format!("image {digest}"), e))?;
        let mut names = annotation_names(&desc.annotations)?;
        if names.is_empty() {
            names = docker_names
                .get(&manifest.config.digest)
                .cloned()
                .unwrap_or_default();
        }
        match images.iter_mut().find(|(d, _)| *d == digest) {
            Some((_, known)) => known.extend(names),
            None => images.push((digest, names)),
        }
    }
    if images.is_empty() {
        return Err(ArchiveError::Bad(format!(
            "index.json lists no image for {}/{}",
            host.os, host.architecture
        )));
    }
    Ok(images)
}

/// Follows nested indexes down to the manifest for `host`.
fn manifest_for_platform(
    desc: &Descriptor,
    staging: &Staging<'_>,
    host: &Platform,
) -> Result<Digest, ArchiveError> {
    let mut desc = desc.clone();
    for _ in 0..4 {
        let bytes = staging
            .read_document(&desc.digest)
            .map_err(|e| staged(&format!("blob {}", desc.digest), e))?;
        match oci::parse_manifest_like(&bytes, Some(&desc.media_type), &desc.digest)
            .map_err(|e| ArchiveError::Bad(e.to_string()))?
        {
            ManifestKind::Manifest(_) => return Ok(desc.digest),
            ManifestKind::Index(i) => {
                desc = oci::select_platform(&i, &desc.digest, host)
                    .map_err(|e| ArchiveError::Bad(e.to_string()))?
                    .clone();
            }
        }
    }
    Err(ArchiveError::Bad(format!(
        "image indexes nest too deep under {}",
        desc.digest
    )))
}

/// The names an index entry's annotations give.
fn annotation_names(
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<Reference>, ArchiveError> {
    let parse = |s: &str| {
        Reference::parse(s).map_err(|e| ArchiveError::Bad(format!("image name {s:?}: {e}")))
    };
    if let Some(n) = annotations.get(oci::ANNOTATION_CONTAINERD_NAME) {
        return Ok(vec![parse(n)?]);
    }
    match annotations.get(oci::ANNOTATION_REF_NAME) {
        // A bare tag (`latest`, `v1.0`) names nothing on its own.
        Some(n) if n.contains(['/', ':', '@']) => Ok(vec![parse(n)?]),
        _ => Ok(Vec::new()),
    }
}

/// `RepoTags` of a `manifest.json` by config digest, when there is one.
fn docker_names_by_config(contents: &Contents) -> HashMap<Digest, Vec<Reference>> {
    let mut out = HashMap::new();
    let Some(bytes) = contents.documents.get("manifest.json") else {
        return out;
    };
    let Ok(entries) = serde_json::from_slice::<Vec<DockerArchiveImage>>(bytes) else {
        return out;
    };
    for e in entries {
        if let Some(d) = contents.lookup(&e.config) {
            let names = e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .filter_map(|t| Reference::parse(t).ok())
                .collect();
            out.insert(d.clone(), names);
        }
    }
    out
}

/// The images of a docker-archive: an OCI manifest written for each.
fn docker_archive_images(
    contents: &Contents,
    staging: &mut Staging<'_>,
) -> Result<Vec<(Digest, Vec<Reference>)>, ArchiveError> {
    let entries: Vec<DockerArchiveImage> =
        serde_json::from_slice(&contents.documents["manifest.json"])
            .map_err(|e| ArchiveError::Bad(format!("invalid manifest.json: {e}")))?;
    if entries.is_empty() {
        return Err(ArchiveError::Bad("manifest.json lists no image".into()));
    }
    let missing = |p: &str| {
        ArchiveError::Bad(format!(
            "manifest.json names {p:?}, which the archive does not contain"
        ))
    };
    let mut images = Vec::new();
    for e in entries {
        let config = contents
            .lookup(&e.config)
            .ok_or_else(|| missing(&e.config))?
            .clone();
        let (_, config_size) = staging.locate(&config).map_err(|x| staged(&e.config, x))?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let d = contents.lookup(l).ok_or_else(|| missing(l))?.clone();
            let (path, size) = staging.locate(&d).map_err(|x| staged(l, x))?;
            layers.push(Descriptor {
                media_type: if is_gzip(&path) {
                    oci::OCI_LAYER_GZIP.to_string()
                } else {
                    oci::OCI_LAYER.to_string()
                },
                digest: d,
                size,
                platform: None,
                annotations: BTreeMap::new(),
            });
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::OCI_MANIFEST.to_string()),
            config: Descriptor {
                media_type: oci::OCI_CONFIG.to_string(),
                digest: config,
                size: config_size,
                platform: None,
                annotations: BTreeMap::new(),
            },
            layers,
            annotations: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&manifest).expect("a manifest serialises");
        let digest = staging
            .write_bytes(&bytes)
            .map_err(|x| staged("the image manifest", x))?;
        staging
            .verify_image(&digest)
            .map_err(|x| staged(&format!("image {}", e.config), x))?;
        let names = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| {
                Reference::parse(t).map_err(|x| ArchiveError::Bad(format!("RepoTags {t:?}: {x}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        images.push((digest, names));
    }
    Ok(images)
}

fn is_gzip(path: &PathBuf) -> bool {
    let mut magic = [0u8; 2];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == [0x1f, 0x8b]
}
