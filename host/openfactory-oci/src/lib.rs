//! Plugin bundles in OCI registries: `oci://REGISTRY/REPOSITORY:TAG` (or
//! `@sha256:…`, pinned) holds one single-file bundle (`NAME-VERSION.ofbundle`)
//! as an OCI 1.1 artifact:
//!
//! ```text
//! manifest   application/vnd.oci.image.manifest.v1+json
//!   artifactType  application/vnd.openfactory.plugin.bundle.v1
//!   config        application/vnd.oci.empty.v1+json  (the two bytes `{}`)
//!   layers[0]     application/vnd.openfactory.plugin.bundle.v1.tar
//!                 the .ofbundle file, titled with its file name
//!   annotations   org.opencontainers.image.title, .version, io.openfactory.plugin.name
//! ```
//!
//! The unit that moves is the whole bundle: its signature covers the
//! manifest, which covers the component and every asset, so a registry is
//! only a carrier and trust stays with the bundle's signer. (The wasm
//! component media type, `application/wasm`, names a bare component, which
//! carries neither the signature nor the assets.)
//!
//! This crate moves bytes and checks digests: every manifest and layer it
//! pulls is checked against its sha256 (and a pinned reference against the
//! manifest's), and a layer is bounded in size before and while it is read.
//! Verifying the bundle is the plugin host's. Credentials come from Docker's
//! `config.json` (`$DOCKER_CONFIG`, else `~/.docker`), credential helpers
//! included; loopback registries are spoken to over plain HTTP, as Docker
//! does, every other over HTTPS.

use std::collections::BTreeMap;
use std::fmt;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use sha2::{Digest, Sha256};

/// The artifact type of a plugin bundle.
pub const ARTIFACT_TYPE: &str = "application/vnd.openfactory.plugin.bundle.v1";
/// The media type of the one layer: the `.ofbundle` file.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.openfactory.plugin.bundle.v1.tar";
/// The empty config of an artifact (OCI image spec 1.1).
pub const EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const TITLE: &str = "org.opencontainers.image.title";
const VERSION: &str = "org.opencontainers.image.version";
const PLUGIN_NAME: &str = "io.openfactory.plugin.name";
/// The most bytes one bundle layer may have (the plugin host's bound on an
/// unpacked bundle).
pub const MAX_LAYER_BYTES: u64 = 256 << 20;
/// The most bytes a manifest may have.
const MAX_MANIFEST_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(
        "`{text}` is not a plugin location: {reason} (write oci://REGISTRY/REPOSITORY:TAG, or oci://REGISTRY/REPOSITORY@sha256:DIGEST to pin one bundle)"
    )]
    Location { text: String, reason: String },
    #[error(
        "{registry} refused the credentials it was given, or asked for some: sign in with `docker login {registry}` (OpenFactory reads Docker's config.json: $DOCKER_CONFIG, else ~/.docker)"
    )]
    Unauthorized { registry: String },
    #[error("{location}: not found in the registry (check the repository and the tag or digest)")]
    NotFound { location: String },
    #[error("{location}: not an OpenFactory plugin bundle: {reason}")]
    NotABundle { location: String, reason: String },
    #[error(
        "{location}: the registry's answer does not match its digest (expected {expected}, got {actual}); nothing was installed"
    )]
    DigestMismatch {
        location: String,
        expected: String,
        actual: String,
    },
    #[error("{registry}: reading Docker's credentials for it failed: {reason}")]
    Credentials { registry: String, reason: String },
    #[error("{registry}: {message}")]
    Registry { registry: String, message: String },
}

/// Where a bundle is (or goes) in a registry.
#[derive(Debug, Clone)]
pub struct Location {
    reference: Reference,
}

impl Location {
    /// Whether `text` is meant as an OCI location (`oci://…`).
    pub fn is_oci(text: &str) -> bool {
        text.starts_with("oci://")
    }

    pub fn parse(text: &str) -> Result<Location, OciError> {
        let bad = |reason: &str| OciError::Location {
            text: text.chars().take(300).collect(),
            reason: reason.into(),
        };
        let rest = text
            .strip_prefix("oci://")
            .ok_or_else(|| bad("it does not start with oci://"))?;
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("it names no repository after the registry"))?;
        if registry.is_empty()
            || !(registry.contains('.') || registry.contains(':') || registry == "localhost")
        {
            return Err(bad(
                "the registry must be a host name with a dot or a port, or localhost (`registry.example.org`, `127.0.0.1:5000`)",
            ));
        }
        let last = path.rsplit('/').next().unwrap_or_default();
        if !last.contains(':') && !last.contains('@') {
            return Err(bad(
                "it names no tag (`:0.1.0`) and no digest (`@sha256:…`)",
            ));
        }
        let reference: Reference = rest
            .parse()
            .map_err(|e| bad(&format!("{e}").to_lowercase()))?;
        if reference.registry() != registry {
            return Err(bad("the registry could not be read"));
        }
        if let Some(digest) = reference.digest()
            && !is_sha256(digest)
        {
            return Err(bad("a digest must be sha256:<64 hex digits>"));
        }
        Ok(Location { reference })
    }

    pub fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// The pinned manifest digest, if the location names one.
    pub fn digest(&self) -> Option<&str> {
        self.reference.digest()
    }

    /// The same repository, pinned to `digest`.
    pub fn pinned(&self, digest: &str) -> Location {
        Location {
            reference: Reference::with_digest(
                self.reference.registry().to_owned(),
                self.reference.repository().to_owned(),
                digest.to_owned(),
            ),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.reference;
        write!(f, "oci://{}/{}", r.registry(), r.repository())?;
        if let Some(tag) = r.tag() {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = r.digest() {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn is_sha256(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// What a bundle is called in the registry.
#[derive(Debug, Clone)]
pub struct BundleInfo {
    /// `NAME-VERSION.ofbundle`.
    pub file_name: String,
    pub name: String,
    pub version: String,
}

/// A bundle pushed: the manifest digest, and the location pinned to it.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub digest: String,
    pub pinned: Location,
}

/// A bundle pulled: the `.ofbundle` bytes, checked against their digests.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub bytes: Vec<u8>,
    /// The manifest digest.
    pub digest: String,
    /// The file name the bundle was pushed with, if the registry kept it.
    pub file_name: Option<String>,
}

/// Plain HTTP for loopback registries only.
fn client(location: &Location) -> Client {
    let host = location
        .registry()
        .rsplit_once(':')
        .map_or(location.registry(), |(h, _)| h);
    let loopback = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback());
    Client::new(ClientConfig {
        protocol: if loopback {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..Default::default()
    })
}

/// Docker's credentials for the registry, or none.
fn auth(location: &Location) -> Result<RegistryAuth, OciError> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    let registry = location.registry();
    let config = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker")))
        .map(|dir| dir.join("config.json"));
    if !config.as_ref().is_some_and(|c| c.is_file()) {
        return Ok(RegistryAuth::Anonymous);
    }
    match docker_credential::get_credential(registry) {
        Ok(DockerCredential::UsernamePassword(user, password)) => {
            Ok(RegistryAuth::Basic(user, password))
        }
        Ok(DockerCredential::IdentityToken(token)) => Ok(RegistryAuth::Bearer(token)),
        Err(E::ConfigNotFound | E::NoCredentialConfigured) => Ok(RegistryAuth::Anonymous),
        Err(e) => Err(OciError::Credentials {
            registry: registry.to_owned(),
            reason: match e {
                E::ConfigReadError => format!(
                    "{} is not a Docker config file it can read",
                    config.unwrap_or_default().display()
                ),
                other => format!("{other:?}"),
            },
        }),
    }
}

/// The registry's error in this crate's terms.
fn registry_error(location: &Location, e: OciDistributionError) -> OciError {
    let registry = location.registry().to_owned();
    match &e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => OciError::Unauthorized { registry },
        OciDistributionError::ImageManifestNotFoundError(_) => OciError::NotFound {
            location: location.to_string(),
        },
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => OciError::Unauthorized { registry },
        OciDistributionError::ServerError { code: 404, .. } => OciError::NotFound {
            location: location.to_string(),
        },
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::Unauthorized
                        | oci_client::errors::OciErrorCode::Denied
                )
            }) =>
        {
            OciError::Unauthorized { registry }
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                        | oci_client::errors::OciErrorCode::BlobUnknown
                )
            }) =>
        {
            OciError::NotFound {
                location: location.to_string(),
            }
        }
        _ => OciError::Registry {
            registry,
            message: e.to_string().chars().take(500).collect(),
        },
    }
}

/// Push one bundle file to `location` (a tag) as the artifact described in
/// the crate's documentation.
pub async fn push(
    location: &Location,
    info: &BundleInfo,
    bundle: Vec<u8>,
) -> Result<Pushed, OciError> {
    let client = client(location);
    let auth = auth(location)?;
    let reference = &location.reference;
    let failed = |e| registry_error(location, e);
    client
        .auth(reference, &auth, RegistryOperation::Push)
        .await
        .map_err(failed)?;
    let config: &[u8] = b"{}";
    let layer = OciDescriptor {
        media_type: LAYER_MEDIA_TYPE.into(),
        digest: sha256(&bundle),
        size: bundle.len() as i64,
        annotations: Some(BTreeMap::from([(TITLE.into(), info.file_name.clone())])),
        ..Default::default()
    };
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        config: OciDescriptor {
            media_type: EMPTY_CONFIG_MEDIA_TYPE.into(),
            digest: sha256(config),
            size: config.len() as i64,
            ..Default::default()
        },
        layers: vec![layer.clone()],
        subject: None,
        artifact_type: Some(ARTIFACT_TYPE.into()),
        annotations: Some(BTreeMap::from([
            (TITLE.into(), info.file_name.clone()),
            (VERSION.into(), info.version.clone()),
            (PLUGIN_NAME.into(), info.name.clone()),
        ])),
    };
    client
        .push_blob(reference, config.to_vec(), &sha256(config))
        .await
        .map_err(failed)?;
    client
        .push_blob(reference, bundle, &layer.digest)
        .await
        .map_err(failed)?;
    let body = serde_json::to_vec(&manifest).expect("a manifest serialises");
    let digest = sha256(&body);
    client
        .push_manifest_raw(
            reference,
            body,
            http::HeaderValue::from_static(MANIFEST_MEDIA_TYPE),
        )
        .await
        .map_err(failed)?;
    Ok(Pushed {
        pinned: location.pinned(&digest),
        digest,
    })
}

/// Pull the bundle file at `location`, checking the manifest against the
/// pinned digest (if any), the artifact's shape, and the layer against its
/// digest and size.
pub async fn pull(location: &Location) -> Result<Pulled, OciError> {
    let client = client(location);
    let auth = auth(location)?;
    let reference = &location.reference;
    let failed = |e| registry_error(location, e);
    let not_bundle = |reason: String| OciError::NotABundle {
        location: location.to_string(),
        reason,
    };
    let (body, _) = client
        .pull_manifest_raw(reference, &auth, &[MANIFEST_MEDIA_TYPE])
        .await
        .map_err(failed)?;
    let digest = sha256(&body);
    if let Some(expected) = location.digest()
        && !expected.eq_ignore_ascii_case(&digest)
    {
        return Err(OciError::DigestMismatch {
            location: location.to_string(),
            expected: expected.to_owned(),
            actual: digest,
        });
    }
    if body.len() > MAX_MANIFEST_BYTES {
        return Err(not_bundle(format!(
            "its manifest is larger than {MAX_MANIFEST_BYTES} bytes"
        )));
    }
    let manifest: OciImageManifest = serde_json::from_slice(&body)
        .map_err(|_| not_bundle("its manifest is not an OCI image manifest".into()))?;
    if manifest.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(not_bundle(format!(
            "its artifact type is {}, not {ARTIFACT_TYPE}",
            manifest
                .artifact_type
                .as_deref()
                .map_or("missing".to_owned(), |t| format!(
                    "`{}`",
                    t.chars().take(100).collect::<String>()
                ))
        )));
    }
    let [layer] = manifest.layers.as_slice() else {
        return Err(not_bundle(format!(
            "it has {} layers; a bundle artifact has one",
            manifest.layers.len()
        )));
    };
    if layer.media_type != LAYER_MEDIA_TYPE || !is_sha256(&layer.digest) {
        return Err(not_bundle(format!(
            "its layer is not a {LAYER_MEDIA_TYPE} with a sha256 digest"
        )));
    }
    if layer.size < 0 || layer.size as u64 > MAX_LAYER_BYTES {
        return Err(not_bundle(format!(
            "its layer is {} bytes; a bundle is at most {} MiB",
            layer.size,
            MAX_LAYER_BYTES >> 20
        )));
    }
    let mut stream = client
        .pull_blob_stream(reference, layer)
        .await
        .map_err(failed)?
        .stream;
    let mut bytes = Vec::with_capacity(layer.size as usize);
    use futures_util::StreamExt as _;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| OciError::Registry {
            registry: location.registry().to_owned(),
            message: format!("the download was cut short: {e}"),
        })?;
        if (bytes.len() + chunk.len()) as u64 > layer.size as u64 {
            return Err(OciError::DigestMismatch {
                location: location.to_string(),
                expected: layer.digest.clone(),
                actual: format!("more than the {} bytes the manifest declares", layer.size),
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    let actual = sha256(&bytes);
    if !actual.eq_ignore_ascii_case(&layer.digest) {
        return Err(OciError::DigestMismatch {
            location: location.to_string(),
            expected: layer.digest.clone(),
            actual,
        });
    }
    let file_name = layer
        .annotations
        .as_ref()
        .and_then(|a| a.get(TITLE))
        .cloned();
    Ok(Pulled {
        bytes,
        digest,
        file_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_name_a_registry_and_a_tag_or_digest() {
        let tagged = Location::parse("oci://127.0.0.1:5000/plugins/ssh:0.1.0").unwrap();
        assert_eq!(tagged.registry(), "127.0.0.1:5000");
        assert_eq!(tagged.to_string(), "oci://127.0.0.1:5000/plugins/ssh:0.1.0");
        let digest = format!("sha256:{}", "ab".repeat(32));
        let pinned = Location::parse(&format!("oci://registry.example.org/ssh@{digest}")).unwrap();
        assert_eq!(pinned.digest(), Some(digest.as_str()));
        assert_eq!(
            tagged.pinned(&digest).to_string(),
            format!("oci://127.0.0.1:5000/plugins/ssh@{digest}")
        );
        for (text, says) in [
            ("127.0.0.1:5000/ssh:1", "oci://"),
            ("oci://127.0.0.1:5000", "no repository"),
            ("oci://plugins/ssh:1", "host name with a dot or a port"),
            ("oci://127.0.0.1:5000/ssh", "no tag"),
            ("oci://127.0.0.1:5000/ssh@sha256:abc", "sha256"),
            ("oci://127.0.0.1:5000/SSH:1", "not a plugin location"),
        ] {
            let error = Location::parse(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
            assert!(error.contains("oci://REGISTRY/REPOSITORY:TAG"), "{error}");
        }
    }
}
