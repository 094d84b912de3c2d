//! What an image contains: the exact package manifest, read from the image's
//! dpkg database, and an SPDX 2.3 SBOM made from it.

use std::path::Path;
use std::process::Command;

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

/// A package URL (purl) for a Debian package.
pub fn purl(package: &Package, distro: &str) -> String {
    let encode = |s: &str| {
        s.replace('%', "%25")
            .replace(':', "%3A")
            .replace('+', "%2B")
    };
    format!(
        "pkg:deb/debian/{}@{}?arch={}&distro={distro}",
        package.name,
        encode(&package.version),
        package.architecture
    )
}

/// SPDX ids allow letters, digits, `.` and `-`.
fn spdx_id(name: &str, arch: &str) -> String {
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
    format!("SPDXRef-Package-{}-{}", clean(name), clean(arch))
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
    let distro = format!("debian-{}", subject.suite);
    let image_id = "SPDXRef-Image";
    let mut spdx_packages = vec![json!({
        "SPDXID": image_id,
        "name": subject.recipe_name,
        "versionInfo": subject.recipe_digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
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
    for package in packages {
        let id = spdx_id(&package.name, &package.architecture);
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
                "referenceLocator": purl(package, &distro),
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

    #[test]
    fn the_sbom_is_spdx_with_purls() {
        let packages = parse_dpkg("zlib1g\t1:1.2.13.dfsg-1\tamd64\tinstalled\tzlib\n");
        let doc = spdx(
            &SbomSubject {
                build_id: "b1",
                recipe_name: "web",
                recipe_digest: "abc",
                suite: "bookworm",
                iso_sha256: "00",
                created: "2026-11-25T00:00:00Z",
                tool_version: "0.1.0",
            },
            &packages,
        );
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(doc["packages"].as_array().unwrap().len(), 2);
        assert_eq!(
            doc["packages"][1]["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/zlib1g@1%3A1.2.13.dfsg-1?arch=amd64&distro=debian-bookworm"
        );
        assert_eq!(doc["relationships"][1]["relationshipType"], "CONTAINS");
    }
}
