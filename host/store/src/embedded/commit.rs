//! The writer: one thread owns the log and commits transactions in groups.
//!
//! Every write goes through one channel to this thread. It takes whatever is queued (a
//! *batch*), evaluates each transaction in order against the index plus the batch's own
//! earlier writes, appends all their records with one `write`, makes them durable with
//! one `fdatasync`, applies them to the index, wakes the watches, and only then answers
//! the callers. Concurrent writers thus share fsyncs: with N writers a batch holds up to N
//! transactions, and throughput grows with N while one fsync (~3.5 ms on the reference
//! disk) stays the latency floor.
//!
//! Readers never see a write before it is durable, because the index changes only after
//! the fsync.
//!
//! Gathering: callers that were just answered usually send their next transaction a few
//! microseconds later. If the writer started the next fsync with only the first of them,
//! the rest would wait a whole extra fsync. So after the first transaction of a batch
//! arrives, the writer waits (at most [`super::EmbeddedConfig::group_commit_wait`]) until
//! as many transactions are queued as the previous batch held. A lone writer (previous
//! batch of one) never waits.
//!
//! If a write or fsync fails, the writer stops accepting writes ([`StoreError::Unavailable`]):
//! after a failed fsync the kernel may have dropped the dirty pages, so the only safe
//! recovery is to reopen and replay the log (as PostgreSQL does).

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::index::{State, Write};
use super::log::{encode_txn, Log};
use crate::error::{Result, StoreError};
use crate::types::{Txn, TxnResponse};

/// Most transactions in one group commit.
const MAX_BATCH: usize = 4096;
/// Most bytes in one group commit (the batch is cut after the transaction crossing it).
const MAX_BATCH_BYTES: usize = 16 << 20;

/// A request to the writer thread.
pub(crate) enum Command {
    /// Commit a (validated) transaction.
    Txn {
        txn: Txn,
        reply: oneshot::Sender<Result<TxnResponse>>,
    },
    /// Compact history and rewrite the log.
    Compact {
        revision: i64,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Stop: answer once the log and the directory lock are released.
    Close { reply: oneshot::Sender<()> },
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub(crate) log: Log,
    pub(crate) state: Arc<RwLock<State>>,
    pub(crate) revision_tx: tokio::sync::watch::Sender<i64>,
    pub(crate) gather_wait: Duration,
    /// Held for as long as the writer runs; released (closed) when it stops.
    pub(crate) lock_file: std::fs::File,
}

struct Pending {
    reply: oneshot::Sender<Result<TxnResponse>>,
    response: TxnResponse,
    /// The revision and writes to apply, if the transaction wrote anything.
    writes: Option<(i64, Vec<Write>)>,
}

impl Writer {
    /// Run until closed or until every store handle is dropped.
    pub(crate) fn run(mut self, commands: Receiver<Command>) {
        let mut failed: Option<String> = None;
        let mut expected = 1usize;
        let mut close_reply = None;
        'outer: while let Ok(first) = commands.recv() {
            let mut batch = Vec::new();
            let mut others = Vec::new();
            let mut queue = vec![first];
            // Gather: everything queued now, then wait briefly for the rest of the
            // previous batch's callers.
            let deadline = Instant::now() + self.gather_wait;
            loop {
                for cmd in queue.drain(..) {
                    match cmd {
                        Command::Txn { txn, reply } => batch.push((txn, reply)),
                        other => others.push(other),
                    }
                }
                if !others.is_empty() || batch.len() >= MAX_BATCH {
                    break;
                }
                match commands.try_recv() {
                    Ok(cmd) => {
                        queue.push(cmd);
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {}
                }
                if batch.len() >= expected {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match commands.recv_timeout(deadline - now) {
                    Ok(cmd) => queue.push(cmd),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            if !batch.is_empty() {
                expected = batch.len().max(1);
                match &failed {
                    Some(reason) => {
                        for (_, reply) in batch {
                            let _ = reply.send(Err(StoreError::unavailable(reason.clone())));
                        }
                    }
                    None => {
                        if let Err(reason) = self.commit(batch) {
                            failed = Some(reason);
                        }
                    }
                }
            }
            for cmd in others {
                match cmd {
                    Command::Compact { revision, reply } => {
                        let result = match &failed {
                            Some(reason) => Err(StoreError::unavailable(reason.clone())),
                            None => self.compact(revision),
                        };
                        let _ = reply.send(result);
                    }
                    Command::Close { reply } => {
                        close_reply = Some(reply);
                        break 'outer;
                    }
                    Command::Txn { .. } => unreachable!("transactions are batched above"),
                }
            }
        }
        let Writer { log, lock_file, .. } = self;
        drop(log);
        drop(lock_file);
        if let Some(reply) = close_reply {
            let _ = reply.send(());
        }
        tracing::debug!("store writer stopped");
    }

    /// Commit one batch. On an I/O failure, answers everyone and returns the reason.
    fn commit(
        &mut self,
        batch: Vec<(Txn, oneshot::Sender<Result<TxnResponse>>)>,
    ) -> Result<(), String> {
        let mut pending = Vec::with_capacity(batch.len());
        let mut buf = Vec::new();
        let mut rest = Vec::new();
        {
            let state = read(&self.state);
            let mut overlay = HashMap::new();
            let mut next = state.revision + 1;
            let mut iter = batch.into_iter();
            for (txn, reply) in iter.by_ref() {
                let (response, writes) = state.evaluate(&mut overlay, next, &txn);
                let writes = if writes.is_empty() {
                    None
                } else {
                    encode_txn(&mut buf, next, &writes);
                    next += 1;
                    Some((next - 1, writes))
                };
                pending.push(Pending {
                    reply,
                    response,
                    writes,
                });
                if buf.len() >= MAX_BATCH_BYTES {
                    break;
                }
            }
            rest.extend(iter);
        }
        if !buf.is_empty() {
            let started = Instant::now();
            if let Err(e) = self.log.append_durable(&buf) {
                let reason = format!(
                    "writing {} failed ({e}); the store stopped accepting writes, reopen it",
                    self.log.path.display()
                );
                tracing::error!(error = %e, path = %self.log.path.display(), "store log write failed");
                for p in pending {
                    let _ = p.reply.send(Err(StoreError::unavailable(reason.clone())));
                }
                for (_, reply) in rest {
                    let _ = reply.send(Err(StoreError::unavailable(reason.clone())));
                }
                return Err(reason);
            }
            tracing::trace!(
                txns = pending.len(),
                bytes = buf.len(),
                micros = started.elapsed().as_micros() as u64,
                "group commit"
            );
            let mut state = write(&self.state);
            for p in &pending {
                if let Some((revision, writes)) = &p.writes {
                    if let Err(reason) = state.apply(*revision, writes) {
                        // Evaluation and application run on the same state: a mismatch is
                        // a bug, and the log already holds the record, so stop writing.
                        tracing::error!(%reason, "store index diverged from its log");
                        drop(state);
                        for p in pending {
                            let _ = p.reply.send(Err(StoreError::unavailable(reason.clone())));
                        }
                        return Err(reason);
                    }
                }
            }
            let revision = state.revision;
            drop(state);
            self.revision_tx.send_replace(revision);
        }
        for p in pending {
            let _ = p.reply.send(Ok(p.response));
        }
        if !rest.is_empty() {
            return self.commit(rest);
        }
        Ok(())
    }

    fn compact(&mut self, revision: i64) -> Result<()> {
        {
            let mut state = write(&self.state);
            state.check_compact(revision)?;
            state.compact(revision);
        }
        // The in-memory compaction is done; the rewrite only reclaims disk. If it fails the
        // old log (with more history than needed) stays in place and remains valid.
        let state = read(&self.state);
        let started = Instant::now();
        let bytes = self.log.rewrite(&state)?;
        tracing::info!(
            revision,
            keys = state.live_keys,
            bytes,
            millis = started.elapsed().as_millis() as u64,
            "compacted the store log"
        );
        Ok(())
    }
}

pub(crate) fn read(state: &RwLock<State>) -> std::sync::RwLockReadGuard<'_, State> {
    state
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn write(state: &RwLock<State>) -> std::sync::RwLockWriteGuard<'_, State> {
    state
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
