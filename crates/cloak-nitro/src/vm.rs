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
    /// TCP port forwards `(host, guest)` on 127.0.0.1 (qemu user-mode networking + virtio-net).
    pub publish: Vec<(u16, u16)>,
}

/// A ramdisk with the virtio-net modules (`NN-name.ko`, loaded in name order) and the `net`
/// marker that makes the launcher configure eth0 as 10.0.2.15/24.
pub fn network_ramdisk(modules: &Path, out: &Path) -> Result<()> {
    use crate::cpio::{Entry, Kind, Writer};
    let mut names: Vec<PathBuf> = std::fs::read_dir(modules)
        .map_err(|e| Error::io("read kernel modules in", modules, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ko"))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(Error::Input(format!(
            "{} holds no .ko modules (scripts/fetch-kernel.sh extracts them)",
            modules.display()
        )));
    }
    let f = std::fs::File::create(out).map_err(|e| Error::io("create", out, e))?;
    let mut w = Writer::new(std::io::BufWriter::new(f));
    let meta = |name: String, kind: Kind| Entry {
        name,
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
        link_group: None,
    };
    let err = |e| Error::io("write", out, e);
    w.entry(&meta("cloak-modules".into(), Kind::Dir), 1, true, None)
        .map_err(err)?;
    for p in &names {
        let mut file = std::fs::File::open(p).map_err(|e| Error::io("open", p, e))?;
        let size = file.metadata().map_err(|e| Error::io("stat", p, e))?.len();
        let name = format!(
            "cloak-modules/{}",
            p.file_name().unwrap_or_default().to_string_lossy()
        );
        w.entry(&meta(name, Kind::File { size }), 1, true, Some(&mut file))
            .map_err(err)?;
    }
    w.entry(
        &meta("cloak-modules/net".into(), Kind::File { size: 0 }),
        1,
        true,
        None,
    )
    .map_err(err)?;
    w.finish().map_err(err)?;
    Ok(())
}

/// A ramdisk with simulated-attestation material for a local boot: `key.pem` (the simulation
/// signing key, 0600) and `measurements.json` (the PCRs the evidence claims) in the image root's
/// `/cloak-simulation`, where the launcher looks when the image allows simulation. It is only
/// added at boot, like the network ramdisk: the EIF and its PCRs do not change.
pub fn simulation_ramdisk(key_pem: &[u8], measurements_json: &str, out: &Path) -> Result<()> {
    use crate::cpio::{Entry, Kind, Writer};
    let f = std::fs::File::create(out).map_err(|e| Error::io("create", out, e))?;
    let mut w = Writer::new(std::io::BufWriter::new(f));
    let meta = |name: &str, kind: Kind, mode: u32| Entry {
        name: name.into(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: 0,
        link_group: None,
    };
    let err = |e| Error::io("write", out, e);
    w.entry(
        &meta("rootfs/cloak-simulation", Kind::Dir, 0o700),
        1,
        true,
        None,
    )
    .map_err(err)?;
    let files: [(&str, &[u8], u32); 2] = [
        ("rootfs/cloak-simulation/key.pem", key_pem, 0o600),
        (
            "rootfs/cloak-simulation/measurements.json",
            measurements_json.as_bytes(),
            0o644,
        ),
    ];
    for (name, data, mode) in files {
        let size = data.len() as u64;
        let mut r: &[u8] = data;
        w.entry(
            &meta(name, Kind::File { size }, mode),
            1,
            true,
            Some(&mut r),
        )
        .map_err(err)?;
    }
    w.finish().map_err(err)?;
    Ok(())
}

/// The command line for a local boot with networking: Nitro's `pci=off` and `nomodules` would
/// hide virtio-net. Only the local stand-in changes; the EIF and its PCRs do not.
pub fn cmdline_with_network(cmdline: &str) -> String {
    cmdline
        .split_whitespace()
        .filter(|t| *t != "pci=off" && *t != "nomodules")
        .collect::<Vec<_>>()
        .join(" ")
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
    if crate::eif::kernel_format(kernel)? == crate::eif::KernelFormat::Arm64Image {
        return Err(Error::Input(format!(
            "{} is an arm64 Image kernel (a Graviton enclave): cloak run boots x86 bzImage \
             kernels only, under qemu-system-x86_64; run arm64 EIFs with nitro-cli on a Graviton \
             parent instance",
            kernel.display()
        )));
    }
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
    .args(["-append", cmdline]);
    if !opts.publish.is_empty() {
        let fwd: String = opts
            .publish
            .iter()
            .map(|(h, g)| format!(",hostfwd=tcp:127.0.0.1:{h}-:{g}"))
            .collect();
        cmd.args([
            "-netdev",
            &format!("user,id=n0{fwd}"),
            "-device",
            "virtio-net-pci,netdev=n0",
        ]);
    }
    // qemu must not outlive us, whatever ends this process.
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
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
