//! Upstream's `ImageLocality` scorer as a Wasm component: prefer nodes that
//! already hold the pod's images, weighting each image by its size and by how
//! widely it has spread across the cluster (to avoid piling pods onto the few
//! nodes that pulled a large image first).
//!
//! As current upstream: for each image of the pod's init containers and
//! containers, a node holding it (matched by name after upstream's only
//! normalization, appending `:latest` to a name without a tag) adds
//! `size × (nodes holding it / all nodes)`; the sum is clamped to
//! [23 MiB, 1000 MiB × number of containers] and scaled to 0..=100. An image's
//! size is the size reported by the first node that listed the name, as in
//! upstream's scheduler cache. No normalize step.
//!
//! Image names are interned at upsert time; the plugin keeps, per name, the
//! size and the number of nodes holding it, and per node the sorted ids of its
//! images, so the per-node loop is a few binary searches.

use std::collections::HashMap;

use trellis_sdk::scheduler::*;

const MB: i64 = 1024 * 1024;
/// Lower bound of the summed image score (upstream's `minThreshold`).
const MIN_THRESHOLD: i64 = 23 * MB;
/// Upper bound per container (upstream's `maxContainerThreshold`).
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// Cluster-wide state of one image name (upstream's `imageState`).
#[derive(Debug, Clone, Copy, Default)]
struct ImageState {
    size: i64,
    /// Nodes listing this name; 0 means the entry is gone.
    nodes: u32,
}

/// The plugin.
#[derive(Default)]
pub struct ImageLocality {
    ids: HashMap<String, u32>,
    images: Vec<ImageState>,
    /// Per node: ids of the image names it holds, sorted, deduplicated.
    nodes: NodeTable<Vec<u32>>,
    /// The prepared pod's images that some node holds, with their scaled
    /// scores (upstream's `scaledImageScore`), and its container count.
    wanted: Vec<(u32, i64)>,
    containers: usize,
}

/// Upstream's `normalizedImageName`: a name whose last `:` does not come after
/// its last `/` has no tag and gets `:latest`. Registries are not added.
fn normalized_image_name(name: &str) -> std::borrow::Cow<'_, str> {
    let colon = name.rfind(':').map_or(-1, |i| i as isize);
    let slash = name.rfind('/').map_or(-1, |i| i as isize);
    if colon <= slash {
        format!("{name}:latest").into()
    } else {
        name.into()
    }
}

/// Upstream's `calculatePriority`.
fn calculate_priority(sum: i64, containers: usize) -> u8 {
    let max = MAX_CONTAINER_THRESHOLD * containers as i64;
    let sum = if sum < MIN_THRESHOLD {
        MIN_THRESHOLD
    } else if sum > max {
        max
    } else {
        sum
    };
    (100 * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD)).clamp(0, 100) as u8
}

impl ImageLocality {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.images.len() as u32;
        self.ids.insert(name.to_string(), id);
        self.images.push(ImageState::default());
        id
    }

    fn release(&mut self, held: &[u32]) {
        for &id in held {
            let s = &mut self.images[id as usize];
            s.nodes = s.nodes.saturating_sub(1);
        }
    }
}

impl SchedulerPlugin for ImageLocality {
    fn info() -> PluginInfo {
        plugin_info("ImageLocality", env!("CARGO_PKG_VERSION"), Phases::SCORE)
            .nodes_only()
            .reads(PodFields::CONTAINERS)
            .reads_nodes(NodeFields::IMAGES)
    }

    /// Per pod: each of its images that a node holds, with its scaled score,
    /// duplicates kept as upstream sums per container. None held anywhere:
    /// every node scores 0, so the score is skipped.
    fn prepare(&mut self, pod: &Pod) -> Result<Phases, PluginError> {
        let total = self.nodes.len() as f64;
        self.containers = pod.init_containers.len() + pod.containers.len();
        self.wanted = pod
            .init_containers
            .iter()
            .chain(&pod.containers)
            .filter_map(|c| {
                let id = *self.ids.get(normalized_image_name(&c.image).as_ref())?;
                let s = self.images[id as usize];
                (s.nodes > 0).then(|| (id, (s.size as f64 * (f64::from(s.nodes) / total)) as i64))
            })
            .collect();
        Ok(if self.wanted.is_empty() {
            Phases::empty()
        } else {
            Phases::SCORE
        })
    }

    fn upsert_node(&mut self, id: NodeId, node: Node) -> Result<(), PluginError> {
        // As upstream's cache on a node update: drop the old images, then add
        // the new ones.
        if let Some(old) = self.nodes.remove(id) {
            self.release(&old);
        }
        let mut held: Vec<u32> = Vec::new();
        for image in &node.images {
            for name in &image.names {
                let i = self.intern(name);
                if held.contains(&i) {
                    continue;
                }
                held.push(i);
                let s = &mut self.images[i as usize];
                if s.nodes == 0 {
                    s.size = image.size_bytes;
                }
                s.nodes += 1;
            }
        }
        held.sort_unstable();
        self.nodes.insert(id, held);
        Ok(())
    }

    fn remove_node(&mut self, id: NodeId) {
        if let Some(old) = self.nodes.remove(id) {
            self.release(&old);
        }
    }

    fn score(&mut self, _pod: &Pod, candidates: &[NodeId]) -> Result<Vec<u8>, PluginError> {
        let containers = self.containers;
        let wanted = &self.wanted;
        self.nodes.map(candidates, |held| {
            let sum: i64 = wanted
                .iter()
                .filter(|(img, _)| held.binary_search(img).is_ok())
                .map(|(_, s)| s)
                .sum();
            calculate_priority(sum, containers)
        })
    }
}

trellis_sdk::export_scheduler!(ImageLocality);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_upstream() {
        assert_eq!(normalized_image_name("nginx"), "nginx:latest");
        assert_eq!(normalized_image_name("nginx:1.25"), "nginx:1.25");
        assert_eq!(
            normalized_image_name("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            normalized_image_name("localhost:5000/app:v1"),
            "localhost:5000/app:v1"
        );
        assert_eq!(
            normalized_image_name("docker.io/library/nginx"),
            "docker.io/library/nginx:latest"
        );
    }

    fn node(name: &str, images: &[(&str, i64)]) -> Node {
        Node {
            name: name.into(),
            labels: vec![],
            taints: vec![],
            allocatable: trellis_sdk::scheduler::zero_resources(),
            unschedulable: false,
            images: images
                .iter()
                .map(|(n, s)| trellis_sdk::NodeImage {
                    names: vec![n.to_string()],
                    size_bytes: *s,
                })
                .collect(),
        }
    }

    #[test]
    fn upserts_and_removals_keep_counts() {
        let mut p = ImageLocality::default();
        p.upsert_node(0, node("a", &[("x:1", 100), ("x:1", 999)]))
            .unwrap();
        p.upsert_node(1, node("b", &[("x:1", 200)])).unwrap();
        let x = p.ids["x:1"] as usize;
        assert_eq!((p.images[x].size, p.images[x].nodes), (100, 2));
        // Replacing a node drops its old images first.
        p.upsert_node(0, node("a", &[])).unwrap();
        assert_eq!(p.images[x].nodes, 1);
        p.remove_node(1);
        p.remove_node(1);
        assert_eq!(p.images[x].nodes, 0);
        // A name held by no node again takes the next reporter's size.
        p.upsert_node(1, node("b", &[("x:1", 300)])).unwrap();
        assert_eq!((p.images[x].size, p.images[x].nodes), (300, 1));
    }

    #[test]
    fn priority_clamps_and_scales() {
        assert_eq!(calculate_priority(0, 1), 0);
        assert_eq!(calculate_priority(MIN_THRESHOLD, 1), 0);
        assert_eq!(calculate_priority(2000 * MB, 1), 100);
        assert_eq!(calculate_priority(500 * MB, 1), 48);
        assert_eq!(calculate_priority(1000 * MB, 2), 49);
    }
}
