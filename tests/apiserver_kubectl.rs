//! `minik apiserver` driven by the real kubectl — 1.27, 1.30 and 1.33 — over mutual TLS, on
//! minik's store: discovery and health, namespaces, configmaps (create, get, list with label
//! selectors and paging, replace, delete, watch), authentication and authorization, and the
//! objects' layout in etcd.
//!
//! Every test starts its own store and API server ([`apiserver_util::Cluster`]), so the tests are
//! independent and run in parallel; each scenario runs once per kubectl version (modules
//! `kubectl_1_27`, `kubectl_1_30`, `kubectl_1_33`). A missing kubectl fails the test.
//!
//! kubectl runs with its default (strict) validation, which reads the server's OpenAPI documents
//! and leaves the unknown-field checks to the server (`fieldValidation=Strict`).

mod apiserver_util;
mod common;

use std::time::Duration;

use apiserver_util::{Cluster, Identity, Store, json_stream, str_at, table_rows};
use common::OutputExt;
use regex::Regex;
use serde_json::{Value, json};

/// Runs every scenario below once per kubectl version.
macro_rules! for_kubectl_versions {
    ($($module:ident => $version:literal on $store:ident),* $(,)?) => {$(
        mod $module {
            #[test]
            fn discovery_and_health() {
                super::discovery_and_health($version, super::Store::$store)
            }
            #[test]
            fn namespaces() {
                super::namespaces($version, super::Store::$store)
            }
            #[test]
            fn configmaps() {
                super::configmaps($version, super::Store::$store)
            }
            #[test]
            fn configmap_watch() {
                super::configmap_watch($version, super::Store::$store)
            }
            #[test]
            fn authentication_and_authorization() {
                super::authentication_and_authorization($version, super::Store::$store)
            }
            #[test]
            fn events_and_describe() {
                super::events_and_describe($version, super::Store::$store)
            }
            #[test]
            fn patches() {
                super::patches($version, super::Store::$store)
            }
            #[test]
            fn etcd_layout() {
                super::etcd_layout($version, super::Store::$store)
            }
        }
    )*};
}

for_kubectl_versions!(
    kubectl_1_27 => "1.27" on Minik,
    kubectl_1_30 => "1.30" on Minik,
    kubectl_1_33 => "1.33" on Minik,
    // The same suite with the API server on the real etcd 3.4 instead of minik's store.
    kubectl_1_32_on_real_etcd => "1.32" on RealEtcd,
);

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn configmap(ns: &str, name: &str, labels: Value, data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "data": data,
    })
}

/// `kubectl create -f <manifest>`, which must succeed.
fn create(c: &Cluster, k: &apiserver_util::Kubectl, file: &str, object: &Value) -> String {
    let path = c.manifest(file, object);
    k.ok(&["create", "-f", &path])
}

fn assert_contains(what: &str, text: &str, needles: &[&str]) {
    for n in needles {
        assert!(
            text.contains(n),
            "{what}: expected the output to contain {n:?}; it was:\n{text}"
        );
    }
}

fn lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// 1. Discovery and health
// ---------------------------------------------------------------------------------------------

fn discovery_and_health(v: &str, store: Store) {
    let c = Cluster::start(store);
    let k = c.kubectl(v, Identity::Admin);

    // `kubectl version` shows both sides.
    let ver = k.json(&["version", "-o", "json"]);
    assert!(
        str_at(&ver, "/clientVersion/gitVersion").starts_with(&format!("v{v}.")),
        "not kubectl {v}: {ver:#}"
    );
    let server = &ver["serverVersion"];
    assert!(server.is_object(), "no serverVersion: {ver:#}");
    for field in ["/gitVersion", "/major", "/minor", "/platform"] {
        assert!(
            !str_at(server, field).is_empty(),
            "serverVersion{field} is empty: {ver:#}"
        );
    }

    for path in ["/readyz", "/livez", "/healthz", "/readyz/etcd"] {
        assert_eq!(k.ok(&["get", "--raw", path]).trim(), "ok", "GET {path}");
    }
    let verbose = k.ok(&["get", "--raw", "/readyz?verbose"]);
    assert_eq!(
        verbose.lines().collect::<Vec<_>>(),
        ["[+]ping ok", "[+]etcd ok", "readyz check passed"],
        "GET /readyz?verbose"
    );

    // The raw discovery documents.
    let api: Value = serde_json::from_str(&k.ok(&["get", "--raw", "/api"])).unwrap();
    assert_eq!(api["kind"], "APIVersions", "/api: {api:#}");
    assert_eq!(api["versions"], json!(["v1"]), "/api: {api:#}");
    let apis: Value = serde_json::from_str(&k.ok(&["get", "--raw", "/apis"])).unwrap();
    assert_eq!(apis["kind"], "APIGroupList", "/apis: {apis:#}");
    assert!(apis["groups"].is_array(), "/apis: {apis:#}");
    let v1: Value = serde_json::from_str(&k.ok(&["get", "--raw", "/api/v1"])).unwrap();
    assert_eq!(v1["kind"], "APIResourceList", "/api/v1: {v1:#}");
    assert_eq!(v1["groupVersion"], "v1", "/api/v1: {v1:#}");
    let resource = |name: &str| -> Value {
        v1["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("/api/v1 has no resource {name}: {v1:#}"))
    };
    for (name, kind, namespaced) in [
        ("namespaces", "Namespace", false),
        ("configmaps", "ConfigMap", true),
    ] {
        let r = resource(name);
        assert_eq!(r["kind"], kind, "{r:#}");
        assert_eq!(r["namespaced"], namespaced, "{r:#}");
        for verb in ["create", "delete", "get", "list", "update", "watch"] {
            assert!(
                r["verbs"]
                    .as_array()
                    .is_some_and(|vs| vs.contains(&json!(verb))),
                "{name} lacks verb {verb}: {r:#}"
            );
        }
    }

    // `kubectl api-resources`: NAME SHORTNAMES APIVERSION NAMESPACED KIND, as on a real cluster.
    let out = k.ok(&["api-resources"]);
    let rows = table_rows(&out);
    assert_eq!(rows[0].first().map(String::as_str), Some("NAME"), "{out}");
    for expected in [
        ["namespaces", "ns", "v1", "false", "Namespace"],
        ["configmaps", "cm", "v1", "true", "ConfigMap"],
    ] {
        assert!(
            rows.iter().any(|r| r == &expected),
            "api-resources has no row {expected:?}:\n{out}"
        );
    }

    let versions = lines(&k.ok(&["api-versions"]));
    assert!(versions.contains(&"v1".to_string()), "{versions:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. Namespaces
// ---------------------------------------------------------------------------------------------

fn namespaces(v: &str, store: Store) {
    let c = Cluster::start(store);
    let k = c.kubectl(v, Identity::Admin);

    let out = create(&c, &k, "ns.json", &namespace("lab"));
    assert_contains("create ns", &out, &["namespace/lab created"]);

    let ns = k.json(&["get", "ns", "lab", "-o", "json"]);
    assert_eq!(ns["apiVersion"], "v1", "{ns:#}");
    assert_eq!(ns["kind"], "Namespace", "{ns:#}");
    assert_eq!(ns["metadata"]["name"], "lab", "{ns:#}");
    assert!(!str_at(&ns, "/metadata/uid").is_empty(), "no uid: {ns:#}");
    assert!(
        str_at(&ns, "/metadata/resourceVersion")
            .parse::<u64>()
            .is_ok(),
        "resourceVersion is not a number: {ns:#}"
    );
    let ts = Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$").unwrap();
    assert!(
        ts.is_match(str_at(&ns, "/metadata/creationTimestamp")),
        "creationTimestamp is not RFC 3339 (UTC, seconds): {ns:#}"
    );

    // Listed, in kubectl's own columns and by name.
    let out = k.ok(&["get", "ns"]);
    let rows = table_rows(&out);
    assert_eq!(rows[0].first().map(String::as_str), Some("NAME"), "{out}");
    assert!(rows.iter().any(|r| r[0] == "lab"), "get ns:\n{out}");
    assert!(
        lines(&k.ok(&["get", "ns", "-o", "name"])).contains(&"namespace/lab".to_string()),
        "get ns -o name"
    );

    // Creating it again: 409 AlreadyExists.
    let path = c.manifest("ns.json", &namespace("lab"));
    let err = k.fails(&["create", "-f", &path]);
    assert_contains(
        "create ns again",
        &err,
        &["AlreadyExists", r#"namespaces "lab" already exists"#],
    );

    // A name that is not a DNS label: 422 Invalid.
    let path = c.manifest("bad-ns.json", &namespace("Bad_Name"));
    let err = k.fails(&["create", "-f", &path]);
    assert_contains(
        "create ns Bad_Name",
        &err,
        &["Invalid", "Bad_Name", "must consist of lower case"],
    );

    // Unknown: 404 NotFound.
    let err = k.fails(&["get", "ns", "nope"]);
    assert_contains(
        "get ns nope",
        &err,
        &["NotFound", r#"namespaces "nope" not found"#],
    );
}

// ---------------------------------------------------------------------------------------------
// 3. ConfigMaps
// ---------------------------------------------------------------------------------------------

/// Events, their field selectors, and `kubectl describe`, which lists an object's events.
fn events_and_describe(v: &str, store: Store) {
    let c = Cluster::start(store);
    let k = c.kubectl(v, Identity::Admin);
    create(&c, &k, "ns.json", &namespace("lab"));
    create(
        &c,
        &k,
        "a.json",
        &configmap("lab", "a", json!({}), json!({"k": "v"})),
    );
    let uid = k.json(&["get", "cm", "a", "-n", "lab", "-o", "json"])["metadata"]["uid"].clone();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "a.demo", "namespace": "lab"},
        "involvedObject": {"kind": "ConfigMap", "namespace": "lab", "name": "a", "uid": uid},
        "reason": "Demo", "message": "hello from a test", "type": "Normal",
        "source": {"component": "lab"}, "count": 1,
    });
    create(&c, &k, "ev.json", &event);
    let described = k.ok(&["describe", "cm", "a", "-n", "lab"]);
    assert_contains(
        "describe cm",
        &described,
        &["Name:", "a", "Demo", "hello from a test"],
    );
    let table = k.ok(&["get", "events", "-n", "lab"]);
    assert_contains(
        "get events",
        &table,
        &["LAST SEEN", "configmap/a", "hello from a test"],
    );
    let warnings = k.run(&[
        "get",
        "ev",
        "-n",
        "lab",
        "--field-selector",
        "type=Warning",
        "-o",
        "name",
    ]);
    warnings.expect_ok("get ev --field-selector type=Warning");
    assert_eq!(warnings.out().trim(), "");
    let bad = k.fails(&["get", "cm", "-n", "lab", "--field-selector", "spec.x=1"]);
    // ConfigMaps have no field labels of their own: the default conversion's words.
    assert!(
        bad.contains("\"spec.x\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""),
        "{bad}"
    );
}

/// `kubectl label`, `annotate` and `patch` of all three types.
fn patches(v: &str, store: Store) {
    let c = Cluster::start(store);
    let k = c.kubectl(v, Identity::Admin);
    create(&c, &k, "ns.json", &namespace("lab"));
    create(
        &c,
        &k,
        "a.json",
        &configmap(
            "lab",
            "a",
            json!({"app": "x"}),
            json!({"k": "v1", "gone": "soon"}),
        ),
    );
    let before = k.json(&["get", "cm", "a", "-n", "lab", "-o", "json"]);
    k.ok(&["label", "cm", "a", "-n", "lab", "tier=db"]);
    k.ok(&["annotate", "cm", "a", "-n", "lab", "note=hi"]);
    k.ok(&[
        "patch",
        "cm",
        "a",
        "-n",
        "lab",
        "-p",
        r#"{"data":{"k":"v2"}}"#,
    ]);
    k.ok(&[
        "patch",
        "cm",
        "a",
        "-n",
        "lab",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"gone":null}}"#,
    ]);
    k.ok(&[
        "patch",
        "cm",
        "a",
        "-n",
        "lab",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/data/j","value":"x"}]"#,
    ]);
    let after = k.json(&["get", "cm", "a", "-n", "lab", "-o", "json"]);
    assert_eq!(
        after["metadata"]["labels"],
        json!({"app": "x", "tier": "db"})
    );
    assert_eq!(after["metadata"]["annotations"], json!({"note": "hi"}));
    assert_eq!(after["data"], json!({"k": "v2", "j": "x"}));
    assert_eq!(
        after["metadata"]["uid"], before["metadata"]["uid"],
        "a patch keeps the uid"
    );
    assert_ne!(
        after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
        "every patch is a new resourceVersion"
    );
    // A JSON patch that cannot apply changes nothing and says why.
    let err = k.fails(&[
        "patch",
        "cm",
        "a",
        "-n",
        "lab",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/data/missing"}]"#,
    ]);
    assert!(err.contains("/data/missing"), "{err}");
    assert_eq!(
        k.json(&["get", "cm", "a", "-n", "lab", "-o", "json"])["data"],
        after["data"]
    );
    // --dry-run=server runs every check and stores nothing.
    let rv = k.json(&["get", "cm", "a", "-n", "lab", "-o", "json"])["metadata"]["resourceVersion"]
        .clone();
    k.ok(&[
        "label",
        "cm",
        "a",
        "-n",
        "lab",
        "dry=run",
        "--dry-run=server",
    ]);
    k.ok(&["delete", "cm", "a", "-n", "lab", "--dry-run=server"]);
    let still = k.json(&["get", "cm", "a", "-n", "lab", "-o", "json"]);
    assert_eq!(
        still["metadata"]["resourceVersion"], rv,
        "a dry run changed the object"
    );
    assert!(still["metadata"]["labels"].get("dry").is_none());
    let nf = k.fails(&["label", "cm", "nope", "-n", "lab", "x=y"]);
    assert!(nf.contains("not found"), "{nf}");
}

fn configmaps(v: &str, store: Store) {
    let c = Cluster::start(store);
    let k = c.kubectl(v, Identity::Admin);
    create(&c, &k, "ns.json", &namespace("lab"));

    let out = create(
        &c,
        &k,
        "a.json",
        &configmap("lab", "a", json!({"app": "x"}), json!({"k": "v1"})),
    );
    assert_contains("create cm a", &out, &["configmap/a created"]);
    create(
        &c,
        &k,
        "b.json",
        &configmap("lab", "b", json!({"app": "y"}), json!({"k": "other"})),
    );

    // Label selectors.
    let sel = k.ok(&["get", "cm", "-n", "lab", "-l", "app=x", "-o", "name"]);
    assert_eq!(lines(&sel), ["configmap/a"], "-l app=x");
    let none = k.run(&["get", "cm", "-n", "lab", "-l", "app=z", "-o", "name"]);
    none.expect_ok("get cm -l app=z");
    assert_eq!(none.out().trim(), "", "-l app=z");

    // Across namespaces.
    let all = k.json(&["get", "cm", "-A", "-o", "json"]);
    let names: Vec<(String, String)> = all["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {all:#}"))
        .iter()
        .map(|i| {
            (
                str_at(i, "/metadata/namespace").to_string(),
                str_at(i, "/metadata/name").to_string(),
            )
        })
        .collect();
    for want in [("lab", "a"), ("lab", "b")] {
        assert!(
            names.contains(&(want.0.into(), want.1.into())),
            "get cm -A lacks {want:?}: {names:?}"
        );
    }

    // Paged: kubectl follows `continue` with limit=1.
    let paged = k.ok(&["get", "cm", "-n", "lab", "--chunk-size=1", "-o", "name"]);
    assert_eq!(
        lines(&paged),
        ["configmap/a", "configmap/b"],
        "--chunk-size=1"
    );

    let data_k = |name: &str| k.ok(&["get", "cm", name, "-n", "lab", "-o", "jsonpath={.data.k}"]);
    assert_eq!(data_k("a"), "v1");

    // Replace from a manifest without resourceVersion (kubectl fills in the current one).
    let path = c.manifest(
        "a.json",
        &configmap("lab", "a", json!({"app": "x"}), json!({"k": "v2"})),
    );
    let out = k.ok(&["replace", "-f", &path]);
    assert_contains("replace cm a", &out, &["configmap/a replaced"]);
    assert_eq!(data_k("a"), "v2");

    // Replace an edited copy of the live object, then the same stale copy again: 409 Conflict.
    let mut live = k.json(&["get", "cm", "a", "-n", "lab", "-o", "json"]);
    live["data"]["k"] = json!("v3");
    let path = c.manifest("a-live.json", &live);
    k.ok(&["replace", "-f", &path]);
    assert_eq!(data_k("a"), "v3");
    live["data"]["k"] = json!("v4");
    let path = c.manifest("a-stale.json", &live);
    let err = k.fails(&["replace", "-f", &path]);
    assert_contains(
        "replace with a stale resourceVersion",
        &err,
        &["Conflict", "the object has been modified"],
    );
    assert_eq!(data_k("a"), "v3");

    // Delete; then it is gone and b is still there.
    let out = k.ok(&["delete", "cm", "a", "-n", "lab"]);
    assert_contains("delete cm a", &out, &[r#"configmap "a" deleted"#]);
    let err = k.fails(&["get", "cm", "a", "-n", "lab"]);
    assert_contains(
        "get cm a after delete",
        &err,
        &["NotFound", r#"configmaps "a" not found"#],
    );
    assert_eq!(
        lines(&k.ok(&["get", "cm", "-n", "lab", "-o", "name"])),
        ["configmap/b"]
    );
}

/// `kubectl get cm -w --output-watch-events` sees a configmap come and go.
///
/// `-o json` rather than `-o name`: kubectl's name printer drops the event type.
fn configmap_watch(v: &str, store: Store) {
    let c = Cluster::start(store);
    let k = c.kubectl(v, Identity::Admin);
    create(&c, &k, "ns.json", &namespace("lab"));
    create(
        &c,
        &k,
        "pre.json",
        &configmap("lab", "pre", json!({}), json!({})),
    );

    let events = |stdout: &str| -> Vec<(String, String)> {
        json_stream(stdout)
            .iter()
            .map(|e| {
                (
                    str_at(e, "/type").to_string(),
                    str_at(e, "/object/metadata/name").to_string(),
                )
            })
            .collect()
    };
    let has = |stdout: &str, ty: &str, name: &str| {
        events(stdout).iter().any(|(t, n)| t == ty && n == name)
    };

    let mut watch = k.spawn(&[
        "get",
        "cm",
        "-n",
        "lab",
        "-w",
        "--output-watch-events",
        "-o",
        "json",
    ]);
    // The initial list is printed as ADDED events; the watch continues from its resourceVersion,
    // so what happens from here on is seen even if the watch request is still on its way.
    assert!(
        watch.wait_for_stdout(Duration::from_secs(10), |s| has(s, "ADDED", "pre")),
        "{}: no ADDED event for the existing configmap\n--- stdout:\n{}\n--- stderr:\n{}",
        watch.command_line(),
        watch.stdout_so_far(),
        watch.stderr_so_far()
    );

    create(
        &c,
        &k,
        "w.json",
        &configmap("lab", "w", json!({"app": "w"}), json!({"k": "v"})),
    );
    k.ok(&["delete", "cm", "w", "-n", "lab"]);

    let seen = watch.wait_for_stdout(Duration::from_secs(10), |s| has(s, "DELETED", "w"));
    let cmd = watch.command_line();
    let out = watch.finish();
    assert!(
        seen,
        "{cmd}: no DELETED event for w\n--- stdout:\n{}\n--- stderr:\n{}",
        out.out(),
        out.err()
    );
    let of_w: Vec<String> = events(&out.out())
        .into_iter()
        .filter(|(_, n)| n == "w")
        .map(|(t, _)| t)
        .collect();
    assert_eq!(of_w, ["ADDED", "DELETED"], "events for w:\n{}", out.out());
}

// ---------------------------------------------------------------------------------------------
// 4. Authentication and authorization
// ---------------------------------------------------------------------------------------------

fn authentication_and_authorization(v: &str, store: Store) {
    let c = Cluster::start(store);
    let admin = c.kubectl(v, Identity::Admin);
    create(&c, &admin, "ns.json", &namespace("lab"));
    admin.ok(&["get", "cm", "-n", "lab"]);
    let r = c
        .https(Identity::Admin, "GET", "/api/v1/namespaces/lab", None)
        .expect("GET the namespace as admin");
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.json()["metadata"]["name"], "lab", "{r:#?}");

    // No credentials at all: 401 with a Status body. (kubectl cannot show this: for a kubeconfig
    // user without credentials it prompts for a username and fails with `error: EOF`.)
    let r = c
        .https(Identity::Anonymous, "GET", "/api/v1/namespaces", None)
        .expect("GET /api/v1/namespaces without credentials");
    assert_eq!(r.status, 401, "{r:#?}");
    let status = r.json();
    assert_eq!(status["kind"], "Status", "{status:#}");
    assert_eq!(status["apiVersion"], "v1", "{status:#}");
    assert_eq!(status["status"], "Failure", "{status:#}");
    assert_eq!(status["reason"], "Unauthorized", "{status:#}");
    assert_eq!(status["code"], 401, "{status:#}");

    // No client certificate, a token the server does not know: 401, which kubectl reports as
    // "You must be logged in to the server".
    let err = c.kubectl(v, Identity::BogusToken).fails(&["get", "ns"]);
    assert_contains(
        "get ns with a bogus token and no client cert",
        &err,
        &["must be logged in"],
    );

    // A certificate from another CA: refused in the TLS handshake (not a 401/403 response).
    let r = c.https(Identity::UntrustedCa, "GET", "/api/v1/namespaces", None);
    assert!(
        r.is_err(),
        "a client cert from another CA got an HTTP answer: {r:#?}"
    );
    let err = c.kubectl(v, Identity::UntrustedCa).fails(&["get", "ns"]);
    assert!(
        !err.contains("must be logged in") && !err.contains("Forbidden"),
        "get ns with an untrusted cert got an HTTP answer instead of a refused handshake:\n{err}"
    );
    assert!(
        [
            "tls",
            "certificate",
            "EOF",
            "connection reset",
            "broken pipe"
        ]
        .iter()
        .any(|n| err.contains(n)),
        "get ns with an untrusted cert: expected a TLS error, got:\n{err}"
    );

    // jane is authenticated but may do nothing (beyond discovery).
    let jane = c.kubectl(v, Identity::Jane);
    let err = jane.fails(&["get", "cm", "-n", "lab"]);
    assert_contains(
        "get cm as jane",
        &err,
        &[
            "Forbidden",
            r#"configmaps is forbidden: User "jane" cannot list resource "configmaps" in API group "" in the namespace "lab""#,
        ],
    );
    let r = c
        .https(
            Identity::Jane,
            "GET",
            "/api/v1/namespaces/lab/configmaps",
            None,
        )
        .expect("GET configmaps as jane");
    assert_eq!(r.status, 403, "{r:#?}");
    let status = r.json();
    assert_eq!(status["kind"], "Status", "{status:#}");
    assert_eq!(status["reason"], "Forbidden", "{status:#}");
    assert_eq!(status["code"], 403, "{status:#}");
    let path = c.manifest("ns2.json", &namespace("janes"));
    let err = jane.fails(&["create", "-f", &path]);
    assert_contains(
        "create ns as jane",
        &err,
        &[
            r#"namespaces is forbidden: User "jane" cannot create resource "namespaces" in API group "" at the cluster scope"#,
        ],
    );
    admin.fails(&["get", "ns", "janes"]);
}

// ---------------------------------------------------------------------------------------------
// 5. The objects in etcd
// ---------------------------------------------------------------------------------------------

fn etcd_layout(v: &str, store: Store) {
    let c = Cluster::start(store);
    let k = c.kubectl(v, Identity::Admin);
    create(&c, &k, "ns.json", &namespace("lab"));
    create(
        &c,
        &k,
        "a.json",
        &configmap("lab", "a", json!({"app": "x"}), json!({"k": "v1"})),
    );

    let etcdctl = |args: &[&str]| -> String {
        let out = common::etcdctl(c.store(), args, None);
        out.expect_ok(&format!("etcdctl {}", args.join(" ")));
        out.out()
    };

    let keys = lines(&etcdctl(&["get", "/registry", "--prefix", "--keys-only"]));
    for want in ["/registry/namespaces/lab", "/registry/configmaps/lab/a"] {
        assert!(
            keys.iter().any(|key| key == want),
            "etcd has no key {want}: {keys:?}"
        );
    }

    // Each value is the object as JSON; its resourceVersion is the key's etcd mod revision.
    for (key, kind, name, get) in [
        (
            "/registry/namespaces/lab",
            "Namespace",
            "lab",
            vec!["get", "ns", "lab"],
        ),
        (
            "/registry/configmaps/lab/a",
            "ConfigMap",
            "a",
            vec!["get", "cm", "a", "-n", "lab"],
        ),
    ] {
        let value = etcdctl(&["get", key, "--print-value-only"]);
        let stored: Value = serde_json::from_str(value.trim())
            .unwrap_or_else(|e| panic!("{key} does not hold JSON ({e}):\n{value}"));
        assert_eq!(stored["apiVersion"], "v1", "{key}: {stored:#}");
        assert_eq!(stored["kind"], kind, "{key}: {stored:#}");
        assert_eq!(stored["metadata"]["name"], name, "{key}: {stored:#}");

        let kv: Value = serde_json::from_str(&etcdctl(&["get", key, "-w", "json"])).unwrap();
        let mod_revision = kv["kvs"][0]["mod_revision"].as_i64().unwrap_or(-1);
        let mut args = get.clone();
        args.extend(["-o", "jsonpath={.metadata.resourceVersion}"]);
        assert_eq!(
            k.ok(&args),
            mod_revision.to_string(),
            "resourceVersion of {key} vs its etcd mod_revision"
        );
    }
    let cm: Value = serde_json::from_str(
        etcdctl(&["get", "/registry/configmaps/lab/a", "--print-value-only"]).trim(),
    )
    .unwrap();
    assert_eq!(cm["metadata"]["namespace"], "lab", "{cm:#}");
    assert_eq!(cm["metadata"]["labels"], json!({"app": "x"}), "{cm:#}");
    assert_eq!(cm["data"], json!({"k": "v1"}), "{cm:#}");
}

/// kubectl's generators (`create namespace / secret generic / serviceaccount / configmap`). kubectl
/// 1.27–1.31 send them as JSON; 1.32+ send protobuf bodies, which minik does not decode yet.
#[test]
fn generators_secrets_and_service_accounts_with_kubectl_1_27() {
    let c = Cluster::start(Store::Minik);
    let k = c.kubectl("1.27", Identity::Admin);
    k.ok(&["create", "namespace", "lab"]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "-n",
        "lab",
        "--from-literal=user=admin",
    ]);
    k.ok(&["create", "serviceaccount", "robot", "-n", "lab"]);
    k.ok(&[
        "create",
        "configmap",
        "c1",
        "-n",
        "lab",
        "--from-literal=a=b",
    ]);
    let secret = k.json(&["get", "secret", "s1", "-n", "lab", "-o", "json"]);
    assert_eq!(secret["data"]["user"], "YWRtaW4=", "{secret:#}");
    assert_eq!(secret["type"], "Opaque");
    let table = k.ok(&["get", "secrets", "-n", "lab"]);
    assert!(
        table
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .eq(["NAME", "TYPE", "DATA", "AGE"]),
        "secret columns: {table}"
    );
    let sa = k.ok(&["get", "sa", "-n", "lab", "-o", "name"]);
    assert_eq!(sa.trim(), "serviceaccount/robot");
    // Secret data must be base64: the real apiserver's 400 from decoding the body.
    let bad = create_fails(
        &c,
        &k,
        "bad-secret.json",
        &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "bad", "namespace": "lab"}, "data": {"k": "%%%"}}),
    );
    assert!(
        bad.contains("(BadRequest)")
            && bad.contains("Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte 0"),
        "{bad}"
    );
}

fn create_fails(c: &Cluster, k: &apiserver_util::Kubectl, file: &str, object: &Value) -> String {
    let path = c.manifest(file, object);
    k.fails(&["create", "-f", &path])
}

/// A PUT without a resourceVersion is an unconditional update: the server retries it on a
/// conflict (another writer, or a watch cache copy one write behind) and never refuses it. 8
/// writers × 5 PUTs of one ConfigMap: every one answers 200, each with its own resourceVersion.
#[test]
fn unconditional_updates_all_succeed_under_contention() {
    let c = Cluster::start(Store::Minik);
    let ok = |method: &str, path: &str, body: Option<&Value>| {
        let body = body.map(Value::to_string);
        let r = c
            .https(Identity::Admin, method, path, body.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(
            r.status == 200 || r.status == 201,
            "{method} {path}: {r:#?}"
        );
        r.json()
    };
    ok("POST", "/api/v1/namespaces", Some(&namespace("lab")));
    let path = "/api/v1/namespaces/lab/configmaps";
    ok(
        "POST",
        path,
        Some(&configmap("lab", "shared", json!({}), json!({"n": "0"}))),
    );
    let versions: Vec<String> = std::thread::scope(|s| {
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let ok = &ok;
                s.spawn(move || {
                    (0..5)
                        .map(|i| {
                            let cm = configmap(
                                "lab",
                                "shared",
                                json!({}),
                                json!({"n": format!("{w}-{i}")}),
                            );
                            let written = ok("PUT", &format!("{path}/shared"), Some(&cm));
                            written["metadata"]["resourceVersion"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        writers
            .into_iter()
            .flat_map(|w| w.join().expect("writer thread"))
            .collect()
    });
    let distinct: std::collections::BTreeSet<&String> = versions.iter().collect();
    assert_eq!(distinct.len(), 40, "each PUT its own write: {versions:?}");
    let last = ok("GET", &format!("{path}/shared"), None);
    let rv = last["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    assert!(distinct.contains(&rv.to_string()), "{last:#}");
}
