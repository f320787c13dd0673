//! Run a command and measure its wall time and peak resident set size (from `wait4`).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Wall time and peak RSS of one run.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Elapsed wall-clock time.
    pub wall: Duration,
    /// Peak resident set size in KiB (`ru_maxrss`).
    pub max_rss_kib: u64,
}

/// Run `cmd` to completion; fail if it exits non-zero.
pub fn run(cmd: &mut Command) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("while starting {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for the child we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child; the pointers are valid for the call.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    if rc < 0 {
        bail!(
            "wait4 failed for {cmd:?}: {}",
            std::io::Error::last_os_error()
        );
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("{cmd:?} failed with wait status {status}");
    }
    // The Child handle must not reap again.
    std::mem::forget(child);
    Ok(Sample {
        wall,
        max_rss_kib: usage.ru_maxrss as u64,
    })
}

/// The median-by-wall sample of `n` runs, each preceded by `prepare`.
pub fn median(
    n: usize,
    mut prepare: impl FnMut() -> anyhow::Result<()>,
    mut make: impl FnMut() -> Command,
) -> anyhow::Result<Sample> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        prepare()?;
        samples.push(run(&mut make())?);
    }
    samples.sort_by_key(|s| s.wall);
    Ok(samples[samples.len() / 2])
}
