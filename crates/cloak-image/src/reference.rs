//! Image references with skopeo's transport syntax.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Where an image lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// `docker://host[:port]/repo:tag` or `…@sha256:…`: a registry, over the distribution API.
    Registry(oci_client::Reference),
    /// `oci:DIR[:TAG]`: an OCI image layout directory.
    Layout {
        /// The layout directory.
        dir: PathBuf,
        /// The `org.opencontainers.image.ref.name` to select or write; `None` = the only image.
        tag: Option<String>,
    },
    /// `docker-archive:FILE[:REF]`: a `docker save` tarball.
    Archive {
        /// The tar file.
        path: PathBuf,
        /// The `RepoTags` entry to select or write; `None` = the only image.
        tag: Option<String>,
    },
}

impl ImageRef {
    /// `host[:port]` for registry references.
    pub fn registry(&self) -> Option<&str> {
        match self {
            ImageRef::Registry(r) => Some(r.resolve_registry()),
            _ => None,
        }
    }
}

fn split_path_and_tag(rest: &str) -> (PathBuf, Option<String>) {
    match rest.split_once(':') {
        Some((path, tag)) if !tag.is_empty() => (PathBuf::from(path), Some(tag.to_string())),
        Some((path, _)) => (PathBuf::from(path), None),
        None => (PathBuf::from(rest), None),
    }
}

impl FromStr for ImageRef {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidReference {
            input: input.to_string(),
            reason,
        };
        if let Some(rest) = input.strip_prefix("docker://") {
            let reference: oci_client::Reference = rest
                .parse()
                .map_err(|e: oci_client::ParseError| invalid(e.to_string()))?;
            return Ok(ImageRef::Registry(reference));
        }
        if let Some(rest) = input.strip_prefix("oci:") {
            let (dir, tag) = split_path_and_tag(rest);
            if dir.as_os_str().is_empty() {
                return Err(invalid("missing layout directory".into()));
            }
            return Ok(ImageRef::Layout { dir, tag });
        }
        if let Some(rest) = input.strip_prefix("docker-archive:") {
            let (path, tag) = split_path_and_tag(rest);
            if path.as_os_str().is_empty() {
                return Err(invalid("missing archive file".into()));
            }
            return Ok(ImageRef::Archive { path, tag });
        }
        Err(invalid(format!(
            "no transport; did you mean docker://{input}?"
        )))
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Registry(r) => write!(f, "docker://{}", r.whole()),
            ImageRef::Layout { dir, tag } => {
                write!(f, "oci:{}", dir.display())?;
                tag.as_ref().map_or(Ok(()), |t| write!(f, ":{t}"))
            }
            ImageRef::Archive { path, tag } => {
                write!(f, "docker-archive:{}", path.display())?;
                tag.as_ref().map_or(Ok(()), |t| write!(f, ":{t}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case::registry_tag(
        "docker://127.0.0.1:5000/app/web:1.0",
        "127.0.0.1:5000",
        "app/web",
        Some("1.0"),
        None
    )]
    #[case::registry_default_tag(
        "docker://localhost:5000/app",
        "localhost:5000",
        "app",
        Some("latest"),
        None
    )]
    #[case::registry_digest(
        "docker://localhost:5000/app@sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        "localhost:5000",
        "app",
        None,
        Some("sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
    )]
    fn parses_registry_refs(
        #[case] input: &str,
        #[case] registry: &str,
        #[case] repo: &str,
        #[case] tag: Option<&str>,
        #[case] digest: Option<&str>,
    ) {
        let ImageRef::Registry(r) = input.parse().unwrap() else {
            panic!("not a registry reference")
        };
        assert_eq!(r.registry(), registry);
        assert_eq!(r.repository(), repo);
        assert_eq!(r.tag(), tag);
        assert_eq!(r.digest(), digest);
    }

    #[rstest::rstest]
    #[case::layout("oci:/tmp/x:v1", Some("v1"))]
    #[case::layout_no_tag("oci:/tmp/x", None)]
    fn parses_layouts(#[case] input: &str, #[case] tag: Option<&str>) {
        let parsed: ImageRef = input.parse().unwrap();
        assert_eq!(
            parsed,
            ImageRef::Layout {
                dir: "/tmp/x".into(),
                tag: tag.map(str::to_string)
            }
        );
        assert_eq!(parsed.to_string(), input);
    }

    #[rstest::rstest]
    #[case::no_transport("busybox:latest")]
    #[case::empty_layout("oci:")]
    #[case::empty_archive("docker-archive:")]
    #[case::bad_registry("docker://UPPER/Case")]
    fn rejects_bad_refs(#[case] input: &str) {
        let err = input.parse::<ImageRef>().unwrap_err();
        assert!(err.to_string().contains(input), "{err}");
    }
}
