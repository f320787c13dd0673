//! The flattened root file system of an image: layers applied in order with OCI whiteouts.
//!
//! Nothing is ever written at a path taken from a layer: entries are kept as metadata in a
//! sorted map, and file contents are hashed (and optionally spooled to numbered files in a
//! private directory). Tar hazards therefore cannot touch the host: `..` components are
//! clamped at the image root, parent directories are resolved through the image's own
//! symlinks without ever leaving the root, and hardlinks must name a file already in the image.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, Result};
use crate::image::{Image, Source};
use crate::layer::decompress;
use crate::name::{self, escape, MAX_DEPTH, PATH_MAX};
use crate::spec;

mod limits;
pub(crate) use limits::TarGuard;
pub use limits::{MAX_LAYER_ENTRIES, MAX_LONG_NAME, MAX_PAX};

/// Maximum symlinks followed while resolving one path (as Linux's `MAXSYMLINKS`).
const MAX_SYMLINK_HOPS: usize = 40;
/// Most path components visited while resolving one path (symlinks included).
const MAX_RESOLVE_STEPS: u64 = 4096;
/// Most path components visited while resolving the paths of one layer.
pub const MAX_LAYER_RESOLVE_STEPS: u64 = 1 << 25;
/// Most entries visited by the whiteouts and opaque markers of one layer.
pub const MAX_LAYER_WHITEOUT_VISITS: u64 = 1 << 24;
/// Most entries in the flattened tree of an image (directories made implicitly included).
pub const MAX_TREE_ENTRIES: usize = 1 << 20;
/// Most bytes of paths held for the flattened tree of an image.
pub const MAX_TREE_PATH_BYTES: u64 = 64 << 20;

/// The most bytes one image may bring into a conversion: its layer blobs as announced, and
/// their uncompressed tar streams as they are read (a gzip bomb is refused while it
/// decompresses, after at most `max_bytes` of it). What fills a worker's disk or keeps it busy
/// (spooled files, a Nitro EIF written while the layers stream) is bounded by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLimit {
    /// Bytes of compressed layers, and separately of uncompressed layers, at most.
    pub max_bytes: u64,
    /// How whoever hit the limit raises it (said in the error): `raise --max-image-bytes`.
    pub raise: String,
}

/// Parses a size as operators write one: bytes (`1048576`), or a whole number with `K`, `M`,
/// `G` or `T` (powers of 1024; `KiB`, `MB`, `GiB`… mean the same).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let bad =
        || format!("{text:?} is not a size: write bytes, or a number with K, M, G or T (16G)");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?}: the size must be at least 1 byte and below 16 EiB"))
}

impl ImageLimit {
    fn refuse(&self, image: &str, what: &str) -> Error {
        Error::ImageTooLarge {
            image: image.to_string(),
            what: what.to_string(),
            limit: self.max_bytes,
            raise: self.raise.clone(),
        }
    }
}

/// Receives the content of every regular file while its layer is read, in layer order (see
/// [`flatten_streaming`]): nothing is spooled, and the final tree names each file's content
/// by [`Entry::content_id`]. Contents that later layers overwrite or delete were delivered
/// too; the receiver decides what to do with them.
pub trait ContentSink: Send + std::any::Any {
    /// Take content number `id` of the file at `path` (numbers increase in arrival order):
    /// `data` yields exactly `size` bytes, the size the layer announces.
    fn content(&mut self, id: u64, path: &str, size: u64, data: &mut dyn Read) -> io::Result<()>;
}

struct Sink(Box<dyn ContentSink>);

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentSink")
    }
}

/// What to keep of file contents.
#[derive(Debug, Clone)]
pub enum ContentMode {
    /// Only sha256 and size (enough for listings and SGX trusted files).
    HashOnly,
    /// Also keep the bytes in numbered files under this directory (for repacking).
    Spool(PathBuf),
    /// Keep the bytes only of files under these absolute directories (hash the rest).
    SpoolUnder(PathBuf, Vec<String>),
}

/// The type of a file-system entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum EntryKind {
    /// A directory.
    Directory,
    /// A regular file.
    File,
    /// A symbolic link; the target is stored as written (it is never followed on the host).
    Symlink {
        /// Link target.
        target: String,
    },
    /// Another name of the regular file at `target` (the first path of the group, sorted).
    Hardlink {
        /// Absolute path of the file this links to.
        target: String,
    },
    /// A character device (metadata only).
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device (metadata only).
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// One entry of the flattened file system.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Absolute, normalised path (`/bin/sh`).
    pub path: String,
    /// What it is.
    #[serde(flatten)]
    pub kind: EntryKind,
    /// Permission bits, including setuid, setgid and sticky (`0o7777` mask).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Size in bytes of regular files and hardlinks; 0 otherwise.
    pub size: u64,
    /// sha256 of the content of regular files and hardlinks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Digest>,
    /// Extended attributes (from PAX `SCHILY.xattr.*` records).
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        serialize_with = "ser_xattrs"
    )]
    pub xattrs: BTreeMap<String, Vec<u8>>,
    #[serde(skip)]
    content: Option<u64>,
    #[serde(skip)]
    layer: usize,
}

fn ser_xattrs<S: serde::Serializer>(
    x: &BTreeMap<String, Vec<u8>>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_map(x.iter().map(|(k, v)| (k, hex::encode(v))))
}

impl Entry {
    fn dir(layer: usize) -> Self {
        Entry {
            path: String::new(),
            kind: EntryKind::Directory,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            sha256: None,
            xattrs: BTreeMap::new(),
            content: None,
            layer,
        }
    }

    /// Whether the entry has content (a regular file or a hardlink to one).
    pub fn has_content(&self) -> bool {
        self.content.is_some()
    }

    /// The number of its content (shared by the names of a hardlink group): the `id` a
    /// [`ContentSink`] received it under.
    pub fn content_id(&self) -> Option<u64> {
        self.content
    }
}

/// Applies layers one after another.
#[derive(Debug)]
pub struct Flattener {
    mode: ContentMode,
    sink: Option<Sink>,
    nodes: BTreeMap<String, Entry>,
    refs: HashMap<u64, u32>,
    next_content: u64,
    layer: usize,
    warnings: Vec<String>,
    /// Bytes of the paths in `nodes` (bounded by [`MAX_TREE_PATH_BYTES`]).
    path_bytes: u64,
    /// Work of the current layer: components resolved, entries visited by whiteouts.
    steps: u64,
    visits: u64,
    /// What the whiteouts (subtrees) and opaque markers (children) of the current layer
    /// already cleared: repeating one is a no-op.
    cleared: HashSet<String>,
    opaque: HashSet<String>,
    /// The bound on uncompressed bytes and the image it is named by, if any.
    limit: Option<(ImageLimit, String)>,
    /// Uncompressed bytes of the layers applied so far.
    unpacked: u64,
}

fn split(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect()
}

/// `path` and its ancestors, nearest first (`a/b/c`, `a/b`, `a`).
fn self_and_ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |p| p.rfind('/').map(|i| &p[..i]))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

impl Flattener {
    /// Start with an empty root.
    pub fn new(mode: ContentMode) -> Result<Self> {
        if let ContentMode::Spool(dir) | ContentMode::SpoolUnder(dir, _) = &mode {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io("create spool directory", dir, e))?;
        }
        Ok(Flattener {
            mode,
            sink: None,
            nodes: BTreeMap::new(),
            refs: HashMap::new(),
            next_content: 0,
            layer: 0,
            warnings: Vec::new(),
            path_bytes: 0,
            steps: 0,
            visits: 0,
            cleared: HashSet::new(),
            opaque: HashSet::new(),
            limit: None,
            unpacked: 0,
        })
    }

    /// Hand every file's content to `sink` as it is read, instead of hashing or spooling it
    /// (entries then have no `sha256`).
    pub fn streaming(sink: Box<dyn ContentSink>) -> Self {
        Flattener {
            mode: ContentMode::HashOnly,
            sink: Some(Sink(sink)),
            nodes: BTreeMap::new(),
            refs: HashMap::new(),
            next_content: 0,
            layer: 0,
            warnings: Vec::new(),
            path_bytes: 0,
            steps: 0,
            visits: 0,
            cleared: HashSet::new(),
            opaque: HashSet::new(),
            limit: None,
            unpacked: 0,
        }
    }

    /// Refuse layers once their uncompressed bytes, all layers together, pass `limit`
    /// (`image` names them in the error).
    pub fn limit(&mut self, limit: ImageLimit, image: &str) {
        self.limit = Some((limit, image.to_string()));
    }

    /// Uncompressed bytes of the layers applied so far.
    pub fn unpacked_bytes(&self) -> u64 {
        self.unpacked
    }

    /// Take the sink back (streaming mode), e.g. before [`Flattener::finish`].
    pub fn take_sink(&mut self) -> Option<Box<dyn ContentSink>> {
        self.sink.take().map(|s| s.0)
    }

    fn spool_path(&self, id: u64) -> Option<PathBuf> {
        match &self.mode {
            ContentMode::Spool(dir) | ContentMode::SpoolUnder(dir, _) => {
                Some(dir.join(id.to_string()))
            }
            ContentMode::HashOnly => None,
        }
    }

    fn spools(&self, path: &str) -> bool {
        match &self.mode {
            ContentMode::Spool(_) => true,
            ContentMode::SpoolUnder(_, dirs) => dirs.iter().any(|d| {
                path.strip_prefix(d.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
            }),
            ContentMode::HashOnly => false,
        }
    }

    fn release(&mut self, entry: &Entry) {
        if let Some(id) = entry.content {
            let n = self.refs.entry(id).or_insert(1);
            *n -= 1;
            if *n == 0 {
                self.refs.remove(&id);
                if let Some(p) = self.spool_path(id) {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
    }

    /// Add (or replace) a node, within the limits on the tree.
    fn insert_node(&mut self, key: String, entry: Entry) -> Result<()> {
        let len = key.len() as u64;
        if let Some(old) = self.nodes.insert(key, entry) {
            self.path_bytes -= len;
            self.release(&old);
        }
        self.path_bytes += len;
        if self.nodes.len() > MAX_TREE_ENTRIES {
            return Err(self.layer_err(format!(
                "the image has more than {MAX_TREE_ENTRIES} files and directories (limit of cloak)"
            )));
        }
        if self.path_bytes > MAX_TREE_PATH_BYTES {
            return Err(self.layer_err(format!(
                "the paths of the image's files take more than {MAX_TREE_PATH_BYTES} bytes (limit of cloak)"
            )));
        }
        Ok(())
    }

    fn remove_node(&mut self, key: &str) {
        if let Some(e) = self.nodes.remove(key) {
            self.path_bytes -= key.len() as u64;
            self.release(&e);
        }
    }

    /// Remove `path` and everything under it.
    fn remove_tree(&mut self, path: &str) {
        let prefix = format!("{path}/");
        let doomed: Vec<String> = self
            .nodes
            .range::<str, _>((
                std::ops::Bound::Included(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.remove_node(&k);
        }
        self.remove_node(path);
    }

    /// Apply a whiteout: remove what lower layers put at `root` (when `with_root`) and under
    /// it, keeping what this layer added and the directories leading to it. One range of
    /// the sorted map is visited; a whiteout already covered by an earlier one of this
    /// layer does nothing (what it could remove is gone).
    fn remove_lower(&mut self, root: &str, with_root: bool) -> Result<()> {
        let covered = self_and_ancestors(root).enumerate().any(|(i, p)| {
            self.cleared.contains(p) || ((i > 0 || !with_root) && self.opaque.contains(p))
        }) || (!root.is_empty() && self.opaque.contains(""));
        if covered {
            return Ok(());
        }
        let layer = self.layer;
        let prefix = if root.is_empty() {
            String::new()
        } else {
            format!("{root}/")
        };
        let mut new_above: HashSet<&str> = HashSet::new();
        let mut lower: Vec<(&str, bool)> = Vec::new();
        let mut visits = 0u64;
        for (k, e) in self
            .nodes
            .range::<str, _>((
                std::ops::Bound::Included(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(&prefix))
        {
            visits += 1;
            if e.layer == layer {
                for a in self_and_ancestors(k).skip(1) {
                    if a.len() < prefix.len() || !new_above.insert(a) {
                        break;
                    }
                }
            } else {
                lower.push((k.as_str(), e.kind == EntryKind::Directory));
            }
        }
        let mut doomed: Vec<String> = lower
            .into_iter()
            .filter(|(k, dir)| !(*dir && new_above.contains(k)))
            .map(|(k, _)| k.to_string())
            .collect();
        let root_goes = with_root
            && !root.is_empty()
            && visits == doomed.len() as u64
            && self.nodes.get(root).is_some_and(|e| e.layer != layer);
        drop(new_above);
        self.visits += visits;
        if self.visits > MAX_LAYER_WHITEOUT_VISITS {
            return Err(self.layer_err(format!(
                "its whiteouts visit more than {MAX_LAYER_WHITEOUT_VISITS} entries (limit of cloak)"
            )));
        }
        if root_goes {
            doomed.push(root.to_string());
        }
        for k in doomed {
            self.remove_node(&k);
        }
        if with_root {
            self.cleared.insert(root.to_string());
        } else {
            self.opaque.insert(root.to_string());
        }
        Ok(())
    }

    /// Resolve a directory path inside the image, following the image's symlinks but never
    /// above its root. Missing directories are created (as tar extraction would) when `create`.
    fn resolve_dir(&mut self, comps: &[String], create: bool, what: &str) -> Result<String> {
        // Most entries sit in a directory that is already there under its own name.
        if !comps.iter().any(|c| c == "..") {
            let full = comps.join("/");
            if full.is_empty()
                || self
                    .nodes
                    .get(&full)
                    .is_some_and(|e| e.kind == EntryKind::Directory)
            {
                return Ok(full);
            }
        }
        let mut cur = String::new();
        let mut depth = 0usize;
        let mut queue: std::collections::VecDeque<String> = comps.iter().cloned().collect();
        let mut hops = 0;
        let mut steps = 0u64;
        while let Some(c) = queue.pop_front() {
            steps += 1;
            if steps > MAX_RESOLVE_STEPS {
                return Err(self.layer_err(format!(
                    "{what}: resolving it takes more than {MAX_RESOLVE_STEPS} steps through the image's symbolic links (limit of cloak)"
                )));
            }
            if c == ".." {
                cur.truncate(cur.rfind('/').unwrap_or(0));
                depth = depth.saturating_sub(1);
                continue;
            }
            let before = cur.len();
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(&c);
            depth += 1;
            if cur.len() >= PATH_MAX || depth > MAX_DEPTH {
                return Err(self.layer_err(format!(
                    "{what}: through the image's symbolic links it reaches a path of over {} bytes or {MAX_DEPTH} levels (limit of cloak)",
                    PATH_MAX - 1
                )));
            }
            match self.nodes.get(&cur).map(|e| &e.kind) {
                Some(EntryKind::Directory) => {}
                Some(EntryKind::Symlink { target }) => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(
                            self.layer_err(format!("{what}: too many levels of symbolic links"))
                        );
                    }
                    let target = target.clone();
                    cur.truncate(before);
                    depth -= 1;
                    if target.starts_with('/') {
                        cur.clear();
                        depth = 0;
                    }
                    for t in split(&target).into_iter().rev() {
                        queue.push_front(t);
                    }
                }
                Some(_) => {
                    return Err(self.layer_err(format!(
                        "{what}: /{} is not a directory (the layer is inconsistent)",
                        escape(&cur)
                    )))
                }
                None if create => {
                    let d = Entry::dir(self.layer);
                    self.insert_node(cur.clone(), d)?;
                }
                None => {
                    return Err(self.layer_err(format!(
                        "{what}: /{} does not exist in the image",
                        escape(&cur)
                    )));
                }
            }
        }
        self.steps += steps;
        if self.steps > MAX_LAYER_RESOLVE_STEPS {
            return Err(self.layer_err(format!(
                "resolving its paths takes more than {MAX_LAYER_RESOLVE_STEPS} steps (limit of cloak)"
            )));
        }
        Ok(cur)
    }

    fn layer_err(&self, reason: String) -> Error {
        Error::Layer {
            layer: format!("#{}", self.layer),
            reason,
        }
    }

    /// Apply one layer blob (compressed or not); returns the digest of the uncompressed tar
    /// (to compare with the config's `diff_ids`). `name` is used in messages.
    pub fn apply_layer(&mut self, name: &str, blob: impl Read + Send) -> Result<Digest> {
        self.layer += 1;
        self.steps = 0;
        self.visits = 0;
        self.cleared.clear();
        self.opaque.clear();
        let stream_err = |e: io::Error| {
            // A tar or compression format error means the bytes are not a layer: say so.
            // (Not for transfer errors, which come as `Other` too.)
            let hint = matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::Other
            ) && e.get_ref().is_none_or(|inner| {
                !inner.is::<Error>()
                    && !inner.is::<reqwest::Error>()
                    && !inner.is::<oci_client::errors::OciDistributionError>()
            });
            let what = if hint {
                format!("layer {name} (damaged, or not a tar archive)")
            } else {
                format!("layer {name}")
            };
            Error::from_stream(what, e)
        };
        // Reading, verifying and decompressing the blob run on a second thread.
        std::thread::scope(|scope| {
            let plain = crate::layer::read_ahead(scope, move || decompress(blob), 8);
            let budget = Budget {
                inner: plain,
                n: 0,
                used: self.unpacked,
                limit: self.limit.clone(),
            };
            let hashed = HashingReader::new(budget);
            let mut archive = tar::Archive::new(limits::TarGuard::new(hashed, name));
            let entries = archive.entries().map_err(stream_err)?;
            for entry in entries {
                let entry = entry.map_err(stream_err)?;
                self.apply_entry(name, entry).map_err(|e| match e {
                    Error::Layer { reason, .. } => Error::Layer {
                        layer: name.to_string(),
                        reason,
                    },
                    other => other,
                })?;
            }
            // Read to the very end so that the blob's digest and size are verified.
            let mut rest = archive.into_inner();
            io::copy(&mut rest, &mut io::sink()).map_err(stream_err)?;
            let (digest, n) = rest.into_inner().finish_counted();
            Ok((digest, n))
        })
        .map(|(digest, n)| {
            self.unpacked += n;
            digest
        })
    }

    fn apply_entry<R: Read>(&mut self, layer: &str, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw = {
            let bytes = entry.path_bytes();
            let text = name::decode(&bytes)
                .map_err(|e| self.layer_err(format!("entry {} {e}", name::escape_bytes(&bytes))))?;
            text.to_string()
        };
        let mut comps = split(&raw);
        if comps.len() > MAX_DEPTH {
            return Err(self.layer_err(format!(
                "entry {} {}",
                name::escape_bytes(raw.as_bytes()),
                name::NameError::TooDeep(comps.len())
            )));
        }
        let shown = escape(&raw).into_owned();
        let escaped = {
            let mut depth: i64 = 0;
            let mut out = false;
            for c in &comps {
                depth += if c == ".." { -1 } else { 1 };
                out |= depth < 0;
            }
            out || raw.starts_with('/')
        };
        if escaped {
            self.warnings.push(format!(
                "layer {layer}: entry {shown} reaches outside the image root; it was kept inside it"
            ));
        }
        let Some(last) = comps.pop() else {
            return Ok(()); // the root itself
        };
        let etype = entry.header().entry_type();
        if last == ".." {
            return Ok(()); // names a directory that some other entry defines
        }
        let parent = self.resolve_dir(&comps, true, &shown)?;
        if let Some(hidden) = last.strip_prefix(".wh.") {
            if hidden == ".wh..opq" {
                self.remove_lower(&parent, false)?;
            } else {
                self.remove_lower(&join(&parent, hidden), true)?;
            }
            return Ok(());
        }
        let path = join(&parent, &last);
        let header = entry.header().clone();
        let mut node = Entry::dir(self.layer);
        // The path is the node's key; `Entry::path` is filled in by `finish` (one copy of
        // every path while layers are applied).
        let abs = format!("/{path}");
        node.mode = header
            .mode()
            .map_err(|e| self.layer_err(format!("{shown}: bad mode: {e}")))?
            & 0o7777;
        node.uid = header.uid().unwrap_or(0);
        node.gid = header.gid().unwrap_or(0);
        node.mtime = header.mtime().unwrap_or(0);
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                let (Ok(key), value) = (ext.key(), ext.value_bytes()) else {
                    continue;
                };
                if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
                    node.xattrs.insert(attr.to_string(), value.to_vec());
                } else if let Ok(v) = std::str::from_utf8(value) {
                    match key {
                        "uid" => node.uid = v.parse().unwrap_or(node.uid),
                        "gid" => node.gid = v.parse().unwrap_or(node.gid),
                        "mtime" => {
                            node.mtime = v
                                .split('.')
                                .next()
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(node.mtime)
                        }
                        _ => {}
                    }
                }
            }
        }
        let existing_kind = self.nodes.get(&path).map(|e| e.kind.clone());
        match etype {
            tar::EntryType::Directory => {
                if existing_kind == Some(EntryKind::Directory) {
                    let e = self.nodes.get_mut(&path).expect("checked");
                    e.mode = node.mode;
                    e.uid = node.uid;
                    e.gid = node.gid;
                    e.mtime = node.mtime;
                    e.xattrs = node.xattrs;
                    e.layer = self.layer;
                    return Ok(());
                }
                self.remove_tree(&path);
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                node.kind = EntryKind::File;
                let id = self.next_content;
                self.next_content += 1;
                let spool = self.spools(&abs);
                let (digest, size) = self.store(&mut entry, id, &abs, spool)?;
                node.content = Some(id);
                node.sha256 = digest;
                node.size = size;
                self.refs.insert(id, 1);
                self.remove_tree(&path);
            }
            tar::EntryType::Symlink => {
                let target = self.link_target(&entry, &shown)?;
                node.kind = EntryKind::Symlink { target };
                self.remove_tree(&path);
            }
            tar::EntryType::Link => {
                let target_raw = self.link_target(&entry, &shown)?;
                let mut tcomps = split(&target_raw);
                let tname = tcomps.pop().ok_or_else(|| {
                    self.layer_err(format!("{shown}: hardlink with an empty target"))
                })?;
                let what = format!("hardlink {shown} -> {}", escape(&target_raw));
                let tparent = self.resolve_dir(&tcomps, false, &what).map_err(|_| {
                    self.layer_err(format!("{what}: the target is not a file of the image (links outside the image root are refused)"))
                })?;
                let tpath = join(&tparent, &tname);
                if tpath == path {
                    return Ok(());
                }
                let target = self.nodes.get(&tpath).cloned().ok_or_else(|| {
                    self.layer_err(format!("{what}: the target is not a file of the image (links outside the image root are refused)"))
                })?;
                if target.kind == EntryKind::Directory {
                    return Err(
                        self.layer_err(format!("{what}: hardlinks to directories are not allowed"))
                    );
                }
                node = target;
                node.layer = self.layer;
                if let Some(id) = node.content {
                    *self.refs.entry(id).or_insert(0) += 1;
                }
                self.remove_tree(&path);
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                node.kind = if etype == tar::EntryType::Char {
                    EntryKind::CharDevice { major, minor }
                } else {
                    EntryKind::BlockDevice { major, minor }
                };
                self.remove_tree(&path);
            }
            tar::EntryType::Fifo => {
                node.kind = EntryKind::Fifo;
                self.remove_tree(&path);
            }
            other => {
                self.warnings.push(format!(
                    "layer {layer}: entry {shown} of tar type {other:?} was skipped"
                ));
                return Ok(());
            }
        }
        self.insert_node(path, node)
    }

    /// The link target of `entry`, checked by the same rule as names.
    fn link_target<R: Read>(&self, entry: &tar::Entry<'_, R>, shown: &str) -> Result<String> {
        let Some(bytes) = entry.link_name_bytes() else {
            return Ok(String::new());
        };
        name::decode(&bytes).map(str::to_string).map_err(|e| {
            self.layer_err(format!(
                "entry {shown}: link target {} {e}",
                name::escape_bytes(&bytes)
            ))
        })
    }

    fn store<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        id: u64,
        path: &str,
        spool: bool,
    ) -> Result<(Option<Digest>, u64)> {
        // A refusal raised inside the stream (the image's limit) keeps its type.
        let stream_err = |e: io::Error| Error::from_stream("layer entry", e);
        if let Some(Sink(sink)) = &mut self.sink {
            let size = entry.size();
            let mut counted = Counted {
                inner: entry.take(size),
                n: 0,
            };
            sink.content(id, path, size, &mut counted)
                .map_err(stream_err)?;
            // The sink must have taken exactly the announced bytes.
            io::copy(&mut counted, &mut io::sink()).map_err(stream_err)?;
            if counted.n != size {
                return Err(self.layer_err(format!(
                    "a file's content ended after {} of the {size} bytes its header announces",
                    counted.n
                )));
            }
            return Ok((None, size));
        }
        match self.spool_path(id).filter(|_| spool) {
            None => {
                let mut w = HashingWriter::new(io::sink());
                io::copy(entry, &mut w).map_err(stream_err)?;
                let (d, n, _) = w.finish();
                Ok((Some(d), n))
            }
            Some(p) => {
                let f =
                    std::fs::File::create(&p).map_err(|e| Error::io("create spool file", &p, e))?;
                let mut w = HashingWriter::new(io::BufWriter::with_capacity(128 * 1024, f));
                io::copy(entry, &mut w).map_err(stream_err)?;
                let (d, n, mut f) = w.finish();
                f.flush()
                    .map_err(|e| Error::io("write spool file", &p, e))?;
                Ok((Some(d), n))
            }
        }
    }

    /// Finish: sort, and mark every name but the first of a hardlink group as a hardlink.
    pub fn finish(self) -> FlatFs {
        let mut first_of: HashMap<u64, String> = HashMap::new();
        let mut entries = Vec::with_capacity(self.nodes.len());
        for (key, mut e) in self.nodes {
            e.path = format!("/{key}");
            drop(key);
            if let Some(id) = e.content {
                match first_of.get(&id) {
                    Some(primary) => {
                        e.kind = EntryKind::Hardlink {
                            target: primary.clone(),
                        }
                    }
                    None => {
                        first_of.insert(id, e.path.clone());
                    }
                }
            }
            entries.push(e);
        }
        FlatFs {
            entries,
            spool: match self.mode {
                ContentMode::Spool(d) | ContentMode::SpoolUnder(d, _) => Some(d),
                ContentMode::HashOnly => None,
            },
            warnings: self.warnings,
        }
    }
}

/// Counts what is read through it.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Counts the uncompressed bytes of a layer and refuses to pass more than `left` (the
/// image's [`ImageLimit`] less what earlier layers used): the error comes before the bytes
/// over the limit are handed on, so nothing past it is hashed, spooled or streamed.
struct Budget<R> {
    inner: R,
    /// Bytes of this layer.
    n: u64,
    /// Bytes of the layers before.
    used: u64,
    limit: Option<(ImageLimit, String)>,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        if let Some((limit, image)) = &self.limit {
            if self.used.saturating_add(self.n) > limit.max_bytes {
                return Err(io::Error::other(limit.refuse(image, "uncompressed")));
            }
        }
        Ok(n)
    }
}

/// Hashes what is read through it (the uncompressed layer → its diff_id).
struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        use sha2::Digest as _;
        HashingReader {
            inner,
            hasher: sha2::Sha256::new(),
        }
    }

    fn finish(self) -> Digest {
        use sha2::Digest as _;
        Digest::from_sha256(self.hasher.finalize().into())
    }
}

impl<R: Read> HashingReader<Budget<R>> {
    /// The digest and the number of bytes.
    fn finish_counted(self) -> (Digest, u64) {
        let n = self.inner.n;
        (self.finish(), n)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A flattened file system: entries sorted by path, and their contents when spooled.
#[derive(Debug)]
pub struct FlatFs {
    entries: Vec<Entry>,
    spool: Option<PathBuf>,
    warnings: Vec<String>,
}

impl FlatFs {
    /// All entries, sorted by path (byte order).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Notes about hazards that were neutralised (clamped `..` names, skipped entry types).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Look an entry up by absolute path.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Follow symlinks from `path` (absolute) inside the image, never above its root, and
    /// return the entry it finally names; `None` if it dangles or loops.
    pub fn resolve(&self, path: &str) -> Option<&Entry> {
        let mut queue: std::collections::VecDeque<String> = split(path).into();
        let mut cur: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = queue.pop_front() {
            if c == ".." {
                cur.pop();
                continue;
            }
            cur.push(c);
            let here = format!("/{}", cur.join("/"));
            let entry = self.get(&here)?;
            if let EntryKind::Symlink { target } = &entry.kind {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return None;
                }
                cur.pop();
                if target.starts_with('/') {
                    cur.clear();
                }
                for t in split(target).into_iter().rev() {
                    queue.push_front(t);
                }
            } else if !queue.is_empty() && entry.kind != EntryKind::Directory {
                return None;
            }
        }
        if cur.is_empty() {
            return None;
        }
        self.get(&format!("/{}", cur.join("/")))
    }

    /// Where the spooled content of a regular file or hardlink lives (spooled mode only).
    pub fn content_path(&self, entry: &Entry) -> Option<PathBuf> {
        Some(self.spool.as_ref()?.join(entry.content?.to_string())).filter(|p| p.exists())
    }

    /// Open the content of a regular file or hardlink (spooled mode only).
    pub fn open(&self, entry: &Entry) -> Result<std::fs::File> {
        let (Some(dir), Some(id)) = (&self.spool, entry.content) else {
            return Err(Error::Invalid(format!(
                "{}: content is not available (not a regular file, or the image was flattened without spooling)",
                entry.path
            )));
        };
        let p = dir.join(id.to_string());
        std::fs::File::open(&p)
            .map_err(|e| Error::io("open spooled content of", Path::new(&entry.path), e))
    }
}

/// Flatten `image` from `src`: stream each layer, verify its blob digest and its diff_id;
/// within `limit` when one is given.
pub async fn flatten(
    src: &Source,
    image: &Image,
    mode: ContentMode,
    limit: Option<&ImageLimit>,
) -> Result<FlatFs> {
    let flattener = Flattener::new(mode)?;
    Ok(apply_layers(src, image, flattener, limit).await?.finish())
}

/// Flatten `image` from `src` handing every file's content to `sink` as it is read (no
/// spool, no per-file hash); blob digests and diff_ids are verified as in [`flatten`].
pub async fn flatten_streaming(
    src: &Source,
    image: &Image,
    sink: Box<dyn ContentSink>,
    limit: Option<&ImageLimit>,
) -> Result<(FlatFs, Box<dyn ContentSink>)> {
    let mut flattener = apply_layers(src, image, Flattener::streaming(sink), limit).await?;
    let sink = flattener
        .take_sink()
        .expect("a streaming flattener has its sink");
    Ok((flattener.finish(), sink))
}

/// Refuse `image` when its layer blobs, as its manifest announces them, are over `limit`
/// (before any is read).
pub fn check_size(image: &Image, limit: Option<&ImageLimit>) -> Result<()> {
    let Some(limit) = limit else {
        return Ok(());
    };
    let announced = image
        .manifest
        .layers
        .iter()
        .fold(0u64, |sum, l| sum.saturating_add(l.size));
    if announced > limit.max_bytes {
        return Err(limit.refuse(&image.reference, "compressed"));
    }
    Ok(())
}

async fn apply_layers(
    src: &Source,
    image: &Image,
    mut flattener: Flattener,
    limit: Option<&ImageLimit>,
) -> Result<Flattener> {
    check_size(image, limit)?;
    if let Some(l) = limit {
        flattener.limit(l.clone(), &image.reference);
    }
    let diff_ids = &image.config.rootfs.diff_ids;
    if diff_ids.len() != image.manifest.layers.len() {
        return Err(Error::Invalid(format!(
            "{}: the config lists {} diff_ids for {} layers",
            image.reference,
            diff_ids.len(),
            image.manifest.layers.len()
        )));
    }
    for (desc, diff_id) in image.manifest.layers.iter().zip(diff_ids) {
        if spec::layer_compression(&desc.media_type).is_none() {
            return Err(Error::UnsupportedMediaType {
                what: format!("layer {} of {}", desc.digest, image.reference),
                media_type: desc.media_type.clone(),
            });
        }
        let reader = src.blob(desc).await?;
        let name = desc.digest.to_string();
        let (f, got) = tokio::task::spawn_blocking(move || {
            let bridge = tokio_util::io::SyncIoBridge::new(reader);
            let got = flattener.apply_layer(&name, bridge);
            (flattener, got)
        })
        .await
        .map_err(|e| Error::Invalid(format!("layer worker failed: {e}")))?;
        flattener = f;
        let got = got?;
        if got != *diff_id {
            return Err(Error::DigestMismatch {
                what: format!(
                    "uncompressed layer {} of {} (config diff_id)",
                    desc.digest, image.reference
                ),
                expected: diff_id.to_string(),
                actual: got.to_string(),
            });
        }
    }
    Ok(flattener)
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
