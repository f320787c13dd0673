//! Comparable snapshots of a root file system: from a directory unpacked by a peer (umoci) and
//! from `cloak ls-files -o json`. Two snapshots are equal when every path has the same type,
//! permission bits, owner, size, content hash, symlink target and hardlink grouping.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};

/// One path of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub sha256: Option<String>,
    pub target: Option<String>,
}

pub type Tree = BTreeMap<String, Node>;

fn sha256_file(p: &Path) -> String {
    let mut h = Sha256::new();
    std::io::copy(&mut std::fs::File::open(p).unwrap(), &mut h).unwrap();
    hex::encode(h.finalize())
}

/// Snapshot of the directory `root` (e.g. umoci's `bundle/rootfs`).
pub fn from_dir(root: &Path) -> Tree {
    let mut paths = Vec::new();
    collect(root, root, &mut paths);
    paths.sort();
    let mut first_of_inode: HashMap<(u64, u64), String> = HashMap::new();
    let mut tree = Tree::new();
    for rel in paths {
        let p = root.join(rel.trim_start_matches('/'));
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let mut node = Node {
            kind: String::new(),
            mode: m.mode() & 0o7777,
            uid: m.uid() as u64,
            gid: m.gid() as u64,
            size: 0,
            sha256: None,
            target: None,
        };
        if ft.is_dir() {
            node.kind = "directory".into();
        } else if ft.is_symlink() {
            node.kind = "symlink".into();
            node.mode = 0;
            node.target = Some(
                std::fs::read_link(&p)
                    .unwrap()
                    .to_string_lossy()
                    .to_string(),
            );
        } else if ft.is_file() {
            node.size = m.len();
            node.sha256 = Some(sha256_file(&p));
            node.kind = "file".into();
            if m.nlink() > 1 {
                let key = (m.dev(), m.ino());
                match first_of_inode.get(&key) {
                    Some(first) => {
                        node.kind = "hardlink".into();
                        node.target = Some(first.clone());
                    }
                    None => {
                        first_of_inode.insert(key, rel.clone());
                    }
                }
            }
        } else if ft.is_char_device() {
            node.kind = "char_device".into();
        } else if ft.is_block_device() {
            node.kind = "block_device".into();
        } else if ft.is_fifo() {
            node.kind = "fifo".into();
        }
        tree.insert(rel, node);
    }
    tree
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        out.push(format!(
            "/{}",
            p.strip_prefix(root).unwrap().to_string_lossy()
        ));
        if e.file_type().unwrap().is_dir() {
            collect(root, &p, out);
        }
    }
}

/// Snapshot from `cloak ls-files -o json` output.
pub fn from_ls_files(json: &[u8]) -> Tree {
    let entries: Vec<serde_json::Value> =
        serde_json::from_slice(json).expect("ls-files prints JSON");
    let mut tree = Tree::new();
    for e in entries {
        let kind = e["type"].as_str().unwrap().to_string();
        let node = Node {
            mode: if kind == "symlink" {
                0
            } else {
                e["mode"].as_u64().unwrap() as u32
            },
            uid: e["uid"].as_u64().unwrap(),
            gid: e["gid"].as_u64().unwrap(),
            size: e["size"].as_u64().unwrap(),
            sha256: e["sha256"]
                .as_str()
                .map(|s| s.trim_start_matches("sha256:").to_string()),
            target: e["target"].as_str().map(str::to_string),
            kind,
        };
        tree.insert(e["path"].as_str().unwrap().to_string(), node);
    }
    tree
}

/// Panic with a readable list of differences when the trees differ.
pub fn assert_same(what: &str, expected: &Tree, actual: &Tree) {
    let mut diffs = Vec::new();
    for (p, n) in expected {
        match actual.get(p) {
            None => diffs.push(format!("missing {p}: {n:?}")),
            Some(a) if a != n => diffs.push(format!(
                "differs {p}:\n   expected {n:?}\n   actual   {a:?}"
            )),
            _ => {}
        }
    }
    for (p, n) in actual {
        if !expected.contains_key(p) {
            diffs.push(format!("unexpected {p}: {n:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}
