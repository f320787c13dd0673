use std::os::unix::fs::symlink;
use std::path::PathBuf;

use super::*;

/// Records mounts and the chroot; fails the chroot when asked to.
#[derive(Default)]
struct Recorder {
    mounts: Vec<(String, PathBuf, String)>,
    chroot: Option<PathBuf>,
    chroot_fails: bool,
}

impl RootSys for Recorder {
    fn mount(&mut self, source: &str, target: &Path, fstype: &str) -> std::io::Result<()> {
        self.mounts
            .push((source.into(), target.to_path_buf(), fstype.into()));
        Ok(())
    }
    fn chroot(&mut self, root: &Path) -> std::io::Result<()> {
        if self.chroot_fails {
            return Err(std::io::Error::from_raw_os_error(libc::EPERM));
        }
        self.chroot = Some(root.to_path_buf());
        Ok(())
    }
}

fn is_real_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

#[test]
fn the_images_own_links_at_mount_points_are_replaced_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    // What the initramfs around the image holds, and what an image's links would reach.
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), "initramfs").unwrap();
    let root = tmp.path().join("rootfs");
    std::fs::create_dir_all(root.join("cloak")).unwrap();
    std::fs::write(root.join("cloak/run.json"), "{}").unwrap();
    symlink("/", root.join("tmp")).unwrap();
    symlink("/cloak", root.join("proc")).unwrap();
    symlink("../outside", root.join("sys")).unwrap();
    std::fs::write(root.join("run"), "a file").unwrap();
    // dev missing entirely
    let mut sys = Recorder::default();
    let notes = enter_rootfs(&mut sys, &root).unwrap();

    for d in ["tmp", "proc", "sys", "run", "dev", "dev/pts", "dev/shm"] {
        assert!(is_real_dir(&root.join(d)), "{d} is not a real directory");
    }
    let targets: Vec<PathBuf> = sys.mounts.iter().map(|m| m.1.clone()).collect();
    let want: Vec<PathBuf> = ["proc", "sys", "dev", "tmp", "run", "dev/pts", "dev/shm"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    assert_eq!(targets, want);
    assert_eq!(sys.chroot.as_deref(), Some(root.as_path()));
    // what the links named is untouched
    assert_eq!(
        std::fs::read_to_string(root.join("cloak/run.json")).unwrap(),
        "{}"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("keep")).unwrap(),
        "initramfs"
    );
    assert_eq!(notes.len(), 4, "{notes:?}");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("tmp was a symbolic link to /;")),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.contains("run was not a directory")),
        "{notes:?}"
    );
}

#[test]
fn an_ordinary_tree_is_mounted_as_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    for d in ["proc", "sys", "dev", "tmp", "run"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("tmp/kept"), "x").unwrap();
    let mut sys = Recorder::default();
    assert_eq!(enter_rootfs(&mut sys, &root).unwrap(), Vec::<String>::new());
    assert_eq!(sys.mounts.len(), 7);
    assert!(root.join("tmp/kept").exists());
}

#[test]
fn a_failed_chroot_or_a_linked_root_stops_the_boot() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    let mut sys = Recorder {
        chroot_fails: true,
        ..Default::default()
    };
    let err = enter_rootfs(&mut sys, &root).unwrap_err();
    assert!(err.contains("entering") && err.contains("rootfs"), "{err}");

    let linked = tmp.path().join("linked");
    symlink(&root, &linked).unwrap();
    let mut sys = Recorder::default();
    let err = enter_rootfs(&mut sys, &linked).unwrap_err();
    assert!(err.contains("is not a directory"), "{err}");
    assert!(sys.mounts.is_empty() && sys.chroot.is_none());

    // No /rootfs at all: a flat ramdisk, nothing to do.
    let mut sys = Recorder::default();
    assert!(enter_rootfs(&mut sys, &tmp.path().join("absent"))
        .unwrap()
        .is_empty());
    assert!(sys.chroot.is_none());
}
