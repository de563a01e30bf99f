//! Persistent network namespaces: `nsfs` bind mounts under the state
//! directory, the way `ip netns add` keeps them under `/run/netns`.
//!
//! `unshare` and `setns` change only the calling thread, so each runs on a
//! dedicated short-lived thread; the caller's thread (a tokio blocking-pool
//! thread in the agent) never changes namespace. What outlives that thread is
//! the bind mount and a netlink socket created inside the namespace.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::thread;

use crate::error::NetworkError;
use crate::rtnl::Rtnl;

/// `f_type` of the `nsfs` file system (linux/magic.h).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// `ifindex` of `lo` in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> io::Result<()> {
    let source = source.map(c_path).transpose()?;
    let target = c_path(target)?;
    let fstype = fstype.map(|t| CString::new(t).expect("static fs type has no NUL"));
    // SAFETY: every pointer is either null or a NUL-terminated string that
    // lives until the call returns.
    check(unsafe {
        libc::mount(
            source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            std::ptr::null(),
        )
    })
}

fn umount_detach(target: &Path) -> io::Result<()> {
    let target = c_path(target)?;
    // SAFETY: `target` is a NUL-terminated string living across the call.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) })
}

/// Runs `f` on a new thread and returns its result; the thread may change
/// its namespaces freely since it ends with `f`.
fn on_own_thread<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    thread::Builder::new()
        .name("trellis-netns".into())
        .spawn(f)?
        .join()
        .map_err(|_| io::Error::other("network namespace thread panicked"))?
}

/// Sets `net.ipv4.conf.default.arp_notify=1` in the calling thread's
/// network namespace, so the pod's `eth0` (created afterwards, hence taking
/// the defaults) announces its address with a gratuitous ARP when it comes
/// up: the node and other pods then replace a stale neighbour entry left by
/// an earlier pod with the same address at once instead of after seconds.
/// Best effort: without it only that cache refresh is slower.
fn enable_arp_notify() {
    let path = "/proc/sys/net/ipv4/conf/default/arp_notify";
    if let Err(e) = fs::write(path, "1") {
        tracing::debug!(error = %e, "cannot set {path} in a pod namespace");
    }
}

/// Creates `dir` and makes it a shared mount point of its own (a bind mount
/// onto itself if needed), as iproute2 does for `/run/netns`: unmounting a
/// namespace file then also unmounts the copies that mount namespaces
/// created meanwhile hold, so the namespace is not kept alive by them. And a
/// pod's shim leaves the whole directory out of its own mount namespace with
/// one unmount (binding back only its pod's file; see `trellis_runtime`'s
/// shim), so other pods' files are not in the mount table its container
/// set-ups read.
pub(crate) fn prepare_dir(dir: &Path) -> Result<(), NetworkError> {
    fs::create_dir_all(dir).map_err(|e| NetworkError::io("create directory", dir, e))?;
    let shared = libc::MS_SHARED | libc::MS_REC;
    match mount(None, dir, Some("none"), shared) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(NetworkError::io("make shared mount", dir, e)),
    }
    mount(Some(dir), dir, Some("none"), libc::MS_BIND | libc::MS_REC)
        .map_err(|e| NetworkError::io("bind mount onto itself", dir, e))?;
    mount(None, dir, Some("none"), shared)
        .map_err(|e| NetworkError::io("make shared mount", dir, e))
}

/// Undoes [`prepare_dir`]: unmounts and removes `dir` (which must hold no
/// namespace any more).
pub(crate) fn release_dir(dir: &Path) -> Result<(), NetworkError> {
    unmount_all(dir).map_err(|e| NetworkError::io("unmount", dir, e))?;
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetworkError::io("remove directory", dir, e)),
    }
}

/// Unmounts everything stacked on `path`; fine if nothing is.
fn unmount_all(path: &Path) -> io::Result<()> {
    // A handful of rounds: an interrupted earlier attempt may have stacked a
    // second mount; more than that is not ours to guess about.
    for _ in 0..8 {
        match umount_detach(path) {
            Ok(()) => continue,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {
                return Ok(())
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether `path` is a mounted namespace file (and not a leftover empty
/// placeholder of an interrupted setup or a reboot).
pub(crate) fn is_mounted(path: &Path) -> bool {
    let Ok(c) = c_path(path) else { return false };
    // SAFETY: `statfs` is plain old data, fully written by the kernel on
    // success; `c` is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == NSFS_MAGIC
    }
}

/// A network namespace held open: its file (for `IFLA_NET_NS_FD`) and a
/// netlink socket inside it.
pub(crate) struct Netns {
    pub(crate) file: File,
    pub(crate) rtnl: Rtnl,
}

/// Creates a network namespace bound to `path` (which must not exist), with
/// `lo` up.
pub(crate) fn create(path: &Path) -> Result<Netns, NetworkError> {
    let err = |action, e| NetworkError::namespace(action, path, e);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .map_err(|e| err("create file for", e))?;
    let target = path.to_owned();
    let made = on_own_thread(move || {
        // SAFETY: plain syscall; it changes only this thread's namespace.
        check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
        mount(
            Some(Path::new("/proc/thread-self/ns/net")),
            &target,
            None,
            libc::MS_BIND,
        )?;
        enable_arp_notify();
        Rtnl::new()
    });
    let mut rtnl = match made {
        Ok(rtnl) => rtnl,
        Err(e) => {
            let _ = unmount_all(path);
            let _ = fs::remove_file(path);
            return Err(err("create", e));
        }
    };
    rtnl.set_up(LOOPBACK_IFINDEX)
        .map_err(|e| NetworkError::netlink(format!("set lo up in {}", path.display()), e))?;
    let file = File::open(path).map_err(|e| err("open", e))?;
    Ok(Netns { file, rtnl })
}

/// Opens the existing network namespace bound to `path`.
pub(crate) fn open(path: &Path) -> Result<Netns, NetworkError> {
    let file = File::open(path).map_err(|e| NetworkError::namespace("open", path, e))?;
    let fd = file.as_raw_fd();
    let rtnl = on_own_thread(move || {
        // SAFETY: `fd` stays open: `file` outlives this thread, which the
        // caller joins before going on.
        check(unsafe { libc::setns(fd, libc::CLONE_NEWNET) })?;
        enable_arp_notify();
        Rtnl::new()
    })
    .map_err(|e| NetworkError::namespace("enter", path, e))?;
    Ok(Netns { file, rtnl })
}

/// Unmounts and deletes the namespace file at `path`; fine if it is gone.
/// The namespace itself ends once no process is left in it.
pub(crate) fn remove(path: &Path) -> Result<(), NetworkError> {
    unmount_all(path).map_err(|e| NetworkError::namespace("unmount", path, e))?;
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetworkError::namespace("remove file of", path, e)),
    }
}
