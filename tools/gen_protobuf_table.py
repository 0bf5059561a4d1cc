#!/usr/bin/env python3
"""Generates src/apiserver/protobuf_table.rs, the schema table that drives
src/apiserver/protobuf.rs (minik's decoder of kubectl's protobuf request bodies).

Two inputs are joined, field by field, on (package, message name, proto tag):

* the k8s-pb crate's generated prost code (crates.io, `k8s-pb` 0.9.0): message names,
  proto tags and proto types (`#[prost(string, optional, tag = "1")]` ...);
* the Go API types of Kubernetes (k8s.io/api, k8s.io/apimachinery,
  k8s.io/apiextensions-apiserver at the same release as k8s-pb, v0.35.x): the JSON
  field names, `omitempty`, pointer-ness, `json:",inline"` embedding, Go names (for
  error messages) and each group's `GroupName`. Only these facts are extracted; no code
  is copied.

Usage:
    python3 tools/gen_protobuf_table.py K8S_PB_SRC GO_API GO_APIMACHINERY GO_APIEXTENSIONS \
        > src/apiserver/protobuf_table.rs
where K8S_PB_SRC is the `src` directory of the unpacked k8s-pb-0.9.0 crate
(~/.cargo/registry/src/*/k8s-pb-0.9.0/src) and the GO_* arguments are checkouts of
kubernetes/api, kubernetes/apimachinery and kubernetes/apiextensions-apiserver.
"""
import os
import re
import sys

# k8s-pb module (relative to its src/) -> (Go dir, root package?).  Roots are the
# groups/versions whose kinds are served; the others are only pulled in as dependencies.
ROOTS = [
    "api/core/v1", "api/apps/v1", "api/batch/v1", "api/autoscaling/v1", "api/autoscaling/v2",
    "api/networking/v1", "api/rbac/v1", "api/policy/v1", "api/scheduling/v1",
    "api/coordination/v1", "api/discovery/v1", "api/events/v1", "api/authorization/v1",
    "api/authentication/v1", "api/storage/v1", "api/certificates/v1", "api/node/v1",
    "api/admissionregistration/v1", "api/flowcontrol/v1",
    "apiextensions_apiserver/pkg/apis/apiextensions/v1",
    "apimachinery/pkg/apis/meta/v1",
]

# The proto scalar types Kubernetes uses (the decoder has no uint32/uint64/float/fixed/sint).
SCALARS = {"string", "bytes", "bool", "int32", "int64", "double"}

# Messages whose JSON form is not an object of their fields (custom MarshalJSON in Go).
SPECIAL = {
    "apimachinery/pkg/apis/meta/v1.Time": "Time",
    "apimachinery/pkg/apis/meta/v1.MicroTime": "MicroTime",
    "apimachinery/pkg/apis/meta/v1.Duration": "Duration",
    "apimachinery/pkg/apis/meta/v1.FieldsV1": "RawJson",
    "apimachinery/pkg/runtime.RawExtension": "RawExtension",
    "apimachinery/pkg/util/intstr.IntOrString": "IntOrString",
    "apimachinery/pkg/api/resource.Quantity": "Quantity",
    "apimachinery/pkg/api/resource.QuantityValue": "Quantity",
    "apiextensions_apiserver/pkg/apis/apiextensions/v1.Json": "RawJson",
    "apiextensions_apiserver/pkg/apis/apiextensions/v1.JsonSchemaPropsOrArray": "SchemaOrArray",
    "apiextensions_apiserver/pkg/apis/apiextensions/v1.JsonSchemaPropsOrBool": "SchemaOrBool",
    "apiextensions_apiserver/pkg/apis/apiextensions/v1.JsonSchemaPropsOrStringArray": "SchemaOrStringArray",
}


def go_dir(module, go_api, go_am, go_ext):
    if module.startswith("api/"):
        return os.path.join(go_api, module[len("api/"):])
    if module.startswith("apimachinery/"):
        return os.path.join(go_am, module[len("apimachinery/"):])
    if module.startswith("apiextensions_apiserver/"):
        return os.path.join(go_ext, module[len("apiextensions_apiserver/"):])
    raise SystemExit("no Go dir for " + module)


def parse_prost(path):
    """Returns {MessageName: [(tag, rust_field, proto_kind, label, type_path, map)]} in source order."""
    msgs = {}
    cur = None
    attr = None
    lines = open(path).read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        m = re.match(r"pub struct (\w+) \{", line)
        if m:
            cur = m.group(1)
            msgs[cur] = []
        elif line.startswith("pub struct ") and line.endswith(";"):
            msgs[line.split()[2].rstrip(";")] = []
        elif line.startswith("#[prost(") and cur is not None:
            attr = line[len("#[prost("):-2]
        elif line.startswith("pub ") and attr is not None and cur is not None:
            text = line
            depth = text.count("<") - text.count(">")
            while depth > 0 or not text.endswith(","):
                i += 1
                text += lines[i].strip()
                depth = text.count("<") - text.count(">")
            m = re.match(r"pub (?:r#)?(\w+):\s*(.*),$", text)
            fname, rtype = m.group(1), m.group(2)
            tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
            mm = re.match(r'(?:btree_)?map = "string, (\w+)"', attr)
            if mm:
                kind, label, mapv = "map", "map", mm.group(1)
            else:
                kind = re.match(r"(\w+)", attr).group(1)
                label = "repeated" if "repeated" in attr else "optional"
                mapv = None
            tpath = None
            if kind == "message" or mapv == "message":
                parts = re.findall(r"((?:super::|[A-Za-z_]\w*::)*[A-Z]\w*)", rtype)
                parts = [p for p in parts if p.split("::")[-1] not in ("Option", "Vec", "Box", "String", "BTreeMap", "HashMap")]
                tpath = parts[-1]
            msgs[cur].append((tag, fname, kind, label, tpath, mapv))
            attr = None
        elif line == "}":
            cur = None if not lines[i].startswith(" ") else cur
        i += 1
    return msgs


def resolve(module, tpath):
    parts = tpath.split("::")
    mod = module.split("/")
    while parts[0] == "super":
        mod = mod[:-1]
        parts = parts[1:]
    return "/".join(mod + parts[:-1]) + "." + parts[-1]


def parse_go(dirname):
    """Returns ({lower struct name: (GoName, [field dicts])}, {lower name: 'stringlist'}, group)."""
    structs, lists, group = {}, {}, None
    for fn in sorted(os.listdir(dirname)):
        if not fn.endswith(".go") or fn.endswith("_test.go") or fn.startswith("zz_") or fn == "generated.pb.go":
            continue
        src = open(os.path.join(dirname, fn)).read()
        g = re.search(r'^const GroupName = "([^"]*)"', src, re.M)
        if g:
            group = g.group(1)
        for m in re.finditer(r"^type (\w+) \[\]string\b", src, re.M):
            lists[m.group(1).lower()] = m.group(1)
        for m in re.finditer(r"^type (\w+) struct \{\n(.*?)^\}", src, re.M | re.S):
            name, body = m.group(1), m.group(2)
            fields = []
            has_typemeta = False
            for fl in body.split("\n"):
                fl = fl.strip()
                if not fl or fl.startswith("//"):
                    continue
                fm = re.match(r"([^`]*?)\s*`(.*)`", fl)
                if not fm:
                    continue
                words, tags = fm.group(1).split(), fm.group(2)
                if len(words) == 1:  # embedded, e.g. `metav1.ObjectMeta` or `VolumeSource`
                    gtype = words[0]
                    gname = gtype.lstrip("*").split(".")[-1]
                    embedded = True
                elif len(words) == 2:
                    gname, gtype = words
                    embedded = False
                else:
                    continue
                if embedded and gname == "TypeMeta":
                    has_typemeta = True
                pb = re.search(r'protobuf:"([^"]*)"', tags)
                js = re.search(r'json:"([^"]*)"', tags)
                if not pb or pb.group(1) == "-":
                    continue
                pbp = pb.group(1).split(",")
                jsp = js.group(1).split(",") if js else [gname]
                inline = "inline" in jsp[1:] or (js is None and embedded)
                fields.append({
                    "go": gname.split(".")[-1], "tag": int(pbp[1]),
                    "json": jsp[0] or ("" if inline else gname),
                    # `omitzero` (creationTimestamp since 1.35) is deliberately not honoured:
                    # Kubernetes 1.33 writes the zero creationTimestamp as null.
                    "omit": "omitempty" in jsp[1:],
                    "inline": bool(inline),
                    "ptr": gtype.startswith("*"), "skip": jsp[0] == "-",
                })
            structs[name.lower()] = (name, fields, has_typemeta)
    return structs, lists, group


def main():
    pb_src, go_api, go_am, go_ext = sys.argv[1:5]
    prost = {}   # module -> {name: fields}
    goinfo = {}  # module -> (structs, lists, group)

    def load(module):
        if module not in prost:
            prost[module] = parse_prost(os.path.join(pb_src, module, "mod.rs"))
            goinfo[module] = parse_go(go_dir(module, go_api, go_am, go_ext))
        return prost[module]

    # Collect messages reachable from the roots.
    order, index = [], {}

    def visit(full):
        if full in index:
            return
        module, name = full.split(".")
        msgs = load(module)
        if name not in msgs:
            raise SystemExit("unknown message " + full)
        index[full] = len(order)
        order.append(full)
        if full in SPECIAL:
            # Their fields still matter to some specials (JSONSchemaProps*).
            pass
        for (_, _, kind, _, tpath, mapv) in msgs[name]:
            if tpath:
                visit(resolve(module, tpath))

    for root in ROOTS:
        for name in load(root):
            visit(root + "." + name)

    out = []
    w = out.append
    w("// @generated by tools/gen_protobuf_table.py from the k8s-pb 0.9.0 crate (proto tags and")
    w("// types) and the Kubernetes Go API types at v0.35.7 (JSON names, omitempty, pointers, inline).")
    w("// Do not edit by hand; see the generator's docstring.")
    w("")
    w("use super::{Field, Kind::*, Msg, Special};")
    w("")
    w("/// Field flags.")
    w("pub(super) const REP: u8 = 1;")
    w("pub(super) const PTR: u8 = 2;")
    w("pub(super) const OMIT: u8 = 4;")
    w("pub(super) const INLINE: u8 = 8;")
    w("")
    warnings = []
    msgs_rs = []
    for full in order:
        module, name = full.split(".")
        structs, lists, _ = goinfo[module]
        special = SPECIAL.get(full)
        go = structs.get(name.lower())
        goname = go[0] if go else (lists.get(name.lower()) or name)
        if special is None and name.lower() in lists:
            special = "StringList"
        gofields = {f["tag"]: (pos, f) for pos, f in enumerate(go[1])} if go else {}
        fields = []
        for (tag, rname, kind, label, tpath, mapv) in prost[module][name]:
            gpos, gf = gofields.get(tag, (None, None))
            if gf is None:
                if special is None:
                    warnings.append("%s field %d (%s): no Go field" % (full, tag, rname))
                gpos = 10000 + tag
                json = re.sub(r"_(\w)", lambda m: m.group(1).upper(), rname)
                gf = {"go": json[:1].upper() + json[1:], "json": json, "omit": True, "inline": False, "ptr": label == "optional" and kind != "message", "skip": False}
            if gf["skip"] and special is None:
                continue
            if kind == "map":
                k = {"string": "MapStr", "bytes": "MapBytes"}.get(mapv)
                k = k or "MapMsg(%d)" % index[resolve(module, tpath)]
            elif kind == "message":
                k = "Msg(%d)" % index[resolve(module, tpath)]
            elif kind in SCALARS:
                k = {"string": "Str", "bytes": "Bytes", "bool": "Bool", "int32": "I32", "int64": "I64",
                     "double": "F64"}[kind]
            else:
                raise SystemExit("unsupported prost kind %s in %s" % (kind, full))
            flags = []
            if label == "repeated":
                flags.append("REP")
            if gf["ptr"]:
                flags.append("PTR")
            if gf["omit"]:
                flags.append("OMIT")
            if gf["inline"]:
                flags.append("INLINE")
            json = "" if gf["inline"] else gf["json"]
            dflt = json[:1].upper() + json[1:]
            gname = "" if gf["go"] == dflt else gf["go"]
            fields.append((gpos, 'Field { tag: %d, json: "%s", go: "%s", kind: %s, flags: %s }'
                           % (tag, json, gname, k, "|".join(flags) or "0")))
        fields.sort()
        sp = "Special::" + (special or "None")
        gn = "" if goname == name else goname
        msgs_rs.append('    Msg { name: "%s", go: "%s", special: %s, fields: &[%s] },'
                       % (name, gn, sp, ", ".join(f for _, f in fields)))
    w("/// Every message reachable from the served groups, by index.")
    w("pub(super) static MSGS: &[Msg] = &[")
    out.extend(msgs_rs)
    w("];")
    w("")
    kinds = []
    for root in ROOTS:
        group = goinfo[root][2]
        if group is None:
            raise SystemExit("no GroupName for " + root)
        version = root.split("/")[-1]
        gv = version if group == "" else group + "/" + version
        for name in prost[root]:
            full = root + "." + name
            structs = goinfo[root][0]
            go = structs.get(name.lower())
            if go and go[2]:
                kinds.append((gv, go[0], index[full]))
    kinds.sort()
    w("/// (apiVersion, kind) -> message index, sorted for binary search. meta/v1 kinds")
    w("/// (DeleteOptions, Status, ...) are also accepted under any apiVersion.")
    w("pub(super) static KINDS: &[(&str, &str, u16)] = &[")
    for gv, k, i in kinds:
        w('    ("%s", "%s", %d),' % (gv, k, i))
    w("];")
    sys.stdout.write("\n".join(out) + "\n")
    for x in warnings:
        sys.stderr.write("warning: " + x + "\n")
    sys.stderr.write("%d messages, %d fields, %d kinds\n" % (len(order), sum(len(prost[f.split('.')[0]][f.split('.')[1]]) for f in order), len(kinds)))


if __name__ == "__main__":
    main()
