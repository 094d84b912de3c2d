//! Where the artifacts live: a local directory or an S3 bucket (with an
//! optional key prefix), parsed from one string.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Where the store keeps artifacts.
///
/// Parses from a string: `s3://bucket` or `s3://bucket/some/prefix` for object
/// storage, anything else (a path, or `file:///path`) for a local directory.
/// S3 settings left `None` come from the standard environment at
/// [`ArtifactStore::open`](crate::ArtifactStore::open).
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// `<dir>/<build_id>/<name>`: today's layout of the builds directory.
    Local(PathBuf),
    /// `<prefix>/<build_id>/<name>` in a bucket.
    S3(S3Location),
}

/// An S3 bucket and how to reach it. Every `None` is taken from the
/// environment when the store opens: `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` or
/// `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`),
/// `AWS_ALLOW_HTTP`, and the web identity / container credential variables.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct S3Location {
    /// The bucket's name.
    pub bucket: String,
    /// Key prefix without leading or trailing `/`; empty for none.
    pub prefix: String,
    /// The S3 API's base URL (`https://…`, or `http://…` which then is
    /// allowed); `None`: AWS itself, or `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// The region to sign for (`garage` for a default Garage).
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key (never printed by `Debug` or `Display`).
    pub secret_access_key: Option<String>,
}

impl S3Location {
    /// A bucket and prefix, every other setting from the environment.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> S3Location {
        S3Location {
            bucket: bucket.into(),
            prefix: prefix.into(),
            ..S3Location::default()
        }
    }
}

impl fmt::Debug for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Location")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(dir) => f.debug_tuple("Local").field(dir).finish(),
            Location::S3(s3) => f.debug_tuple("S3").field(s3).finish(),
        }
    }
}

/// `s3://bucket/prefix` or the directory, as it parses back.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(dir) => write!(f, "{}", dir.display()),
            Location::S3(s3) if s3.prefix.is_empty() => write!(f, "s3://{}", s3.bucket),
            Location::S3(s3) => write!(f, "s3://{}/{}", s3.bucket, s3.prefix),
        }
    }
}

impl FromStr for Location {
    type Err = Error;

    fn from_str(s: &str) -> Result<Location> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::Config(
                "the artifact location is empty: give a directory or s3://bucket/prefix".into(),
            ));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            check_bucket(bucket)?;
            let prefix = prefix.trim_matches('/');
            check_prefix(prefix)?;
            return Ok(Location::S3(S3Location::new(bucket, prefix)));
        }
        if let Some(path) = s.strip_prefix("file://") {
            return Ok(Location::Local(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(Error::Config(format!(
                "the artifact location `{s}` has the scheme `{scheme}`: give a directory or \
                 s3://bucket/prefix"
            )));
        }
        Ok(Location::Local(PathBuf::from(s)))
    }
}

/// S3's bucket naming rules (3–63 lowercase letters, digits, `-`, `.`).
fn check_bucket(bucket: &str) -> Result<()> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "`{bucket}` is not an S3 bucket name (3–63 lowercase letters, digits, `-`, `.`) in \
             the artifact location s3://bucket/prefix"
        )))
    }
}

/// A key prefix: `/`-separated segments of letters, digits, `-`, `_`, `.`,
/// none empty, `.` or `..`.
fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    let ok = prefix.split('/').all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "`{prefix}` is not a key prefix (segments of letters, digits, `-`, `_`, `.`) in the \
             artifact location s3://bucket/prefix"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_directories_and_buckets() {
        assert_eq!(
            "/var/lib/openfactory/builds".parse::<Location>().unwrap(),
            Location::Local("/var/lib/openfactory/builds".into())
        );
        assert_eq!(
            "file:///srv/builds".parse::<Location>().unwrap(),
            Location::Local("/srv/builds".into())
        );
        assert_eq!(
            "relative/dir".parse::<Location>().unwrap(),
            Location::Local("relative/dir".into())
        );
        assert_eq!(
            "s3://openfactory".parse::<Location>().unwrap(),
            Location::S3(S3Location::new("openfactory", ""))
        );
        let loc: Location = "s3://my-bucket/prod/builds/".parse().unwrap();
        assert_eq!(
            loc,
            Location::S3(S3Location::new("my-bucket", "prod/builds"))
        );
        assert_eq!(loc.to_string(), "s3://my-bucket/prod/builds");
    }

    #[test]
    fn refuses_bad_locations() {
        for bad in [
            "",
            "gs://bucket",
            "s3://",
            "s3://ab",
            "s3://Bucket",
            "s3://bucket/a//b",
            "s3://bucket/../x",
            "s3://bucket/a b",
        ] {
            let err = bad.parse::<Location>().unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let mut s3 = S3Location::new("bucket", "");
        s3.secret_access_key = Some("hunter2".into());
        let shown = format!("{:?}", Location::S3(s3));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}
