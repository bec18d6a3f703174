//! Where a repository is, as people write it: a directory, or `s3://bucket/prefix`.

use std::fmt;
use std::path::PathBuf;

use super::error::{RepoError, Result};

/// A repository's place, parsed from `--repo` or a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    /// A directory on this machine.
    Local(PathBuf),
    /// Objects under `prefix` (no leading or trailing `/`; may be empty) in an S3 bucket.
    S3 { bucket: String, prefix: String },
}

impl RepoLocation {
    /// Parses `s3://bucket[/prefix]`, or anything without a scheme as a directory. Another
    /// scheme is refused rather than taken for a directory named `gs:`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| RepoError::BadLocation { location: s.to_string(), why: why.into() };
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            // S3's bucket naming rules, loosely: enough to catch typos, not to second-guess a
            // server with its own rules.
            if bucket.is_empty() {
                return Err(bad("no bucket: write s3://BUCKET/PREFIX"));
            }
            if !bucket.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) {
                return Err(bad("a bucket name is letters, digits, '-', '.' and '_'"));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|p| p == "." || p == "..")
                || (!prefix.is_empty() && prefix.split('/').any(str::is_empty))
            {
                return Err(bad("the prefix has an empty, '.' or '..' part"));
            }
            return Ok(Self::S3 { bucket: bucket.to_string(), prefix: prefix.to_string() });
        }
        if let Some((scheme, _)) = s.split_once("://")
            && !scheme.is_empty()
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return Err(bad("only directories and s3:// URLs are supported"));
        }
        if s.is_empty() {
            return Err(bad("empty"));
        }
        Ok(Self::Local(PathBuf::from(s)))
    }

    /// Whether the repository is in an object store.
    pub fn is_remote(&self) -> bool {
        matches!(self, Self::S3 { .. })
    }
}

impl fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(p) => write!(f, "{}", p.display()),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_directories_and_s3_urls() {
        assert_eq!(
            RepoLocation::parse("/srv/repo").unwrap(),
            RepoLocation::Local("/srv/repo".into())
        );
        assert_eq!(RepoLocation::parse("rel/dir").unwrap(), RepoLocation::Local("rel/dir".into()));
        assert_eq!(
            RepoLocation::parse("s3://bkt/a/b/").unwrap(),
            RepoLocation::S3 { bucket: "bkt".into(), prefix: "a/b".into() }
        );
        assert_eq!(
            RepoLocation::parse("s3://bkt").unwrap(),
            RepoLocation::S3 { bucket: "bkt".into(), prefix: String::new() }
        );
        assert_eq!(RepoLocation::parse("s3://bkt/a/b").unwrap().to_string(), "s3://bkt/a/b");
        for bad in ["s3://", "s3:///x", "s3://b/a//c", "s3://b/../x", "gs://b/x", "", "s3://b k/x"]
        {
            let err = RepoLocation::parse(bad).unwrap_err();
            assert!(matches!(err, RepoError::BadLocation { .. }), "{bad:?}: {err}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
