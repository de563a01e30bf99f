//! The shim process itself: a single-threaded poll loop over its socket, the
//! containers' process fds (pidfds) and their output pipes.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, Pid};

use super::{mounts, ContainerState, Request, Response, Status, EXEC_OUTPUT_LIMIT, SOCKET};
use crate::log::{rfc3339, LineFramer, Stream};

/// Start the shim for the pod directory `dir` and return once it listens.
///
/// The calling process binds the socket, forks, and returns in the parent;
/// the child detaches (new session, child subreaper, stdio to `shim.log`)
/// and serves until asked to shut down. Call it only from a single-threaded
/// process: the `trellis shim` subcommand, before any runtime starts.
pub fn run(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("run"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let sock = dir.join(SOCKET);
    if sock.exists() {
        if super::ShimClient::new(dir).ping().is_ok() {
            anyhow::bail!("a shim already serves {}", dir.display());
        }
        std::fs::remove_file(&sock).ok();
    }
    let listener =
        UnixListener::bind(&sock).with_context(|| format!("binding {}", sock.display()))?;
    // SAFETY: the shim subcommand runs before any other thread exists.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        nix::unistd::ForkResult::Parent { .. } => Ok(()),
        nix::unistd::ForkResult::Child => {
            let code = match serve(dir, listener) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("trellis shim: {e:#}");
                    1
                }
            };
            std::process::exit(code)
        }
    }
}

fn serve(dir: &Path, listener: UnixListener) -> anyhow::Result<()> {
    nix::unistd::setsid().ok();
    // Forked by the factory, which ignores SIGCHLD (its children are reaped
    // for it): this process waits for its containers.
    // SAFETY: setting a signal's disposition to SIG_DFL runs no handler.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::SIGCHLD,
            nix::sys::signal::SigHandler::SigDfl,
        )
    }?;
    // Forked by the factory, it shows the factory's command line otherwise.
    super::factory::set_title(&[
        b"trellis-shim",
        b"--dir",
        dir.as_os_str().as_encoded_bytes(),
    ]);
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("shim.log"))?;
    let null = File::open("/dev/null")?;
    // SAFETY: dup2 onto the standard descriptors of this single thread.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
    }
    std::fs::write(dir.join("shim.pid"), std::process::id().to_string())?;
    listener.set_nonblocking(true)?;
    let mut shim = Shim::new(dir);
    shim.load_state();
    shim.run(listener)
}

struct Pump {
    fd: File,
    framer: LineFramer,
    /// The write end closed (EOF read); removed after the poll round.
    closed: bool,
}

struct Entry {
    state: ContainerState,
    pidfd: Option<OwnedFd>,
    cgroup: String,
    pumps: Vec<Pump>,
    log: Option<File>,
    /// The root filesystem the shim mounted for it.
    rootfs: Option<PathBuf>,
}

struct ExecJob {
    pid: Pid,
    pidfd: OwnedFd,
    out: Option<File>,
    err: Option<File>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    deadline: Instant,
    timed_out: bool,
    exit_code: Option<i32>,
    conn: UnixStream,
}

struct Shim {
    dir: PathBuf,
    root: PathBuf,
    containers: Vec<Entry>,
    execs: Vec<ExecJob>,
    /// Exit statuses reaped before their container was looked at.
    reaped: HashMap<i32, i32>,
    shutdown: bool,
    /// In its own mount namespace (see `mounts.rs`).
    isolated: bool,
}

enum Token {
    Listener,
    Container(usize),
    Pump(usize, usize),
    ExecPid,
    ExecOut(usize, bool),
}

impl Shim {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            root: dir.join("run"),
            containers: Vec::new(),
            execs: Vec::new(),
            reaped: HashMap::new(),
            shutdown: false,
            isolated: false,
        }
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("shim-state.json")
    }

    /// A shim never restarts while its containers run, but it keeps what it
    /// knows on disk so that a new shim for the same directory (after the
    /// node rebooted, say) reports the old containers as exited.
    fn load_state(&mut self) {
        let Ok(bytes) = std::fs::read(self.state_file()) else {
            return;
        };
        let Ok(states) = serde_json::from_slice::<Vec<ContainerState>>(&bytes) else {
            return;
        };
        for mut state in states {
            if state.status == Status::Running {
                state.status = Status::Exited;
                state.exit_code = Some(255);
                state.finished_at = Some(rfc3339(SystemTime::now()));
            }
            self.containers.push(Entry {
                state,
                pidfd: None,
                cgroup: String::new(),
                pumps: Vec::new(),
                log: None,
                rootfs: None,
            });
        }
    }

    fn save_state(&self) {
        let states: Vec<&ContainerState> = self.containers.iter().map(|e| &e.state).collect();
        let tmp = self.dir.join("shim-state.json.tmp");
        if let Ok(bytes) = serde_json::to_vec(&states) {
            if std::fs::write(&tmp, bytes).is_ok() {
                std::fs::rename(&tmp, self.state_file()).ok();
            }
        }
    }

    fn run(&mut self, listener: UnixListener) -> anyhow::Result<()> {
        loop {
            if self.shutdown
                && self.execs.is_empty()
                && self
                    .containers
                    .iter()
                    .all(|e| e.state.status == Status::Exited)
            {
                std::fs::remove_file(self.dir.join(SOCKET)).ok();
                return Ok(());
            }
            let mut tokens = vec![Token::Listener];
            let mut fds = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            for (i, e) in self.containers.iter().enumerate() {
                if let Some(p) = &e.pidfd {
                    tokens.push(Token::Container(i));
                    fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
                }
                for (j, p) in e.pumps.iter().enumerate().filter(|(_, p)| !p.closed) {
                    tokens.push(Token::Pump(i, j));
                    fds.push(PollFd::new(p.fd.as_fd(), PollFlags::POLLIN));
                }
            }
            let mut timeout = Duration::from_secs(1);
            let now = Instant::now();
            for (i, x) in self.execs.iter().enumerate() {
                if x.exit_code.is_none() {
                    tokens.push(Token::ExecPid);
                    fds.push(PollFd::new(x.pidfd.as_fd(), PollFlags::POLLIN));
                    timeout = timeout.min(x.deadline.saturating_duration_since(now));
                }
                if let Some(f) = &x.out {
                    tokens.push(Token::ExecOut(i, true));
                    fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                }
                if let Some(f) = &x.err {
                    tokens.push(Token::ExecOut(i, false));
                    fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                }
            }
            let ms = timeout.as_millis().min(1000) as u16;
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            let mut accept = false;
            let mut exited = Vec::new();
            for (t, r) in tokens.iter().zip(ready) {
                if !r {
                    continue;
                }
                match *t {
                    Token::Listener => accept = true,
                    Token::Pump(i, j) => self.pump(i, j),
                    Token::ExecOut(i, out) => self.exec_read(i, out),
                    Token::Container(i) => exited.push(i),
                    Token::ExecPid => {}
                }
            }
            for e in &mut self.containers {
                e.pumps.retain(|p| !p.closed);
            }
            self.reap();
            // A readable pidfd whose process we could not reap was not our
            // child (something else reaped it): its exit code is unknown.
            for i in exited {
                let e = &mut self.containers[i];
                if e.state.status == Status::Running {
                    Self::drain(e);
                    e.pidfd = None;
                    e.state.status = Status::Exited;
                    e.state.exit_code = Some(255);
                    e.state.finished_at = Some(rfc3339(SystemTime::now()));
                    self.save_state();
                }
            }
            self.finish_execs();
            if accept {
                while let Ok((conn, _)) = listener.accept() {
                    self.serve_conn(conn);
                }
            }
        }
    }

    /// Move one pipe's bytes into its container's log.
    fn pump(&mut self, i: usize, j: usize) {
        let e = &mut self.containers[i];
        let mut buf = [0u8; 16 * 1024];
        let n = match e.pumps[j].fd.read(&mut buf) {
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(_) => 0,
        };
        if let Some(log) = e.log.as_mut() {
            if n == 0 {
                e.pumps[j].framer.finish(log).ok();
            } else {
                e.pumps[j].framer.push(&buf[..n], log).ok();
            }
        }
        if n == 0 {
            e.pumps[j].closed = true;
        }
    }

    /// Drain what is left in a finished container's pipes.
    fn drain(e: &mut Entry) {
        let mut buf = [0u8; 16 * 1024];
        for p in &mut e.pumps {
            loop {
                match p.fd.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Some(log) = e.log.as_mut() {
                            p.framer.push(&buf[..n], log).ok();
                        }
                    }
                }
            }
            if let Some(log) = e.log.as_mut() {
                p.framer.finish(log).ok();
            }
        }
        e.pumps.clear();
        e.log = None;
    }

    fn exec_read(&mut self, i: usize, out: bool) {
        let x = &mut self.execs[i];
        let (file, buf) = if out {
            (&mut x.out, &mut x.stdout)
        } else {
            (&mut x.err, &mut x.stderr)
        };
        let Some(f) = file.as_mut() else { return };
        let mut chunk = [0u8; 16 * 1024];
        match f.read(&mut chunk) {
            Ok(0) => *file = None,
            Ok(n) => {
                let room = EXEC_OUTPUT_LIMIT.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => *file = None,
        }
    }

    /// Collect every child that ended: containers, execs and orphans that
    /// the subreaper inherited.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.reaped.insert(pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.reaped.insert(pid.as_raw(), 128 + sig as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            };
        }
        let mut changed = false;
        for e in &mut self.containers {
            if e.state.status != Status::Running {
                continue;
            }
            let Some(code) = self.reaped.remove(&e.state.pid) else {
                continue;
            };
            Self::drain(e);
            e.pidfd = None;
            e.state.status = Status::Exited;
            e.state.exit_code = Some(code);
            e.state.signal = (code > 128).then_some(code - 128);
            e.state.finished_at = Some(rfc3339(SystemTime::now()));
            e.state.oom_killed = oom_killed(&e.cgroup);
            changed = true;
        }
        for x in &mut self.execs {
            if x.exit_code.is_none() {
                if let Some(code) = self.reaped.remove(&x.pid.as_raw()) {
                    x.exit_code = Some(code);
                }
            }
        }
        // Statuses of orphans nobody asked about.
        self.reaped.retain(|_, _| false);
        if changed {
            self.save_state();
        }
    }

    /// Answer execs whose process ended (and whose pipes closed), kill the
    /// ones out of time.
    fn finish_execs(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.execs.len() {
            let x = &mut self.execs[i];
            if x.exit_code.is_none() && now >= x.deadline && !x.timed_out {
                x.timed_out = true;
                kill(x.pid, Signal::SIGKILL).ok();
            }
            let done = x.exit_code.is_some() && x.out.is_none() && x.err.is_none();
            // Output of an exited exec may still be held open by a process it
            // left behind; do not wait for it past the deadline.
            let give_up = x.exit_code.is_some() && now >= x.deadline;
            if done || give_up {
                let mut x = self.execs.remove(i);
                let resp = Response::Exec {
                    stdout: std::mem::take(&mut x.stdout),
                    stderr: std::mem::take(&mut x.stderr),
                    exit_code: x.exit_code.unwrap_or(137),
                    timed_out: x.timed_out,
                };
                write_response(&mut x.conn, &resp);
            } else {
                i += 1;
            }
        }
    }

    fn serve_conn(&mut self, mut conn: UnixStream) {
        conn.set_nonblocking(false).ok();
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            return;
        }
        let req = match serde_json::from_str::<Request>(&line) {
            Ok(r) => r,
            Err(e) => {
                let message = format!("malformed request: {e}");
                write_response(&mut conn, &Response::Error { message });
                return;
            }
        };
        let resp = match req {
            Request::Ping => Ok(Response::Ok),
            Request::Run {
                id,
                bundle,
                log,
                rootfs,
            } => self.start(&id, &bundle, &log, rootfs),
            Request::Kill { id, signal } => self.kill(&id, signal),
            Request::Delete { id } => self.delete(&id),
            Request::State => Ok(Response::State {
                containers: self.containers.iter().map(|e| e.state.clone()).collect(),
            }),
            Request::Exec {
                id,
                args,
                stdin,
                timeout_ms,
            } => match self.exec(&id, args, &stdin, timeout_ms, conn) {
                Ok(()) => return,
                Err((e, mut conn)) => {
                    let message = format!("{e:#}");
                    write_response(&mut conn, &Response::Error { message });
                    return;
                }
            },
            Request::Shutdown => {
                self.shutdown = true;
                Ok(Response::Ok)
            }
        };
        let resp = resp.unwrap_or_else(|e| Response::Error {
            message: format!("{e:#}"),
        });
        write_response(&mut conn, &resp);
    }

    fn find(&self, id: &str) -> anyhow::Result<usize> {
        self.containers
            .iter()
            .position(|e| e.state.id == id)
            .with_context(|| format!("no container {id} in this pod"))
    }

    fn start(
        &mut self,
        id: &str,
        bundle: &Path,
        log_path: &Path,
        rootfs: Option<PathBuf>,
    ) -> anyhow::Result<Response> {
        if self.containers.iter().any(|e| e.state.id == id) {
            anyhow::bail!("container {id} exists already");
        }
        let spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)?;
        if !self.isolated {
            mounts::isolate(&spec)?;
            self.isolated = true;
        }
        let mounted = rootfs.as_deref().map(mounts::mount_rootfs).transpose()?;
        let r = self.create(id, bundle, log_path, &spec, mounted.clone());
        if let (Err(_), Some(m)) = (&r, &mounted) {
            mounts::unmount_rootfs(m);
        }
        r
    }

    fn create(
        &mut self,
        id: &str,
        bundle: &Path,
        log_path: &Path,
        spec: &serde_json::Value,
        rootfs: Option<PathBuf>,
    ) -> anyhow::Result<Response> {
        if let Some(parent) = log_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        // The container's ends must block like any ordinary stdout.
        clear_nonblock(&out_w);
        clear_nonblock(&err_w);
        let cgroup = spec["linux"]["cgroupsPath"]
            .as_str()
            .unwrap_or("")
            .to_string();
        // Not `as_sibling`: that clones the intermediate process as our
        // sibling, and the container's init would end up under pid 1. As a
        // child subreaper we inherit the init when the intermediate exits.
        let mut container = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(&self.root)?
            .with_stdin(File::open("/dev/null")?)
            .with_stdout(out_w)
            .with_stderr(err_w)
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .as_sibling(false)
            .build()
            .map_err(|e| anyhow::anyhow!("creating container {id}: {e}"))?;
        if let Err(e) = container.start() {
            container.delete(true).ok();
            anyhow::bail!("starting container {id}: {e}");
        }
        let pid = container
            .pid()
            .context("libcontainer reported no pid for the started container")?;
        let pidfd = pidfd_open(pid.as_raw())?;
        let state = ContainerState {
            id: id.to_string(),
            pid: pid.as_raw(),
            status: Status::Running,
            started_at: rfc3339(SystemTime::now()),
            finished_at: None,
            exit_code: None,
            signal: None,
            oom_killed: false,
            log: log_path.to_path_buf(),
        };
        self.containers.push(Entry {
            state: state.clone(),
            pidfd: Some(pidfd),
            cgroup,
            pumps: vec![
                Pump {
                    fd: File::from(out_r),
                    framer: LineFramer::new(Stream::Stdout),
                    closed: false,
                },
                Pump {
                    fd: File::from(err_r),
                    framer: LineFramer::new(Stream::Stderr),
                    closed: false,
                },
            ],
            log: Some(log),
            rootfs,
        });
        self.save_state();
        Ok(Response::Started { state })
    }

    fn kill(&mut self, id: &str, signal: i32) -> anyhow::Result<Response> {
        let e = &self.containers[self.find(id)?];
        if e.state.status == Status::Running {
            let sig = Signal::try_from(signal).context("unknown signal")?;
            // The init is our unreaped child: its pid cannot have been reused.
            kill(Pid::from_raw(e.state.pid), sig).ok();
        }
        Ok(Response::Ok)
    }

    fn delete(&mut self, id: &str) -> anyhow::Result<Response> {
        let i = self.find(id)?;
        if self.containers[i].state.status == Status::Running {
            kill(Pid::from_raw(self.containers[i].state.pid), Signal::SIGKILL).ok();
            // Wait for it so the cgroup can go.
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.containers[i].state.status == Status::Running && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
                self.reap();
            }
        }
        release_page_cache(&self.containers[i].cgroup);
        match Container::load(self.root.join(id)) {
            Ok(mut c) => {
                if let Err(e) = c.delete(true) {
                    eprintln!("trellis shim: deleting {id}: {e}");
                }
            }
            Err(_) => {
                std::fs::remove_dir_all(self.root.join(id)).ok();
            }
        }
        if let Some(rootfs) = &self.containers[i].rootfs {
            mounts::unmount_rootfs(rootfs);
        }
        self.containers.remove(i);
        self.save_state();
        Ok(Response::Ok)
    }

    fn exec(
        &mut self,
        id: &str,
        args: Vec<String>,
        stdin: &[u8],
        timeout_ms: u64,
        conn: UnixStream,
    ) -> Result<(), (anyhow::Error, UnixStream)> {
        let r = (|| -> anyhow::Result<ExecJob> {
            let i = self.find(id)?;
            if self.containers[i].state.status != Status::Running {
                anyhow::bail!("container {id} is not running");
            }
            if args.is_empty() {
                anyhow::bail!("no command given");
            }
            if stdin.len() > 60 * 1024 {
                anyhow::bail!("stdin larger than 60 KiB is not supported");
            }
            let (in_r, in_w) = pipe2(OFlag::O_CLOEXEC)?;
            let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
            let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
            clear_nonblock(&out_w);
            clear_nonblock(&err_w);
            File::from(in_w).write_all(stdin)?;
            let pid = ContainerBuilder::new(id.to_string(), SyscallType::default())
                .with_root_path(&self.root)?
                .with_stdin(in_r)
                .with_stdout(out_w)
                .with_stderr(err_w)
                .as_tenant()
                .with_container_args(args.clone())
                .as_sibling(false)
                .with_detach(true)
                .build()
                .map_err(|e| anyhow::anyhow!("exec {:?} in {id}: {e}", args))?;
            Ok(ExecJob {
                pid,
                pidfd: pidfd_open(pid.as_raw())?,
                out: Some(File::from(out_r)),
                err: Some(File::from(err_r)),
                stdout: Vec::new(),
                stderr: Vec::new(),
                deadline: Instant::now() + Duration::from_millis(timeout_ms.max(1)),
                timed_out: false,
                exit_code: None,
                conn: conn.try_clone()?,
            })
        })();
        match r {
            Ok(job) => {
                self.execs.push(job);
                Ok(())
            }
            Err(e) => Err((e, conn)),
        }
    }
}

fn write_response(conn: &mut UnixStream, resp: &Response) {
    if let Ok(mut bytes) = serde_json::to_vec(resp) {
        bytes.push(b'\n');
        conn.set_nonblocking(false).ok();
        conn.set_write_timeout(Some(Duration::from_secs(5))).ok();
        conn.write_all(&bytes).ok();
    }
}

fn clear_nonblock(fd: &OwnedFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
}

fn pidfd_open(pid: i32) -> anyhow::Result<OwnedFd> {
    // SAFETY: the pidfd_open system call with a pid and no flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("pidfd_open");
    }
    // SAFETY: the kernel returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Reclaim the page cache charged to an exited container's memory cgroup
/// (v1 `memory.force_empty`) before the cgroup is removed. A removed cgroup
/// whose pages are still cached lingers in the kernel as a dying cgroup until
/// they are reclaimed: after a few runs of the tests and benchmarks the node
/// held about 800 memory cgroups for the 3 that existed. Best effort: cgroup
/// v2 has no such file, and what cannot be reclaimed stays.
fn release_page_cache(cgroup: &str) {
    if cgroup.is_empty() {
        return;
    }
    let path = v1_memory_file(cgroup, "memory.force_empty");
    if path.exists() {
        std::fs::write(path, "0").ok();
    }
}

/// `file` of `cgroup`'s cgroup v1 memory controller.
fn v1_memory_file(cgroup: &str, file: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup/memory")
        .join(cgroup.trim_start_matches('/'))
        .join(file)
}

/// Whether the kernel's OOM killer killed a process of this cgroup (v1
/// `memory.oom_control`, v2 `memory.events`).
fn oom_killed(cgroup: &str) -> bool {
    if cgroup.is_empty() {
        return false;
    }
    let rel = cgroup.trim_start_matches('/');
    let count = |path: PathBuf| -> u64 {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("oom_kill ").map(|v| v.trim().parse().ok()))
                    .flatten()
            })
            .unwrap_or(0)
    };
    count(v1_memory_file(cgroup, "memory.oom_control")) > 0
        || count(Path::new("/sys/fs/cgroup").join(rel).join("memory.events")) > 0
}
