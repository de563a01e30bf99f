//! The shim's own mount namespace.
//!
//! Every container set-up reads the mount table whole, a dozen times and more
//! (libcontainer and libcgroups read `/proc/self/mountinfo` once per cgroup
//! controller, among others): each mount on the node made every container
//! start slower, and each pod added two (its network namespace file and its
//! root filesystem's overlay). So before its first container a shim takes a
//! mount namespace of its own, a copy of the node's, where:
//!
//! - it mounts its pod's root filesystems itself (the agent only stages
//!   them), so they are never in the node's table, nor in other pods';
//! - the directory of network namespace files is left out, so other pods'
//!   namespace files are not in its table either, and the pod's own is bound
//!   back at the same path (the bundle names it there).
//!
//! The copy is a slave of the node's: mounts and unmounts made on the node
//! still reach it (a volume the node mounts later, say), nothing made in it
//! reaches the node. When the shim exits, its namespace and the mounts only
//! it holds go with it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Moves the calling (single-threaded) process into a mount namespace of its
/// own as described above. `spec` is the first container's OCI config: its
/// network namespace path, if any, names the pod's namespace file.
pub(super) fn isolate(spec: &serde_json::Value) -> anyhow::Result<()> {
    unshare(CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .context("making the mount namespace a slave of the node's")?;
    let Some(netns) = network_namespace_path(spec) else {
        return Ok(());
    };
    let Some(dir) = netns.parent() else {
        return Ok(());
    };
    // The agent keeps its namespace files in a directory that is a mount
    // point of its own (as iproute2's /run/netns): one unmount takes all of
    // them out of this namespace.
    if !trellis_image::is_mount_point(dir).unwrap_or(false) {
        return Ok(());
    }
    let own = File::open(&netns)
        .with_context(|| format!("opening the pod's network namespace {}", netns.display()))?;
    umount2(dir, MntFlags::MNT_DETACH).with_context(|| format!("leaving out {}", dir.display()))?;
    // Under the directory's mount point the pod's file is the empty
    // placeholder the namespace was bound on.
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", own.as_raw_fd()));
    mount(
        Some(&fd_path),
        &netns,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("binding the pod's network namespace on {}", netns.display()))?;
    Ok(())
}

/// The `path` of the config's network namespace, if it joins one.
fn network_namespace_path(spec: &serde_json::Value) -> Option<PathBuf> {
    spec["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|n| n["type"] == "network")
        .and_then(|n| n["path"].as_str())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// Mounts the root filesystem staged in `dir` (see
/// [`trellis_image::ImageStore::stage_rootfs`]) in this namespace; returns
/// where.
pub(super) fn mount_rootfs(dir: &Path) -> anyhow::Result<PathBuf> {
    trellis_image::mount_rootfs(dir)
        .with_context(|| format!("mounting the root filesystem in {}", dir.display()))
}

/// Unmounts what [`mount_rootfs`] mounted at `rootfs`; best effort (the
/// namespace goes with the shim anyway).
pub(super) fn unmount_rootfs(rootfs: &Path) {
    if let Err(e) = umount2(rootfs, MntFlags::MNT_DETACH) {
        eprintln!("trellis shim: unmounting {}: {e}", rootfs.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_network_namespace_path_comes_from_the_config() {
        let spec = json!({"linux": {"namespaces": [
            {"type": "pid"},
            {"type": "network", "path": "/d/run/network/netns/u1"},
        ]}});
        assert_eq!(
            network_namespace_path(&spec),
            Some(PathBuf::from("/d/run/network/netns/u1"))
        );
        let fresh = json!({"linux": {"namespaces": [{"type": "network"}]}});
        assert_eq!(network_namespace_path(&fresh), None);
        let host = json!({"linux": {"namespaces": [{"type": "pid"}]}});
        assert_eq!(network_namespace_path(&host), None);
    }
}
