//! Boot an EIF's kernel, cmdline and ramdisks under `qemu-system-x86_64`: the development
//! stand-in for `nitro-cli run-enclave` on machines without Nitro. The console goes to our
//! stdout; the launcher's exit-status line becomes our exit status.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The console line the launcher prints as PID 1 before restarting the VM.
pub const STATUS_PREFIX: &str = "cloak-launcher: exit status ";

/// How to run the VM.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// vCPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// Use KVM (else TCG, which always works but is slower).
    pub kvm: bool,
    /// Give up and kill the VM after this long.
    pub timeout: Duration,
}

/// Concatenate ramdisks into one initrd (the kernel unpacks concatenated newc archives in order).
pub fn concat_ramdisks(ramdisks: &[PathBuf], out: &Path) -> Result<()> {
    let mut o = std::fs::File::create(out).map_err(|e| Error::io("create", out, e))?;
    for r in ramdisks {
        let mut f = std::fs::File::open(r).map_err(|e| Error::io("open", r, e))?;
        std::io::copy(&mut f, &mut o).map_err(|e| Error::io("copy", r, e))?;
    }
    Ok(())
}

/// Boot and return the application's exit status (from the launcher's console line).
/// `console` receives every byte the guest prints.
pub fn boot(
    kernel: &Path,
    cmdline: &str,
    initrd: &Path,
    opts: &VmOptions,
    console: &mut dyn Write,
) -> Result<i32> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-nographic",
        "-no-reboot",
        "-nodefaults",
        "-serial",
        "stdio",
        "-monitor",
        "none",
    ])
    .args([
        "-machine",
        if opts.kvm {
            "q35,accel=kvm"
        } else {
            "q35,accel=tcg"
        },
    ])
    .args([
        "-m",
        &opts.mem_mib.to_string(),
        "-smp",
        &opts.cpus.to_string(),
    ])
    .arg("-kernel")
    .arg(kernel)
    .arg("-initrd")
    .arg(initrd)
    .args(["-append", cmdline])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        Error::Input(format!(
            "cannot start qemu-system-x86_64: {e} (apt-get install qemu-system-x86)"
        ))
    })?;
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        loop {
            let mut line = Vec::new();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let deadline = Instant::now() + opts.timeout;
    let mut status = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let _ = console.write_all(&line);
                let text = String::from_utf8_lossy(&line);
                if let Some(rest) = text.trim_end().rsplit_once(STATUS_PREFIX).map(|(_, r)| r) {
                    status = rest.trim().parse::<i32>().ok();
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::Input(format!(
                        "the enclave did not finish within {} s; it was stopped",
                        opts.timeout.as_secs()
                    )));
                }
            }
        }
    }
    let _ = reader.join();
    let qemu = child
        .wait()
        .map_err(|e| Error::Input(format!("waiting for qemu: {e}")))?;
    let qemu_err = err_thread.join().unwrap_or_default();
    match status {
        Some(s) => Ok(s),
        None => Err(Error::Input(format!(
            "the enclave stopped without reporting an exit status (qemu {qemu}){}",
            if qemu_err.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", qemu_err.trim())
            }
        ))),
    }
}
