//! A synthetic mesh written as manifests: `services` services, each deployed in every one of
//! `clusters` clusters with `endpoints` endpoints there, spread over namespaces and zones —
//! the same files a user would give `strait control-plane`, so the benchmark measures the whole
//! path from a file change to a proxy's ACK.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The shape of the synthetic mesh.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub services: usize,
    pub endpoints: usize,
    pub clusters: usize,
}

pub const NAMESPACES: usize = 10;
pub const ZONES: usize = 3;

impl Shape {
    pub fn namespace_of(service: usize) -> String {
        format!("ns-{}", service % NAMESPACES)
    }

    pub fn host(service: usize) -> String {
        format!(
            "svc-{service}.{}.svc.cluster.local",
            Self::namespace_of(service)
        )
    }

    /// Istio's outbound cluster name for the service's HTTP port.
    pub fn http_cluster(service: usize) -> String {
        format!("outbound|80||{}", Self::host(service))
    }

    /// Service ports in the mesh (one outbound cluster each).
    pub fn service_ports(&self) -> usize {
        self.services + self.services.div_ceil(5)
    }

    /// Every fifth service also serves gRPC on 9090.
    fn has_grpc(service: usize) -> bool {
        service.is_multiple_of(5)
    }

    /// The `index`-th endpoint address of `service` in cluster `cluster` (1-based); `generation`
    /// moves the last endpoint (no simulated proxy runs there) so that a rewrite is an endpoint
    /// change.
    pub fn endpoint_ip(
        &self,
        cluster: usize,
        service: usize,
        index: usize,
        generation: usize,
    ) -> String {
        if index + 1 == self.endpoints && generation > 0 {
            return format!(
                "10.{}.{}.{}",
                100 + cluster,
                generation / 250 % 256,
                generation % 250 + 1
            );
        }
        let n = service * self.address_stride() + index;
        format!("10.{cluster}.{}.{}", n / 250 % 256, n % 250 + 1)
    }

    /// Addresses set aside per service in a cluster (at least 16, so meshes of up to 16
    /// endpoints per service keep the same addresses whatever their size).
    fn address_stride(&self) -> usize {
        self.endpoints.max(16)
    }

    /// Whether every service's endpoints in a cluster get distinct addresses (`10.<cluster>.x.y`
    /// holds 64000).
    fn addresses_fit(&self) -> bool {
        (self.services + 100) * self.address_stride() <= 256 * 250
    }

    pub fn cluster_dir(root: &Path, cluster: usize) -> PathBuf {
        root.join(format!("cluster{cluster}"))
    }

    pub fn service_file(root: &Path, cluster: usize, service: usize) -> PathBuf {
        Self::cluster_dir(root, cluster)
            .join(Self::namespace_of(service))
            .join(format!("svc-{service}.yaml"))
    }
}

fn mesh_config(cluster: usize) -> String {
    format!(
        "apiVersion: strait.dev/v1alpha1\nkind: MeshConfig\nmetadata:\n  name: mesh\nspec:\n  meshId: bench\n  trustDomain: cluster.local\n  clusterName: cluster{cluster}\n  network: network1\n"
    )
}

fn nodes(cluster: usize) -> String {
    let mut s = String::new();
    for z in 1..=ZONES {
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: node-{cluster}-{z}\n  labels:\n    topology.kubernetes.io/region: region{cluster}\n    topology.kubernetes.io/zone: zone{z}\n"
        );
    }
    s
}

/// A service's Service and Endpoints in one cluster.
pub fn service_manifest(shape: Shape, cluster: usize, service: usize, generation: usize) -> String {
    let ns = Shape::namespace_of(service);
    let grpc = Shape::has_grpc(service);
    let mut s = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{service}\n  namespace: {ns}\nspec:\n  selector:\n    app: svc-{service}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n"
    );
    if grpc {
        s.push_str("  - name: grpc\n    port: 9090\n    targetPort: 9090\n");
    }
    let _ = write!(
        s,
        "---\napiVersion: v1\nkind: Endpoints\nmetadata:\n  name: svc-{service}\n  namespace: {ns}\nsubsets:\n- addresses:\n"
    );
    for i in 0..shape.endpoints {
        let _ = write!(
            s,
            "  - ip: {}\n    nodeName: node-{cluster}-{}\n",
            shape.endpoint_ip(cluster, service, i, generation),
            i % ZONES + 1
        );
    }
    s.push_str("  ports:\n  - name: http\n    port: 8080\n");
    if grpc {
        s.push_str("  - name: grpc\n    port: 9090\n");
    }
    s
}

/// Writes the whole mesh under `root`: `cluster<N>/` per cluster, one file per service.
pub fn write(shape: Shape, root: &Path) -> anyhow::Result<usize> {
    anyhow::ensure!(
        shape.addresses_fit(),
        "{} services × {} endpoints do not fit one cluster's synthetic address range (10.<cluster>.0.0/16, 64000 addresses)",
        shape.services,
        shape.endpoints
    );
    let mut files = 0;
    for c in 1..=shape.clusters {
        let dir = Shape::cluster_dir(root, c);
        for n in 0..NAMESPACES {
            std::fs::create_dir_all(dir.join(format!("ns-{n}")))
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(dir.join("mesh.yaml"), mesh_config(c))?;
        std::fs::write(dir.join("nodes.yaml"), nodes(c))?;
        files += 2;
        for s in 0..shape.services {
            let path = Shape::service_file(root, c, s);
            std::fs::write(&path, service_manifest(shape, c, s, 0))
                .with_context(|| format!("writing {}", path.display()))?;
            files += 1;
        }
    }
    Ok(files)
}
