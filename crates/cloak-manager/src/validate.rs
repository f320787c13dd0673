//! Field checks shared by the domain modules; each error names the field.

use crate::error::{Error, Result};

/// A display name: 1 to `max` characters, no control characters.
pub fn name(field: &str, v: &str, max: usize) -> Result<()> {
    if v.trim().is_empty() {
        return Err(Error::field(field, "must not be empty"));
    }
    if v.chars().count() > max {
        return Err(Error::field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(Error::field(field, "must not contain control characters"));
    }
    Ok(())
}

/// Free text (descriptions, reasons): at most `max` characters, no control characters but newlines.
pub fn text(field: &str, v: &str, max: usize) -> Result<()> {
    if v.chars().count() > max {
        return Err(Error::field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Error::field(field, "must not contain control characters"));
    }
    Ok(())
}

/// A hex digest of exactly `digits` digits; answered lower-case.
pub fn hex_digest(field: &str, v: &str, digits: usize) -> Result<String> {
    if v.len() != digits || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::field(
            field,
            format!("must be {digits} hex digits ({} bytes)", digits / 2),
        ));
    }
    Ok(v.to_ascii_lowercase())
}

/// An image digest `sha256:<64 hex>`, or the bare hex.
pub fn image_sha(field: &str, v: &str) -> Result<String> {
    let hex = v.strip_prefix("sha256:").unwrap_or(v);
    Ok(format!("sha256:{}", hex_digest(field, hex, 64)?))
}

/// A UUID as this service writes them.
pub fn uuid(field: &str, v: &str) -> Result<String> {
    uuid::Uuid::parse_str(v)
        .map(|u| u.to_string())
        .map_err(|_| Error::field(field, "must be a UUID"))
}

/// A container image reference (`registry/repo:tag`), loosely: printable, no spaces.
pub fn image_name(field: &str, v: &str) -> Result<()> {
    name(field, v, 512)?;
    if v.chars().any(char::is_whitespace) {
        return Err(Error::field(field, "must not contain spaces"));
    }
    Ok(())
}

/// `LIKE` pattern matching `v` anywhere, with `%`, `_` and `\` escaped (use `ESCAPE '\'`).
pub fn like_pattern(v: &str) -> String {
    let mut out = String::from("%");
    for c in v.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked_and_normalised() {
        assert_eq!(
            hex_digest("mrenclave", &"AB".repeat(32), 64).unwrap(),
            "ab".repeat(32)
        );
        let e = hex_digest("mrenclave", "abc", 64).unwrap_err().to_string();
        assert!(e.starts_with("mrenclave:"), "{e}");
        assert!(hex_digest("pcr0", &"g".repeat(96), 96).is_err());
        assert_eq!(
            image_sha("sha", &"a".repeat(64)).unwrap(),
            format!("sha256:{}", "a".repeat(64))
        );
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
    }

    #[test]
    fn names_refuse_control_characters() {
        assert!(name("name", "ok name", 10).is_ok());
        assert!(name("name", "", 10).is_err());
        assert!(name("name", "a\u{0}b", 10).is_err());
        assert!(name("name", &"x".repeat(11), 10).is_err());
    }
}
