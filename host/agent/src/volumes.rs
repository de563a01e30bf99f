//! A pod's volumes on the node, set up the way kubelet does.
//!
//! [`Volumes`] owns one directory per pod (e.g. `POD_DIR/volumes`) holding a
//! directory per volume:
//!
//! - `emptyDir`: a `0777` directory; `medium: Memory` mounts a tmpfs sized
//!   like kubelet's (the `sizeLimit`, bounded by the pod's memory limit or the
//!   node's allocatable memory).
//! - `hostPath`: no directory here; the `type` is checked (or the path made)
//!   with kubelet's rules and messages. An untyped missing path is made a
//!   directory, as the container runtime would.
//! - `configMap`, `secret`, `downwardAPI`, `projected`: files written as
//!   kubelet's AtomicWriter does — a timestamped `..YYYY_MM_DD_HH_MM_SS.N`
//!   directory with the payload, a `..data` symlink to it swapped with
//!   `rename(2)`, and each top-level entry a symlink through `..data` — so a
//!   reader sees the old set of files or the new one, never a mix. Secrets
//!   live on a tmpfs so they never reach the disk. [`Volumes::refresh`]
//!   rewrites them when their source changed.
//!
//! [`Volumes::mounts`] turns a container's `volumeMounts` into bind mounts.
//! A `subPath` is resolved safely: `..` and absolute paths are refused, the
//! resolved path must stay inside the volume, and it is opened component by
//! component without following symlinks and bind-mounted from that open file
//! (under `.subpaths/`) so that a container swapping a directory for a
//! symlink cannot redirect the mount (CVE-2017-1002101).
//!
//! ```no_run
//! # async fn demo(pod: &serde_json::Value, node: &trellis_agent::env::NodeInfo,
//! #     sources: &dyn trellis_agent::env::Sources) -> Result<(), trellis_agent::volumes::VolumeError> {
//! use trellis_agent::volumes::Volumes;
//! let mut volumes = Volumes::new("/var/lib/trellis/pods/uid/volumes");
//! volumes.prepare(pod, node, sources).await?;
//! let mounts = volumes.mounts(&pod["spec"]["containers"][0], pod, &[])?;
//! // ... later, periodically:
//! let changed = volumes.refresh(pod, node, sources).await?;
//! // ... when the pod is gone:
//! volumes.cleanup()?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::fs;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::mount::{MountFlags, UnmountFlags};
use serde_json::Value;
use trellis_image::is_mount_point;
use trellis_types::quantity::Quantity;

use crate::env::{
    array, expand_with, field_value, find_container, namespace_of, optional, quantity_text,
    resource_value, EnvError, Lookup, NodeInfo, Sources,
};

/// The mode of configMap, secret, downwardAPI and projected files when the
/// spec gives none (`0644`).
pub const DEFAULT_MODE: u32 = 0o644;

/// Where subPath bind mounts are kept, under the pod's volume directory.
/// Volume names are DNS labels, so none can clash with it.
const SUBPATHS: &str = ".subpaths";
const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One bind mount for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The absolute path inside the container.
    pub destination: String,
    /// The path on the node to bind.
    pub source: PathBuf,
    /// Mount it read-only (`readOnly`, and always for configMap, secret,
    /// downwardAPI and projected volumes).
    pub read_only: bool,
    /// The mount's propagation (`mountPropagation`).
    pub propagation: Propagation,
}

/// A volume mount's propagation, as OCI `rprivate`/`rslave`/`rshared`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// `None` (default): `rprivate`.
    #[default]
    Private,
    /// `HostToContainer`: `rslave`.
    HostToContainer,
    /// `Bidirectional`: `rshared` (privileged containers only).
    Bidirectional,
}

impl Propagation {
    /// The OCI mount option for this propagation.
    pub fn oci_option(self) -> &'static str {
        match self {
            Self::Private => "rprivate",
            Self::HostToContainer => "rslave",
            Self::Bidirectional => "rshared",
        }
    }
}

/// Why a pod's volumes cannot be set up, mounted or removed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Setting up one volume failed; Display is kubelet's `FailedMount` event.
    #[error("MountVolume.SetUp failed for volume {volume:?} : {cause}")]
    SetUp {
        /// The volume's name.
        volume: String,
        /// What went wrong (part of the message, as in kubelet's event).
        cause: SetUpError,
    },
    /// A `volumeMounts` entry names a volume the pod does not declare.
    #[error("cannot find volume {volume:?} to mount into container {container:?}")]
    UnknownVolume {
        /// The volume named by the mount.
        volume: String,
        /// The container.
        container: String,
    },
    /// A volume is mounted before [`Volumes::prepare`] set it up.
    #[error("volume {volume:?} of container {container:?} is not set up yet")]
    NotPrepared {
        /// The volume.
        volume: String,
        /// The container.
        container: String,
    },
    /// A `subPath` is absolute.
    #[error("error SubPath `{0}` must not be an absolute path")]
    SubPathAbsolute(String),
    /// A `subPath` has a `..` component.
    #[error("unable to provision SubPath `{0}`: must not contain '..'")]
    SubPathBacksteps(String),
    /// A `subPathExpr` references variables the container does not have.
    #[error("missing value for {0}")]
    SubPathExprMissing(String),
    /// The missing directory of a `subPath` could not be made.
    #[error(
        "failed to create subPath directory for volumeMount {mount:?} of container {container:?}"
    )]
    SubPathCreate {
        /// The mount's volume name.
        mount: String,
        /// The container.
        container: String,
        /// Why (not shown to the user, as kubelet hides host details).
        #[source]
        source: io::Error,
    },
    /// A `subPath` resolves outside its volume, or could not be bound.
    #[error("failed to prepare subPath for volumeMount {mount:?} of container {container:?}")]
    SubPathPrepare {
        /// The mount's volume name.
        mount: String,
        /// The container.
        container: String,
        /// Why (not shown to the user, as kubelet hides host details).
        #[source]
        source: io::Error,
    },
    /// `Bidirectional` propagation asked by a container that is not privileged.
    #[error("volumeMount {mount:?} of container {container:?}: Bidirectional mount propagation is available only to privileged containers")]
    BidirectionalNotPrivileged {
        /// The mount's volume name.
        mount: String,
        /// The container.
        container: String,
    },
    /// A file system operation on the pod's volume directory failed.
    #[error("{op} {path}: {error}")]
    Io {
        /// What was done (`mkdir`, `unmount`, `remove`, ...).
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The failure (part of the message).
        error: io::Error,
    },
    /// Mounts are still present under the pod's volume directory after unmounting.
    #[error("cannot remove {0}: mounts remain under it after unmounting")]
    MountsRemain(PathBuf),
}

/// Why one volume could not be set up (the part after kubelet's
/// `MountVolume.SetUp failed for volume "x" : `).
#[derive(Debug, thiserror::Error)]
pub enum SetUpError {
    /// A source object or field could not be read (`configmap "x" not found`, ...).
    #[error(transparent)]
    Lookup(#[from] EnvError),
    /// An `items` entry names a key the ConfigMap lacks.
    #[error("configmap references non-existent config key: {0}")]
    ConfigMapKey(String),
    /// An `items` entry names a key the Secret lacks.
    #[error("references non-existent secret key: {0}")]
    SecretKey(String),
    /// A hostPath is not of its declared `type`.
    #[error("hostPath type check failed: {path} {what}")]
    HostPathType {
        /// The host path.
        path: String,
        /// `does not exist`, `is not a directory`, `is not a file`,
        /// `is not a socket file`, `is not a character device`, `is not a block device`.
        what: &'static str,
    },
    /// A hostPath `type` Kubernetes does not define.
    #[error("{0} is an invalid volume type")]
    InvalidHostPathType(String),
    /// A hostPath `path` that is not absolute or has `..`.
    #[error("invalid hostPath path {0:?}: must be an absolute path without '..'")]
    InvalidHostPath(String),
    /// A payload path (`items[].path`) that is not allowed.
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// A volume name that cannot be a directory name (not a DNS label).
    #[error("invalid volume name {0:?}")]
    InvalidName(String),
    /// A volume source this node does not implement.
    #[error("volume type {0} is not supported by this node")]
    Unsupported(String),
    /// An `emptyDir.sizeLimit` that does not parse.
    #[error("invalid sizeLimit {value:?}: {error}")]
    SizeLimit {
        /// The value given.
        value: String,
        /// Why it does not parse.
        error: trellis_types::quantity::QuantityError,
    },
    /// A file system operation failed.
    #[error("{op} {path}: {error}")]
    Io {
        /// What was done (`mkdir`, `open`, `stat`, `mount tmpfs on`, ...).
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The failure (part of the message).
        error: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SetUpError + 'a {
    move |error| SetUpError::Io {
        op,
        path: path.to_path_buf(),
        error,
    }
}

/// One file of a volume's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileProjection {
    data: Vec<u8>,
    mode: u32,
}

/// A volume's files by clean relative path.
type Payload = BTreeMap<String, FileProjection>;

/// The volumes of one pod, under one directory.
#[derive(Debug)]
pub struct Volumes {
    root: PathBuf,
    /// The payload last written (or found on disk) per atomic volume, so
    /// that a refresh without changes touches no file.
    written: HashMap<String, Payload>,
}

impl Volumes {
    /// The volumes of a pod, kept under `root` (made on [`Volumes::prepare`]).
    /// A new `Volumes` over an existing directory (after an agent restart)
    /// adopts what is there: emptyDir contents are kept and mounts reused.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            written: HashMap::new(),
        }
    }

    /// The directory holding this pod's volumes.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Set up every volume of `pod` (idempotent: existing directories,
    /// tmpfs mounts and files are kept or brought up to date). Stops at the
    /// first volume that fails.
    pub async fn prepare(
        &mut self,
        pod: &Value,
        node: &NodeInfo,
        sources: &dyn Sources,
    ) -> Result<(), VolumeError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&self.root)
            .map_err(|error| VolumeError::Io {
                op: "mkdir",
                path: self.root.clone(),
                error,
            })?;
        let mut lookup = Lookup::new(sources, namespace_of(pod));
        for vol in array(&pod["spec"]["volumes"]) {
            let name = vol["name"].as_str().unwrap_or("");
            self.set_up(vol, pod, node, &mut lookup)
                .await
                .map_err(|cause| VolumeError::SetUp {
                    volume: name.into(),
                    cause,
                })?;
        }
        Ok(())
    }

    /// Rewrite the configMap, secret, downwardAPI and projected volumes whose
    /// content changed since they were written (files follow their source);
    /// `true` if any did. Without changes no file is touched.
    pub async fn refresh(
        &mut self,
        pod: &Value,
        node: &NodeInfo,
        sources: &dyn Sources,
    ) -> Result<bool, VolumeError> {
        let mut lookup = Lookup::new(sources, namespace_of(pod));
        let mut changed = false;
        for vol in array(&pod["spec"]["volumes"]) {
            let name = vol["name"].as_str().unwrap_or("");
            let wrap = |cause| VolumeError::SetUp {
                volume: name.into(),
                cause,
            };
            if !matches!(
                kind_of(vol),
                Kind::ConfigMap(_) | Kind::Secret(_) | Kind::DownwardApi(_) | Kind::Projected(_)
            ) {
                continue;
            }
            let dir = self.volume_dir(name).map_err(wrap)?;
            if !dir.join(DATA_DIR).exists() {
                self.set_up(vol, pod, node, &mut lookup)
                    .await
                    .map_err(wrap)?;
                changed = true;
                continue;
            }
            let payload = self
                .payload(vol, pod, node, &mut lookup)
                .await
                .map_err(wrap)?;
            changed |= self
                .write_atomic(name, &dir, payload, fs_group_of(pod))
                .map_err(wrap)?;
        }
        Ok(changed)
    }

    /// The bind mounts for `container`'s `volumeMounts`, in order. `env` is
    /// the container's environment for `subPathExpr` ([`crate::env::pod_env`]
    /// for kubelet's exact behaviour). A `subPath` is bind-mounted under
    /// `.subpaths/<container>/<index>` (replacing an earlier one), and a
    /// missing `subPath` directory is made with the volume's mode.
    pub fn mounts(
        &self,
        container: &Value,
        pod: &Value,
        env: &[(String, String)],
    ) -> Result<Vec<Mount>, VolumeError> {
        let cname = container["name"].as_str().unwrap_or("");
        let volumes: HashMap<&str, &Value> = array(&pod["spec"]["volumes"])
            .filter_map(|v| v["name"].as_str().map(|n| (n, v)))
            .collect();
        let privileged = container["securityContext"]["privileged"]
            .as_bool()
            .unwrap_or(false);
        let mut mounts = Vec::new();
        for (index, m) in array(&container["volumeMounts"]).enumerate() {
            let vname = m["name"].as_str().unwrap_or("");
            let unknown = || VolumeError::UnknownVolume {
                volume: vname.into(),
                container: cname.into(),
            };
            let vol = volumes.get(vname).ok_or_else(unknown)?;
            let (base, forced_ro) = match kind_of(vol) {
                Kind::HostPath(h) => (PathBuf::from(h["path"].as_str().unwrap_or("")), false),
                Kind::EmptyDir(_) => (self.volume_dir(vname).map_err(|_| unknown())?, false),
                Kind::Unsupported(_) => return Err(unknown()),
                _ => (self.volume_dir(vname).map_err(|_| unknown())?, true),
            };
            if !base.exists() {
                return Err(VolumeError::NotPrepared {
                    volume: vname.into(),
                    container: cname.into(),
                });
            }
            let propagation = match m["mountPropagation"].as_str() {
                Some("HostToContainer") => Propagation::HostToContainer,
                Some("Bidirectional") if !privileged => {
                    return Err(VolumeError::BidirectionalNotPrivileged {
                        mount: vname.into(),
                        container: cname.into(),
                    })
                }
                Some("Bidirectional") => Propagation::Bidirectional,
                _ => Propagation::Private,
            };
            let sub = match m["subPathExpr"].as_str().filter(|s| !s.is_empty()) {
                Some(expr) => expand_sub_path(expr, env)?,
                None => m["subPath"].as_str().unwrap_or("").to_string(),
            };
            let source = if sub.is_empty() {
                base
            } else {
                self.bind_sub_path(&base, &sub, cname, index, vname)?
            };
            let path = m["mountPath"].as_str().unwrap_or("");
            let destination = if path.starts_with('/') {
                path.to_string()
            } else {
                format!("/{path}")
            };
            mounts.push(Mount {
                destination,
                source,
                read_only: m["readOnly"].as_bool().unwrap_or(false) || forced_ro,
                propagation,
            });
        }
        Ok(mounts)
    }

    /// Unmount everything under the pod's volume directory (tmpfs volumes,
    /// subPath binds) and remove it. Idempotent.
    pub fn cleanup(self) -> Result<(), VolumeError> {
        cleanup_dir(&self.root)
    }

    /// The directory of volume `name`, refusing names that are not plain
    /// directory names (the API allows only DNS labels).
    fn volume_dir(&self, name: &str) -> Result<PathBuf, SetUpError> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(SetUpError::InvalidName(name.into()));
        }
        Ok(self.root.join(name))
    }

    async fn set_up(
        &mut self,
        vol: &Value,
        pod: &Value,
        node: &NodeInfo,
        lookup: &mut Lookup<'_>,
    ) -> Result<(), SetUpError> {
        let name = vol["name"].as_str().unwrap_or("");
        let fs_group = fs_group_of(pod);
        match kind_of(vol) {
            Kind::HostPath(h) => return set_up_host_path(h),
            Kind::Unsupported(what) => return Err(SetUpError::Unsupported(what)),
            _ => {}
        }
        let dir = self.volume_dir(name)?;
        match kind_of(vol) {
            Kind::EmptyDir(e) => {
                let fresh = !dir.exists();
                make_dir(&dir)?;
                match e["medium"].as_str().unwrap_or("") {
                    "" => {}
                    "Memory" => {
                        let limit = match quantity_text(&e["sizeLimit"]) {
                            None => None,
                            Some(value) => Some(
                                Quantity::parse(&value)
                                    .map_err(|error| SetUpError::SizeLimit { value, error })?
                                    .value(),
                            ),
                        };
                        mount_tmpfs(&dir, memory_size(pod, node, limit))?;
                    }
                    other => {
                        return Err(SetUpError::Unsupported(format!("emptyDir medium {other}")))
                    }
                }
                set_mode(&dir, 0o777)?;
                if let (Some(gid), true) = (fs_group, fresh) {
                    own(&dir, gid, 0o2770)?;
                }
                Ok(())
            }
            kind => {
                make_dir(&dir)?;
                if matches!(kind, Kind::Secret(_)) {
                    mount_tmpfs(&dir, memory_size(pod, node, None))?;
                }
                set_mode(&dir, 0o777)?;
                if let Some(gid) = fs_group {
                    own(&dir, gid, 0o2550)?;
                }
                let payload = self.payload(vol, pod, node, lookup).await?;
                self.write_atomic(name, &dir, payload, fs_group)?;
                Ok(())
            }
        }
    }

    /// The files an atomic volume should hold now.
    async fn payload(
        &self,
        vol: &Value,
        pod: &Value,
        node: &NodeInfo,
        lookup: &mut Lookup<'_>,
    ) -> Result<Payload, SetUpError> {
        let fs_group = fs_group_of(pod).is_some();
        let mut payload = match kind_of(vol) {
            Kind::ConfigMap(src) => {
                config_map_payload(src, mode_of(&src["defaultMode"]), lookup).await?
            }
            Kind::Secret(src) => {
                let src = rename_secret_name(src);
                secret_payload(&src, mode_of(&src["defaultMode"]), lookup).await?
            }
            Kind::DownwardApi(src) => {
                downward_payload(src, mode_of(&src["defaultMode"]), pod, node)?
            }
            Kind::Projected(src) => {
                let default = mode_of(&src["defaultMode"]);
                let mut payload = Payload::new();
                for source in array(&src["sources"]) {
                    let part = if let Some(s) = source.get("configMap").filter(|s| s.is_object()) {
                        config_map_payload(s, default, lookup).await?
                    } else if let Some(s) = source.get("secret").filter(|s| s.is_object()) {
                        secret_payload(s, default, lookup).await?
                    } else if let Some(s) = source.get("downwardAPI").filter(|s| s.is_object()) {
                        downward_payload(s, default, pod, node)?
                    } else {
                        let what = source
                            .as_object()
                            .and_then(|o| o.keys().next().cloned())
                            .unwrap_or_default();
                        return Err(SetUpError::Unsupported(format!("projected {what}")));
                    };
                    payload.extend(part);
                }
                payload
            }
            _ => Payload::new(),
        };
        if fs_group {
            // kubelet's SetVolumeOwnership on read-only volumes: g+r.
            for f in payload.values_mut() {
                f.mode |= 0o440;
            }
        }
        clean_payload(payload)
    }

    /// Write `payload` into `dir` as kubelet's AtomicWriter does; `false`
    /// (and nothing touched) if the volume already holds exactly it.
    fn write_atomic(
        &mut self,
        name: &str,
        dir: &Path,
        payload: Payload,
        gid: Option<u32>,
    ) -> Result<bool, SetUpError> {
        let data_link = dir.join(DATA_DIR);
        let current_ts = fs::read_link(&data_link).ok();
        if current_ts.is_some() {
            if self.written.get(name) == Some(&payload) {
                return Ok(false);
            }
            if read_payload(&data_link).as_ref() == Some(&payload) {
                // An earlier write may have stopped before the visible links.
                create_visible_links(dir, &payload)?;
                self.written.insert(name.to_string(), payload);
                return Ok(false);
            }
        }
        // A fresh timestamped directory with the whole payload.
        let ts_name = make_ts_dir(dir)?;
        let ts_dir = dir.join(&ts_name);
        let write = || -> Result<(), SetUpError> {
            set_mode(&ts_dir, 0o755)?;
            if let Some(gid) = gid {
                own(&ts_dir, gid, 0o2550)?;
            }
            for (path, file) in &payload {
                let full = ts_dir.join(path);
                if let Some(parent) = full.parent() {
                    if parent != ts_dir {
                        fs::DirBuilder::new()
                            .recursive(true)
                            .mode(0o755)
                            .create(parent)
                            .map_err(io_err("mkdir", parent))?;
                    }
                }
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&full)
                    .map_err(io_err("open", &full))?;
                f.write_all(&file.data).map_err(io_err("write", &full))?;
                set_mode(&full, file.mode)?;
                if let Some(gid) = gid {
                    std::os::unix::fs::chown(&full, None, Some(gid))
                        .map_err(io_err("chown", &full))?;
                }
            }
            // Swap `..data` to it in one rename.
            let tmp_link = dir.join(DATA_DIR_TMP);
            let _ = fs::remove_file(&tmp_link);
            std::os::unix::fs::symlink(&ts_name, &tmp_link)
                .map_err(io_err("symlink", &tmp_link))?;
            fs::rename(&tmp_link, &data_link).map_err(io_err("rename", &tmp_link))?;
            Ok(())
        };
        if let Err(e) = write() {
            let _ = fs::remove_dir_all(&ts_dir);
            return Err(e);
        }

        // User-visible entries through `..data`; entries gone from the
        // payload are removed, then older timestamped directories.
        let top = create_visible_links(dir, &payload)?;
        for entry in fs::read_dir(dir).map_err(io_err("read", dir))? {
            let entry = entry.map_err(io_err("read", dir))?;
            let fname = entry.file_name();
            let fname = fname.to_string_lossy();
            let path = entry.path();
            if fname.starts_with("..") {
                let is_ts = fname != DATA_DIR && fname != DATA_DIR_TMP && *fname != *ts_name;
                if is_ts && path.is_dir() && !path.is_symlink() {
                    fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
                }
            } else if !top.contains(&*fname) {
                let through_data = fs::read_link(&path)
                    .map(|t| t.starts_with(DATA_DIR))
                    .unwrap_or(false);
                if through_data {
                    fs::remove_file(&path).map_err(io_err("remove", &path))?;
                }
            }
        }
        tracing::debug!(volume = name, dir = %dir.display(), files = payload.len(), "volume files written");
        self.written.insert(name.to_string(), payload);
        Ok(true)
    }

    /// Resolve `sub` inside volume `base` safely and bind it to this
    /// mount's place under `.subpaths`.
    fn bind_sub_path(
        &self,
        base: &Path,
        sub: &str,
        container: &str,
        index: usize,
        mount: &str,
    ) -> Result<PathBuf, VolumeError> {
        if Path::new(sub).is_absolute() {
            return Err(VolumeError::SubPathAbsolute(sub.into()));
        }
        if Path::new(sub)
            .components()
            .any(|c| c == Component::ParentDir)
        {
            return Err(VolumeError::SubPathBacksteps(sub.into()));
        }
        if container.is_empty() || container.contains('/') || container.starts_with('.') {
            return Err(VolumeError::SubPathPrepare {
                mount: mount.into(),
                container: container.into(),
                source: io::Error::other("invalid container name"),
            });
        }
        let prepare_err = |source| VolumeError::SubPathPrepare {
            mount: mount.into(),
            container: container.into(),
            source,
        };
        let vol = fs::canonicalize(base).map_err(prepare_err)?;
        let full = base.join(sub);
        if !full.exists() {
            let perm = fs::metadata(&vol)
                .map_err(prepare_err)?
                .permissions()
                .mode()
                & 0o7777;
            safe_make_dir(&vol, sub, perm).map_err(|source| {
                tracing::warn!(%source, container, mount, sub, "creating subPath directory failed");
                VolumeError::SubPathCreate {
                    mount: mount.into(),
                    container: container.into(),
                    source,
                }
            })?;
        }
        let bind = || -> io::Result<PathBuf> {
            let resolved = fs::canonicalize(&full)?;
            let rel = resolved.strip_prefix(&vol).map_err(|_| {
                io::Error::other(format!(
                    "subpath {} not within volume path {}",
                    resolved.display(),
                    vol.display()
                ))
            })?;
            let fd = safe_open(&vol, rel)?;
            let is_dir =
                FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) == FileType::Directory;
            let target = self
                .root
                .join(SUBPATHS)
                .join(container)
                .join(index.to_string());
            if let Some(parent) = target.parent() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(parent)?;
            }
            if is_mount_point(&target)? {
                rustix::mount::unmount(&target, UnmountFlags::DETACH)?;
            }
            match fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() == is_dir && !m.is_symlink() => {}
                Ok(m) => {
                    if m.is_dir() {
                        fs::remove_dir(&target)?;
                    } else {
                        fs::remove_file(&target)?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            if fs::symlink_metadata(&target).is_err() {
                if is_dir {
                    fs::create_dir(&target)?;
                } else {
                    fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&target)?;
                }
            }
            let fd_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
            rustix::mount::mount_bind(fd_path.as_str(), &target)?;
            Ok(target)
        };
        bind().map_err(|source| {
            tracing::warn!(%source, container, mount, sub, "preparing subPath failed");
            prepare_err(source)
        })
    }
}

/// Unmount everything under `root` and remove it: [`Volumes::cleanup`] for
/// a pod directory found without its `Volumes` (e.g. after a restart).
/// Idempotent; refuses to remove anything while a mount remains under it.
pub fn cleanup_dir(root: &Path) -> Result<(), VolumeError> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |error| VolumeError::Io { op, path, error }
    };
    let canon = match fs::canonicalize(root) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("resolve", root)(e)),
    };
    // Stacked mounts need several passes; each pass removes at least one.
    for _ in 0..64 {
        let mut under = mounts_under(&canon).map_err(io("read mounts of", &canon))?;
        if under.is_empty() {
            break;
        }
        under.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for m in under {
            match rustix::mount::unmount(&m, UnmountFlags::DETACH) {
                Ok(()) => tracing::debug!(path = %m.display(), "unmounted"),
                Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(io("unmount", &m)(e.into())),
            }
        }
    }
    if !mounts_under(&canon)
        .map_err(io("read mounts of", &canon))?
        .is_empty()
    {
        return Err(VolumeError::MountsRemain(canon));
    }
    match fs::remove_dir_all(&canon) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", &canon)(e)),
    }
}

/// A volume's source, by the field that is set.
enum Kind<'v> {
    EmptyDir(&'v Value),
    HostPath(&'v Value),
    ConfigMap(&'v Value),
    Secret(&'v Value),
    DownwardApi(&'v Value),
    Projected(&'v Value),
    Unsupported(String),
}

fn kind_of(vol: &Value) -> Kind<'_> {
    let Some(obj) = vol.as_object() else {
        return Kind::Unsupported("(not an object)".into());
    };
    for (k, v) in obj {
        if k == "name" || v.is_null() {
            continue;
        }
        return match k.as_str() {
            "emptyDir" => Kind::EmptyDir(v),
            "hostPath" => Kind::HostPath(v),
            "configMap" => Kind::ConfigMap(v),
            "secret" => Kind::Secret(v),
            "downwardAPI" => Kind::DownwardApi(v),
            "projected" => Kind::Projected(v),
            other => Kind::Unsupported(other.to_string()),
        };
    }
    // The API defaults a volume without a source to an emptyDir.
    static NO_OPTIONS: Value = Value::Null;
    Kind::EmptyDir(&NO_OPTIONS)
}

/// The pod's `securityContext.fsGroup`.
fn fs_group_of(pod: &Value) -> Option<u32> {
    pod["spec"]["securityContext"]["fsGroup"]
        .as_u64()
        .and_then(|g| u32::try_from(g).ok())
}

fn mode_of(v: &Value) -> u32 {
    v.as_u64()
        .map(|m| m as u32 & 0o7777)
        .unwrap_or(DEFAULT_MODE)
}

/// A secret volume names its Secret with `secretName`; projections with
/// `name`. Give payload building one shape.
fn rename_secret_name(src: &Value) -> Value {
    let mut s = src.clone();
    if let Some(name) = src["secretName"].as_str() {
        s["name"] = Value::String(name.to_string());
    }
    s
}

async fn config_map_payload(
    src: &Value,
    default_mode: u32,
    lookup: &mut Lookup<'_>,
) -> Result<Payload, SetUpError> {
    let name = src["name"].as_str().unwrap_or("");
    let optional = optional(src);
    let files = match lookup.config_map_files(name).await? {
        Some(files) => files,
        None if optional => BTreeMap::new(),
        None => return Err(EnvError::ConfigMapNotFound { name: name.into() }.into()),
    };
    make_payload(src, default_mode, files, optional, SetUpError::ConfigMapKey)
}

async fn secret_payload(
    src: &Value,
    default_mode: u32,
    lookup: &mut Lookup<'_>,
) -> Result<Payload, SetUpError> {
    let name = src["name"].as_str().unwrap_or("");
    let optional = optional(src);
    let files = match lookup.secret(name).await? {
        Some(files) => files,
        None if optional => BTreeMap::new(),
        None => return Err(EnvError::SecretNotFound { name: name.into() }.into()),
    };
    make_payload(src, default_mode, files, optional, SetUpError::SecretKey)
}

/// kubelet's `MakePayload`: every key, or the `items` mapping (missing keys
/// skipped when optional).
fn make_payload(
    src: &Value,
    default_mode: u32,
    files: BTreeMap<String, Vec<u8>>,
    optional: bool,
    missing: fn(String) -> SetUpError,
) -> Result<Payload, SetUpError> {
    let items: Vec<&Value> = array(&src["items"]).collect();
    if items.is_empty() {
        return Ok(files
            .into_iter()
            .map(|(k, data)| {
                (
                    k,
                    FileProjection {
                        data,
                        mode: default_mode,
                    },
                )
            })
            .collect());
    }
    let mut payload = Payload::new();
    for item in items {
        let key = item["key"].as_str().unwrap_or("");
        let data = match files.get(key) {
            Some(d) => d.clone(),
            None if optional => continue,
            None => return Err(missing(key.into())),
        };
        let mode = item["mode"]
            .as_u64()
            .map(|m| m as u32 & 0o7777)
            .unwrap_or(default_mode);
        payload.insert(
            item["path"].as_str().unwrap_or("").to_string(),
            FileProjection { data, mode },
        );
    }
    Ok(payload)
}

fn downward_payload(
    src: &Value,
    default_mode: u32,
    pod: &Value,
    node: &NodeInfo,
) -> Result<Payload, SetUpError> {
    let mut payload = Payload::new();
    for item in array(&src["items"]) {
        let data = if let Some(f) = item.get("fieldRef").filter(|f| f.is_object()) {
            field_value(pod, node, f["fieldPath"].as_str().unwrap_or(""), false)?
        } else if let Some(r) = item.get("resourceFieldRef").filter(|r| r.is_object()) {
            let container = find_container(pod, r["containerName"].as_str().unwrap_or(""))?;
            resource_value(pod, container, node, r)?
        } else {
            String::new()
        };
        let mode = item["mode"]
            .as_u64()
            .map(|m| m as u32 & 0o7777)
            .unwrap_or(default_mode);
        payload.insert(
            item["path"].as_str().unwrap_or("").to_string(),
            FileProjection {
                data: data.into_bytes(),
                mode,
            },
        );
    }
    Ok(payload)
}

/// kubelet's payload path rules: relative, no `..`, cleaned, names of at
/// most 255 bytes, paths of at most 4096.
fn clean_payload(payload: Payload) -> Result<Payload, SetUpError> {
    let mut clean = Payload::new();
    for (path, file) in payload {
        if path.is_empty() {
            return Err(SetUpError::InvalidPath(format!(
                "must not be empty: {path:?}"
            )));
        }
        if path.starts_with('/') {
            return Err(SetUpError::InvalidPath(format!(
                "must be relative path: {path}"
            )));
        }
        if path.len() > 4096 {
            return Err(SetUpError::InvalidPath(
                "must be less than or equal to 4096 characters".into(),
            ));
        }
        let parts: Vec<&str> = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.iter().any(|p| *p == "..") {
            return Err(SetUpError::InvalidPath(format!(
                "must not contain '..': {path}"
            )));
        }
        if parts.iter().any(|p| p.len() > 255) {
            return Err(SetUpError::InvalidPath(
                "filenames must be less than or equal to 255 characters".into(),
            ));
        }
        match parts.first() {
            None => {
                return Err(SetUpError::InvalidPath(format!(
                    "must not be empty: {path:?}"
                )))
            }
            Some(first) if first.starts_with("..") => {
                return Err(SetUpError::InvalidPath(format!(
                    "must not start with '..': {path}"
                )))
            }
            _ => {}
        }
        clean.insert(parts.join("/"), file);
    }
    Ok(clean)
}

/// Make the missing top-level `entry -> ..data/entry` links of `payload`;
/// the top-level entries.
fn create_visible_links<'p>(
    dir: &Path,
    payload: &'p Payload,
) -> Result<BTreeSet<&'p str>, SetUpError> {
    let top: BTreeSet<&str> = payload
        .keys()
        .map(|p| p.split('/').next().unwrap_or(p))
        .collect();
    for entry in &top {
        let visible = dir.join(entry);
        if fs::symlink_metadata(&visible).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_DIR).join(entry), &visible)
                .map_err(io_err("symlink", &visible))?;
        }
    }
    Ok(top)
}

/// The files `..data` points at now, or `None` if unreadable.
fn read_payload(data_link: &Path) -> Option<Payload> {
    fn walk(dir: &Path, prefix: &str, out: &mut Payload) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let meta = fs::symlink_metadata(entry.path())?;
            if meta.is_dir() {
                walk(&entry.path(), &rel, out)?;
            } else if meta.is_file() {
                out.insert(
                    rel,
                    FileProjection {
                        data: fs::read(entry.path())?,
                        mode: meta.permissions().mode() & 0o7777,
                    },
                );
            }
        }
        Ok(())
    }
    let mut out = Payload::new();
    walk(data_link, "", &mut out).ok()?;
    Some(out)
}

/// Make `..YYYY_MM_DD_HH_MM_SS.N` in `dir` (a new name each call).
fn make_ts_dir(dir: &Path) -> Result<String, SetUpError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let stamp = utc_stamp(now.as_secs());
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let suffix = (now.subsec_nanos() as u64 ^ (std::process::id() as u64) << 32)
            .wrapping_mul(6364136223846793005)
            .wrapping_add(n)
            % 10_000_000_000;
        let name = format!("..{stamp}.{suffix}");
        match fs::DirBuilder::new().mode(0o700).create(dir.join(&name)) {
            Ok(()) => return Ok(name),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("mkdir", &dir.join(&name))(e)),
        }
    }
    Err(io_err("mkdir", dir)(io::Error::other(
        "no free timestamped directory name",
    )))
}

/// `YYYY_MM_DD_HH_MM_SS` in UTC for Unix time `secs`.
fn utc_stamp(secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = trellis_types::time::utc_parts(secs as i64);
    format!("{y:04}_{m:02}_{d:02}_{hh:02}_{mm:02}_{ss:02}")
}

fn set_up_host_path(h: &Value) -> Result<(), SetUpError> {
    let path_str = h["path"].as_str().unwrap_or("");
    let path = Path::new(path_str);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(SetUpError::InvalidHostPath(path_str.into()));
    }
    let fail = |what| {
        Err(SetUpError::HostPathType {
            path: path_str.into(),
            what,
        })
    };
    let meta = fs::metadata(path);
    let ftype = meta.as_ref().ok().map(|m| m.file_type());
    let stat = || -> Result<fs::FileType, SetUpError> {
        match &meta {
            Ok(m) => Ok(m.file_type()),
            Err(e) => Err(SetUpError::Io {
                op: "stat",
                path: path.into(),
                error: io::Error::new(e.kind(), e.to_string()),
            }),
        }
    };
    match h["type"].as_str().unwrap_or("") {
        "" => {
            // No check; like the container runtime, make a missing path a directory.
            if ftype.is_none() && fs::symlink_metadata(path).is_err() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(path)
                    .map_err(io_err("mkdir", path))?;
            }
            Ok(())
        }
        "DirectoryOrCreate" if ftype.is_none() => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(io_err("mkdir", path)),
        "DirectoryOrCreate" | "Directory" => match ftype {
            Some(t) if t.is_dir() => Ok(()),
            _ => fail("is not a directory"),
        },
        "FileOrCreate" if ftype.is_none() => fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map(drop)
            .map_err(io_err("open", path)),
        "FileOrCreate" | "File" => match ftype {
            None => fail("does not exist"),
            Some(t) if t.is_file() => Ok(()),
            Some(_) => fail("is not a file"),
        },
        "Socket" if stat()?.is_socket() => Ok(()),
        "Socket" => fail("is not a socket file"),
        "CharDevice" if stat()?.is_char_device() => Ok(()),
        "CharDevice" => fail("is not a character device"),
        "BlockDevice" if stat()?.is_block_device() => Ok(()),
        "BlockDevice" => fail("is not a block device"),
        other => Err(SetUpError::InvalidHostPathType(other.into())),
    }
}

fn make_dir(dir: &Path) -> Result<(), SetUpError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o777)
        .create(dir)
        .map_err(io_err("mkdir", dir))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), SetUpError> {
    let current = fs::metadata(path)
        .map_err(io_err("stat", path))?
        .permissions()
        .mode();
    // Keep the setgid and sticky bits (fsGroup, tmpfs roots).
    let want = (current & 0o3000) | mode;
    if current & 0o7777 != want {
        fs::set_permissions(path, fs::Permissions::from_mode(want))
            .map_err(io_err("chmod", path))?;
    }
    Ok(())
}

/// kubelet's SetVolumeOwnership for one directory: group `gid`, mode bits added.
fn own(path: &Path, gid: u32, add: u32) -> Result<(), SetUpError> {
    std::os::unix::fs::chown(path, None, Some(gid)).map_err(io_err("chown", path))?;
    let current = fs::metadata(path)
        .map_err(io_err("stat", path))?
        .permissions()
        .mode();
    fs::set_permissions(path, fs::Permissions::from_mode((current & 0o7777) | add))
        .map_err(io_err("chmod", path))
}

/// The size of a memory-backed volume, as kubelet computes it: the node's
/// allocatable memory, bounded by the pod's memory limit, bounded by the
/// volume's `sizeLimit`. `None`: no bound known (the kernel's default).
fn memory_size(pod: &Value, node: &NodeInfo, size_limit: Option<i64>) -> Option<i64> {
    let mut size = node.allocatable_memory_bytes;
    if let Some(pod_limit) = pod_memory_limit(pod) {
        if pod_limit > 0 && (size <= 0 || pod_limit <= size) {
            size = pod_limit;
        }
    }
    if let Some(limit) = size_limit {
        if limit > 0 && (size <= 0 || limit <= size) {
            size = limit;
        }
    }
    (size > 0).then_some(size)
}

/// The pod's memory limit: the pod-level limit, or the containers' when
/// every container has one (app and sidecars add up; an init container
/// runs alone).
fn pod_memory_limit(pod: &Value) -> Option<i64> {
    let spec = &pod["spec"];
    let limit_of = |c: &Value| {
        quantity_text(&c["resources"]["limits"]["memory"])
            .and_then(|s| Quantity::parse(&s).ok())
            .map(|q| q.value())
    };
    if let Some(l) = limit_of(spec) {
        return Some(l);
    }
    let mut sum = 0i64;
    let mut init_max = 0i64;
    for c in array(&spec["containers"]) {
        sum = sum.saturating_add(limit_of(c)?);
    }
    for c in array(&spec["initContainers"]) {
        let l = limit_of(c)?;
        if c["restartPolicy"].as_str() == Some("Always") {
            sum = sum.saturating_add(l);
        } else {
            init_max = init_max.max(l);
        }
    }
    Some(sum.max(init_max))
}

/// Mount a tmpfs of `size` bytes on `dir` unless one is already there.
fn mount_tmpfs(dir: &Path, size: Option<i64>) -> Result<(), SetUpError> {
    if is_mount_point(dir).map_err(io_err("read mounts for", dir))? {
        return Ok(());
    }
    let data = size.map(|s| CString::new(format!("size={s}")).expect("no NUL in a number"));
    rustix::mount::mount("tmpfs", dir, "tmpfs", MountFlags::empty(), data.as_deref())
        .map_err(|e| io_err("mount tmpfs on", dir)(e.into()))?;
    tracing::debug!(dir = %dir.display(), ?size, "tmpfs mounted");
    Ok(())
}

/// The mount points of this process, from `/proc/self/mountinfo`.
fn mount_points() -> io::Result<Vec<PathBuf>> {
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(trellis_types::mountinfo::parse(&text)
        .into_iter()
        .map(|m| PathBuf::from(m.mount_point))
        .collect())
}

/// Mount points strictly under `root` (canonical).
fn mounts_under(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = mount_points()?
        .into_iter()
        .filter(|p| p != root && p.starts_with(root))
        .collect();
    v.dedup();
    Ok(v)
}

/// kubelet's `ExpandContainerVolumeMounts`: every reference must have a
/// non-empty value.
fn expand_sub_path(expr: &str, env: &[(String, String)]) -> Result<String, VolumeError> {
    let map: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let missing = std::cell::RefCell::new(BTreeSet::new());
    let out = expand_with(expr, |k| match map.get(k) {
        Some(v) if !v.is_empty() => Some(*v),
        _ => {
            missing.borrow_mut().insert(k.to_string());
            Some("")
        }
    });
    let missing = missing.into_inner();
    if !missing.is_empty() {
        return Err(VolumeError::SubPathExprMissing(
            missing.into_iter().collect::<Vec<_>>().join(", "),
        ));
    }
    Ok(out)
}

/// Open `rel` under the canonical directory `base` one component at a time,
/// never following a symlink: the result is the file that was checked.
fn safe_open(base: &Path, rel: &Path) -> io::Result<OwnedFd> {
    let mut fd = rustix::fs::open(
        base,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut so_far = base.to_path_buf();
    for comp in rel.components() {
        let Component::Normal(name) = comp else {
            return Err(io::Error::other(format!(
                "unexpected path component in {}",
                rel.display()
            )));
        };
        so_far.push(name);
        let next = rustix::fs::openat(
            &fd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        if FileType::from_raw_mode(rustix::fs::fstat(&next)?.st_mode) == FileType::Symlink {
            return Err(io::Error::other(format!(
                "unexpected symlink found {}",
                so_far.display()
            )));
        }
        fd = next;
    }
    Ok(fd)
}

/// Make the missing directories of `sub` under the canonical volume `vol`
/// with mode `perm`, refusing to go through symlinks or outside the volume.
fn safe_make_dir(vol: &Path, sub: &str, perm: u32) -> io::Result<()> {
    let comps: Vec<&std::ffi::OsStr> = Path::new(sub)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    // The longest existing prefix, resolved, must be a directory in the volume.
    let mut existing = 0;
    while existing < comps.len() {
        let p: PathBuf = comps[..=existing]
            .iter()
            .fold(vol.to_path_buf(), |p, c| p.join(c));
        if fs::symlink_metadata(&p).is_err() {
            break;
        }
        existing += 1;
    }
    let prefix: PathBuf = comps[..existing]
        .iter()
        .fold(vol.to_path_buf(), |p, c| p.join(c));
    let resolved = fs::canonicalize(&prefix)?;
    let rel = resolved.strip_prefix(vol).map_err(|_| {
        io::Error::other(format!(
            "subpath {} not within volume path {}",
            resolved.display(),
            vol.display()
        ))
    })?;
    let mut fd = safe_open(vol, rel)?;
    if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) != FileType::Directory {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            resolved.display()
        )));
    }
    let mode = Mode::from_raw_mode(perm);
    for name in &comps[existing..] {
        rustix::fs::mkdirat(&fd, *name, mode)?;
        let next = rustix::fs::openat(
            &fd,
            *name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // mkdirat applies the umask; the volume's mode is wanted.
        rustix::fs::fchmod(&next, mode)?;
        fd = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::tests::{block_on, node, FakeSources};
    use serde_json::json;
    use std::os::unix::fs::MetadataExt;

    /// A pod volume directory that unmounts and removes itself, also when a
    /// test fails.
    struct Root {
        dir: tempfile::TempDir,
    }

    impl Root {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn path(&self) -> PathBuf {
            self.dir.path().join("volumes")
        }

        fn volumes(&self) -> Volumes {
            Volumes::new(self.path())
        }

        /// A scratch directory beside the volumes (for hostPaths).
        fn scratch(&self) -> PathBuf {
            let p = self.dir.path().join("host");
            fs::create_dir_all(&p).unwrap();
            p
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = cleanup_dir(&self.path());
        }
    }

    fn pod(volumes: Value, mounts: Value) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1",
                "labels": {"app": "web", "tier": "front"}, "annotations": {"a": "x"}},
            "spec": {"nodeName": "node-1", "volumes": volumes, "containers": [{
                "name": "app", "volumeMounts": mounts,
                "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}
            }]}
        })
    }

    fn prepare(v: &mut Volumes, pod: &Value, s: &FakeSources) -> Result<(), VolumeError> {
        block_on(v.prepare(pod, &node(), s))
    }

    fn refresh(v: &mut Volumes, pod: &Value, s: &FakeSources) -> bool {
        block_on(v.refresh(pod, &node(), s)).unwrap()
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap()
    }

    /// `(fstype, super options)` of the mount at `path`, and how many are stacked there.
    fn mount_entry(path: &Path) -> (Option<(String, String)>, usize) {
        let canon = fs::canonicalize(path).unwrap();
        let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mut found = None;
        let mut count = 0;
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if PathBuf::from(trellis_types::mountinfo::unescape(fields[4])) != canon {
                continue;
            }
            count += 1;
            let after: Vec<&str> = line.split(" - ").nth(1).unwrap().split(' ').collect();
            found = Some((after[0].to_string(), after[2].to_string()));
        }
        (found, count)
    }

    /// The entries of an atomic volume directory, with symlink targets.
    fn layout(dir: &Path) -> BTreeMap<String, String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                let target = fs::read_link(e.path())
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "(not a link)".into());
                (name, target)
            })
            .collect()
    }

    fn ts_dir(dir: &Path) -> String {
        fs::read_link(dir.join(DATA_DIR))
            .unwrap()
            .display()
            .to_string()
    }

    #[test]
    fn timestamps_and_payload_paths() {
        assert_eq!(utc_stamp(0), "1970_01_01_00_00_00");
        assert_eq!(utc_stamp(1_700_000_000), "2023_11_14_22_13_20");
        assert_eq!(utc_stamp(951_782_400), "2000_02_29_00_00_00");
        let one = |p: &str| {
            let mut m = Payload::new();
            m.insert(
                p.to_string(),
                FileProjection {
                    data: vec![],
                    mode: 0o644,
                },
            );
            clean_payload(m).map(|c| c.into_keys().next().unwrap())
        };
        assert_eq!(one("./a//b/").unwrap(), "a/b");
        assert_eq!(
            one("..a").unwrap_err().to_string(),
            "invalid path: must not start with '..': ..a"
        );
        assert_eq!(
            one("a/../b").unwrap_err().to_string(),
            "invalid path: must not contain '..': a/../b"
        );
        assert_eq!(
            one("/a").unwrap_err().to_string(),
            "invalid path: must be relative path: /a"
        );
        assert!(one("").is_err());
        assert_eq!(trellis_types::mountinfo::unescape(r"/a\040b\\"), r"/a b\\");
    }

    #[test]
    fn empty_dir_on_disk() {
        let root = Root::new();
        let mut v = root.volumes();
        let pod = pod(
            json!([{"name": "cache", "emptyDir": {}}, {"name": "bare"}]),
            json!([{"name": "cache", "mountPath": "/cache"}, {"name": "bare", "mountPath": "rel", "readOnly": true}]),
        );
        prepare(&mut v, &pod, &FakeSources::default()).unwrap();
        let dir = root.path().join("cache");
        assert!(dir.is_dir());
        assert_eq!(mode(&dir), 0o777);
        fs::write(dir.join("kept"), "x").unwrap();
        // Preparing again (an agent restart) keeps the contents.
        let mut again = root.volumes();
        prepare(&mut again, &pod, &FakeSources::default()).unwrap();
        assert_eq!(read(&dir.join("kept")), "x");
        let mounts = v.mounts(&pod["spec"]["containers"][0], &pod, &[]).unwrap();
        assert_eq!(
            mounts,
            vec![
                Mount {
                    destination: "/cache".into(),
                    source: dir,
                    read_only: false,
                    propagation: Propagation::Private
                },
                Mount {
                    destination: "/rel".into(),
                    source: root.path().join("bare"),
                    read_only: true,
                    propagation: Propagation::Private
                },
            ]
        );
    }

    #[test]
    fn memory_empty_dir_is_a_sized_tmpfs_and_cleanup_unmounts_it() {
        let root = Root::new();
        let mut v = root.volumes();
        let pod = pod(
            json!([
                {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                {"name": "big", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}
            ]),
            json!([]),
        );
        prepare(&mut v, &pod, &FakeSources::default()).unwrap();
        prepare(&mut v, &pod, &FakeSources::default()).unwrap();
        let shm = root.path().join("shm");
        let (entry, count) = mount_entry(&shm);
        let (fstype, opts) = entry.expect("tmpfs mounted");
        assert_eq!((fstype.as_str(), count), ("tmpfs", 1), "mounted once");
        assert!(opts.split(',').any(|o| o == "size=16384k"), "{opts}");
        assert_eq!(
            mode(&shm),
            0o1777,
            "a tmpfs root keeps its sticky bit, as with kubelet"
        );
        // The pod's 64Mi memory limit bounds a larger sizeLimit.
        let (entry, _) = mount_entry(&root.path().join("big"));
        assert!(entry.unwrap().1.split(',').any(|o| o == "size=65536k"));
        fs::write(shm.join("f"), "in memory").unwrap();

        v.cleanup().unwrap();
        assert!(!root.path().exists());
        assert_eq!(mount_entry(root.dir.path()).1, 0);
        assert!(mounts_under(&fs::canonicalize(root.dir.path()).unwrap())
            .unwrap()
            .is_empty());
        // Idempotent.
        cleanup_dir(&root.path()).unwrap();
        root.volumes().cleanup().unwrap();
    }

    #[test]
    fn memory_size_follows_kubelet() {
        let n = node(); // 8Gi allocatable
        let no_limits = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(memory_size(&no_limits, &n, None), Some(8 << 30));
        assert_eq!(memory_size(&no_limits, &n, Some(1 << 20)), Some(1 << 20));
        assert_eq!(memory_size(&no_limits, &NodeInfo::default(), None), None);
        let limits = json!({"spec": {
            "containers": [
                {"resources": {"limits": {"memory": "100Mi"}}},
                {"resources": {"limits": {"memory": "50Mi"}}}],
            "initContainers": [
                {"resources": {"limits": {"memory": "200Mi"}}},
                {"restartPolicy": "Always", "resources": {"limits": {"memory": "10Mi"}}}]
        }});
        assert_eq!(memory_size(&limits, &n, None), Some(200 << 20));
        assert_eq!(memory_size(&limits, &n, Some(1 << 40)), Some(200 << 20));
        let partial = json!({"spec": {"containers": [
            {"resources": {"limits": {"memory": "100Mi"}}}, {"name": "unbounded"}]}});
        assert_eq!(memory_size(&partial, &n, None), Some(8 << 30));
    }

    #[test]
    fn host_path_types() {
        let root = Root::new();
        let host = root.scratch();
        let dir = host.join("dir");
        let file = host.join("file");
        let sock = host.join("sock");
        let blk = host.join("blk");
        fs::create_dir(&dir).unwrap();
        fs::write(&file, "f").unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &blk,
            FileType::BlockDevice,
            Mode::from_raw_mode(0o600),
            rustix::fs::makedev(7, 250),
        )
        .unwrap();
        let d = |p: &Path| p.display().to_string();
        let missing = d(&host.join("missing"));
        let cases: Vec<(&str, String, Option<String>)> = vec![
            ("Directory", d(&dir), None),
            (
                "Directory",
                d(&file),
                Some(format!("{} is not a directory", d(&file))),
            ),
            (
                "Directory",
                missing.clone(),
                Some(format!("{missing} is not a directory")),
            ),
            ("DirectoryOrCreate", d(&dir), None),
            (
                "DirectoryOrCreate",
                d(&file),
                Some(format!("{} is not a directory", d(&file))),
            ),
            ("DirectoryOrCreate", d(&host.join("new/deep")), None),
            ("File", d(&file), None),
            ("File", d(&dir), Some(format!("{} is not a file", d(&dir)))),
            (
                "File",
                missing.clone(),
                Some(format!("{missing} does not exist")),
            ),
            ("FileOrCreate", d(&host.join("newfile")), None),
            (
                "FileOrCreate",
                d(&dir),
                Some(format!("{} is not a file", d(&dir))),
            ),
            ("Socket", d(&sock), None),
            (
                "Socket",
                d(&file),
                Some(format!("{} is not a socket file", d(&file))),
            ),
            ("CharDevice", "/dev/null".into(), None),
            (
                "CharDevice",
                d(&file),
                Some(format!("{} is not a character device", d(&file))),
            ),
            ("BlockDevice", d(&blk), None),
            (
                "BlockDevice",
                "/dev/null".into(),
                Some("/dev/null is not a block device".into()),
            ),
            ("", d(&host.join("untyped")), None),
        ];
        for (kind, path, want) in cases {
            let pod = pod(
                json!([{"name": "h", "hostPath": {"path": path, "type": kind}}]),
                json!([]),
            );
            let got = prepare(&mut root.volumes(), &pod, &FakeSources::default());
            match want {
                None => got.unwrap_or_else(|e| panic!("{kind} {path}: {e}")),
                Some(what) => assert_eq!(
                    got.unwrap_err().to_string(),
                    format!("MountVolume.SetUp failed for volume \"h\" : hostPath type check failed: {what}"),
                    "{kind} {path}"
                ),
            }
        }
        assert!(host.join("new/deep").is_dir());
        assert_eq!(mode(&host.join("new/deep")) & 0o755, 0o755);
        assert!(host.join("newfile").is_file());
        assert!(host.join("untyped").is_dir());

        let err = |vol: Value| {
            prepare(
                &mut root.volumes(),
                &pod(json!([vol]), json!([])),
                &FakeSources::default(),
            )
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            err(json!({"name": "h", "hostPath": {"path": d(&dir), "type": "Weird"}})),
            "MountVolume.SetUp failed for volume \"h\" : Weird is an invalid volume type"
        );
        assert!(err(json!({"name": "h", "hostPath": {"path": "rel/dir"}}))
            .contains("must be an absolute path"));
        let socket_missing =
            err(json!({"name": "h", "hostPath": {"path": missing, "type": "Socket"}}));
        assert!(
            socket_missing.starts_with(&format!(
                "MountVolume.SetUp failed for volume \"h\" : stat {missing}: "
            )),
            "{socket_missing}"
        );

        // A hostPath mount binds the path itself.
        let pod = pod(
            json!([{"name": "h", "hostPath": {"path": d(&dir)}}]),
            json!([{"name": "h", "mountPath": "/host", "readOnly": true, "mountPropagation": "HostToContainer"}]),
        );
        let mounts = root
            .volumes()
            .mounts(&pod["spec"]["containers"][0], &pod, &[])
            .unwrap();
        assert_eq!(
            mounts,
            vec![Mount {
                destination: "/host".into(),
                source: dir,
                read_only: true,
                propagation: Propagation::HostToContainer
            }]
        );
        assert_eq!(mounts[0].propagation.oci_option(), "rslave");
    }

    #[test]
    fn config_map_volume_has_the_atomic_writer_layout() {
        let root = Root::new();
        let sources = FakeSources::default().with_config_map(
            "shop",
            "cfg",
            json!({"a": "1", "b": "2", "c": "3"}),
        );
        sources
            .config_maps
            .lock()
            .unwrap()
            .get_mut("shop/cfg")
            .unwrap()["binaryData"] = json!({"bin": "AAEC"});
        let pod = pod(
            json!([
                {"name": "picked", "configMap": {"name": "cfg", "defaultMode": 0o640, "items": [
                    {"key": "a", "path": "dir/a.txt", "mode": 0o600},
                    {"key": "b", "path": "b"}]}},
                {"name": "all", "configMap": {"name": "cfg"}}
            ]),
            json!([{"name": "picked", "mountPath": "/etc/picked"}]),
        );
        let mut v = root.volumes();
        prepare(&mut v, &pod, &sources).unwrap();
        let dir = root.path().join("picked");
        let ts = ts_dir(&dir);
        // `..YYYY_MM_DD_HH_MM_SS.N`
        let (stamp, suffix) = ts.trim_start_matches("..").split_once('.').unwrap();
        let shape: String = stamp
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_eq!(shape, "9999_99_99_99_99_99", "{ts}");
        assert!(
            ts.starts_with("..") && suffix.chars().all(|c| c.is_ascii_digit()),
            "{ts}"
        );
        assert_eq!(
            layout(&dir),
            BTreeMap::from([
                ("..data".to_string(), ts.clone()),
                (ts.clone(), "(not a link)".to_string()),
                ("dir".to_string(), "..data/dir".to_string()),
                ("b".to_string(), "..data/b".to_string()),
            ])
        );
        assert_eq!(read(&dir.join("dir/a.txt")), "1");
        assert_eq!(read(&dir.join("b")), "2");
        assert_eq!(mode(&dir.join(&ts).join("dir/a.txt")), 0o600);
        assert_eq!(mode(&dir.join(&ts).join("b")), 0o640);
        assert_eq!(mode(&dir), 0o777);

        let all = root.path().join("all");
        assert_eq!(read(&all.join("a")), "1");
        assert_eq!(fs::read(all.join("bin")).unwrap(), vec![0, 1, 2]);
        assert_eq!(mode(&all.join("c")), 0o644);
        assert_eq!(fs::read_link(all.join("c")).unwrap(), Path::new("..data/c"));

        // Always mounted read-only.
        let mounts = v.mounts(&pod["spec"]["containers"][0], &pod, &[]).unwrap();
        assert!(mounts[0].read_only);
        assert_eq!(mounts[0].source, dir);
    }

    #[test]
    fn refresh_follows_the_source_atomically() {
        let root = Root::new();
        let sources =
            FakeSources::default().with_config_map("shop", "cfg", json!({"a": "1", "b": "2"}));
        let pod = pod(
            json!([{"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "e", "emptyDir": {}}]),
            json!([]),
        );
        let mut v = root.volumes();
        prepare(&mut v, &pod, &sources).unwrap();
        let dir = root.path().join("cfg");
        let first = ts_dir(&dir);
        assert!(!refresh(&mut v, &pod, &sources), "nothing changed");
        assert_eq!(ts_dir(&dir), first, "no rewrite without a change");

        // A reader holding the old file keeps its content.
        let mut old = fs::File::open(dir.join("a")).unwrap();
        sources
            .config_maps
            .lock()
            .unwrap()
            .get_mut("shop/cfg")
            .unwrap()["data"] = json!({"a": "one", "c": "3"});
        assert!(refresh(&mut v, &pod, &sources));
        let second = ts_dir(&dir);
        assert_ne!(second, first);
        assert_eq!(read(&dir.join("a")), "one");
        assert_eq!(read(&dir.join("c")), "3");
        assert!(
            fs::symlink_metadata(dir.join("b")).is_err(),
            "removed key removed"
        );
        assert_eq!(
            layout(&dir),
            BTreeMap::from([
                ("..data".to_string(), second.clone()),
                (second.clone(), "(not a link)".to_string()),
                ("a".to_string(), "..data/a".to_string()),
                ("c".to_string(), "..data/c".to_string()),
            ]),
            "old timestamped directory gone, symlink layout kept"
        );
        let mut s = String::new();
        io::Read::read_to_string(&mut old, &mut s).unwrap();
        assert_eq!(s, "1");

        assert!(!refresh(&mut v, &pod, &sources));
        // A new agent over the same directory sees no change either.
        let mut adopted = root.volumes();
        assert!(!refresh(&mut adopted, &pod, &sources));
        assert_eq!(ts_dir(&dir), second);
        // A write cut short before its visible links is completed.
        fs::remove_file(dir.join("c")).unwrap();
        assert!(!refresh(&mut root.volumes(), &pod, &sources));
        assert_eq!(read(&dir.join("c")), "3");
        // A mode change is a change.
        let mut pod2 = pod.clone();
        pod2["spec"]["volumes"][0]["configMap"]["defaultMode"] = json!(0o600);
        assert!(refresh(&mut adopted, &pod2, &sources));
        assert_eq!(mode(&dir.join(ts_dir(&dir)).join("a")), 0o600);
    }

    #[test]
    fn secret_volume_lives_on_tmpfs() {
        let root = Root::new();
        let sources = FakeSources::default().with_secret(
            "shop",
            "creds",
            &[("user", b"admin"), ("pw", b"\x00s3cret")],
        );
        let pod = pod(
            json!([
                {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
                {"name": "one", "secret": {"secretName": "creds", "items": [{"key": "pw", "path": "password"}]}}
            ]),
            json!([{"name": "creds", "mountPath": "/creds"}]),
        );
        let mut v = root.volumes();
        prepare(&mut v, &pod, &sources).unwrap();
        let dir = root.path().join("creds");
        assert_eq!(mount_entry(&dir).0.unwrap().0, "tmpfs");
        assert_eq!(read(&dir.join("user")), "admin");
        assert_eq!(fs::read(dir.join("pw")).unwrap(), b"\x00s3cret");
        assert_eq!(mode(&dir.join(ts_dir(&dir)).join("user")), 0o400);
        let one = root.path().join("one");
        assert_eq!(fs::read(one.join("password")).unwrap(), b"\x00s3cret");
        assert_eq!(mode(&one.join(ts_dir(&one)).join("password")), 0o644);
        assert!(v.mounts(&pod["spec"]["containers"][0], &pod, &[]).unwrap()[0].read_only);

        // A changed secret is rewritten inside the same tmpfs.
        *sources.secrets.lock().unwrap() = FakeSources::default()
            .with_secret("shop", "creds", &[("user", b"root"), ("pw", b"x")])
            .secrets
            .into_inner()
            .unwrap();
        assert!(refresh(&mut v, &pod, &sources));
        assert_eq!(read(&dir.join("user")), "root");
        assert_eq!(mount_entry(&dir).1, 1);
        v.cleanup().unwrap();
        assert!(!root.path().exists());
    }

    #[test]
    fn optional_missing_sources_give_empty_volumes() {
        let root = Root::new();
        let sources = FakeSources::default().with_config_map("shop", "cfg", json!({"a": "1"}));
        let pod = pod(
            json!([
                {"name": "cm", "configMap": {"name": "absent", "optional": true}},
                {"name": "sec", "secret": {"secretName": "absent", "optional": true}},
                {"name": "partial", "configMap": {"name": "cfg", "optional": true, "items": [
                    {"key": "a", "path": "a"}, {"key": "zz", "path": "zz"}]}}
            ]),
            json!([]),
        );
        let mut v = root.volumes();
        prepare(&mut v, &pod, &sources).unwrap();
        for name in ["cm", "sec"] {
            let dir = root.path().join(name);
            let entries = layout(&dir);
            assert_eq!(
                entries.len(),
                2,
                "{name}: only ..data and its directory: {entries:?}"
            );
            assert!(fs::read_dir(dir.join(DATA_DIR)).unwrap().next().is_none());
        }
        assert_eq!(read(&root.path().join("partial/a")), "1");
        assert!(!root.path().join("partial/zz").exists());

        // The source appearing later fills the volume on refresh.
        let sources = sources.with_config_map("shop", "absent", json!({"late": "yes"}));
        assert!(refresh(&mut v, &pod, &sources));
        assert_eq!(read(&root.path().join("cm/late")), "yes");
    }

    #[test]
    fn set_up_errors_read_like_kubelet() {
        let root = Root::new();
        let sources = FakeSources::default()
            .with_config_map("shop", "cfg", json!({"a": "1"}))
            .with_secret("shop", "s", &[("a", b"1")]);
        sources.failing.lock().unwrap().push("flaky".into());
        let cases = [
            (
                json!({"name": "v", "configMap": {"name": "nope"}}),
                r#"configmap "nope" not found"#,
            ),
            (
                json!({"name": "v", "secret": {"secretName": "nope"}}),
                r#"secret "nope" not found"#,
            ),
            (
                json!({"name": "v", "configMap": {"name": "cfg", "items": [{"key": "zz", "path": "z"}]}}),
                "configmap references non-existent config key: zz",
            ),
            (
                json!({"name": "v", "secret": {"secretName": "s", "items": [{"key": "zz", "path": "z"}]}}),
                "references non-existent secret key: zz",
            ),
            (
                json!({"name": "v", "configMap": {"name": "flaky", "optional": true}}),
                "couldn't get configmap shop/flaky: connection refused",
            ),
            (
                json!({"name": "v", "configMap": {"name": "cfg", "items": [{"key": "a", "path": "../evil"}]}}),
                "invalid path: must not contain '..': ../evil",
            ),
            (
                json!({"name": "v", "persistentVolumeClaim": {"claimName": "data"}}),
                "volume type persistentVolumeClaim is not supported by this node",
            ),
            (
                json!({"name": "v", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}),
                "volume type projected serviceAccountToken is not supported by this node",
            ),
            (
                json!({"name": "v", "downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "spec.nodeName"}}]}}),
                "unsupported fieldPath: spec.nodeName",
            ),
            (
                json!({"name": "v", "emptyDir": {"medium": "Memory", "sizeLimit": "lots"}}),
                "invalid sizeLimit \"lots\": ",
            ),
        ];
        for (vol, want) in cases {
            let err =
                prepare(&mut root.volumes(), &pod(json!([vol]), json!([])), &sources).unwrap_err();
            let want = format!("MountVolume.SetUp failed for volume \"v\" : {want}");
            assert!(err.to_string().starts_with(&want), "{err} / {want}");
        }
    }

    #[test]
    fn downward_api_and_projected_volumes() {
        let root = Root::new();
        let sources = FakeSources::default()
            .with_config_map("shop", "cfg", json!({"a": "1", "b": "2"}))
            .with_secret("shop", "s", &[("k", b"v")]);
        let items = json!([
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
            {"path": "meta/app", "fieldRef": {"fieldPath": "metadata.labels['app']"}, "mode": 0o400},
            {"path": "cpu", "resourceFieldRef": {"containerName": "app", "resource": "limits.cpu", "divisor": "1m"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "app", "resource": "requests.memory", "divisor": "1Mi"}}
        ]);
        let mut pod = pod(
            json!([
                {"name": "info", "downwardAPI": {"items": items}},
                {"name": "all", "projected": {"defaultMode": 0o444, "sources": [
                    {"configMap": {"name": "cfg", "items": [{"key": "a", "path": "cfg/a"}]}},
                    {"secret": {"name": "s"}},
                    {"secret": {"name": "gone", "optional": true}},
                    {"downwardAPI": {"items": [{"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}}]}}
                ]}}
            ]),
            json!([]),
        );
        let mut v = root.volumes();
        prepare(&mut v, &pod, &sources).unwrap();
        let info = root.path().join("info");
        assert_eq!(read(&info.join("labels")), "app=\"web\"\ntier=\"front\"");
        assert_eq!(read(&info.join("name")), "web");
        assert_eq!(read(&info.join("meta/app")), "web");
        assert_eq!(mode(&info.join(ts_dir(&info)).join("meta/app")), 0o400);
        assert_eq!(read(&info.join("cpu")), "250");
        assert_eq!(read(&info.join("mem")), "64");
        let all = root.path().join("all");
        assert_eq!(read(&all.join("cfg/a")), "1");
        assert_eq!(read(&all.join("k")), "v");
        assert_eq!(read(&all.join("uid")), "u-1");
        assert_eq!(mode(&all.join(ts_dir(&all)).join("k")), 0o444);

        // Labels change: the downward API file follows.
        pod["metadata"]["labels"]["app"] = json!("api");
        assert!(refresh(&mut v, &pod, &sources));
        assert_eq!(read(&info.join("meta/app")), "api");
        assert!(!refresh(&mut v, &pod, &sources));
    }

    #[test]
    fn fs_group_owns_volume_files() {
        let root = Root::new();
        let sources = FakeSources::default().with_config_map("shop", "cfg", json!({"a": "1"}));
        let mut pod = pod(
            json!([{"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 0o400}}, {"name": "e", "emptyDir": {}}]),
            json!([]),
        );
        pod["spec"]["securityContext"] = json!({"fsGroup": 4321});
        prepare(&mut root.volumes(), &pod, &sources).unwrap();
        let cfg = root.path().join("cfg");
        let file = cfg.join(ts_dir(&cfg)).join("a");
        assert_eq!(fs::metadata(&file).unwrap().gid(), 4321);
        assert_eq!(mode(&file), 0o440);
        let e = root.path().join("e");
        assert_eq!(fs::metadata(&e).unwrap().gid(), 4321);
        assert_eq!(mode(&e), 0o2777);
        assert!(
            !refresh(&mut root.volumes(), &pod, &sources),
            "modes on disk match the payload"
        );
    }

    #[test]
    fn sub_paths_are_bound_from_inside_the_volume() {
        let root = Root::new();
        let host = root.scratch();
        fs::write(host.join("keep"), "host file").unwrap();
        let sources = FakeSources::default().with_config_map("shop", "cfg", json!({"a": "1"}));
        let pod = pod(
            json!([
                {"name": "data", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "host", "hostPath": {"path": host.display().to_string(), "type": "Directory"}}
            ]),
            json!([
                {"name": "data", "mountPath": "/data"},
                {"name": "cfg", "mountPath": "/etc/a", "subPath": "a"},
                {"name": "data", "mountPath": "/logs", "subPathExpr": "$(POD_NAME)/logs"},
                {"name": "host", "mountPath": "/keep", "subPath": "keep", "readOnly": true}
            ]),
        );
        let mut v = root.volumes();
        prepare(&mut v, &pod, &sources).unwrap();
        let env = vec![("POD_NAME".to_string(), "web-0".to_string())];
        let c = &pod["spec"]["containers"][0];
        for _ in 0..2 {
            // Twice, as for a restarted container: binds are replaced, not stacked.
            let mounts = v.mounts(c, &pod, &env).unwrap();
            let sub = |i: usize| root.path().join(SUBPATHS).join("app").join(i.to_string());
            let got: Vec<(&str, PathBuf, bool)> = mounts
                .iter()
                .map(|m| (m.destination.as_str(), m.source.clone(), m.read_only))
                .collect();
            assert_eq!(
                got,
                vec![
                    ("/data", root.path().join("data"), false),
                    ("/etc/a", sub(1), true),
                    ("/logs", sub(2), false),
                    ("/keep", sub(3), true),
                ]
            );
            for i in 1..=3 {
                assert_eq!(mount_entry(&sub(i)).1, 1, "one bind at {i}");
            }
            assert_eq!(read(&sub(1)), "1");
            assert_eq!(read(&sub(3)), "host file");
        }
        let logs = root.path().join("data/web-0/logs");
        assert!(logs.is_dir(), "missing subPath made");
        assert_eq!(mode(&logs), 0o777, "with the volume's mode");
        fs::write(
            root.path().join(SUBPATHS).join("app/2/x"),
            "through the bind",
        )
        .unwrap();
        assert_eq!(read(&logs.join("x")), "through the bind");

        // Cleanup unmounts the binds before removing anything: host files survive.
        v.cleanup().unwrap();
        assert!(!root.path().exists());
        assert_eq!(read(&host.join("keep")), "host file");
    }

    #[test]
    fn sub_path_escapes_are_refused() {
        let root = Root::new();
        let outside = root.scratch();
        let pod_with = |m: Value| {
            pod(
                json!([{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg", "optional": true}}]),
                json!([m]),
            )
        };
        let mut v = root.volumes();
        prepare(&mut v, &pod_with(json!({})), &FakeSources::default()).unwrap();
        let data = root.path().join("data");
        std::os::unix::fs::symlink(&outside, data.join("evil")).unwrap();
        std::os::unix::fs::symlink("../..", data.join("up")).unwrap();
        fs::create_dir(data.join("ok")).unwrap();
        std::os::unix::fs::symlink("ok", data.join("ok-link")).unwrap();

        let mounts = |m: Value| {
            let pod = pod_with(m);
            v.mounts(
                &pod["spec"]["containers"][0],
                &pod,
                &[("E".into(), "".into())],
            )
        };
        let msg = |m: Value| mounts(m).unwrap_err().to_string();
        assert_eq!(
            msg(json!({"name": "data", "mountPath": "/x", "subPath": "../x"})),
            "unable to provision SubPath `../x`: must not contain '..'"
        );
        assert_eq!(
            msg(json!({"name": "data", "mountPath": "/x", "subPath": "a/../../x"})),
            "unable to provision SubPath `a/../../x`: must not contain '..'"
        );
        assert_eq!(
            msg(json!({"name": "data", "mountPath": "/x", "subPath": "/etc"})),
            "error SubPath `/etc` must not be an absolute path"
        );
        for escape in ["evil", "up"] {
            let err =
                mounts(json!({"name": "data", "mountPath": "/x", "subPath": escape})).unwrap_err();
            assert_eq!(
                err.to_string(),
                "failed to prepare subPath for volumeMount \"data\" of container \"app\""
            );
            let cause = std::error::Error::source(&err).unwrap().to_string();
            assert!(
                cause.contains("not within volume path"),
                "{escape}: {cause}"
            );
        }
        for escape in ["evil/new", "up/new"] {
            let err =
                mounts(json!({"name": "data", "mountPath": "/x", "subPath": escape})).unwrap_err();
            assert_eq!(
                err.to_string(),
                "failed to create subPath directory for volumeMount \"data\" of container \"app\""
            );
        }
        assert!(
            !outside.join("new").exists(),
            "nothing made outside the volume"
        );
        assert!(
            !root.dir.path().join("new").exists(),
            "nothing made outside the volume"
        );
        assert_eq!(
            msg(json!({"name": "data", "mountPath": "/x", "subPathExpr": "$(NOPE)/$(E)/$(A)"})),
            "missing value for A, E, NOPE"
        );
        assert_eq!(
            msg(json!({"name": "ghost", "mountPath": "/x"})),
            "cannot find volume \"ghost\" to mount into container \"app\""
        );
        assert!(msg(
            json!({"name": "data", "mountPath": "/x", "mountPropagation": "Bidirectional"})
        )
        .contains("Bidirectional mount propagation is available only to privileged containers"));
        // A symlink that stays inside the volume is fine.
        let ok = mounts(json!({"name": "data", "mountPath": "/x", "subPath": "ok-link"})).unwrap();
        assert_eq!(ok[0].source, root.path().join(SUBPATHS).join("app/0"));
        v.cleanup().unwrap();
        assert!(outside.exists(), "symlinked targets are not removed");
    }

    #[test]
    fn mounts_before_prepare_are_refused() {
        let root = Root::new();
        let pod = pod(
            json!([{"name": "data", "emptyDir": {}}]),
            json!([{"name": "data", "mountPath": "/d"}]),
        );
        let err = root
            .volumes()
            .mounts(&pod["spec"]["containers"][0], &pod, &[])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "volume \"data\" of container \"app\" is not set up yet"
        );
    }
}
