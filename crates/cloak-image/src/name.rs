//! Names an image brings (entry paths and link targets): the rule cloak applies to them, the
//! limits on their size, and the one way cloak prints them.
//!
//! The rule: a name is the bytes of its tar header, GNU long name or PAX record, cut at its
//! trailing NULs (every tar reader agrees those end it). A NUL anywhere else is refused,
//! because GNU tar, Go and the Linux kernel cut the name there and tar-rs does not, so one
//! name would mean two different files. Names that are not UTF-8 are refused too: cloak
//! carries names as text (JSON reports, Gramine's TOML manifest, the files index), and
//! decoding them lossily would merge distinct raw names into one. Every other character,
//! including control characters, is kept byte for byte, as the kernel, overlayfs and the
//! container runtimes keep it: two distinct names stay distinct end to end. Printing such
//! names goes through [`escape`], so no name can forge a line of cloak's output.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Longest path or link target, in bytes, with its terminating NUL: Linux's `PATH_MAX`.
pub const PATH_MAX: usize = 4096;

/// Most components in one path (a 4095-byte path could have 2048; real images stay far
/// below this, and resolving a path costs work per component).
pub const MAX_DEPTH: usize = 256;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// A NUL byte inside the name (readers disagree on where it ends).
    Nul,
    /// Not UTF-8.
    NotUtf8,
    /// Longer than [`PATH_MAX`] - 1 bytes.
    TooLong(usize),
    /// More than [`MAX_DEPTH`] components.
    TooDeep(usize),
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::Nul => f.write_str(
                "contains a NUL byte (tar readers and the kernel disagree on where such a name \
                 ends; rebuild the layer without it)",
            ),
            NameError::NotUtf8 => f.write_str(
                "is not UTF-8 (cloak carries names as text and refuses to guess an encoding; \
                 rename the file to UTF-8)",
            ),
            NameError::TooLong(n) => write!(
                f,
                "is {n} bytes long, over the limit of {} bytes (PATH_MAX {PATH_MAX} with its NUL)",
                PATH_MAX - 1
            ),
            NameError::TooDeep(n) => write!(
                f,
                "has {n} components, over the limit of {MAX_DEPTH} directory levels"
            ),
        }
    }
}

/// Check a raw name from a layer against the rule above and return it as text.
pub fn decode(raw: &[u8]) -> Result<&str, NameError> {
    let end = raw.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let raw = &raw[..end];
    if raw.contains(&0) {
        return Err(NameError::Nul);
    }
    if raw.len() >= PATH_MAX {
        return Err(NameError::TooLong(raw.len()));
    }
    std::str::from_utf8(raw).map_err(|_| NameError::NotUtf8)
}

/// Characters that change how text displays without being control characters (bidi
/// overrides and isolates, zero-width characters, the byte order mark).
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// A name as cloak prints it: control and invisible formatting characters, and the
/// backslash itself, become escapes (`\n`, `\t`, `\u{1b}`, `\\`), so the printed form is
/// one line and two different names never print alike. Everything else is unchanged.
pub fn escape(name: &str) -> Cow<'_, str> {
    if !name
        .chars()
        .any(|c| c == '\\' || c.is_control() || is_format(c))
    {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() || is_format(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`escape`] for raw bytes that may not be UTF-8 (bytes that are not become `\xNN`);
/// names longer than 256 bytes are cut, with the total length given.
pub fn escape_bytes(raw: &[u8]) -> String {
    const SHOWN: usize = 256;
    let shown = &raw[..raw.len().min(SHOWN)];
    let mut out = String::new();
    for chunk in shown.utf8_chunks() {
        out.push_str(&escape(chunk.valid()));
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    if raw.len() > SHOWN {
        let _ = write!(out, "… ({} bytes)", raw.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case::plain(b"usr/bin/sh", Ok("usr/bin/sh"))]
    #[case::trailing_nuls(b"usr/bin/sh\0\0", Ok("usr/bin/sh"))]
    #[case::inner_nul(b"cloak\0x", Err(NameError::Nul))]
    #[case::nul_then_trailing(b"cloak\0x\0", Err(NameError::Nul))]
    #[case::latin1(b"caf\xe9", Err(NameError::NotUtf8))]
    #[case::control_kept(b"a\nb\x1b[0m", Ok("a\nb\x1b[0m"))]
    fn decodes_by_the_rule(#[case] raw: &[u8], #[case] want: Result<&str, NameError>) {
        assert_eq!(decode(raw), want);
    }

    #[test]
    fn path_max_counts_the_nul() {
        assert!(decode(&vec![b'a'; PATH_MAX - 1]).is_ok());
        assert_eq!(
            decode(&vec![b'a'; PATH_MAX]),
            Err(NameError::TooLong(PATH_MAX))
        );
    }

    #[test]
    fn escaping_is_one_line_and_unambiguous() {
        assert_eq!(escape("/usr/bin/sh"), "/usr/bin/sh");
        assert!(matches!(escape("/usr/bin/sh"), Cow::Borrowed(_)));
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape("a\\nb"), "a\\\\nb");
        assert_ne!(escape("a\nb"), escape("a\\nb"));
        assert_eq!(escape("\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(escape("é ✓"), "é ✓");
        assert_eq!(escape_bytes(b"cloak\0x\xff"), "cloak\\0x\\xff");
        let long = escape_bytes(&[b'a'; 300]);
        assert!(long.ends_with("… (300 bytes)"), "{long}");
    }
}
