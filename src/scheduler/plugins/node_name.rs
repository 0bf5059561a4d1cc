//! NodeName: if the pod sets `spec.nodeName`, only that node fits. (Pods created
//! with nodeName normally bypass the scheduler; this covers the rest.)

use crate::scheduler::framework::{FilterPlugin, NodeInfo, PodInfo, Reason, Snapshot};

pub const NAME: &str = "NodeName";
pub const ERR_REASON: &str = "node(s) didn't match the requested node name";

pub struct NodeName;

impl FilterPlugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Result<(), Reason> {
        match pod.node_name() {
            Some(want) if want != node.name() => Err(Reason::unresolvable(ERR_REASON)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::testutil::*;

    #[test]
    fn only_named_node_fits() {
        let s = Snapshot::new(&[node("a", "1", "1Gi"), node("b", "1", "1Gi")], &[]);
        let mut p = pod("p", None, None);
        spec_mut(&mut p).node_name = Some("b".into());
        let p = PodInfo::new(p);
        let err = NodeName.filter(&p, &s.nodes[0], &s).unwrap_err();
        assert_eq!(err, Reason::unresolvable(ERR_REASON));
        assert!(NodeName.filter(&p, &s.nodes[1], &s).is_ok());
        let free = PodInfo::new(pod("q", None, None));
        assert!(NodeName.filter(&free, &s.nodes[0], &s).is_ok());
    }
}
