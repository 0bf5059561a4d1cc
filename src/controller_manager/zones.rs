//! Zones, their disruption states and the rate-limited NoExecute tainting queues of the node
//! lifecycle controller (kube-controller-manager's `handleDisruption`, `ComputeZoneState`,
//! `ReducedQPSFunc`/`HealthyQPSFunc` and the scheduler package's `RateLimitedTimedQueue`).
//!
//! Nodes are grouped by zone: `topology.kubernetes.io/zone` and `topology.kubernetes.io/region`
//! (or their deprecated `failure-domain.beta.kubernetes.io/` forms, which win when both exist),
//! keyed as `utilnode.GetZoneKey` does (`region + ":\0:" + zone`; nodes with neither are the zone
//! `""`). A node labelled `node.kubernetes.io/exclude-disruption` counts in no zone.
//!
//! A zone is
//! - `FullDisruption` when none of its nodes is Ready,
//! - `PartialDisruption` when more than 2 nodes and at least `--unhealthy-zone-threshold` (0.55)
//!   of them are not Ready,
//! - `Normal` otherwise.
//!
//! Every zone has a queue of nodes waiting for their `NoExecute` taint, drained through a token
//! bucket (burst 1) at the zone's rate:
//! - Normal: `--node-eviction-rate` (0.1 nodes/s);
//! - PartialDisruption: `--secondary-node-eviction-rate` (0.01) when the zone has more than
//!   `--large-cluster-size-threshold` (50) nodes, else 0 (no tainting at all);
//! - FullDisruption: `--node-eviction-rate` again (the zone is probably really gone) — unless
//!   *every* zone is in FullDisruption: then the control plane is more likely cut off from the
//!   nodes than all of them dead, so the controller enters "master disruption mode": no zone
//!   taints (rate 0) and the not-ready/unreachable `NoExecute` taints already there are removed,
//!   until some node is Ready again.
//!
//! Everything here is pure state (the caller brings the clock), so that it can be tested
//! without an API server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;

pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";
pub const LABEL_ZONE_BETA: &str = "failure-domain.beta.kubernetes.io/zone";
pub const LABEL_REGION_BETA: &str = "failure-domain.beta.kubernetes.io/region";
/// Nodes with this label are left out of the zones' disruption states.
pub const LABEL_EXCLUDE_DISRUPTION: &str = "node.kubernetes.io/exclude-disruption";

/// The token bucket's burst (`EvictionRateLimiterBurst`).
const BURST: f64 = 1.0;

/// The zone key of a node, as `GetZoneKey` builds it: `region + ":\0:" + zone`, or `""` when the
/// node has neither label.
pub fn zone_key(node: &Node) -> String {
    let Some(labels) = node.metadata.labels.as_ref() else {
        return String::new();
    };
    let get = |beta: &str, ga: &str| {
        labels
            .get(beta)
            .or_else(|| labels.get(ga))
            .cloned()
            .unwrap_or_default()
    };
    let zone = get(LABEL_ZONE_BETA, LABEL_ZONE);
    let region = get(LABEL_REGION_BETA, LABEL_REGION);
    if region.is_empty() && zone.is_empty() {
        return String::new();
    }
    format!("{region}:\0:{zone}")
}

/// A zone key for people: `zone`, `region/zone`, or `(none)`.
pub fn display_zone(key: &str) -> String {
    match key.split_once(":\0:") {
        None => "(none)".into(),
        Some(("", zone)) => zone.into(),
        Some((region, zone)) => format!("{region}/{zone}"),
    }
}

/// Whether the node is left out of the disruption states.
pub fn excluded(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(LABEL_EXCLUDE_DISRUPTION))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    /// Seen for the first time, not yet computed.
    Initial,
    Normal,
    PartialDisruption,
    FullDisruption,
}

impl fmt::Display for ZoneState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ZoneState::Initial => "Initial",
            ZoneState::Normal => "Normal",
            ZoneState::PartialDisruption => "PartialDisruption",
            ZoneState::FullDisruption => "FullDisruption",
        })
    }
}

/// The flags that set the tainting rates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    /// `--node-eviction-rate`: nodes per second in a healthy zone.
    pub eviction_qps: f32,
    /// `--secondary-node-eviction-rate`: nodes per second in a partly disrupted large zone.
    pub secondary_eviction_qps: f32,
    /// `--large-cluster-size-threshold`: a zone of more nodes than this is large.
    pub large_cluster_threshold: i32,
    /// `--unhealthy-zone-threshold`: the share of not-Ready nodes (of more than 2) from which a
    /// zone is partly disrupted.
    pub unhealthy_zone_threshold: f32,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            eviction_qps: 0.1,
            secondary_eviction_qps: 0.01,
            large_cluster_threshold: 50,
            unhealthy_zone_threshold: 0.55,
        }
    }
}

impl Rates {
    /// The zone's state from its nodes' readiness (`ComputeZoneState`): (not ready, state).
    pub fn zone_state(&self, ready: impl IntoIterator<Item = bool>) -> (usize, ZoneState) {
        let (mut ready_nodes, mut not_ready) = (0usize, 0usize);
        for r in ready {
            if r {
                ready_nodes += 1;
            } else {
                not_ready += 1;
            }
        }
        let state = if ready_nodes == 0 && not_ready > 0 {
            ZoneState::FullDisruption
        } else if not_ready > 2
            && not_ready as f32 / (not_ready + ready_nodes) as f32 >= self.unhealthy_zone_threshold
        {
            ZoneState::PartialDisruption
        } else {
            ZoneState::Normal
        };
        (not_ready, state)
    }

    /// The rate of a fully disrupted zone (`HealthyQPSFunc`): the normal one.
    pub fn healthy_qps(&self, _zone_size: usize) -> f32 {
        self.eviction_qps
    }

    /// The rate of a partly disrupted zone (`ReducedQPSFunc`): the secondary rate when the zone
    /// is large, else 0.
    pub fn reduced_qps(&self, zone_size: usize) -> f32 {
        if i64::try_from(zone_size).unwrap_or(i64::MAX) > i64::from(self.large_cluster_threshold) {
            self.secondary_eviction_qps
        } else {
            0.0
        }
    }

    /// The rate for a zone of `zone_size` nodes in `state` (`setLimiterInZone`).
    pub fn qps_for(&self, state: ZoneState, zone_size: usize) -> f32 {
        match state {
            ZoneState::Initial | ZoneState::Normal => self.eviction_qps,
            ZoneState::PartialDisruption => self.reduced_qps(zone_size),
            ZoneState::FullDisruption => self.healthy_qps(zone_size),
        }
    }
}

/// A token bucket of burst 1 (client-go's `NewTokenBucketRateLimiter(qps, 1)`): starts full,
/// refills at `qps` tokens per second. A rate of 0 or less never gives a token.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    qps: f32,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(qps: f32, now: Instant) -> TokenBucket {
        TokenBucket {
            qps,
            tokens: if qps > 0.0 { BURST } else { 0.0 },
            last: now,
        }
    }

    pub fn qps(&self) -> f32 {
        self.qps
    }

    fn refill(&mut self, now: Instant) {
        if now > self.last {
            if self.qps > 0.0 {
                let dt = now.duration_since(self.last).as_secs_f64();
                self.tokens = (self.tokens + dt * f64::from(self.qps)).min(BURST);
            }
            self.last = now;
        }
    }

    /// Takes a token if there is one.
    pub fn try_accept(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.qps > 0.0 && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is there (None: never).
    pub fn until_token(&mut self, now: Instant) -> Option<Duration> {
        self.refill(now);
        if self.qps <= 0.0 {
            return None;
        }
        let missing = (1.0 - self.tokens).max(0.0);
        Duration::try_from_secs_f64(missing / f64::from(self.qps)).ok()
    }
}

/// A node waiting in a zone's queue for its NoExecute taint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub node: String,
    pub uid: String,
    /// Not before (later after a failed attempt).
    pub process_at: Instant,
}

/// What a zone's queue has to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Taint this node now (a token was taken), then call [`TaintQueue::finish`] or
    /// [`TaintQueue::retry`].
    Taint(Pending),
    /// Look again after this long (the next token, or the head's retry time).
    Wait(Duration),
    /// Nothing can happen until something changes (queue empty, or a rate of 0).
    Idle,
}

/// A zone's queue of nodes to taint, unique by node name, ordered by when they may be processed,
/// drained through a token bucket (the real `RateLimitedTimedQueue`).
///
/// As there, a node stays known to the queue after it was tainted (so that it is not tainted
/// twice) until [`TaintQueue::remove`]: when it is Ready again, or its taint went missing.
#[derive(Debug)]
pub struct TaintQueue {
    queue: Vec<Pending>,
    known: HashSet<String>,
    limiter: TokenBucket,
}

impl TaintQueue {
    pub fn new(qps: f32, now: Instant) -> TaintQueue {
        TaintQueue {
            queue: Vec::new(),
            known: HashSet::new(),
            limiter: TokenBucket::new(qps, now),
        }
    }

    pub fn qps(&self) -> f32 {
        self.limiter.qps()
    }

    fn insert_sorted(&mut self, p: Pending) {
        let at = self.queue.partition_point(|q| q.process_at <= p.process_at);
        self.queue.insert(at, p);
    }

    /// Queues a node unless it is known already; whether it was added.
    pub fn add(&mut self, node: &str, uid: &str, now: Instant) -> bool {
        if !self.known.insert(node.to_string()) {
            return false;
        }
        self.insert_sorted(Pending {
            node: node.into(),
            uid: uid.into(),
            process_at: now,
        });
        true
    }

    /// Forgets a node (queued or done); whether it was known.
    pub fn remove(&mut self, node: &str) -> bool {
        self.queue.retain(|p| p.node != node);
        self.known.remove(node)
    }

    /// The node lacks its taint (`markNodeForTainting`): queued again if it was already
    /// tainted once; a node still waiting keeps its place.
    pub fn requeue(&mut self, node: &str, uid: &str, now: Instant) -> bool {
        if self.is_waiting(node) {
            return false;
        }
        self.known.remove(node);
        self.add(node, uid, now)
    }

    pub fn is_waiting(&self, node: &str) -> bool {
        self.queue.iter().any(|p| p.node == node)
    }

    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// The next step (`Try`, one item at a time). The head's time is looked at before a token
    /// is taken, so a node waiting for a retry costs no token.
    pub fn next(&mut self, now: Instant) -> Next {
        let Some(head) = self.queue.first() else {
            return Next::Idle;
        };
        if head.process_at > now {
            let head_wait = head.process_at.duration_since(now);
            return match self.limiter.until_token(now) {
                None => Next::Idle,
                Some(t) => Next::Wait(t.max(head_wait)),
            };
        }
        let head = head.clone();
        if self.limiter.try_accept(now) {
            return Next::Taint(head);
        }
        match self.limiter.until_token(now) {
            None => Next::Idle,
            // At least a millisecond: the bucket's float arithmetic must not spin.
            Some(t) => Next::Wait(t.max(Duration::from_millis(1))),
        }
    }

    /// The node was tainted (or needs no taint any more): out of the queue, still known.
    pub fn finish(&mut self, node: &str) {
        self.queue.retain(|p| p.node != node);
    }

    /// Tainting failed: try again after `wait`.
    pub fn retry(&mut self, node: &str, now: Instant, wait: Duration) {
        if let Some(i) = self.queue.iter().position(|p| p.node == node) {
            let mut p = self.queue.remove(i);
            p.process_at = now + wait;
            self.insert_sorted(p);
        }
    }

    /// A new rate (`SwapLimiter`): a new full bucket, or an empty one when the old bucket was
    /// empty (with burst 1, the new rate starts where the old one was); 0 or less stops the
    /// queue.
    pub fn set_qps(&mut self, qps: f32, now: Instant) {
        if self.limiter.qps() == qps {
            return;
        }
        let mut new = TokenBucket::new(qps, now);
        if qps > 0.0 && !self.limiter.try_accept(now) {
            new.try_accept(now);
        }
        self.limiter = new;
    }
}

/// What [`Zones::handle_disruption`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Every zone is fully disrupted: the caller removes the not-ready/unreachable NoExecute
    /// taints of every node (the queues stopped already).
    EnterMasterDisruption,
    /// Some node is Ready again: the caller gives every node a fresh grace period (the queues
    /// got their rates back already).
    ExitMasterDisruption,
    /// A zone changed state (outside of the master disruption transitions).
    Zone {
        zone: String,
        from: ZoneState,
        to: ZoneState,
        qps: f32,
    },
}

/// What the zones know of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub zone: String,
    pub ready: bool,
    pub excluded: bool,
}

impl Member {
    /// The node's zone, and whether its Ready condition is True (`currentReadyCondition`).
    pub fn of(node: &Node) -> Member {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        Member {
            zone: zone_key(node),
            ready,
            excluded: excluded(node),
        }
    }
}

/// The zones: which nodes are in which, their states and their tainting queues.
#[derive(Debug)]
pub struct Zones {
    pub rates: Rates,
    members: HashMap<String, Member>,
    states: BTreeMap<String, ZoneState>,
    queues: BTreeMap<String, TaintQueue>,
    /// A member changed since the last [`Zones::handle_disruption`].
    dirty: bool,
}

impl Zones {
    pub fn new(rates: Rates) -> Zones {
        Zones {
            rates,
            members: HashMap::new(),
            states: BTreeMap::new(),
            queues: BTreeMap::new(),
            dirty: false,
        }
    }

    /// Records a node's zone and readiness (None: deleted); whether anything changed.
    pub fn observe(&mut self, node: &str, member: Option<Member>, now: Instant) -> bool {
        let changed = match member {
            None => {
                let old = self.members.remove(node);
                if let Some(m) = &old
                    && let Some(q) = self.queues.get_mut(&m.zone)
                {
                    q.remove(node);
                }
                old.is_some()
            }
            Some(m) => {
                // A new zone gets its queue at the normal rate (`addPodEvictorForNewZone`).
                let qps = self.rates.eviction_qps;
                self.queues
                    .entry(m.zone.clone())
                    .or_insert_with(|| TaintQueue::new(qps, now));
                match self.members.insert(node.to_string(), m.clone()) {
                    Some(old) if old == m => false,
                    Some(old) => {
                        if old.zone != m.zone
                            && let Some(q) = self.queues.get_mut(&old.zone)
                        {
                            q.remove(node);
                        }
                        true
                    }
                    None => true,
                }
            }
        };
        self.dirty |= changed;
        changed
    }

    pub fn zone_of(&self, node: &str) -> Option<&str> {
        self.members.get(node).map(|m| m.zone.as_str())
    }

    pub fn state(&self, zone: &str) -> Option<ZoneState> {
        self.states.get(zone).copied()
    }

    /// Whether every zone is fully disrupted (master disruption mode).
    pub fn master_disruption(&self) -> bool {
        !self.states.is_empty()
            && self
                .states
                .values()
                .all(|s| *s == ZoneState::FullDisruption)
    }

    pub fn queue(&mut self, zone: &str) -> Option<&mut TaintQueue> {
        self.queues.get_mut(zone)
    }

    pub fn queue_of(&mut self, node: &str) -> Option<&mut TaintQueue> {
        let zone = self.members.get(node)?.zone.clone();
        self.queues.get_mut(&zone)
    }

    pub fn zone_keys(&self) -> Vec<String> {
        self.queues.keys().cloned().collect()
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Takes the "something changed" mark.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// The real `handleDisruption`: recomputes every zone's state, sets the queues' rates, and
    /// says what the caller must do.
    pub fn handle_disruption(&mut self, now: Instant) -> Vec<Transition> {
        let mut ready_by_zone: BTreeMap<String, Vec<bool>> = BTreeMap::new();
        for m in self.members.values().filter(|m| !m.excluded) {
            ready_by_zone
                .entry(m.zone.clone())
                .or_default()
                .push(m.ready);
        }
        let mut new_states = BTreeMap::new();
        let mut all_are_fully_disrupted = true;
        for (zone, ready) in &ready_by_zone {
            let (_, state) = self.rates.zone_state(ready.iter().copied());
            all_are_fully_disrupted &= state == ZoneState::FullDisruption;
            new_states.insert(zone.clone(), state);
            self.states
                .entry(zone.clone())
                .or_insert(ZoneState::Initial);
        }
        // Zones without nodes are forgotten.
        self.states.retain(|z, _| ready_by_zone.contains_key(z));
        let all_were_fully_disrupted = self
            .states
            .values()
            .all(|s| *s == ZoneState::FullDisruption);

        let size = |z: &str| ready_by_zone.get(z).map_or(0, Vec::len);
        let mut out = Vec::new();
        if all_are_fully_disrupted && all_were_fully_disrupted {
            return out;
        }
        if all_are_fully_disrupted {
            for (zone, state) in self.states.iter_mut() {
                if let Some(q) = self.queues.get_mut(zone) {
                    q.set_qps(0.0, now);
                }
                *state = ZoneState::FullDisruption;
            }
            out.push(Transition::EnterMasterDisruption);
            return out;
        }
        if all_were_fully_disrupted {
            for (zone, state) in self.states.iter_mut() {
                let new = new_states.get(zone).copied().unwrap_or(ZoneState::Normal);
                if let Some(q) = self.queues.get_mut(zone) {
                    q.set_qps(self.rates.qps_for(new, size(zone)), now);
                }
                *state = new;
            }
            out.push(Transition::ExitMasterDisruption);
            return out;
        }
        for (zone, state) in self.states.iter_mut() {
            let new = new_states.get(zone).copied().unwrap_or(ZoneState::Normal);
            if *state == new {
                continue;
            }
            let qps = self.rates.qps_for(new, size(zone));
            if let Some(q) = self.queues.get_mut(zone) {
                q.set_qps(qps, now);
            }
            out.push(Transition::Zone {
                zone: zone.clone(),
                from: *state,
                to: new,
                qps,
            });
            *state = new;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n", "labels": labels}})).unwrap()
    }

    #[test]
    fn zone_keys_as_get_zone_key() {
        let cases = [
            (json!({}), ""),
            (json!({LABEL_ZONE: "a"}), ":\0:a"),
            (json!({LABEL_ZONE: "a", LABEL_REGION: "r"}), "r:\0:a"),
            (json!({LABEL_REGION: "r"}), "r:\0:"),
            // The beta labels win when both are there.
            (json!({LABEL_ZONE: "a", LABEL_ZONE_BETA: "b"}), ":\0:b"),
            (
                json!({LABEL_REGION_BETA: "old", LABEL_REGION: "r"}),
                "old:\0:",
            ),
        ];
        for (labels, want) in cases {
            assert_eq!(zone_key(&node(labels.clone())), want, "{labels}");
        }
        assert_eq!(
            zone_key(&serde_json::from_value(json!({"metadata": {"name": "n"}})).unwrap()),
            ""
        );
        assert_eq!(display_zone(":\0:a"), "a");
        assert_eq!(display_zone("r:\0:a"), "r/a");
        assert_eq!(display_zone(""), "(none)");
        assert!(excluded(&node(json!({LABEL_EXCLUDE_DISRUPTION: ""}))));
        assert!(!excluded(&node(json!({LABEL_ZONE: "a"}))));
    }

    #[test]
    fn zone_state_as_compute_zone_state() {
        use ZoneState::*;
        let rates = Rates::default();
        // (ready, not ready) → (not ready, state)
        let cases = [
            (0, 0, Normal),
            (1, 0, Normal),
            (0, 1, FullDisruption),
            (0, 5, FullDisruption),
            (1, 1, Normal),
            // Never partial with 2 or fewer not ready, whatever the share.
            (1, 2, Normal),
            // 3 of 4 (0.75) ≥ 0.55.
            (1, 3, PartialDisruption),
            // 3 of 6 (0.5) < 0.55; 4 of 7 (0.571) ≥ 0.55.
            (3, 3, Normal),
            (3, 4, PartialDisruption),
            // 11 of 20 is exactly 0.55: partial (>=).
            (9, 11, PartialDisruption),
            (10, 10, Normal),
            (99, 1, Normal),
        ];
        for (r, nr, want) in cases {
            let ready = std::iter::repeat_n(true, r).chain(std::iter::repeat_n(false, nr));
            assert_eq!(rates.zone_state(ready), (nr, want), "{r} ready, {nr} not");
        }
        let strict = Rates {
            unhealthy_zone_threshold: 0.9,
            ..Rates::default()
        };
        let ready = std::iter::repeat_n(true, 1).chain(std::iter::repeat_n(false, 3));
        assert_eq!(strict.zone_state(ready), (3, Normal));
    }

    #[test]
    fn rates_as_qps_funcs() {
        use ZoneState::*;
        let r = Rates::default();
        // (state, zone size) → qps
        let cases = [
            (Normal, 3, 0.1),
            (Normal, 500, 0.1),
            (PartialDisruption, 3, 0.0),
            (PartialDisruption, 50, 0.0),
            (PartialDisruption, 51, 0.01),
            (FullDisruption, 3, 0.1),
            (FullDisruption, 51, 0.1),
        ];
        for (state, size, want) in cases {
            assert_eq!(r.qps_for(state, size), want, "{state} {size}");
        }
        assert_eq!(r.healthy_qps(7), 0.1);
        assert_eq!(r.reduced_qps(51), 0.01);
        let negative = Rates {
            large_cluster_threshold: -1,
            ..r
        };
        assert_eq!(negative.reduced_qps(0), 0.01);
    }

    #[test]
    fn token_bucket() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.5, t0);
        assert!(b.try_accept(t0), "starts full");
        assert!(!b.try_accept(t0));
        assert_eq!(b.until_token(t0), Some(Duration::from_secs(2)));
        assert!(!b.try_accept(t0 + Duration::from_millis(1900)));
        assert!(b.try_accept(t0 + Duration::from_secs(2)));
        // Burst 1: a long pause gives one token, not many.
        let later = t0 + Duration::from_secs(100);
        assert!(b.try_accept(later));
        assert!(!b.try_accept(later));
        let mut never = TokenBucket::new(0.0, t0);
        assert!(!never.try_accept(later));
        assert_eq!(never.until_token(later), None);
    }

    #[test]
    fn queue_drains_at_the_rate() {
        let t0 = Instant::now();
        let mut q = TaintQueue::new(1.0, t0);
        assert_eq!(q.next(t0), Next::Idle);
        for n in ["a", "b", "c"] {
            assert!(q.add(n, "uid", t0));
        }
        assert!(!q.add("a", "uid", t0), "unique");
        let Next::Taint(p) = q.next(t0) else {
            panic!("the first goes at once")
        };
        assert_eq!(p.node, "a");
        q.finish("a");
        assert_eq!(q.next(t0), Next::Wait(Duration::from_secs(1)));
        // Tainted nodes stay known: not queued again …
        assert!(!q.add("a", "uid", t0));
        // … unless their taint went missing.
        assert!(q.requeue("a", "uid", t0));
        // A waiting node keeps its place.
        assert!(!q.requeue("b", "uid", t0 + Duration::from_millis(10)));
        let t1 = t0 + Duration::from_secs(1);
        let Next::Taint(p) = q.next(t1) else {
            panic!("b after a second")
        };
        assert_eq!(p.node, "b");
        // A failed attempt is retried later (its token is gone).
        q.retry("b", t1, Duration::from_millis(50));
        let t2 = t0 + Duration::from_secs(2);
        let Next::Taint(p) = q.next(t2) else {
            panic!("c is due before b's retry")
        };
        assert_eq!(p.node, "c");
        q.finish("c");
        // Ready again: forgotten.
        assert!(q.remove("b"));
        assert!(!q.is_waiting("b"));
        assert_eq!(q.waiting(), 1);
    }

    #[test]
    fn swapping_rates() {
        let t0 = Instant::now();
        let mut q = TaintQueue::new(0.1, t0);
        q.add("a", "u", t0);
        q.add("b", "u", t0);
        assert!(matches!(q.next(t0), Next::Taint(_)));
        q.finish("a");
        // Stopped: nothing, however long.
        q.set_qps(0.0, t0);
        assert_eq!(q.next(t0 + Duration::from_secs(1000)), Next::Idle);
        // Back from 0: the new bucket starts empty (the stopped one had no token).
        let t1 = t0 + Duration::from_secs(1000);
        q.set_qps(2.0, t1);
        assert_eq!(q.next(t1), Next::Wait(Duration::from_millis(500)));
        // From a bucket with a token: the new one is full.
        let mut full = TaintQueue::new(1.0, t0);
        full.add("a", "u", t0);
        full.set_qps(0.5, t0);
        assert!(matches!(full.next(t0), Next::Taint(_)));
    }

    fn member(zone: &str, ready: bool) -> Option<Member> {
        Some(Member {
            zone: format!(":\0:{zone}"),
            ready,
            excluded: false,
        })
    }

    #[test]
    fn zone_states_and_their_rates() {
        use ZoneState::*;
        let t = Instant::now();
        let mut z = Zones::new(Rates {
            eviction_qps: 1.0,
            secondary_eviction_qps: 0.5,
            large_cluster_threshold: 5,
            unhealthy_zone_threshold: 0.55,
        });
        for i in 0..4 {
            z.observe(&format!("a{i}"), member("a", true), t);
        }
        for i in 0..8 {
            z.observe(&format!("b{i}"), member("b", true), t);
        }
        assert!(z.take_dirty());
        let za = ":\0:a".to_string();
        let zb = ":\0:b".to_string();
        assert_eq!(
            z.handle_disruption(t),
            [
                Transition::Zone {
                    zone: za.clone(),
                    from: Initial,
                    to: Normal,
                    qps: 1.0
                },
                Transition::Zone {
                    zone: zb.clone(),
                    from: Initial,
                    to: Normal,
                    qps: 1.0
                },
            ]
        );
        assert!(!z.observe("a0", member("a", true), t), "no change");
        // 3 of 4 in a: partial, a small zone: stopped.
        for i in 0..3 {
            z.observe(&format!("a{i}"), member("a", false), t);
        }
        assert_eq!(
            z.handle_disruption(t),
            [Transition::Zone {
                zone: za.clone(),
                from: Normal,
                to: PartialDisruption,
                qps: 0.0
            }]
        );
        assert_eq!(z.queue(&za).unwrap().qps(), 0.0);
        // 5 of 8 in b: partial, a large zone (> 5): the secondary rate.
        for i in 0..5 {
            z.observe(&format!("b{i}"), member("b", false), t);
        }
        let tr = z.handle_disruption(t);
        assert_eq!(
            tr,
            [Transition::Zone {
                zone: zb.clone(),
                from: Normal,
                to: PartialDisruption,
                qps: 0.5
            }]
        );
        // All of a: full, but b is not: a taints at the normal rate.
        z.observe("a3", member("a", false), t);
        assert_eq!(
            z.handle_disruption(t),
            [Transition::Zone {
                zone: za.clone(),
                from: PartialDisruption,
                to: FullDisruption,
                qps: 1.0
            }]
        );
        assert!(!z.master_disruption());
    }

    #[test]
    fn master_disruption_mode() {
        use ZoneState::*;
        let t = Instant::now();
        let mut z = Zones::new(Rates::default());
        let (za, zb) = (":\0:a".to_string(), ":\0:b".to_string());
        z.observe("a0", member("a", true), t);
        z.observe("a1", member("a", true), t);
        z.observe("b0", member("b", true), t);
        // An excluded node that stays Ready does not keep the cluster out of the mode.
        z.observe(
            "x",
            Some(Member {
                zone: zb.clone(),
                ready: true,
                excluded: true,
            }),
            t,
        );
        z.handle_disruption(t);
        z.observe("a0", member("a", false), t);
        z.observe("b0", member("b", false), t);
        // a is still fine: b alone is fully disrupted and taints at the normal rate.
        assert_eq!(
            z.handle_disruption(t),
            [Transition::Zone {
                zone: zb.clone(),
                from: Normal,
                to: FullDisruption,
                qps: 0.1
            }]
        );
        // Now every zone: the mode, every queue stopped.
        z.observe("a1", member("a", false), t);
        assert_eq!(z.handle_disruption(t), [Transition::EnterMasterDisruption]);
        assert!(z.master_disruption());
        for zone in [&za, &zb] {
            assert_eq!(z.queue(zone).unwrap().qps(), 0.0);
            assert_eq!(z.state(zone), Some(FullDisruption));
        }
        // Staying there changes nothing.
        assert_eq!(z.handle_disruption(t), []);
        // A new zone of not-ready nodes: the mode is entered again (its taints removed too).
        z.observe("c0", member("c", false), t);
        assert_eq!(z.handle_disruption(t), [Transition::EnterMasterDisruption]);
        assert_eq!(z.queue(":\0:c").unwrap().qps(), 0.0);
        // One node back: out of the mode, the rates of the zones' states.
        z.observe("a0", member("a", true), t);
        assert_eq!(z.handle_disruption(t), [Transition::ExitMasterDisruption]);
        assert!(!z.master_disruption());
        assert_eq!(z.state(&za), Some(Normal));
        assert_eq!(z.state(&zb), Some(FullDisruption));
        assert_eq!(z.queue(&za).unwrap().qps(), 0.1);
        assert_eq!(z.queue(&zb).unwrap().qps(), 0.1);
        // A deleted node leaves its zone; an empty zone is forgotten.
        z.observe("c0", None, t);
        z.handle_disruption(t);
        assert_eq!(z.state(":\0:c"), None);
        // A cluster whose nodes are all down when the controller starts goes straight in.
        let mut fresh = Zones::new(Rates::default());
        fresh.observe("a0", member("a", false), t);
        assert_eq!(
            fresh.handle_disruption(t),
            [Transition::EnterMasterDisruption]
        );
    }
}
