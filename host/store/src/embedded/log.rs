//! The on-disk format: one append-only log file per data directory.
//!
//! ```text
//! file    = header record*
//! header  = "TRLSSTOR" (8 bytes) | format version u32 LE | reserved u32 LE (0)
//! record  = payload length u32 LE | crc32 of payload u32 LE | payload
//! payload = TXN      (1) | revision i64 | count u32 | op*          one committed transaction
//!         | SNAP_BEGIN (2) | revision i64 | compact revision i64   start of a compacted base
//!         | SNAP_KVS (3)   | count u32 | kv*                        live keys at the base
//!         | SNAP_END (4)   | key count u64
//! op      = PUT (1) | key | value   /   DELETE (2) | key           (bytes = u32 LE len | data)
//! kv      = key | value | create revision i64 | mod revision i64 | version i64
//! ```
//!
//! A log either starts with a snapshot (written by compaction, which rewrites the file to a
//! temporary name, fsyncs it, renames it over the old one and fsyncs the directory) or
//! with the first transaction. Transaction records carry only what was written: create
//! revisions and versions are derived again at replay exactly as when they were written.
//!
//! Damage is classified at open:
//! - a record cut short at the end of the file, a checksum mismatch in the very last
//!   record, or zero bytes up to the end are a **torn tail**: the crash happened before
//!   the fsync that would have acknowledged that write, so the tail is truncated and the
//!   store opens;
//! - a checksum mismatch followed by more data, an undecodable record, or revisions out
//!   of sequence are **corruption** ([`StoreError::Corrupt`]): acknowledged data is
//!   damaged, and the store refuses to open instead of silently dropping it;
//! - a wrong magic or an unknown format version is a **foreign** file
//!   ([`StoreError::Foreign`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::index::{State, Write};
use crate::error::{Result, StoreError};
use crate::types::{EventKind, KeyValue};

/// File name of the log inside the data directory.
pub const LOG_FILE: &str = "store.log";
const TMP_FILE: &str = "store.log.tmp";
const MAGIC: &[u8; 8] = b"TRLSSTOR";
const FORMAT_VERSION: u32 = 1;
pub(crate) const HEADER_LEN: usize = 16;
const FRAME_LEN: usize = 8;

const TAG_TXN: u8 = 1;
const TAG_SNAP_BEGIN: u8 = 2;
const TAG_SNAP_KVS: u8 = 3;
const TAG_SNAP_END: u8 = 4;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// Keys per snapshot record, so no record grows without bound.
const SNAPSHOT_CHUNK: usize = 1024;

fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// Append one framed record (built by `body`) to `buf`.
fn frame(buf: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_LEN]);
    body(buf);
    let payload = &buf[start + FRAME_LEN..];
    let len = u32::try_from(payload.len()).expect("record payload under 4 GiB");
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, data: &[u8]) {
    let len = u32::try_from(data.len()).expect("key or value under 4 GiB");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(data);
}

/// Encode one committed transaction.
pub(crate) fn encode_txn(buf: &mut Vec<u8>, revision: i64, writes: &[Write]) {
    frame(buf, |b| {
        b.push(TAG_TXN);
        b.extend_from_slice(&revision.to_le_bytes());
        b.extend_from_slice(&(writes.len() as u32).to_le_bytes());
        for w in writes {
            match &w.value {
                Some(v) => {
                    b.push(OP_PUT);
                    put_bytes(b, &w.key);
                    put_bytes(b, v);
                }
                None => {
                    b.push(OP_DELETE);
                    put_bytes(b, &w.key);
                }
            }
        }
    });
}

/// A reader over one record's payload that reports truncation as an error message.
struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.data.len() < n {
            return Err("record ends early".into());
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<Bytes, String> {
        let n = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }
    fn done(&self) -> Result<(), String> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} unexpected bytes after the record",
                self.data.len()
            ))
        }
    }
}

/// An open, replayed log ready for appends.
pub(crate) struct Log {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    pub(crate) dir: PathBuf,
}

/// What opening a log found.
pub(crate) struct Opened {
    pub(crate) log: Log,
    pub(crate) state: State,
    /// Bytes of torn tail that were cut off (0 when the log ended cleanly).
    pub(crate) truncated: u64,
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// Write `contents` to the temporary name, fsync it, rename it over the log and fsync the
/// directory, so the log is always either the old or the new file, complete.
fn install(dir: &Path, contents: impl FnOnce(&mut File) -> std::io::Result<()>) -> Result<File> {
    let tmp = dir.join(TMP_FILE);
    let path = dir.join(LOG_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| StoreError::io(&tmp, e))?;
    contents(&mut file)
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, e))?;
    sync_dir(dir)?;
    Ok(file)
}

impl Log {
    /// Open (or create) the log in `dir`, replay it, cut a torn tail.
    pub(crate) fn open(dir: &Path) -> Result<Opened> {
        let path = dir.join(LOG_FILE);
        // A leftover temporary file is an interrupted compaction: the old log is intact.
        let _ = std::fs::remove_file(dir.join(TMP_FILE));
        if !path.exists() {
            let file = install(dir, |f| f.write_all(&header()))?;
            tracing::info!(path = %path.display(), "created a new store log");
            return Ok(Opened {
                log: Log {
                    file,
                    path,
                    dir: dir.to_path_buf(),
                },
                state: State::new(),
                truncated: 0,
            });
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(|e| StoreError::io(&path, e))?;
        let (state, end) = replay(&path, &data)?;
        let truncated = (data.len() - end) as u64;
        if truncated > 0 {
            tracing::warn!(
                path = %path.display(),
                offset = end,
                bytes = truncated,
                "cutting a torn tail left by a crash (writes that were never acknowledged)"
            );
            file.set_len(end as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| StoreError::io(&path, e))?;
        }
        file.seek(SeekFrom::Start(end as u64))
            .map_err(|e| StoreError::io(&path, e))?;
        Ok(Opened {
            log: Log {
                file,
                path,
                dir: dir.to_path_buf(),
            },
            state,
            truncated,
        })
    }

    /// Append encoded records and make them durable.
    pub(crate) fn append_durable(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.file.write_all(buf)?;
        self.file.sync_data()
    }

    /// Replace the log with a compacted one describing `state`.
    pub(crate) fn rewrite(&mut self, state: &State) -> Result<u64> {
        let mut written = 0u64;
        let file = install(&self.dir, |f| {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            let mut buf = Vec::with_capacity(1 << 16);
            buf.extend_from_slice(&header());
            let (base, kvs) = state.snapshot_base();
            frame(&mut buf, |b| {
                b.push(TAG_SNAP_BEGIN);
                b.extend_from_slice(&base.to_le_bytes());
                b.extend_from_slice(&state.compact_revision.to_le_bytes());
            });
            for chunk in kvs.chunks(SNAPSHOT_CHUNK) {
                frame(&mut buf, |b| {
                    b.push(TAG_SNAP_KVS);
                    b.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
                    for kv in chunk {
                        put_bytes(b, &kv.key);
                        put_bytes(b, &kv.value);
                        b.extend_from_slice(&kv.create_revision.to_le_bytes());
                        b.extend_from_slice(&kv.mod_revision.to_le_bytes());
                        b.extend_from_slice(&kv.version.to_le_bytes());
                    }
                });
                w.write_all(&buf)?;
                written += buf.len() as u64;
                buf.clear();
            }
            frame(&mut buf, |b| {
                b.push(TAG_SNAP_END);
                b.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
            });
            for rev in state.retained_revisions() {
                let writes: Vec<Write> = rev
                    .events
                    .iter()
                    .map(|e| Write {
                        key: e.kv.key.clone(),
                        value: (e.kind == EventKind::Put).then(|| e.kv.value.clone()),
                    })
                    .collect();
                encode_txn(&mut buf, rev.revision, &writes);
                if buf.len() > 1 << 16 {
                    w.write_all(&buf)?;
                    written += buf.len() as u64;
                    buf.clear();
                }
            }
            w.write_all(&buf)?;
            written += buf.len() as u64;
            w.flush()
        })?;
        let mut file = file;
        file.seek(SeekFrom::End(0))
            .map_err(|e| StoreError::io(&self.path, e))?;
        self.file = file;
        Ok(written)
    }
}

/// Replay a whole log image. Returns the state and the offset where valid data ends.
fn replay(path: &Path, data: &[u8]) -> Result<(State, usize)> {
    let foreign = |reason: String| StoreError::Foreign {
        path: path.to_path_buf(),
        reason,
    };
    if data.len() < HEADER_LEN {
        return Err(foreign(format!(
            "file is {} bytes, shorter than the {HEADER_LEN}-byte header",
            data.len()
        )));
    }
    if &data[..8] != MAGIC {
        return Err(foreign(format!(
            "magic bytes are {:?}, expected {:?}",
            data[..8].escape_ascii().to_string(),
            MAGIC.escape_ascii().to_string()
        )));
    }
    let version = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(foreign(format!(
            "format version {version} is not supported (this build reads version {FORMAT_VERSION})"
        )));
    }

    let corrupt = |offset: usize, reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let mut state = State::new();
    let mut pos = HEADER_LEN;
    // Snapshot assembly: Some((revision, compact, kvs)) between SNAP_BEGIN and SNAP_END.
    let mut snapshot: Option<(i64, i64, Vec<KeyValue>)> = None;
    let mut first_record = true;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < FRAME_LEN {
            break; // torn frame header
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if rest.len() - FRAME_LEN < len {
            break; // torn payload: the record runs past the end of the file
        }
        let payload = &rest[FRAME_LEN..FRAME_LEN + len];
        let is_last = FRAME_LEN + len == rest.len();
        if len == 0 || crc32fast::hash(payload) != crc {
            // A torn last record, or zeros the file system allocated but never filled.
            if is_last || rest.iter().all(|&b| b == 0) {
                break;
            }
            return Err(corrupt(
                pos,
                format!("checksum mismatch in a {len}-byte record followed by more data"),
            ));
        }
        decode_record(payload, &mut state, &mut snapshot, first_record)
            .map_err(|reason| corrupt(pos, reason))?;
        first_record = false;
        pos += FRAME_LEN + len;
    }
    if snapshot.is_some() {
        return Err(corrupt(pos, "snapshot is not terminated".into()));
    }
    Ok((state, pos))
}

fn decode_record(
    payload: &[u8],
    state: &mut State,
    snapshot: &mut Option<(i64, i64, Vec<KeyValue>)>,
    first_record: bool,
) -> Result<(), String> {
    let mut c = Cursor { data: payload };
    match c.u8()? {
        TAG_TXN => {
            if snapshot.is_some() {
                return Err("transaction inside a snapshot".into());
            }
            let revision = c.i64()?;
            let n = c.u32()? as usize;
            let mut writes = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let op = c.u8()?;
                let key = c.bytes()?;
                let value = match op {
                    OP_PUT => Some(c.bytes()?),
                    OP_DELETE => None,
                    other => return Err(format!("unknown operation {other}")),
                };
                writes.push(Write { key, value });
            }
            c.done()?;
            state.apply(revision, &writes)
        }
        TAG_SNAP_BEGIN => {
            if !first_record {
                return Err("snapshot after the start of the log".into());
            }
            let revision = c.i64()?;
            let compact = c.i64()?;
            c.done()?;
            *snapshot = Some((revision, compact, Vec::new()));
            Ok(())
        }
        TAG_SNAP_KVS => {
            let Some((_, _, kvs)) = snapshot.as_mut() else {
                return Err("snapshot keys outside a snapshot".into());
            };
            let n = c.u32()? as usize;
            for _ in 0..n {
                kvs.push(KeyValue {
                    key: c.bytes()?,
                    value: c.bytes()?,
                    create_revision: c.i64()?,
                    mod_revision: c.i64()?,
                    version: c.i64()?,
                });
            }
            c.done()
        }
        TAG_SNAP_END => {
            let Some((revision, compact, kvs)) = snapshot.take() else {
                return Err("snapshot end outside a snapshot".into());
            };
            let count = c.u64()?;
            c.done()?;
            if count != kvs.len() as u64 {
                return Err(format!(
                    "snapshot announces {count} keys but holds {}",
                    kvs.len()
                ));
            }
            *state = State::from_snapshot(revision, compact, kvs);
            Ok(())
        }
        other => Err(format!("unknown record type {other}")),
    }
}
