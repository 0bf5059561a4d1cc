//! The in-tree plugins of the default profile (volume and DRA plugins left out).
//! Each file holds one plugin; plugins that both filter and score implement both
//! traits on one type, as in Kubernetes.

pub mod balanced_allocation;
pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod taint_toleration;

use super::framework::{FilterPlugin, ScorePlugin};

pub use balanced_allocation::BalancedAllocation;
pub use image_locality::ImageLocality;
pub use inter_pod_affinity::InterPodAffinity;
pub use node_affinity::NodeAffinity;
pub use node_name::NodeName;
pub use node_ports::NodePorts;
pub use node_resources_fit::NodeResourcesFit;
pub use node_unschedulable::NodeUnschedulable;
pub use pod_topology_spread::PodTopologySpread;
pub use taint_toleration::TaintToleration;

/// Filters in the order of the default profile.
pub fn default_filters() -> Vec<Box<dyn FilterPlugin>> {
    vec![
        Box::new(NodeUnschedulable),
        Box::new(NodeName),
        Box::new(TaintToleration),
        Box::new(NodeAffinity),
        Box::new(NodePorts),
        Box::new(NodeResourcesFit),
        Box::new(PodTopologySpread),
        Box::new(InterPodAffinity),
    ]
}

/// Scorers with the default profile's weights (pkg/scheduler/apis/config/v1
/// default_plugins.go): TaintToleration 3, NodeAffinity 2, NodeResourcesFit 1,
/// PodTopologySpread 2, InterPodAffinity 2, NodeResourcesBalancedAllocation 1,
/// ImageLocality 1.
pub fn default_scorers() -> Vec<(Box<dyn ScorePlugin>, i64)> {
    vec![
        (Box::new(TaintToleration), 3),
        (Box::new(NodeAffinity), 2),
        (Box::new(NodeResourcesFit), 1),
        (Box::new(PodTopologySpread), 2),
        (Box::new(InterPodAffinity), 2),
        (Box::new(BalancedAllocation), 1),
        (Box::new(ImageLocality), 1),
    ]
}
