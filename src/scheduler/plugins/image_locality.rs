//! ImageLocality: prefer nodes that already have the pod's container images
//! (from `node.status.images`). Each image counts its size scaled by the share of
//! nodes that have it, so images present everywhere don't attract pods to one node.

use std::collections::BTreeMap;

use crate::scheduler::framework::{
    MAX_NODE_SCORE, NodeInfo, PodInfo, ScoreContext, ScorePlugin, Snapshot,
};

pub const NAME: &str = "ImageLocality";

const MB: i64 = 1024 * 1024;
/// Below this total the score is 0.
pub const MIN_THRESHOLD: i64 = 23 * MB;
/// Per container: at or above this total the score is 100.
pub const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

pub struct ImageLocality;

/// Adds `:latest` when the image has no tag, as the real plugin does
/// (`nginx` -> `nginx:latest`; `host:5000/app` -> `host:5000/app:latest`).
pub fn normalized_image_name(name: &str) -> String {
    let colon = name.rfind(':');
    let slash = name.rfind('/');
    if colon.is_none() || colon <= slash {
        format!("{name}:latest")
    } else {
        name.to_string()
    }
}

/// Image name -> (size in bytes, on this node).
fn node_images(node: &NodeInfo) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    let images = node.node.status.as_ref().and_then(|s| s.images.as_deref());
    for img in images.into_iter().flatten() {
        let size = img.size_bytes.unwrap_or(0).max(0);
        for n in img.names.iter().flatten() {
            out.insert(n.clone(), size);
        }
    }
    out
}

fn num_nodes_with(snapshot: &Snapshot, image: &str) -> usize {
    snapshot
        .nodes
        .iter()
        .filter(|n| node_images(n).contains_key(image))
        .count()
}

/// Maps the summed scaled image sizes to 0..100 between the thresholds.
pub fn calculate_priority(sum: i64, num_containers: usize) -> i64 {
    let max = MAX_CONTAINER_THRESHOLD.saturating_mul(num_containers as i64);
    if max <= MIN_THRESHOLD {
        return 0;
    }
    let sum = sum.clamp(MIN_THRESHOLD, max);
    MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
}

impl ScorePlugin for ImageLocality {
    fn name(&self) -> &'static str {
        NAME
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo, ctx: &ScoreContext) -> i64 {
        let Some(spec) = pod.pod.spec.as_ref() else {
            return 0;
        };
        let total_nodes = ctx.snapshot.nodes.len().max(1);
        let here = node_images(node);
        let containers: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .collect();
        let mut sum: i64 = 0;
        for c in &containers {
            let Some(image) = c.image.as_deref() else {
                continue;
            };
            let image = normalized_image_name(image);
            if let Some(size) = here.get(&image) {
                let spread = num_nodes_with(ctx.snapshot, &image) as f64 / total_nodes as f64;
                sum = sum.saturating_add((*size as f64 * spread) as i64);
            }
        }
        calculate_priority(sum, containers.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::testutil::*;
    use k8s_openapi::api::core::v1::ContainerImage;

    fn with_image(
        mut n: k8s_openapi::api::core::v1::Node,
        name: &str,
        size: i64,
    ) -> k8s_openapi::api::core::v1::Node {
        n.status
            .as_mut()
            .unwrap()
            .images
            .get_or_insert_with(Vec::new)
            .push(ContainerImage {
                names: Some(vec![name.to_string()]),
                size_bytes: Some(size),
            });
        n
    }

    #[test]
    fn names() {
        assert_eq!(normalized_image_name("nginx"), "nginx:latest");
        assert_eq!(normalized_image_name("nginx:1.25"), "nginx:1.25");
        assert_eq!(normalized_image_name("reg:5000/app"), "reg:5000/app:latest");
    }

    #[test]
    fn spread_scaled_score() {
        // 500MB image on 1 of 2 nodes: 250MB scaled; one container.
        let nodes = [
            with_image(node("a", "1", "1Gi"), "app:v1", 500 * MB),
            node("b", "1", "1Gi"),
        ];
        let s = Snapshot::new(&nodes, &[]);
        let ctx = ScoreContext {
            snapshot: &s,
            feasible: &[],
        };
        let mut p = pod("p", None, None);
        spec_mut(&mut p).containers[0].image = Some("app:v1".into());
        let p = PodInfo::new(p);
        let want = 100 * (250 * MB - MIN_THRESHOLD) / (1000 * MB - MIN_THRESHOLD);
        assert_eq!(ImageLocality.score(&p, &s.nodes[0], &ctx), want);
        assert_eq!(want, 23);
        assert_eq!(ImageLocality.score(&p, &s.nodes[1], &ctx), 0);
    }

    #[test]
    fn thresholds() {
        assert_eq!(calculate_priority(10 * MB, 1), 0);
        assert_eq!(calculate_priority(5000 * MB, 1), 100);
        assert_eq!(calculate_priority(1000 * MB, 2), 49);
        assert_eq!(calculate_priority(1, 0), 0);
    }
}
