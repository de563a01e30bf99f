//! The content-addressed store: blobs, the references index, locks, staging
//! of new content, listing, removal and garbage collection.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tempfile::TempDir;

use crate::digest::{is_hex64, Digest, HashingWriter};
use crate::error::{ImageError, IoContext};
use crate::oci::{self, ContentError, Manifest, ManifestKind};
use crate::reference::Reference;

/// Documents (manifests, configs, indexes) larger than this are refused.
const MAX_DOCUMENT: u64 = 8 << 20;

/// A node-local image store rooted at a directory.
///
/// Layout under the root:
///
/// ```text
/// blobs/sha256/<hex>      manifests, configs and layers, named by digest
/// index.json              {"references": {"docker.io/library/busybox:latest": "sha256:..."}}
/// snapshots/<chain id>/   unpacked root filesystems
/// locks/                  flock files
/// tmp/                    staging of imports and pulls, and unpacking
/// ```
///
/// Processes share the store (the agent and `trellis image import` may run
/// at once), so two flock files order them. `locks/refs.lock` is held
/// exclusively around every read-modify-write of `index.json` (written to a
/// temporary file and renamed, so readers never lock). `locks/gc.lock` is
/// held shared by everything that adds content or reads blobs it has not yet
/// referenced (an import, a pull, a push, unpacking and mounting), and
/// exclusively by garbage collection, so it never deletes content that is
/// about to be referenced or mounted. The value is a path: clones share the
/// store, and each thread or process may hold its own.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    /// The config digest, `sha256:...`: what `crictl images` shows as IMAGE ID.
    pub id: String,
    /// The manifest digest, `sha256:...`.
    pub digest: String,
    /// Normalised references naming this image (`docker.io/library/busybox:latest`),
    /// sorted; empty for an image imported without a name.
    pub references: Vec<String>,
    /// Bytes of its manifest, config and (compressed) layers.
    pub size: u64,
    /// How to run it.
    pub config: ImageConfig,
}

/// The image config's run settings (from the config's `config` object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, as `NAME=value`.
    pub env: Vec<String>,
    /// `WorkingDir` ("" when unset).
    pub working_dir: String,
    /// `User` ("" when unset).
    pub user: String,
}

impl Image {
    /// `name@manifest-digest` for each repository naming the image: what
    /// Kubernetes shows as a container's `imageID`.
    pub fn repo_digests(&self) -> Vec<String> {
        let names: BTreeSet<String> = self
            .references
            .iter()
            .filter_map(|r| Reference::parse(r).ok())
            .map(|r| r.name())
            .collect();
        names
            .into_iter()
            .map(|n| format!("{n}@{}", self.digest))
            .collect()
    }
}

/// The references index file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefIndex {
    /// Normalised reference (or, for an unnamed image, its manifest digest)
    /// to manifest digest.
    #[serde(default)]
    references: BTreeMap<String, Digest>,
}

/// A held flock, released on drop.
pub(crate) struct FileLock {
    _file: File,
}

impl FileLock {
    /// Locks `path` (created if absent). `None` when `blocking` is false and
    /// another holder conflicts.
    pub(crate) fn acquire(
        path: &Path,
        exclusive: bool,
        blocking: bool,
    ) -> Result<Option<FileLock>, ImageError> {
        use rustix::fs::FlockOperation as Op;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .ctx(|| format!("cannot open lock file {}", path.display()))?;
        let op = match (exclusive, blocking) {
            (true, true) => Op::LockExclusive,
            (true, false) => Op::NonBlockingLockExclusive,
            (false, true) => Op::LockShared,
            (false, false) => Op::NonBlockingLockShared,
        };
        loop {
            match rustix::fs::flock(&file, op) {
                Ok(()) => return Ok(Some(FileLock { _file: file })),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::WOULDBLOCK) if !blocking => return Ok(None),
                Err(e) => {
                    return Err(ImageError::io(
                        format!("cannot lock {}", path.display()),
                        e.into(),
                    ))
                }
            }
        }
    }
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        fs::create_dir_all(root).ctx(|| format!("cannot create {}", root.display()))?;
        let root = root
            .canonicalize()
            .ctx(|| format!("cannot resolve {}", root.display()))?;
        let store = ImageStore { root };
        for dir in [
            store.root.join("blobs/sha256"),
            store.tmp_dir(),
            store.snapshots_dir(),
            store.root.join("locks"),
        ] {
            fs::create_dir_all(&dir).ctx(|| format!("cannot create {}", dir.display()))?;
        }
        for lock in ["gc.lock", "refs.lock"] {
            let p = store.root.join("locks").join(lock);
            fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&p)
                .ctx(|| format!("cannot create {}", p.display()))?;
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    pub(crate) fn lock(&self, name: &str, exclusive: bool) -> Result<FileLock, ImageError> {
        FileLock::acquire(&self.root.join("locks").join(name), exclusive, true)
            .map(|l| l.expect("a blocking lock is always acquired"))
    }

    pub(crate) fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Reads a small blob (a manifest or config) from the store.
    pub(crate) fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, ImageError> {
        read_document(&self.blob_path(d), d).map_err(|e| match e {
            StageError::Content(cause) => ImageError::Corrupt { cause },
            StageError::Read(e) if e.kind() == io::ErrorKind::NotFound => ImageError::Corrupt {
                cause: ContentError::Missing(d.clone()),
            },
            StageError::Read(e) => ImageError::io(format!("cannot read blob {d}"), e),
            StageError::Write(e) => *e,
        })
    }

    fn read_index(&self) -> Result<RefIndex, ImageError> {
        let path = self.root.join("index.json");
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| ImageError::Corrupt {
                cause: ContentError::InvalidJson {
                    what: path.display().to_string(),
                    message: e.to_string(),
                },
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RefIndex::default()),
            Err(e) => Err(ImageError::io(format!("cannot read {}", path.display()), e)),
        }
    }

    /// Replaces `index.json`; the caller holds `refs.lock`.
    fn write_index(&self, index: &RefIndex) -> Result<(), ImageError> {
        let path = self.root.join("index.json");
        let tmp = self
            .root
            .join(format!("index.json.tmp-{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(index).expect("the index serialises");
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.root)?.sync_all()
        };
        write().ctx(|| format!("cannot write {}", path.display()))
    }

    /// Starts staging new content.
    pub(crate) fn stage(&self) -> Result<Staging<'_>, ImageError> {
        let gc = self.lock("gc.lock", false)?;
        let dir = tempfile::Builder::new()
            .prefix("stage-")
            .tempdir_in(self.tmp_dir())
            .ctx(|| {
                format!(
                    "cannot create a staging directory in {}",
                    self.tmp_dir().display()
                )
            })?;
        Ok(Staging {
            store: self,
            dir,
            blobs: HashMap::new(),
            counter: 0,
            _gc: gc,
        })
    }

    /// Loads the image whose manifest is `digest`, named by the index keys
    /// pointing to it.
    fn load_image(&self, digest: &Digest, index: &RefIndex) -> Result<Image, ImageError> {
        let manifest_bytes = self.read_blob(digest)?;
        let manifest = parse_manifest(&manifest_bytes, digest)
            .map_err(|cause| ImageError::Corrupt { cause })?;
        let config_bytes = self.read_blob(&manifest.config.digest)?;
        let config = oci::parse_config(&config_bytes, &manifest.config.digest)
            .map_err(|cause| ImageError::Corrupt { cause })?;
        let c = config.config.unwrap_or_default();
        let references = index
            .references
            .iter()
            .filter(|(k, v)| *v == digest && !k.starts_with("sha256:"))
            .map(|(k, _)| k.clone())
            .collect();
        Ok(Image {
            id: manifest.config.digest.to_string(),
            digest: digest.to_string(),
            references,
            size: manifest_bytes.len() as u64
                + manifest.config.size
                + manifest.layers.iter().map(|l| l.size).sum::<u64>(),
            config: ImageConfig {
                entrypoint: c.entrypoint.unwrap_or_default(),
                cmd: c.cmd.unwrap_or_default(),
                env: c.env.unwrap_or_default(),
                working_dir: c.working_dir.unwrap_or_default(),
                user: c.user.unwrap_or_default(),
            },
        })
    }

    /// The manifest and the layer diff ids of an image in the store.
    pub(crate) fn image_layers(
        &self,
        image: &Image,
    ) -> Result<(Manifest, Vec<Digest>), ImageError> {
        let digest = Digest::parse(&image.digest).map_err(|_| ImageError::NotFound {
            reference: image.digest.clone(),
        })?;
        if !self.has_blob(&digest) {
            return Err(ImageError::NotFound {
                reference: image
                    .references
                    .first()
                    .cloned()
                    .unwrap_or(image.id.clone()),
            });
        }
        let manifest = parse_manifest(&self.read_blob(&digest)?, &digest)
            .map_err(|cause| ImageError::Corrupt { cause })?;
        let config = oci::parse_config(
            &self.read_blob(&manifest.config.digest)?,
            &manifest.config.digest,
        )
        .map_err(|cause| ImageError::Corrupt { cause })?;
        let diff_ids = config.rootfs.unwrap_or_default().diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Corrupt {
                cause: ContentError::LayerCount {
                    manifest: digest,
                    layers: manifest.layers.len(),
                    diff_ids: diff_ids.len(),
                },
            });
        }
        Ok((manifest, diff_ids))
    }

    /// Finds an image by reference (`busybox`, `docker.io/library/busybox:latest`,
    /// `localhost:5000/x@sha256:...`), by id or manifest digest
    /// (`sha256:<hex>`, `<hex>`), or by an unambiguous id prefix of at least
    /// 12 hex digits. `Ok(None)` when nothing matches.
    pub fn resolve(&self, reference: &str) -> Result<Option<Image>, ImageError> {
        let index = self.read_index()?;
        self.find(reference.trim(), &index)?
            .map(|(digest, _)| self.load_image(&digest, &index))
            .transpose()
    }

    /// The manifest digest `s` names, and whether `s` was a name (not an id
    /// or digest).
    fn find(&self, s: &str, index: &RefIndex) -> Result<Option<(Digest, bool)>, ImageError> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        let is_hex = hex.len() >= 12
            && hex.len() <= 64
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if is_hex && (s.starts_with("sha256:") || is_hex64(s) || !s.contains(['/', ':'])) {
            let mut found = BTreeSet::new();
            for d in index.references.values().collect::<BTreeSet<_>>() {
                if d.hex().starts_with(hex) {
                    found.insert(d.clone());
                    continue;
                }
                // The id is the config digest.
                if let Ok(bytes) = self.read_blob(d) {
                    if let Ok(m) = parse_manifest(&bytes, d) {
                        if m.config.digest.hex().starts_with(hex) {
                            found.insert(d.clone());
                        }
                    }
                }
            }
            if found.len() == 1 {
                return Ok(found.pop_first().map(|d| (d, false)));
            }
            if s.starts_with("sha256:") || hex.len() == 64 {
                return Ok(None);
            }
        }
        let r = Reference::parse(s)?;
        if let Some(d) = index.references.get(&r.to_string()) {
            return Ok(Some((d.clone(), true)));
        }
        if let Some(want) = r.digest() {
            // `name@digest` of an image pulled by tag, or `name:tag@digest`.
            let name = r.name();
            let hit = index
                .references
                .iter()
                .find(|(k, v)| *v == want && Reference::parse(k).is_ok_and(|kr| kr.name() == name));
            if let Some((_, d)) = hit {
                return Ok(Some((d.clone(), false)));
            }
        }
        Ok(None)
    }

    /// Every image in the store, sorted by first reference, then id.
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        let index = self.read_index()?;
        let digests: BTreeSet<&Digest> = index.references.values().collect();
        let mut images = digests
            .into_iter()
            .map(|d| self.load_image(d, &index))
            .collect::<Result<Vec<_>, _>>()?;
        images.sort_by(|a, b| (a.references.first(), &a.id).cmp(&(b.references.first(), &b.id)));
        Ok(images)
    }

    /// Removes a reference. Given a name, removes that name; given an id or
    /// digest, removes every name of that image. Content no longer
    /// referenced is then garbage-collected (unless another process holds
    /// the store busy; a later removal or [`ImageStore::gc`] collects it).
    /// `Ok(false)` when nothing matched (removal is idempotent).
    pub fn remove(&self, reference: &str) -> Result<bool, ImageError> {
        {
            let _refs = self.lock("refs.lock", true)?;
            let mut index = self.read_index()?;
            let Some((digest, by_name)) = self.find(reference.trim(), &index)? else {
                return Ok(false);
            };
            let key = Reference::parse(reference.trim()).map(|r| r.to_string());
            match key {
                Ok(k) if by_name && index.references.contains_key(&k) => {
                    index.references.remove(&k);
                }
                _ => index.references.retain(|_, v| *v != digest),
            }
            self.write_index(&index)?;
        }
        self.collect(false)?;
        Ok(true)
    }

    /// Deletes blobs, unpacked snapshots and staging left-overs that no image
    /// references, waiting for running imports, pulls and unpacks to end.
    /// Snapshots that a root filesystem still uses (mounted here, or staged
    /// and not yet released) are kept.
    pub fn gc(&self) -> Result<(), ImageError> {
        self.collect(true).map(|_| ())
    }

    fn collect(&self, blocking: bool) -> Result<bool, ImageError> {
        let Some(_gc) = FileLock::acquire(&self.root.join("locks/gc.lock"), true, blocking)? else {
            tracing::debug!("image store busy; garbage collection deferred");
            return Ok(false);
        };
        let index = self.read_index()?;
        let mut live_blobs = BTreeSet::new();
        let mut live_snapshots = BTreeSet::new();
        for d in index.references.values() {
            live_blobs.insert(d.hex().to_string());
            let Ok(bytes) = self.read_blob(d) else {
                continue;
            };
            let Ok(m) = parse_manifest(&bytes, d) else {
                continue;
            };
            live_blobs.insert(m.config.digest.hex().to_string());
            live_blobs.extend(m.layers.iter().map(|l| l.digest.hex().to_string()));
            if let Ok(c) = self.read_blob(&m.config.digest) {
                if let Ok(c) = oci::parse_config(&c, &m.config.digest) {
                    let diff_ids = c.rootfs.unwrap_or_default().diff_ids;
                    live_snapshots.insert(crate::rootfs::snapshot_key(&diff_ids));
                }
            }
        }
        let blobs = self.root.join("blobs/sha256");
        for name in list_names(&blobs)? {
            if !live_blobs.contains(&name) {
                let p = blobs.join(&name);
                fs::remove_file(&p).ctx(|| format!("cannot remove {}", p.display()))?;
                tracing::debug!(blob = %name, "removed unreferenced blob");
            }
        }
        let mounted = crate::rootfs::mounted_lowerdirs();
        let snapshots = self.snapshots_dir();
        for name in list_names(&snapshots)? {
            let p = snapshots.join(&name);
            if live_snapshots.contains(&name)
                || mounted.iter().any(|m| m.starts_with(&p))
                || self.snapshot_in_use(&p)
            {
                continue;
            }
            remove_tree(&p)?;
            let lock = self
                .root
                .join("locks")
                .join(format!("snapshot-{name}.lock"));
            let _ = fs::remove_file(lock);
            tracing::debug!(snapshot = %name, "removed unused snapshot");
        }
        // Staging and unpacking hold gc.lock shared: what is left in tmp/
        // belongs to processes that died.
        for name in list_names(&self.tmp_dir())? {
            remove_tree(&self.tmp_dir().join(name))?;
        }
        Ok(true)
    }
}

/// The names in a directory.
fn list_names(dir: &Path) -> Result<Vec<String>, ImageError> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).ctx(|| format!("cannot list {}", dir.display()))? {
        let e = e.ctx(|| format!("cannot list {}", dir.display()))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// Removes a file or a tree, making read-only directories writable if that
/// is what stops it (an unpacked image may have `dr-xr-xr-x` directories).
pub(crate) fn remove_tree(path: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(ImageError::io(
                format!("cannot remove {}", path.display()),
                e,
            ))
        }
    };
    if !meta.is_dir() {
        return fs::remove_file(path).ctx(|| format!("cannot remove {}", path.display()));
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            fn open_up(p: &Path) -> io::Result<()> {
                let m = fs::symlink_metadata(p)?;
                if m.is_dir() {
                    fs::set_permissions(p, fs::Permissions::from_mode(0o700))?;
                    for e in fs::read_dir(p)? {
                        open_up(&e?.path())?;
                    }
                }
                Ok(())
            }
            open_up(path)
                .and_then(|_| fs::remove_dir_all(path))
                .ctx(|| format!("cannot remove {}", path.display()))
        }
        Err(e) => Err(ImageError::io(
            format!("cannot remove {}", path.display()),
            e,
        )),
    }
}

/// Parses a manifest, refusing an index where a manifest is expected.
pub(crate) fn parse_manifest(bytes: &[u8], digest: &Digest) -> Result<Manifest, ContentError> {
    match oci::parse_manifest_like(bytes, None, digest)? {
        ManifestKind::Manifest(m) => Ok(m),
        ManifestKind::Index(_) => Err(ContentError::UnsupportedMediaType(format!(
            "{} (an image index where a manifest was expected: {digest})",
            oci::OCI_INDEX
        ))),
    }
}

/// Why staging a blob failed.
#[derive(Debug)]
pub(crate) enum StageError {
    /// Reading the source failed (a truncated archive, a dropped connection).
    Read(io::Error),
    /// Writing to the store failed.
    Write(Box<ImageError>),
    /// The content is not what it claims to be.
    Content(ContentError),
}

impl From<ContentError> for StageError {
    fn from(e: ContentError) -> Self {
        StageError::Content(e)
    }
}

/// Reads a small document with a size limit, checking its digest.
fn read_document(path: &Path, d: &Digest) -> Result<Vec<u8>, StageError> {
    let f = File::open(path).map_err(StageError::Read)?;
    let mut bytes = Vec::new();
    f.take(MAX_DOCUMENT + 1)
        .read_to_end(&mut bytes)
        .map_err(StageError::Read)?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(StageError::Content(ContentError::InvalidJson {
            what: format!("document {d}"),
            message: format!("larger than {MAX_DOCUMENT} bytes"),
        }));
    }
    let actual = Digest::of(&bytes);
    if &actual != d {
        return Err(StageError::Content(ContentError::DigestMismatch {
            expected: d.clone(),
            actual,
        }));
    }
    Ok(bytes)
}

/// New content on its way into the store: blobs written to a private
/// directory under `tmp/`, verified, then moved into `blobs/` and named in
/// the index by [`Staging::commit`]. Dropped without a commit, it leaves the
/// store as it was.
pub(crate) struct Staging<'s> {
    store: &'s ImageStore,
    dir: TempDir,
    blobs: HashMap<Digest, (PathBuf, u64)>,
    counter: u64,
    _gc: FileLock,
}

impl Staging<'_> {
    /// Writes a blob from `reader`. With `expected`, the content must hash
    /// to it (and be `expected_size` long, when given).
    pub(crate) fn write_blob(
        &mut self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<(Digest, u64), StageError> {
        self.counter += 1;
        let path = self.dir.path().join(format!("blob-{}", self.counter));
        let werr = |e: io::Error, p: &Path| {
            StageError::Write(Box::new(ImageError::io(
                format!("cannot write {}", p.display()),
                e,
            )))
        };
        let file = File::create(&path).map_err(|e| werr(e, &path))?;
        let mut w = HashingWriter::new(io::BufWriter::with_capacity(1 << 16, file));
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StageError::Read(e)),
            };
            w.write_all(&buf[..n]).map_err(|e| werr(e, &path))?;
        }
        let (digest, size, bw) = w.finish();
        let file = bw.into_inner().map_err(|e| werr(e.into_error(), &path))?;
        file.sync_all().map_err(|e| werr(e, &path))?;
        if let Some(want) = expected {
            if &digest != want {
                let _ = fs::remove_file(&path);
                return Err(StageError::Content(ContentError::DigestMismatch {
                    expected: want.clone(),
                    actual: digest,
                }));
            }
        }
        if let Some(want) = expected_size {
            if size != want {
                let _ = fs::remove_file(&path);
                return Err(StageError::Content(ContentError::SizeMismatch {
                    digest,
                    expected: want,
                    actual: size,
                }));
            }
        }
        if self.blobs.contains_key(&digest) {
            let _ = fs::remove_file(&path);
        } else {
            self.blobs.insert(digest.clone(), (path, size));
        }
        Ok((digest, size))
    }

    /// Writes a blob from memory.
    pub(crate) fn write_bytes(&mut self, bytes: &[u8]) -> Result<Digest, StageError> {
        self.write_blob(&mut &bytes[..], None, None).map(|(d, _)| d)
    }

    /// Whether the blob is staged or already in the store.
    pub(crate) fn contains(&self, d: &Digest) -> bool {
        self.blobs.contains_key(d) || self.store.has_blob(d)
    }

    /// Where a staged or stored blob is, and its size.
    pub(crate) fn locate(&self, d: &Digest) -> Result<(PathBuf, u64), StageError> {
        if let Some((p, size)) = self.blobs.get(d) {
            return Ok((p.clone(), *size));
        }
        let p = self.store.blob_path(d);
        match fs::metadata(&p) {
            Ok(m) => Ok((p, m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StageError::Content(ContentError::Missing(d.clone())))
            }
            Err(e) => Err(StageError::Write(Box::new(ImageError::io(
                format!("cannot read {}", p.display()),
                e,
            )))),
        }
    }

    /// Reads a small staged or stored document, checking its digest.
    pub(crate) fn read_document(&self, d: &Digest) -> Result<Vec<u8>, StageError> {
        let (path, _) = self.locate(d)?;
        read_document(&path, d)
    }

    /// Checks that the manifest `digest` and everything it references is
    /// present with the right sizes, that the layers are unpackable, and
    /// that each new layer uncompresses to its config's diff id and has no
    /// entry that would climb out of the root filesystem.
    pub(crate) fn verify_image(&self, digest: &Digest) -> Result<Manifest, StageError> {
        let manifest = parse_manifest(&self.read_document(digest)?, digest)?;
        oci::check_layer_media_types(&manifest)?;
        let check_size = |d: &oci::Descriptor| -> Result<(), StageError> {
            let (_, size) = self.locate(&d.digest)?;
            if size != d.size {
                return Err(StageError::Content(ContentError::SizeMismatch {
                    digest: d.digest.clone(),
                    expected: d.size,
                    actual: size,
                }));
            }
            Ok(())
        };
        check_size(&manifest.config)?;
        let config = oci::parse_config(
            &self.read_document(&manifest.config.digest)?,
            &manifest.config.digest,
        )?;
        let diff_ids = config.rootfs.unwrap_or_default().diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(StageError::Content(ContentError::LayerCount {
                manifest: digest.clone(),
                layers: manifest.layers.len(),
                diff_ids: diff_ids.len(),
            }));
        }
        for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            check_size(layer)?;
            // Blobs already in the store were checked when they came in.
            if let Some((path, _)) = self.blobs.get(&layer.digest) {
                let actual = crate::unpack::check_layer(path, layer.digest.as_str()).map_err(
                    |e| match e {
                        crate::unpack::UnpackError::Io { error, .. } => StageError::Read(error),
                        crate::unpack::UnpackError::Content(c) => StageError::Content(c),
                        unsafe_entry => StageError::Content(ContentError::UnsafeLayer {
                            layer: layer.digest.clone(),
                            reason: match unsafe_entry {
                                crate::unpack::UnpackError::PathTraversal { path, .. } => format!(
                                    "entry {path:?} climbs out of the root filesystem (path traversal)"
                                ),
                                crate::unpack::UnpackError::BadHardLink {
                                    path, target, reason, ..
                                } => format!("hard link {path:?} -> {target:?}: {reason}"),
                                other => other.to_string(),
                            },
                        }),
                    },
                )?;
                if &actual != diff_id {
                    return Err(StageError::Content(ContentError::DiffIdMismatch {
                        layer: layer.digest.clone(),
                        expected: diff_id.clone(),
                        actual,
                    }));
                }
            }
        }
        Ok(manifest)
    }

    /// Moves the blobs of `images` (manifest digest and names; a verified
    /// manifest each) into the store and points the names at them. An image
    /// without names is kept under its digest.
    pub(crate) fn commit(
        self,
        images: &[(Digest, Vec<Reference>)],
    ) -> Result<Vec<Image>, ImageError> {
        let mut needed = BTreeSet::new();
        for (d, _) in images {
            let bytes = self.read_document(d).map_err(|e| stage_to_image(e, d))?;
            let m = parse_manifest(&bytes, d).map_err(|cause| ImageError::Corrupt { cause })?;
            needed.insert(d.clone());
            needed.insert(m.config.digest.clone());
            needed.extend(m.layers.iter().map(|l| l.digest.clone()));
        }
        for d in &needed {
            if self.store.has_blob(d) {
                continue;
            }
            let Some((src, _)) = self.blobs.get(d) else {
                return Err(ImageError::Corrupt {
                    cause: ContentError::Missing(d.clone()),
                });
            };
            let dst = self.store.blob_path(d);
            fs::rename(src, &dst).ctx(|| format!("cannot move a blob into {}", dst.display()))?;
        }
        let blobs = self.store.root.join("blobs/sha256");
        File::open(&blobs)
            .and_then(|f| f.sync_all())
            .ctx(|| format!("cannot sync {}", blobs.display()))?;

        let _refs = self.store.lock("refs.lock", true)?;
        let mut index = self.store.read_index()?;
        for (d, names) in images {
            if names.is_empty() {
                if !index.references.values().any(|v| v == d) {
                    index.references.insert(d.to_string(), d.clone());
                }
                continue;
            }
            index.references.remove(d.as_str());
            for n in names {
                index.references.insert(n.to_string(), d.clone());
            }
        }
        self.store.write_index(&index)?;
        images
            .iter()
            .map(|(d, _)| self.store.load_image(d, &index))
            .collect()
    }
}

fn stage_to_image(e: StageError, d: &Digest) -> ImageError {
    match e {
        StageError::Read(e) => ImageError::io(format!("cannot read blob {d}"), e),
        StageError::Write(e) => *e,
        StageError::Content(cause) => ImageError::Corrupt { cause },
    }
}
