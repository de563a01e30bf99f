//! Starting shims without starting a program each time.
//!
//! Executing the shim program for every pod (loading it, linking its shared
//! libraries, faulting its pages in) and then forking to detach cost about as
//! much CPU as a pod's whole network set-up. Instead the agent keeps one
//! small process, the factory (`trellis-shim --factory`): it reads one pod
//! directory per line and forks a shim for it, as [`super::run_shim`] would,
//! answering `ok` or `error: …` per line. A shim so forked is the same
//! single-threaded process, detached the same way; its parent is the factory,
//! which lets the kernel reap it. The factory ends when the agent closes its
//! input (the agent stops), and the shims carry on.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use super::{ShimClient, ShimError};

/// Room for a shim's command line: the factory gets a blank argument this
/// long, which each shim it forks overwrites with `trellis-shim --dir DIR`,
/// so that `ps` tells the shims apart (a forked process shows its parent's
/// command line otherwise).
const TITLE_ROOM: usize = 480;

/// Run the factory on standard input and output until input ends. Call it
/// from a single-threaded process only (it forks).
pub fn run_factory() -> anyhow::Result<()> {
    set_title(&[b"trellis-shim", b"--factory"]);
    // The shims it forks are not waited for: the kernel reaps them. Each
    // shim sets the default back, as it waits for its own containers.
    // SAFETY: setting a signal's disposition to SIG_IGN runs no handler.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::SIGCHLD,
            nix::sys::signal::SigHandler::SigIgn,
        )
    }?;
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let dir = PathBuf::from(line?);
        let answer = match super::server::run(&dir) {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("error: {e:#}").replace('\n', " "),
        };
        // Flushed before the next fork, so no shim inherits a pending answer.
        writeln!(stdout, "{answer}")?;
        stdout.flush()?;
    }
    Ok(())
}

/// The agent's side: starts shims through one factory process, started on
/// first use and again if it dies; falls back to executing the shim program.
#[derive(Debug)]
pub struct ShimFactory {
    program: PathBuf,
    args: Vec<String>,
    running: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl ShimFactory {
    /// Shims of `program args…` (`--factory` or `--dir DIR` appended).
    pub fn new(program: &Path, args: &[String]) -> Self {
        Self {
            program: program.to_path_buf(),
            args: args.to_vec(),
            running: Mutex::new(None),
        }
    }

    /// Start the shim of `client`'s pod directory unless one answers already;
    /// returns once it listens. Blocking.
    pub fn spawn(&self, client: &ShimClient) -> Result<(), ShimError> {
        if client.ping().is_ok() {
            return Ok(());
        }
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        // A factory that died (or never started) is started again, once.
        for _ in 0..2 {
            if running.is_none() {
                *running = self.start().ok();
            }
            let Some(r) = running.as_mut() else { break };
            match r.request(client.dir()) {
                Ok(Ok(())) => return client.ping(),
                Ok(Err(message)) => {
                    // Two agents racing to start the same shim: the loser
                    // finds the winner serving.
                    if client.ping().is_ok() {
                        return Ok(());
                    }
                    return Err(ShimError::Spawn {
                        dir: client.dir().to_path_buf(),
                        message,
                    });
                }
                Err(_) => {
                    if let Some(mut dead) = running.take() {
                        dead.child.kill().ok();
                        dead.child.wait().ok();
                    }
                }
            }
        }
        drop(running);
        client.spawn(&self.program, &self.args)
    }

    fn start(&self) -> std::io::Result<Running> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .arg("--factory")
            .arg(" ".repeat(TITLE_ROOM))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let input = child.stdin.take().expect("piped");
        let output = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Running {
            child,
            input,
            output,
        })
    }
}

impl Running {
    /// One request: Ok(Ok) started, Ok(Err) the factory's refusal, Err the
    /// factory is gone.
    fn request(&mut self, dir: &Path) -> std::io::Result<Result<(), String>> {
        let dir = dir
            .to_str()
            .filter(|d| !d.contains('\n'))
            .ok_or_else(|| std::io::Error::other("the pod directory is not one line of UTF-8"))?;
        writeln!(self.input, "{dir}")?;
        self.input.flush()?;
        let mut answer = String::new();
        if self.output.read_line(&mut answer)? == 0 {
            return Err(std::io::Error::other("the shim factory exited"));
        }
        Ok(match answer.trim_end() {
            "ok" => Ok(()),
            other => Err(other.strip_prefix("error: ").unwrap_or(other).to_string()),
        })
    }
}

impl Drop for ShimFactory {
    fn drop(&mut self) {
        let running = self.running.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(mut r) = running.take() {
            // End of input ends the factory; its shims carry on.
            drop(r.input);
            r.child.wait().ok();
        }
    }
}

/// Overwrite this process's command line (`/proc/self/cmdline`, what `ps`
/// shows) with `parts`, NUL-separated, where the original arguments' memory
/// holds them, as setproctitle does; the rest of that memory is zeroed. Does
/// nothing when they do not fit. Call it only once the process's arguments
/// have been read.
pub(crate) fn set_title(parts: &[&[u8]]) {
    let Some((start, end)) = argument_area() else {
        return;
    };
    let mut title: Vec<u8> = Vec::new();
    for p in parts {
        title.extend_from_slice(p);
        title.push(0);
    }
    let room = end - start;
    if title.len() > room {
        return;
    }
    title.resize(room, 0);
    // SAFETY: [start, end) is this process's argument strings, on its
    // initial stack, writable and alive for the whole process; nothing
    // reads them concurrently (single-threaded callers, arguments parsed).
    unsafe { std::ptr::copy_nonoverlapping(title.as_ptr(), start as *mut u8, room) };
}

/// `arg_start` and `arg_end` of /proc/self/stat (fields 48 and 49).
fn argument_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields counted after the command name, which may hold spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split(' ').skip(45);
    let start: usize = f.next()?.parse().ok()?;
    let end: usize = f.next()?.parse().ok()?;
    (start > 0 && end > start).then_some((start, end))
}
