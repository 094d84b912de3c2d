//! What an image contains: the exact package manifest, read from the image's
//! dpkg database, and an SPDX 2.3 SBOM made from it.

use std::path::Path;
use std::process::Command;

use packageurl::PackageUrl;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The source package (the binary's own name when they match).
    pub source: String,
}

/// `dpkg-query` format: one tab-separated line per package.
pub const DPKG_FORMAT: &str =
    "${Package}\t${Version}\t${Architecture}\t${db:Status-Status}\t${source:Package}\n";

/// Parse `dpkg-query -W -f DPKG_FORMAT` output, keeping installed packages.
pub fn parse_dpkg(output: &str) -> Vec<Package> {
    let mut packages: Vec<Package> = output
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            match fields[..] {
                [name, version, architecture, "installed", source] => Some(Package {
                    name: name.into(),
                    version: version.into(),
                    architecture: architecture.into(),
                    source: if source.is_empty() { name } else { source }.into(),
                }),
                _ => None,
            }
        })
        .collect();
    packages.sort();
    packages
}

/// Read the package manifest of an image root with the host's dpkg-query
/// (it only reads the database; nothing runs inside the image).
pub fn read(root: &Path) -> std::io::Result<Vec<Package>> {
    let output = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", DPKG_FORMAT])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()?;
    if !output.status.success() {
        return Err(std::io::Error::other(format!(
            "dpkg-query failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(parse_dpkg(&String::from_utf8_lossy(&output.stdout)))
}

/// A package URL (purl) for a Debian package, as the purl spec's `deb` type
/// has it: `pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=CODENAME` (the epoch
/// stays in the version; the crate encodes what needs it, `+` in a name).
pub fn purl(package: &Package, suite: &str) -> String {
    let built = PackageUrl::new("deb", package.name.as_str()).and_then(|mut purl| {
        purl.with_namespace("debian")?
            .with_version(package.version.as_str())?
            .add_qualifier("arch", package.architecture.as_str())?
            .add_qualifier("distro", suite)?;
        Ok(purl.to_string())
    });
    // The type, namespace and qualifier keys are constants the spec allows, and dpkg's
    // names and versions are non-empty: nothing here can be refused.
    built.unwrap_or_else(|e| unreachable!("a Debian package's purl: {e}"))
}

/// SPDX ids allow letters, digits, `.` and `-`: other characters become `-`,
/// and an id that two packages would share gets a number (`-2`, `-3`…) in the
/// order the packages are listed, so every id is unique and stable.
fn spdx_ids(packages: &[Package]) -> Vec<String> {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let mut seen = std::collections::HashSet::new();
    packages
        .iter()
        .map(|p| {
            let base = format!(
                "SPDXRef-Package-{}-{}",
                clean(&p.name),
                clean(&p.architecture)
            );
            let mut id = base.clone();
            let mut n = 1;
            while !seen.insert(id.clone()) {
                n += 1;
                id = format!("{base}-{n}");
            }
            id
        })
        .collect()
}

/// Everything the SBOM says about the image itself.
pub struct SbomSubject<'a> {
    pub build_id: &'a str,
    pub recipe_name: &'a str,
    pub recipe_digest: &'a str,
    pub suite: &'a str,
    pub iso_sha256: &'a str,
    /// RFC 3339.
    pub created: &'a str,
    pub tool_version: &'a str,
}

/// An SPDX 2.3 document (JSON): the ISO as the described package, which
/// contains every Debian package with its purl.
pub fn spdx(subject: &SbomSubject, packages: &[Package]) -> Value {
    let image_id = "SPDXRef-Image";
    let mut spdx_packages = vec![json!({
        "SPDXID": image_id,
        "name": subject.recipe_name,
        "versionInfo": subject.recipe_digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "OPERATING_SYSTEM",
        "checksums": [{"algorithm": "SHA256", "checksumValue": subject.iso_sha256}],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "supplier": "Organization: OpenFactory",
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    for (package, id) in packages.iter().zip(spdx_ids(packages)) {
        spdx_packages.push(json!({
            "SPDXID": id,
            "name": package.name,
            "versionInfo": package.version,
            "sourceInfo": format!("built from the Debian source package {}", package.source),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "supplier": "Organization: Debian",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl(package, subject.suite),
            }],
        }));
        relationships.push(json!({
            "spdxElementId": image_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}-{}", subject.recipe_name, subject.build_id),
        "documentNamespace": format!("https://openfactory.dev/spdx/builds/{}", subject.build_id),
        "creationInfo": {
            "created": subject.created,
            "creators": [format!("Tool: openfactory-{}", subject.tool_version)],
        },
        "packages": spdx_packages,
        "relationships": relationships,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_installed_packages_are_listed_sorted() {
        let out = "zlib1g\t1:1.2.13.dfsg-1\tamd64\tinstalled\tzlib\n\
                   base-files\t12.4+deb12u8\tamd64\tinstalled\t\n\
                   gone\t1.0\tamd64\tconfig-files\tgone\n";
        let packages = parse_dpkg(out);
        assert_eq!(packages.len(), 2);
        assert_eq!(packages[0].name, "base-files");
        assert_eq!(packages[0].source, "base-files");
        assert_eq!(packages[1].source, "zlib");
    }

    fn sbom(dpkg: &str) -> Value {
        spdx(
            &SbomSubject {
                build_id: "b1",
                recipe_name: "web",
                recipe_digest: "abc",
                suite: "bookworm",
                iso_sha256: "00",
                created: "2026-11-25T00:00:00Z",
                tool_version: "0.1.0",
            },
            &parse_dpkg(dpkg),
        )
    }

    /// What a real image holds that trips hand-made purls and ids: an epoch,
    /// `+` in names and versions, and names that only differ in `+` and `-`.
    const AWKWARD: &str = "zlib1g\t1:1.2.13.dfsg-1\tamd64\tinstalled\tzlib\n\
                           libstdc++6\t12.2.0-14+deb12u1\tamd64\tinstalled\tgcc-12\n\
                           libfoo+\t1.0\tamd64\tinstalled\tfoo\n\
                           libfoo-\t1.0\tamd64\tinstalled\tfoo\n\
                           libfoo-\t1.0\ti386\tinstalled\tfoo\n";

    #[test]
    fn purls_follow_the_spec() {
        let doc = sbom(AWKWARD);
        let purls: Vec<&str> = doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .skip(1)
            .map(|p| p["externalRefs"][0]["referenceLocator"].as_str().unwrap())
            .collect();
        assert!(
            purls.contains(&"pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=bookworm"),
            "{purls:?}"
        );
        assert!(
            purls.contains(
                &"pkg:deb/debian/libstdc%2B%2B6@12.2.0-14%2Bdeb12u1?arch=amd64&distro=bookworm"
            ),
            "{purls:?}"
        );
        // Each one reads back as what it was made from.
        for purl in purls {
            let parsed: PackageUrl = purl.parse().unwrap();
            assert_eq!(parsed.ty(), "deb");
            assert_eq!(parsed.namespace(), Some("debian"));
            assert!(
                AWKWARD.contains(&format!(
                    "{}\t{}\t",
                    parsed.name(),
                    parsed.version().unwrap()
                )),
                "{purl}"
            );
        }
    }

    #[test]
    fn the_sbom_is_valid_spdx_2_3_with_unique_ids() {
        let doc = sbom(AWKWARD);
        let schema: Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/spdx-2.3.schema.json"))
                .unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        let packages = doc["packages"].as_array().unwrap();
        assert_eq!(packages.len(), 6);
        let ids: std::collections::HashSet<&str> = packages
            .iter()
            .map(|p| p["SPDXID"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), packages.len(), "{ids:?}");
        // Every CONTAINS names a package that is there.
        for r in doc["relationships"].as_array().unwrap().iter().skip(1) {
            assert_eq!(r["relationshipType"], "CONTAINS");
            assert!(ids.contains(r["relatedSpdxElement"].as_str().unwrap()));
        }
    }
}
