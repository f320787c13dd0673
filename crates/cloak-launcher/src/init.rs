//! PID 1 in a Nitro enclave (or its qemu stand-in): prepare the system the way nitro-cli's init
//! does, then run the application with docker semantics, reap every child, report the
//! application's exit status on the console and restart the VM (which ends it: Nitro enclaves
//! and `qemu -no-reboot` both stop on reboot).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::Path;

use crate::{launch, RealSys};

/// The line `cloak run` looks for on the console.
pub const STATUS_PREFIX: &str = "cloak-launcher: exit status ";

fn c(s: &str) -> CString {
    CString::new(s).expect("static paths have no NUL")
}

fn mount(source: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) {
    let _ = std::fs::create_dir_all(target);
    let (s, t, f, d) = (c(source), c(target), c(fstype), c(data));
    // SAFETY: valid NUL-terminated strings for the duration of the call.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            eprintln!("cloak-launcher: mount {fstype} on {target}: {e}");
        }
    }
}

fn console() {
    let path = c("/dev/console");
    // SAFETY: plain system calls on descriptors we own.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            for target in 0..3 {
                libc::dup2(fd, target);
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}

fn load_module(path: &str) {
    let Ok(f) = std::fs::File::open(path) else {
        return;
    };
    use std::os::fd::AsRawFd;
    let params = c("");
    // SAFETY: the descriptor is open for the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
    if rc != 0 {
        eprintln!(
            "cloak-launcher: loading {path}: {}",
            std::io::Error::last_os_error()
        );
    }
    let _ = std::fs::remove_file(path);
}

/// Directory of kernel modules `cloak run --publish` adds in an extra ramdisk (qemu only).
const MODULES_DIR: &str = "/cloak-modules";

/// Set (in the launcher's own environment, not the app's) when qemu's user-mode network is
/// up: the launcher then reaches the manager over it instead of vsock.
pub const USER_NET_ENV: &str = "CLOAK_USER_NET";

/// Load every module of [`MODULES_DIR`] in name order; configure qemu's user-mode network
/// (10.0.2.15/24) when the `net` marker is there. Nitro enclaves have no such ramdisk.
fn local_network() {
    let Ok(dir) = std::fs::read_dir(MODULES_DIR) else {
        return;
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.path().display().to_string())
        .filter(|p| p.ends_with(".ko"))
        .collect();
    names.sort();
    for m in &names {
        load_module(m);
    }
    if !std::path::Path::new(MODULES_DIR).join("net").exists() {
        return;
    }
    // SAFETY: ioctls on a socket we own with initialised ifreq structures.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"eth0\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        // The NIC appears when virtio_net has probed; give it a moment, boundedly.
        let mut found = false;
        for _ in 0..50 {
            if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0 {
                found = true;
                break;
            }
            libc::usleep(20_000);
        }
        if !found {
            eprintln!("cloak-launcher: no eth0 for the published ports");
            libc::close(fd);
            return;
        }
        let set_addr = |req: &mut libc::ifreq, ip: [u8; 4], op: libc::c_ulong| {
            let mut sin: libc::sockaddr_in = std::mem::zeroed();
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(ip);
            std::ptr::copy_nonoverlapping(
                (&sin as *const libc::sockaddr_in).cast::<u8>(),
                (&mut req.ifr_ifru as *mut libc::__c_anonymous_ifr_ifru).cast::<u8>(),
                std::mem::size_of::<libc::sockaddr_in>(),
            );
            libc::ioctl(fd, op, req as *mut libc::ifreq)
        };
        std::env::set_var(USER_NET_ENV, "1");
        set_addr(&mut req, [10, 0, 2, 15], libc::SIOCSIFADDR);
        set_addr(&mut req, [255, 255, 255, 0], libc::SIOCSIFNETMASK);
        libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        libc::close(fd);
    }
}

/// Tell the Nitro hypervisor the enclave booted: 0xB7 to CID 3 (the parent), port 9000.
fn ready_signal() {
    // SAFETY: a socket we own, a fully initialised sockaddr_vm.
    unsafe {
        let fd = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return; // no vsock: not on Nitro
        }
        let mut addr: libc::sockaddr_vm = std::mem::zeroed();
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_cid = 3;
        addr.svm_port = 9000;
        let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
        if libc::connect(fd, (&addr as *const libc::sockaddr_vm).cast(), len) == 0 {
            let b = [0xb7u8];
            libc::write(fd, b.as_ptr().cast(), 1);
            let mut r = [0u8];
            libc::read(fd, r.as_mut_ptr().cast(), 1);
        }
        libc::close(fd);
    }
}

fn loopback_up() {
    // SAFETY: an ioctl on a socket we own with an initialised ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        libc::close(fd);
    }
}

/// The file systems the init mounts in the image before entering it, in order; targets are
/// relative to the image root (`dev/pts` and `dev/shm` lie inside the fresh devtmpfs).
const ROOT_MOUNTS: [(&str, &str, &str); 7] = [
    ("proc", "proc", "proc"),
    ("sysfs", "sys", "sysfs"),
    ("devtmpfs", "dev", "devtmpfs"),
    ("tmpfs", "tmp", "tmpfs"),
    ("tmpfs", "run", "tmpfs"),
    ("devpts", "dev/pts", "devpts"),
    ("tmpfs", "dev/shm", "tmpfs"),
];

/// The system calls of entering the image root; a recording fake implements it in tests.
pub trait RootSys {
    /// Mount `fstype` from `source` on the directory `target`.
    fn mount(&mut self, source: &str, target: &Path, fstype: &str) -> std::io::Result<()>;
    /// Make `root` the root directory and the working directory.
    fn chroot(&mut self, root: &Path) -> std::io::Result<()>;
}

/// The real system calls.
pub struct RealRootSys;

impl RootSys for RealRootSys {
    fn mount(&mut self, source: &str, target: &Path, fstype: &str) -> std::io::Result<()> {
        let t = CString::new(target.as_os_str().as_encoded_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let (s, f, d) = (c(source), c(fstype), c(""));
        // SAFETY: valid NUL-terminated strings for the duration of the call.
        let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, d.as_ptr().cast()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    fn chroot(&mut self, root: &Path) -> std::io::Result<()> {
        let r = CString::new(root.as_os_str().as_encoded_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let (dot, slash) = (c("."), c("/"));
        // SAFETY: plain system calls with valid paths.
        let ok = unsafe {
            libc::chdir(r.as_ptr()) == 0
                && libc::chroot(dot.as_ptr()) == 0
                && libc::chdir(slash.as_ptr()) == 0
        };
        if ok {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// Make `root/rel` a real directory reached without following any symbolic link: each
/// component is looked at with `lstat`; a missing one is created, and one that is a symbolic
/// link or not a directory (the image's own `/tmp -> /`, `/proc -> /cloak`, a file named `run`)
/// is replaced by an empty directory. These are mount points the init owns (like a container
/// runtime owns `/proc`, `/sys` and `/dev`): following an image's link would mount over
/// whatever it names, inside the image (hiding `/cloak`) or, for an absolute link, in the
/// initramfs around it. Nothing else runs while PID 1 does this, so the checked path is the
/// mounted path. Returns a note per replaced entry.
pub fn mount_point(root: &Path, rel: &str) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    let mut cur = root.to_path_buf();
    for comp in rel.split('/') {
        cur.push(comp);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => continue,
            Ok(m) => {
                let what = if m.file_type().is_symlink() {
                    match std::fs::read_link(&cur) {
                        Ok(t) => format!("a symbolic link to {}", t.display()),
                        Err(_) => "a symbolic link".to_string(),
                    }
                } else {
                    "not a directory".to_string()
                };
                std::fs::remove_file(&cur)
                    .map_err(|e| format!("removing {} ({what}): {e}", cur.display()))?;
                notes.push(format!(
                    "{} was {what}; replaced by an empty directory for the mount",
                    cur.display()
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", cur.display())),
        }
        std::fs::create_dir(&cur).map_err(|e| format!("creating {}: {e}", cur.display()))?;
    }
    Ok(notes)
}

/// Mount proc, sys, dev, tmp and run inside `root` (see [`mount_point`]) and enter it. An
/// error means the application must not start: its root would not be the image. Returns
/// notes about replaced mount points, for the console. Without `root` (a flat ramdisk), the
/// root is already the image.
pub fn enter_rootfs(sys: &mut dyn RootSys, root: &Path) -> Result<Vec<String>, String> {
    match std::fs::symlink_metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "{} is not a directory (a symbolic link or a file); the image tree is damaged",
                root.display()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", root.display())),
    }
    let mut notes = Vec::new();
    for (source, rel, fstype) in ROOT_MOUNTS {
        notes.extend(mount_point(root, rel)?);
        let target = root.join(rel);
        if let Err(e) = sys.mount(source, &target, fstype) {
            // A mount that fails leaves an empty directory of the image: the application
            // still runs with its own configuration, so this is reported, not fatal.
            if e.raw_os_error() != Some(libc::EBUSY) {
                notes.push(format!("mount {fstype} on {}: {e}", target.display()));
            }
        }
    }
    sys.chroot(root)
        .map_err(|e| format!("entering {}: {e}", root.display()))?;
    Ok(notes)
}

/// Run as PID 1; never returns.
pub fn run_as_init() -> ! {
    mount("devtmpfs", "/dev", "devtmpfs", 0, "");
    console();
    load_module("/nsm.ko");
    local_network();
    ready_signal();
    // A streamed ramdisk's regular files are put in place now; never start the application
    // on a partial tree.
    if let Err(e) = crate::files::place_files(std::path::Path::new("/")) {
        eprintln!("cloak-launcher: placing the image's files: {e}");
        finish(125);
    }
    // Never start the application outside its own root (a failed chroot would run it in
    // the initramfs, with /cloak-data and whatever the image's links pointed at).
    match enter_rootfs(&mut RealRootSys, Path::new("/rootfs")) {
        Ok(notes) => {
            for n in notes {
                eprintln!("cloak-launcher: {n}");
            }
        }
        Err(e) => {
            eprintln!("cloak-launcher: {e}; the application is not started");
            finish(125);
        }
    }
    loopback_up();
    let outer: BTreeMap<String, String> = std::env::vars().collect();
    // SAFETY: fork in a single-threaded process; the child only execs or exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: plain system call.
        unsafe { libc::setsid() };
        let err = launch(&mut RealSys, &outer, &[]);
        eprintln!("cloak-launcher: {err}");
        std::process::exit(err.exit_status());
    }
    let mut code = 127;
    loop {
        let mut status = 0;
        // SAFETY: reaping our children.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            break; // no children left
        }
        if pid == child {
            code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
        }
    }
    finish(code)
}

/// Report `code` as the exit status and end the VM.
fn finish(code: i32) -> ! {
    println!("{STATUS_PREFIX}{code}");
    // SAFETY: flushing and restarting the VM is the end of PID 1.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    std::process::exit(code)
}

#[cfg(test)]
mod tests;
