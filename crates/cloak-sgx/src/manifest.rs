//! Gramine manifests: a typed spec rendered to deterministic TOML (the bytes MRENCLAVE covers),
//! and the measured inputs read back from any `.manifest.sgx`.

use std::collections::BTreeMap;

use toml::{Table, Value};

use crate::error::{Error, Result};
use crate::sigstruct::Body;

/// Parse a size with an optional K/M/G suffix (`"2048M"`, `"4G"`, `"0x10000"`).
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = || {
        Error::Manifest(format!(
            "size {s:?} is not a number with an optional K, M or G suffix"
        ))
    };
    let t = s.trim();
    let (num, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n = match num.strip_prefix("0x").or_else(|| num.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).map_err(|_| bad())?,
        None => num.parse::<u64>().map_err(|_| bad())?,
    };
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// The largest `sgx.enclave_size` cloak builds or measures: 1 TiB, Gramine's own default with
/// EDMM. It is twice the EPC of the largest SGX servers (512 GiB per socket), and without
/// EDMM every page of it is part of MRENCLAVE: 1 TiB means 16 GiB of SHA-256 input, while the
/// 2^63 bytes a manifest can name would take years.
pub const MAX_ENCLAVE_SIZE: u64 = 1 << 40;

/// Parse and validate an enclave size: a power of two, at most [`MAX_ENCLAVE_SIZE`].
pub fn enclave_size(s: &str) -> Result<u64> {
    let n = parse_size(s)?;
    if !n.is_power_of_two() {
        return Err(Error::Manifest(format!(
            "enclave size {s:?} ({n} bytes) is not a power of two; use e.g. 256M, 512M, 1G, 2G"
        )));
    }
    check_enclave_size(n)?;
    Ok(n)
}

/// Refuse an enclave size above [`MAX_ENCLAVE_SIZE`].
pub fn check_enclave_size(n: u64) -> Result<()> {
    if n > MAX_ENCLAVE_SIZE {
        return Err(Error::Manifest(format!(
            "sgx.enclave_size of {n} bytes exceeds 1024G, the largest enclave cloak builds or \
             measures (beyond the EPC of any SGX machine; measuring it would take hours or \
             years); use at most 1024G"
        )));
    }
    Ok(())
}

/// Validate a thread count (the loader accepts 1..=4096).
pub fn threads(n: u64) -> Result<u64> {
    if (1..=4096).contains(&n) {
        Ok(n)
    } else {
        Err(Error::Manifest(format!(
            "threads = {n} is outside 1..=4096"
        )))
    }
}

/// A file-system mount of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `chroot`, `encrypted`, `tmpfs`.
    pub kind: String,
    /// Path inside the enclave.
    pub path: String,
    /// Host URI (`file:/data`).
    pub uri: String,
    /// Key of an encrypted mount (`default`, `_sgx_mrenclave`…).
    pub key_name: Option<String>,
}

/// Everything cloak writes into a manifest. Field order does not matter: rendering is sorted.
#[derive(Debug, Clone, Default)]
pub struct ManifestSpec {
    /// `libos.entrypoint`: the first executable (cloak's launcher).
    pub libos_entrypoint: String,
    /// `loader.entrypoint.uri` (libsysdb.so).
    pub loader_entrypoint_uri: String,
    /// `loader.entrypoint.sha256` (hex).
    pub loader_entrypoint_sha256: String,
    /// `loader.argv`; `None` with `insecure_cmdline_argv` takes argv from the host.
    pub argv: Option<Vec<String>>,
    /// `loader.insecure__use_cmdline_argv`.
    pub insecure_cmdline_argv: bool,
    /// `loader.env.NAME = "value"` (fixed, measured).
    pub env: Vec<(String, String)>,
    /// `loader.env.NAME = { passthrough = true }`.
    pub passthrough_env: Vec<String>,
    /// `loader.log_level`.
    pub log_level: String,
    /// `fs.start_dir`.
    pub start_dir: String,
    /// `fs.mounts`.
    pub mounts: Vec<Mount>,
    /// `sgx.trusted_files` as `(uri, sha256 hex)`.
    pub trusted_files: Vec<(String, String)>,
    /// `sgx.allowed_files` URIs.
    pub allowed_files: Vec<String>,
    /// `sgx.enclave_size` as written (e.g. `"256M"`).
    pub enclave_size: String,
    /// `sgx.max_threads`.
    pub max_threads: u64,
    /// `sgx.edmm_enable`.
    pub edmm: bool,
    /// `sgx.isvprodid`.
    pub isvprodid: u16,
    /// `sgx.isvsvn`.
    pub isvsvn: u16,
    /// `sgx.debug`.
    pub debug: bool,
    /// `sgx.remote_attestation` (`"dcap"`).
    pub remote_attestation: String,
    /// User keys (`manifestOptions`), dotted → value; must not collide with generated keys.
    pub extra: BTreeMap<String, Value>,
}

fn set(root: &mut Table, dotted: &str, value: Value, user: bool) -> Result<()> {
    let parts: Vec<&str> = dotted.split('.').collect();
    let mut t = root;
    for (i, p) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            if t.contains_key(*p) {
                return Err(Error::Manifest(if user {
                    format!("manifestOptions key {dotted:?} conflicts with a key cloak generates; use the matching conversion option instead")
                } else {
                    format!("key {dotted:?} is generated twice")
                }));
            }
            t.insert(p.to_string(), value);
            return Ok(());
        }
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        t = match entry {
            Value::Table(inner) => inner,
            _ => {
                return Err(Error::Manifest(format!(
                    "manifestOptions key {dotted:?} conflicts with the generated value of {p:?}"
                )))
            }
        };
    }
    Ok(())
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

impl ManifestSpec {
    /// Render the manifest: sorted keys, LF, no NUL. The same spec always gives the same bytes.
    pub fn render(&self) -> Result<Vec<u8>> {
        let mut root = Table::new();
        set(
            &mut root,
            "libos.entrypoint",
            s(&self.libos_entrypoint),
            false,
        )?;
        let mut le = Table::new();
        le.insert("uri".into(), s(&self.loader_entrypoint_uri));
        le.insert("sha256".into(), s(&self.loader_entrypoint_sha256));
        set(&mut root, "loader.entrypoint", Value::Table(le), false)?;
        set(&mut root, "loader.log_level", s(&self.log_level), false)?;
        if let Some(argv) = &self.argv {
            set(
                &mut root,
                "loader.argv",
                Value::Array(argv.iter().map(|a| s(a)).collect()),
                false,
            )?;
        }
        if self.insecure_cmdline_argv {
            set(
                &mut root,
                "loader.insecure__use_cmdline_argv",
                Value::Boolean(true),
                false,
            )?;
        }
        let mut env = Table::new();
        for (k, v) in &self.env {
            env.insert(k.clone(), s(v));
        }
        for k in &self.passthrough_env {
            let mut p = Table::new();
            p.insert("passthrough".into(), Value::Boolean(true));
            env.insert(k.clone(), Value::Table(p));
        }
        set(&mut root, "loader.env", Value::Table(env), false)?;
        let mut fsroot = Table::new();
        fsroot.insert("type".into(), s("chroot"));
        fsroot.insert("uri".into(), s("file:/"));
        set(&mut root, "fs.root", Value::Table(fsroot), false)?;
        set(&mut root, "fs.start_dir", s(&self.start_dir), false)?;
        let mounts = self
            .mounts
            .iter()
            .map(|m| {
                let mut t = Table::new();
                t.insert("type".into(), s(&m.kind));
                t.insert("path".into(), s(&m.path));
                t.insert("uri".into(), s(&m.uri));
                if let Some(k) = &m.key_name {
                    t.insert("key_name".into(), s(k));
                }
                Value::Table(t)
            })
            .collect();
        set(&mut root, "fs.mounts", Value::Array(mounts), false)?;
        let trusted = self
            .trusted_files
            .iter()
            .map(|(uri, sha)| {
                let mut t = Table::new();
                t.insert("uri".into(), s(uri));
                t.insert("sha256".into(), s(sha));
                Value::Table(t)
            })
            .collect();
        set(&mut root, "sgx.trusted_files", Value::Array(trusted), false)?;
        set(
            &mut root,
            "sgx.allowed_files",
            Value::Array(self.allowed_files.iter().map(|a| s(a)).collect()),
            false,
        )?;
        set(&mut root, "sgx.enclave_size", s(&self.enclave_size), false)?;
        set(
            &mut root,
            "sgx.max_threads",
            Value::Integer(self.max_threads as i64),
            false,
        )?;
        set(
            &mut root,
            "sgx.edmm_enable",
            Value::Boolean(self.edmm),
            false,
        )?;
        set(
            &mut root,
            "sgx.isvprodid",
            Value::Integer(self.isvprodid.into()),
            false,
        )?;
        set(
            &mut root,
            "sgx.isvsvn",
            Value::Integer(self.isvsvn.into()),
            false,
        )?;
        set(&mut root, "sgx.debug", Value::Boolean(self.debug), false)?;
        set(
            &mut root,
            "sgx.remote_attestation",
            s(&self.remote_attestation),
            false,
        )?;
        for (k, v) in &self.extra {
            set(&mut root, k, v.clone(), true)?;
        }
        let text = toml::to_string(&root)
            .map_err(|e| Error::Manifest(format!("rendering failed: {e}")))?;
        if text.contains('\0') {
            return Err(Error::Manifest("a value contains a NUL byte".into()));
        }
        Ok(text.into_bytes())
    }
}

/// What a `.manifest.sgx` says about the enclave's measurement and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    /// `sgx.enclave_size` in bytes (default 256M, 1024G with EDMM).
    pub enclave_size: u64,
    /// `sgx.max_threads` (default 4).
    pub threads: u64,
    /// `sgx.edmm_enable` (default false).
    pub edmm: bool,
    /// `sgx.isvprodid`.
    pub isvprodid: u16,
    /// `sgx.isvsvn`.
    pub isvsvn: u16,
    /// `sgx.debug`.
    pub debug: bool,
    /// `sgx.use_exinfo`.
    pub use_exinfo: bool,
    /// XFRM and its mask from `sgx.cpu_features`.
    pub xfrm: (u64, u64),
}

/// Read the measured inputs of a manifest, with Gramine's defaults.
pub fn read(bytes: &[u8], what: &str) -> Result<Measured> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| Error::Manifest(format!("{what} is not UTF-8")))?;
    let root: Table = text
        .parse()
        .map_err(|e| Error::Manifest(format!("{what} is not valid TOML: {e}")))?;
    let sgx = root
        .get("sgx")
        .and_then(Value::as_table)
        .cloned()
        .unwrap_or_default();
    let bad = |key: &str, want: &str| Error::Manifest(format!("{what}: sgx.{key} must be {want}"));
    let boolean = |key: &str| -> Result<bool> {
        match sgx.get(key) {
            None => Ok(false),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(_) => Err(bad(key, "a boolean")),
        }
    };
    let int = |key: &str, default: i64| -> Result<i64> {
        match sgx.get(key) {
            None => Ok(default),
            Some(Value::Integer(i)) => Ok(*i),
            Some(_) => Err(bad(key, "an integer")),
        }
    };
    let edmm = boolean("edmm_enable")?;
    let enclave_size = match sgx.get("enclave_size") {
        None => parse_size(if edmm { "1024G" } else { "256M" })?,
        Some(Value::String(v)) => enclave_size(v)?,
        Some(_) => return Err(bad("enclave_size", "a string such as \"256M\"")),
    };
    let threads = threads(
        u64::try_from(int("max_threads", 4)?).map_err(|_| bad("max_threads", "positive"))?,
    )?;
    let id = |key: &str| -> Result<u16> {
        u16::try_from(int(key, 0)?).map_err(|_| bad(key, "in 0..=65535"))
    };
    let mut xfrm: u64 = 0x3;
    let mut mask: u64 = 0xfffffffffff9ff1b;
    let features = sgx
        .get("cpu_features")
        .and_then(Value::as_table)
        .cloned()
        .unwrap_or_default();
    for (name, bits, default) in [
        ("avx", 0x4u64, "unspecified"),
        ("avx512", 0xe4, "unspecified"),
        ("amx", 0x60000, "unspecified"),
        ("mpx", 0x18, "disabled"),
        ("pkru", 0x200, "disabled"),
    ] {
        let v = features
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or(default);
        match v {
            "required" => {
                xfrm |= bits;
                mask |= bits;
            }
            "disabled" => {
                xfrm &= !bits;
                mask |= bits;
            }
            "unspecified" if default == "unspecified" => {}
            other => {
                return Err(Error::Manifest(format!(
                    "{what}: sgx.cpu_features.{name} = {other:?} is not allowed"
                )))
            }
        }
    }
    Ok(Measured {
        enclave_size,
        threads,
        edmm,
        isvprodid: id("isvprodid")?,
        isvsvn: id("isvsvn")?,
        debug: boolean("debug")?,
        use_exinfo: boolean("use_exinfo")?,
        xfrm: (xfrm, mask),
    })
}

impl Measured {
    /// The SIGSTRUCT body for this manifest and `mrenclave`, signed on `date`.
    pub fn sigstruct_body(&self, mrenclave: [u8; 32], date: (u16, u8, u8)) -> Body {
        Body {
            date,
            mrenclave,
            isvprodid: self.isvprodid,
            isvsvn: self.isvsvn,
            flags: 0x4 | if self.debug { 0x2 } else { 0 },
            xfrm: self.xfrm.0,
            flags_mask: u64::MAX,
            xfrm_mask: self.xfrm.1,
            miscselect: u32::from(self.use_exinfo),
            miscmask: u32::MAX,
        }
    }

    /// The measurement layout.
    pub fn layout(&self) -> crate::measure::Layout {
        crate::measure::Layout {
            enclave_size: self.enclave_size,
            threads: self.threads,
            edmm: self.edmm,
        }
    }
}
