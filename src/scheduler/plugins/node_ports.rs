//! NodePorts: the pod's hostPorts must be free on the node. A port bound on
//! 0.0.0.0 conflicts with the same protocol/port on any IP, and vice versa.

use crate::scheduler::framework::{FilterPlugin, HostPort, NodeInfo, PodInfo, Reason, Snapshot};

pub const NAME: &str = "NodePorts";
pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

pub struct NodePorts;

fn conflicts(want: &HostPort, used: &HostPort) -> bool {
    want.port == used.port
        && want.protocol == used.protocol
        && (want.ip == used.ip || want.ip == "0.0.0.0" || used.ip == "0.0.0.0")
}

impl FilterPlugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Result<(), Reason> {
        let wanted = HostPort::of_pod(&pod.pod);
        if wanted
            .iter()
            .any(|w| node.used_ports.iter().any(|u| conflicts(w, u)))
        {
            return Err(Reason::unschedulable(ERR_REASON));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::testutil::*;

    #[test]
    fn host_port_conflicts() {
        let nodes = [node("a", "1", "1Gi"), node("b", "1", "1Gi")];
        let pods = [on_node(with_host_port(pod("web", None, None), 8080), "a")];
        let s = Snapshot::new(&nodes, &pods);
        let p = PodInfo::new(with_host_port(pod("p", None, None), 8080));
        assert_eq!(
            NodePorts.filter(&p, &s.nodes[0], &s),
            Err(Reason::unschedulable(ERR_REASON))
        );
        assert!(NodePorts.filter(&p, &s.nodes[1], &s).is_ok());
        let other = PodInfo::new(with_host_port(pod("q", None, None), 9090));
        assert!(NodePorts.filter(&other, &s.nodes[0], &s).is_ok());
    }

    #[test]
    fn ip_and_protocol_rules() {
        let hp = |ip: &str, proto: &str| HostPort::new(Some(ip), Some(proto), 53);
        assert!(conflicts(&hp("0.0.0.0", "UDP"), &hp("10.0.0.1", "UDP")));
        assert!(conflicts(&hp("10.0.0.1", "UDP"), &hp("0.0.0.0", "UDP")));
        assert!(!conflicts(&hp("10.0.0.1", "UDP"), &hp("10.0.0.2", "UDP")));
        assert!(!conflicts(&hp("0.0.0.0", "TCP"), &hp("0.0.0.0", "UDP")));
        assert_eq!(
            HostPort::new(None, None, 1),
            hp("0.0.0.0", "TCP").clone_with_port(1)
        );
    }

    impl HostPort {
        fn clone_with_port(&self, port: i32) -> HostPort {
            HostPort {
                port,
                ..self.clone()
            }
        }
    }
}
