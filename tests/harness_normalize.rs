//! Checks of the test harness's [`common::normalize`] on output captured from the real etcd 3.4
//! and etcdctl 3.4 (no server needed): what must be blanked out is, and what must match is kept.

mod common;

use common::normalize;

#[test]
fn ids_raft_size_version_urls_are_blanked() {
    let status = "http://127.0.0.1:23791, bdae9bbc11dd390d, 3.4.23, 25 kB, true, false, 2, 7, 7, ";
    assert_eq!(
        normalize(status),
        "http://<ADDR>, <ID>, <VERSION>, <SIZE>, true, false, <RAFT>, <RAFT>, <RAFT>, "
    );
    assert_eq!(
        normalize(
            "bdae9bbc11dd390d, started, a, http://127.0.0.1:23801, https://127.0.0.1:23791, false"
        ),
        "<ID>, started, a, http://<ADDR>, https://<ADDR>, false"
    );
    assert_eq!(
        normalize(
            "http://127.0.0.1:23791 is healthy: successfully committed proposal: took = 2.867343ms"
        ),
        "http://<ADDR> is healthy: successfully committed proposal: took = <DURATION>"
    );
    assert_eq!(
        normalize("Finished defragmenting etcd member[http://127.0.0.1:23791]"),
        "Finished defragmenting etcd member[http://<ADDR>]"
    );
}

#[test]
fn member_ids_are_not_always_16_digits() {
    // `member list` and `endpoint status` print member ids with %x.
    assert_eq!(
        normalize(
            "849d755f764b0a9, started, interop, http://127.0.0.1:1, http://127.0.0.1:2, false"
        ),
        "<ID>, started, interop, http://<ADDR>, http://<ADDR>, false"
    );
    assert_eq!(
        normalize("http://127.0.0.1:2379, 1, 3.4.0, 1.1 MB, true, false, 1, 42, 42, "),
        "http://<ADDR>, <ID>, <VERSION>, <SIZE>, true, false, <RAFT>, <RAFT>, <RAFT>, "
    );
}

#[test]
fn json_headers_keep_revisions_and_key_versions() {
    let get = r#"{"header":{"cluster_id":15118495548433857066,"member_id":13668033151171901709,"revision":3,"raft_term":2},"kvs":[{"key":"L2E=","create_revision":2,"mod_revision":2,"version":1,"value":"MQ==","lease":4111120158264084749}],"count":2}"#;
    assert_eq!(
        normalize(get),
        r#"{"header":{"cluster_id":<ID>,"member_id":<ID>,"revision":3,"raft_term":<RAFT>},"kvs":[{"key":"L2E=","create_revision":2,"mod_revision":2,"version":1,"value":"MQ==","lease":<ID>}],"count":2}"#
    );
    let status = r#"[{"Endpoint":"http://127.0.0.1:23791","Status":{"header":{"cluster_id":1,"member_id":2,"revision":12,"raft_term":2},"version":"3.4.23","dbSize":20480,"leader":2,"raftIndex":26,"raftTerm":2,"raftAppliedIndex":26,"dbSizeInUse":16384}}]"#;
    assert_eq!(
        normalize(status),
        r#"[{"Endpoint":"http://<ADDR>","Status":{"header":{"cluster_id":<ID>,"member_id":<ID>,"revision":12,"raft_term":<RAFT>},"version":<VERSION>,"dbSize":<SIZE>,"leader":<ID>,"raftIndex":<RAFT>,"raftTerm":<RAFT>,"raftAppliedIndex":<RAFT>,"dbSizeInUse":<SIZE>}}]"#
    );
    // Zeros are kept (etcd omits them in JSON; in `-w fields` a txn's inner headers are zero).
    assert_eq!(
        normalize("\"ClusterID\" : 0\n\"Lease\" : 0\n\"Version\" : 2"),
        "\"ClusterID\" : 0\n\"Lease\" : 0\n\"Version\" : 2"
    );
}

#[test]
fn lease_output() {
    assert_eq!(
        normalize("lease 390da2009647490a granted with TTL(60s)"),
        "lease <ID> granted with TTL(60s)"
    );
    assert_eq!(
        normalize(
            "lease 390da2009647490d granted with TTL(100s), remaining(99s), attached keys([/l/two /l/one])"
        ),
        "lease <ID> granted with TTL(100s), remaining(<TTL>s), attached keys([/l/one /l/two])"
    );
    assert_eq!(
        normalize(
            r#"{"cluster_id":1,"member_id":2,"revision":4,"raft_term":2,"id":4111120158264084749,"ttl":99,"granted-ttl":100,"keys":["L2wvdHdv","L2wvb25l"]}"#
        ),
        r#"{"cluster_id":<ID>,"member_id":<ID>,"revision":4,"raft_term":<RAFT>,"id":<ID>,"ttl":<TTL>,"granted-ttl":100,"keys":["L2wvb25l","L2wvdHdv"]}"#
    );
    // An unknown lease: ttl -1 is kept.
    assert!(
        normalize(r#"{"id":4660,"ttl":-1,"granted-ttl":0,"keys":null}"#).contains(r#""ttl":-1"#)
    );
    // `-w fields` of timetolive: remaining TTL blanked, granted kept; of keep-alive: TTL kept.
    assert_eq!(
        normalize("\"TTL\" : 99\n\"GrantedTTL\" : 100"),
        "\"TTL\" : <TTL>\n\"GrantedTTL\" : 100"
    );
    assert_eq!(
        normalize("\"ID\" : 4111120158264084775\n\"TTL\" : 100"),
        "\"ID\" : <ID>\n\"TTL\" : 100"
    );
}

#[test]
fn tables_are_rerendered_without_padding() {
    let a = "\
+------------------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
|        ENDPOINT        |        ID        | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS |
+------------------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
| http://127.0.0.1:23791 | bdae9bbc11dd390d |  3.4.23 |   25 kB |      true |      false |         2 |          6 |                  6 |        |
+------------------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+";
    let b = "\
+-----------------------+------------------+---------+--------+-----------+------------+-----------+------------+--------------------+--------+
|       ENDPOINT        |        ID        | VERSION | DB SIZE| IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS |
+-----------------------+------------------+---------+--------+-----------+------------+-----------+------------+--------------------+--------+
| http://127.0.0.1:2379 | 0000000000000001 |  3.4.0  | 1.1 MB |      true |      false |         1 |         42 |                 42 |        |
+-----------------------+------------------+---------+--------+-----------+------------+-----------+------------+--------------------+--------+";
    assert_eq!(normalize(a), normalize(b));
    assert!(normalize(a).contains(
        "| http://<ADDR> | <ID> | <VERSION> | <SIZE> | true | false | <RAFT> | <RAFT> | <RAFT> |  |"
    ));
    // A leader flag that differs still shows.
    assert_ne!(
        normalize(a),
        normalize(&b.replace("     true |", "    false |"))
    );
}

#[test]
fn client_logs() {
    let warn = r#"{"level":"warn","ts":"2026-11-22T00:10:16.309Z","caller":"clientv3/retry_interceptor.go:62","msg":"retrying of unary invoker failed","target":"endpoint://client-77dd8e21-68e1-46a0-a860-6e0a26d96633/127.0.0.1:23791","attempt":0,"error":"rpc error: code = OutOfRange desc = etcdserver: mvcc: required revision is a future revision"}"#;
    assert_eq!(
        normalize(warn),
        r#"{"level":"warn","ts":<TS>,"caller":"clientv3/retry_interceptor.go:62","msg":"retrying of unary invoker failed","target":<TARGET>,"attempt":0,"error":"rpc error: code = OutOfRange desc = etcdserver: mvcc: required revision is a future revision"}"#
    );
    let info = r#"{"level":"info","ts":1795306226.100723,"caller":"snapshot/v3_snapshot.go:142","msg":"fetched snapshot","endpoint":"http://127.0.0.1:23791","size":"20 kB","took":0.002430986}"#;
    assert_eq!(
        normalize(info),
        r#"{"level":"info","ts":<TS>,"caller":"snapshot/v3_snapshot.go:142","msg":"fetched snapshot","endpoint":"http://<ADDR>","size":<SIZE>,"took":<DURATION>}"#
    );
}

#[test]
fn values_and_revisions_are_kept() {
    for text in [
        "/a\n1\n/b\n2\n",
        "compacted revision 5",
        "SUCCESS\n\nOK\n",
        "lease 0000000000001234 already expired",
    ] {
        let n = normalize(text);
        assert_eq!(n.replace("<ID>", "0000000000001234"), text, "{text:?}");
    }
    assert_ne!(normalize("/a\n1\n"), normalize("/a\n2\n"));
    assert_ne!(
        normalize(r#"{"revision":3}"#),
        normalize(r#"{"revision":4}"#)
    );
}
