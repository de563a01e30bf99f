//! Persisted allocations: which pod has which address and host-side veth.
//!
//! One JSON file under the state directory, replaced atomically (write to a
//! temporary file, rename) while holding an exclusive `flock` on a separate
//! lock file, so two setups at once (threads or processes) never hand out the
//! same address. The file is not fsynced: everything it describes (network
//! namespaces, veths) is gone after a machine crash anyway, and an agent
//! restart finds the page cache intact.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cidr::PodCidr;
use crate::error::NetworkError;

const STATE_FILE: &str = "allocations.json";
const LOCK_FILE: &str = "allocations.lock";
const VERSION: u32 = 1;

/// What one pod was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Allocation {
    pub(crate) ip: Ipv4Addr,
    pub(crate) host_veth: String,
}

/// The whole persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct State {
    pub(crate) version: u32,
    pub(crate) bridge: String,
    pub(crate) pod_cidr: String,
    /// The address handed out last; the next allocation starts after it.
    pub(crate) last_ip: Option<Ipv4Addr>,
    pub(crate) pods: BTreeMap<String, Allocation>,
}

impl State {
    fn empty(bridge: &str, cidr: &PodCidr) -> Self {
        State {
            version: VERSION,
            bridge: bridge.to_owned(),
            pod_cidr: cidr.to_string(),
            last_ip: None,
            pods: BTreeMap::new(),
        }
    }

    /// The pod's allocation, made now if it has none; `true` when new.
    pub(crate) fn allocate(
        &mut self,
        uid: &str,
        bridge: &str,
        cidr: &PodCidr,
    ) -> Result<(Allocation, bool), NetworkError> {
        if let Some(existing) = self.pods.get(uid) {
            return Ok((existing.clone(), false));
        }
        let ip = cidr
            .next_free(self.last_ip, |ip| self.pods.values().any(|a| a.ip == ip))
            .ok_or_else(|| NetworkError::AddressesExhausted {
                pod_cidr: cidr.to_string(),
                capacity: cidr.capacity(),
            })?;
        let host_veth = (0u32..)
            .map(|salt| host_veth_name(bridge, uid, salt))
            .find(|name| self.pods.values().all(|a| &a.host_veth != name))
            .expect("an unbounded salt always finds an unused name");
        let allocation = Allocation { ip, host_veth };
        self.last_ip = Some(ip);
        self.pods.insert(uid.to_owned(), allocation.clone());
        Ok((allocation, true))
    }
}

/// The host-side veth name of a pod: `trv` and 12 hex digits of a hash of the
/// bridge and pod UID (15 characters, the kernel's limit). Including the
/// bridge keeps two agents on one machine (each with its own bridge) apart;
/// `salt` resolves the unlikely collision inside one state.
pub(crate) fn host_veth_name(bridge: &str, uid: &str, salt: u32) -> String {
    // FNV-1a: stable across Rust releases, unlike `DefaultHasher`.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let salt = salt.to_le_bytes();
    let parts: [&[u8]; 4] = [bridge.as_bytes(), b"/", uid.as_bytes(), &salt];
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("trv{:012x}", hash >> 16)
}

/// The state file and its lock.
#[derive(Debug, Clone)]
pub(crate) struct StateStore {
    file: PathBuf,
    lock: PathBuf,
}

impl StateStore {
    pub(crate) fn new(dir: &Path) -> Self {
        StateStore {
            file: dir.join(STATE_FILE),
            lock: dir.join(LOCK_FILE),
        }
    }

    fn lock(&self, exclusive: bool) -> Result<File, NetworkError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(|e| NetworkError::io("open lock file", &self.lock, e))?;
        let locked = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        locked.map_err(|e| NetworkError::io("lock", &self.lock, e))?;
        Ok(file)
    }

    /// The state as stored (an empty one for `bridge`/`cidr` when there is
    /// no file yet).
    fn load(&self, bridge: &str, cidr: &PodCidr) -> Result<State, NetworkError> {
        match fs::read(&self.file) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| NetworkError::StateCorrupt {
                    path: self.file.clone(),
                    source,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::empty(bridge, cidr)),
            Err(e) => Err(NetworkError::io("read state file", &self.file, e)),
        }
    }

    fn store(&self, state: &State) -> Result<(), NetworkError> {
        let tmp = self.file.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(state).expect("the state always serializes");
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            fs::rename(&tmp, &self.file)
        };
        write().map_err(|e| NetworkError::io("write state file", &self.file, e))
    }

    /// Reads the state under a shared lock.
    pub(crate) fn read(&self, bridge: &str, cidr: &PodCidr) -> Result<State, NetworkError> {
        let _lock = self.lock(false)?;
        self.load(bridge, cidr)
    }

    /// Runs `f` on the state under an exclusive lock and stores the result
    /// if `f` changed it (also when `f` fails after changing it).
    pub(crate) fn update<R>(
        &self,
        bridge: &str,
        cidr: &PodCidr,
        f: impl FnOnce(&mut State) -> Result<R, NetworkError>,
    ) -> Result<R, NetworkError> {
        let _lock = self.lock(true)?;
        let before = self.load(bridge, cidr)?;
        let mut state = before.clone();
        let result = f(&mut state);
        if state != before {
            self.store(&state)?;
        }
        result
    }

    /// Moves a corrupt state file aside (to `allocations.json.corrupt`) so a
    /// fresh state can start.
    pub(crate) fn set_aside(&self) -> Result<PathBuf, NetworkError> {
        let _lock = self.lock(true)?;
        let aside = self.file.with_extension("json.corrupt");
        fs::rename(&self.file, &aside)
            .map_err(|e| NetworkError::io("move aside corrupt state file", &self.file, e))?;
        Ok(aside)
    }

    /// Removes the state and lock files.
    pub(crate) fn remove(&self) -> Result<(), NetworkError> {
        for path in [&self.file, &self.lock] {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(NetworkError::io("remove", path, e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_short_stable_and_distinct() {
        let a = host_veth_name("trellis0", "uid-1", 0);
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("trv"));
        assert_eq!(a, host_veth_name("trellis0", "uid-1", 0));
        assert_ne!(a, host_veth_name("trellis1", "uid-1", 0));
        assert_ne!(a, host_veth_name("trellis0", "uid-2", 0));
        assert_ne!(a, host_veth_name("trellis0", "uid-1", 1));
    }

    #[test]
    fn allocations_persist_and_exhaust() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let cidr: PodCidr = "10.5.5.0/29".parse().unwrap(); // 5 pods
        let mut ips = Vec::new();
        for i in 0..5 {
            let (a, fresh) = store
                .update("br", &cidr, |s| s.allocate(&format!("p{i}"), "br", &cidr))
                .unwrap();
            assert!(fresh);
            ips.push(a.ip);
        }
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 5);
        let err = store
            .update("br", &cidr, |s| s.allocate("p5", "br", &cidr))
            .unwrap_err();
        assert!(matches!(
            err,
            NetworkError::AddressesExhausted { capacity: 5, .. }
        ));

        // Same pod, same address; the state survives a new store.
        let again = StateStore::new(dir.path());
        let (a, fresh) = again
            .update("br", &cidr, |s| s.allocate("p3", "br", &cidr))
            .unwrap();
        assert!(!fresh);
        assert_eq!(Some(&a), again.read("br", &cidr).unwrap().pods.get("p3"));
    }
}
