#!/usr/bin/env bash
# Regenerates link/kubelet.order: the functions of the release `minik` binary that a kubelet
# executes, found by running one under valgrind's callgrind in a throwaway cluster. Names the
# file already lists are kept while the binary still has them (one run sees only its own paths).
#
#   link/kubelet-order.sh        # needs valgrind, Docker and the images (`minik image build`)
#
# Then rebuild (`cargo build --release`) and check `target/release/minik bench kubelet`.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "kubelet-order: valgrind is not installed" >&2; exit 1; }
cargo build --release --bin minik
bin="$PWD/target/release/minik"
work="$(mktemp -d /tmp/minik-kubelet-order.XXXXXX)"
export MINIK_HOME="$work/home"
profile=order
node="$profile-m02"
k() { "$bin" kubectl -p "$profile" -- "$@"; }
cleanup() {
  pkill -TERM -f "callgrind-out-file=$work" 2>/dev/null || true
  "$bin" delete -p "$profile" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" up -p "$profile" --nodes 1 --no-kubeconfig
"$bin" node add -p "$profile"
# The added node's kubelet command line, then that node stopped: the kubelet runs under
# callgrind instead, twice (a fresh start, then a restart that adopts the running pods).
pid="$(pgrep -f -- "--node-name=$node " | head -1)"
mapfile -d '' args < "/proc/$pid/cmdline"
"$bin" node stop -p "$profile" "$node"

kubelet() { # $1: output file; runs until SIGTERM
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$1" \
    "$bin" kubelet "${args[@]:1}" >"$1.log" 2>&1 &
  sleep 40
}
stop_kubelet() {
  pkill -TERM -f "callgrind-out-file=$1" || true
  while pgrep -f "callgrind-out-file=$1" >/dev/null; do sleep 1; done
}

kubelet "$work/cg1.out"
k create deployment order --image=registry.k8s.io/pause:3.10 --replicas=20 \
  --dry-run=client -o json |
  python3 -c "import json,sys; d=json.load(sys.stdin); s=d['spec']['template']['spec']; s['nodeSelector']={'kubernetes.io/hostname':'$node'}; s['terminationGracePeriodSeconds']=1; print(json.dumps(d))" |
  k apply -f -
k apply -f examples/
sleep 60
echo_pod="$(k get pods -o wide --no-headers | awk -v n="$node" '$7==n && $3=="Running" && $1 ~ /^echo/ {print $1; exit}')"
if [ -n "$echo_pod" ]; then
  k logs "$echo_pod" --tail=2 || true
  k exec "$echo_pod" -- /echo --help >/dev/null 2>&1 || true
fi
k scale deployment order --replicas=10
sleep 30
stop_kubelet "$work/cg1.out"

kubelet "$work/cg2.out"
k delete deployment order --wait=false
sleep 20
stop_kubelet "$work/cg2.out"

python3 - "$bin" "$work/cg1.out" "$work/cg2.out" <<'EOF'
import re, subprocess, sys
binary, outs = sys.argv[1], sys.argv[2:]
names = set()
for out in outs:
    for line in open(out, errors="replace"):
        m = re.match(r"c?fn=\(\d+\) (.+)$", line.rstrip("\n"))
        if m:
            names.add(m.group(1))
nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True)
text = {f[2] for f in (l.split() for l in nm.stdout.splitlines()) if len(f) == 3 and f[1] in "tTwW"}
# A run sees only the paths it took: what the file already lists stays while the binary has it.
with open("link/kubelet.order") as f:
    lines = f.read().splitlines()
header = [l for l in lines if l.startswith("#")]
order = sorted((names | {l for l in lines if l and not l.startswith("#")}) & text)
with open("link/kubelet.order", "w") as f:
    f.write("\n".join(header + order) + "\n")
print(f"link/kubelet.order: {len(order)} functions")
EOF
