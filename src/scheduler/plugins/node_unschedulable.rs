//! NodeUnschedulable: a cordoned node (`spec.unschedulable: true`) only accepts
//! pods that tolerate the `node.kubernetes.io/unschedulable:NoSchedule` taint.

use k8s_openapi::api::core::v1::Taint;

use crate::scheduler::framework::{FilterPlugin, NodeInfo, PodInfo, Reason, Snapshot};
use crate::scheduler::helpers::tolerations_tolerate;

pub const NAME: &str = "NodeUnschedulable";
pub const ERR_REASON: &str = "node(s) were unschedulable";
pub const TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

pub struct NodeUnschedulable;

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Result<(), Reason> {
        let cordoned = node
            .node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if !cordoned {
            return Ok(());
        }
        let taint = Taint {
            key: TAINT_KEY.to_string(),
            effect: "NoSchedule".to_string(),
            ..Default::default()
        };
        if tolerations_tolerate(pod.tolerations(), &taint) {
            Ok(())
        } else {
            Err(Reason::unresolvable(ERR_REASON))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::testutil::*;
    use k8s_openapi::api::core::v1::Toleration;

    #[test]
    fn cordoned_node_rejects_unless_tolerated() {
        let mut n = node("a", "1", "1Gi");
        n.spec.as_mut().unwrap().unschedulable = Some(true);
        let s = Snapshot::new(&[n], &[]);
        let p = PodInfo::new(pod("p", None, None));
        assert_eq!(
            NodeUnschedulable.filter(&p, &s.nodes[0], &s),
            Err(Reason::unresolvable("node(s) were unschedulable"))
        );
        let mut tp = pod("t", None, None);
        spec_mut(&mut tp).tolerations = Some(vec![Toleration {
            key: Some(TAINT_KEY.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]);
        assert!(
            NodeUnschedulable
                .filter(&PodInfo::new(tp), &s.nodes[0], &s)
                .is_ok()
        );
    }
}
