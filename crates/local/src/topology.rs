//! The topology file of `strait up` (`topology.yaml` beside one directory of manifests per
//! cluster): which clusters make up the mesh, on which networks, in which localities, and
//! which control plane each uses (its own for a primary, a primary's for a remote).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file name `strait up DIR` reads.
pub const FILE: &str = "topology.yaml";

/// A parsed and checked topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub name: String,
    /// The example's directory (where the clusters' manifest directories are).
    pub dir: PathBuf,
    pub clusters: Vec<Cluster>,
    pub discovery: Discovery,
}

/// How the clusters' control planes learn of each other's services.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Discovery {
    /// Istio's: every primary watches every other cluster (remote secrets); same-named
    /// services merge across clusters.
    #[default]
    Istio,
    /// Linkerd's: a cluster sees only the exported services of the clusters it `links`,
    /// mirrored as `<name>-<cluster>`.
    Linkerd,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cluster {
    /// The cluster's name (Istio's cluster ID); its manifests are in `<dir>/<name>/`.
    pub name: String,
    /// The network its workloads are on.
    pub network: String,
    /// `region/zone[/subzone]` of its workloads.
    #[serde(default)]
    pub locality: Option<String>,
    /// The primary whose control plane this cluster's proxies use (Primary-Remote); absent for
    /// a primary, which runs its own.
    #[serde(default)]
    pub control_plane: Option<String>,
    /// With `discovery: linkerd`, the clusters whose exported services this one mirrors.
    #[serde(default)]
    pub links: Vec<String>,
}

impl Cluster {
    pub fn is_primary(&self) -> bool {
        self.control_plane.is_none()
    }

    /// The control plane's cluster: its own, or its primary's.
    pub fn control_plane_cluster(&self) -> &str {
        self.control_plane.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Document {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    clusters: Vec<Cluster>,
    #[serde(default)]
    discovery: Discovery,
}

/// Reads `<dir>/topology.yaml`.
pub fn read(dir: &Path) -> anyhow::Result<Topology> {
    let path = dir.join(FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; `strait up DIR` needs a topology file there (see examples/*/{FILE}; the default example is found from the repository's root)",
            path.display()
        )
    })?;
    parse(&text, dir).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Parses and checks a topology's text.
pub fn parse(text: &str, dir: &Path) -> Result<Topology, String> {
    let doc: Document = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    if doc.api_version != "strait.dev/v1alpha1" || doc.kind != "Topology" {
        return Err(format!(
            "apiVersion/kind is {}/{}; write apiVersion: strait.dev/v1alpha1, kind: Topology",
            doc.api_version, doc.kind
        ));
    }
    let clusters = doc.spec.clusters;
    if clusters.is_empty() {
        return Err("spec.clusters is empty; name at least one cluster".into());
    }
    let mut names = BTreeSet::new();
    for (i, c) in clusters.iter().enumerate() {
        let field = format!("spec.clusters[{i}]");
        if !is_dns_label(&c.name) {
            return Err(format!(
                "{field}.name {:?} is not a DNS label (lower-case letters, digits and '-', at most 20 here)",
                c.name
            ));
        }
        if !names.insert(c.name.as_str()) {
            return Err(format!("{field}.name {:?} appears twice", c.name));
        }
        if !is_dns_label(&c.network) {
            return Err(format!(
                "{field}.network {:?} is not a DNS label (lower-case letters, digits and '-')",
                c.network
            ));
        }
        if let Some(l) = &c.locality
            && !(2..=3).contains(&l.split('/').count())
        {
            return Err(format!(
                "{field}.locality {l:?}: write region/zone or region/zone/subzone"
            ));
        }
    }
    for (i, c) in clusters.iter().enumerate() {
        if let Some(cp) = &c.control_plane {
            match clusters.iter().find(|o| &o.name == cp) {
                None => {
                    return Err(format!(
                        "spec.clusters[{i}].controlPlane {cp:?} names no cluster of this topology"
                    ));
                }
                Some(o) if !o.is_primary() => {
                    return Err(format!(
                        "spec.clusters[{i}].controlPlane {cp:?} is itself a remote; name a primary (a cluster without controlPlane)"
                    ));
                }
                Some(_) => {}
            }
        }
    }
    let discovery = doc.spec.discovery;
    for (i, c) in clusters.iter().enumerate() {
        for (j, l) in c.links.iter().enumerate() {
            let field = format!("spec.clusters[{i}].links[{j}]");
            if discovery != Discovery::Linkerd {
                return Err(format!(
                    "{field}: links are Linkerd's way of discovery; set spec.discovery: linkerd (Istio's primaries see every cluster)"
                ));
            }
            if l == &c.name || !clusters.iter().any(|o| &o.name == l && o.is_primary()) {
                return Err(format!(
                    "{field} {l:?} must name another cluster of this topology that runs its own control plane"
                ));
            }
        }
        if discovery == Discovery::Linkerd && !c.is_primary() {
            return Err(format!(
                "spec.clusters[{i}].controlPlane: with discovery: linkerd every cluster runs its own control plane"
            ));
        }
    }
    Ok(Topology {
        name: doc.metadata.name,
        dir: dir.to_path_buf(),
        clusters,
        discovery,
    })
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 20
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_spec(clusters: &str) -> Result<Topology, String> {
        parse(
            &format!(
                "apiVersion: strait.dev/v1alpha1\nkind: Topology\nmetadata: {{name: t}}\nspec:\n  clusters:\n{clusters}"
            ),
            Path::new("."),
        )
    }

    #[test]
    fn primaries_and_remotes() {
        let t = parse_spec(
            "  - {name: cluster1, network: network1, locality: region1/zone1}\n  - {name: cluster2, network: network1, controlPlane: cluster1}\n",
        )
        .unwrap();
        assert!(t.clusters[0].is_primary());
        assert_eq!(t.clusters[1].control_plane_cluster(), "cluster1");
    }

    #[test]
    fn linkerd_links() {
        let t = parse(
            "apiVersion: strait.dev/v1alpha1\nkind: Topology\nmetadata: {name: t}\nspec:\n  discovery: linkerd\n  clusters:\n  - {name: east, network: n1, links: [west]}\n  - {name: west, network: n2}\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(t.discovery, Discovery::Linkerd);
        assert_eq!(t.clusters[0].links, ["west"]);
        let e = parse(
            "apiVersion: strait.dev/v1alpha1\nkind: Topology\nmetadata: {name: t}\nspec:\n  discovery: linkerd\n  clusters:\n  - {name: east, network: n1, links: [nowhere]}\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.contains("spec.clusters[0].links[0]"), "{e}");
    }

    #[test]
    fn mistakes_name_the_field() {
        for (clusters, wanted) in [
            (
                "  - {name: c1, network: n1, controlPlane: c9}\n",
                "spec.clusters[0].controlPlane",
            ),
            ("  - {name: C1, network: n1}\n", "spec.clusters[0].name"),
            (
                "  - {name: c1, network: n1}\n  - {name: c1, network: n1}\n",
                "appears twice",
            ),
            (
                "  - {name: c1, network: n1, locality: r1}\n",
                "spec.clusters[0].locality",
            ),
            ("  - {name: c1, network: n1, zone: z}\n", "zone"),
            (
                "  - {name: c1, network: n1}\n  - {name: c2, network: n1, controlPlane: c1}\n  - {name: c3, network: n1, controlPlane: c2}\n",
                "itself a remote",
            ),
            (
                "  - {name: c1, network: n1, links: [c2]}\n  - {name: c2, network: n1}\n",
                "spec.discovery: linkerd",
            ),
        ] {
            let e = parse_spec(clusters).unwrap_err();
            assert!(e.contains(wanted), "{clusters}: {e}");
        }
    }
}
