#!/usr/bin/env bash
# Builds the pinned Kubernetes control plane that the tests and the demo run:
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from
# k8s.io/kubernetes, and the real node's kubelet and kube-proxy from the same
# release; etcd from go.etcd.io/etcd/server, kwok, actionlint and helm,
# all from the Go module proxy, into a cache outside the repository.
#
# k8s.io/kubernetes (and etcd's server module) cannot be `go install`ed: their
# go.mod maps sibling modules with `replace ... => ./staging/...` (or ../api),
# and replace directives only apply in the main module. So each is built from a
# throwaway wrapper module whose replace list is derived from the pinned
# release's own go.mod, each relative path rewritten to the sibling module's
# published tag. Idempotent: a finished build leaves a stamp and is skipped.
#
# Usage: hack/build-control-plane.sh            (prints the bin dir at the end)
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-v1.7.7}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"

CACHE_ROOT="${CHAOSGUARD_CACHE:-$HOME/.cache/chaosguard}"
BIN_DIR="$CACHE_ROOT/kube-$KUBE_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION/bin"
STAMP="$BIN_DIR/.complete"

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
export PATH="/usr/local/go/bin:$PATH"

log() { printf '[build-control-plane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

KUBE_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
missing_kube=()
built() {
  missing_kube=()
  for cmd in "${KUBE_COMMANDS[@]}"; do
    [[ -x "$BIN_DIR/$cmd" ]] || missing_kube+=("$cmd")
  done
  # helm, kubelet and kube-proxy joined later: a cache finished before them still needs them built.
  [[ -f "$STAMP" && -x "$BIN_DIR/helm" && ${#missing_kube[@]} -eq 0 ]]
}

# A finished cache is only read (the netem guest sees it on a read-only share): no lock for that.
if built; then
  echo "$BIN_DIR"
  exit 0
fi
# Two builds at once (two worktrees' `make setup`) would race on the same .tmp outputs: the second
# waits here, then finds the first one's stamp.
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.build-control-plane.lock"
flock 9
if built; then
  echo "$BIN_DIR"
  exit 0
fi
command -v go >/dev/null || { log "Go is required (expected at /usr/local/go/bin/go)"; exit 1; }
mkdir -p "$BIN_DIR"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Writes a wrapper go.mod for MODULE@VERSION: its go/godebug lines are copied,
# and every relative replace (=> ./x or => ../x) becomes `=> <module> <tag>`.
write_wrapper() {
  local module="$1" version="$2" sibling_version="$3" dir="$4"
  local gomod
  gomod="$(go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  mkdir -p "$dir"
  python3 - "$gomod" "$module" "$version" "$sibling_version" >"$dir/go.mod" <<'PY'
import re, sys
gomod, module, version, sibling = sys.argv[1:]
text = open(gomod).read()
go_line = re.search(r"^go\s+\S+", text, re.M).group(0)
godebug = re.findall(r"^godebug\s+.*$", text, re.M)
pairs = re.findall(r"^[ \t]*(?:replace[ \t]+)?([^\s()]+)(?:[ \t]+\S+)?[ \t]+=>[ \t]+(\.\.?/\S+)[ \t]*$", text, re.M)
# etcd guards against some modules with `=> ./FORBIDDEN_DEPENDENCY`; those are not siblings.
relative = [module for module, target in pairs if "FORBIDDEN" not in target]
print("module chaosguard.dev/controlplane-build\n")
print(go_line)
for line in godebug:
    print(line)
print(f"\nrequire {module} {version}\n")
print("replace (")
for dep in sorted(set(relative)):
    print(f"\t{dep} => {dep} {sibling}")
print(")")
PY
  log "wrapper for $module@$version: $(grep -c '=>' "$dir/go.mod") replaced sibling modules"
}

if [[ ${#missing_kube[@]} -gt 0 ]]; then
  staging_version="v0.${KUBE_VERSION#v1.}"
  write_wrapper k8s.io/kubernetes "$KUBE_VERSION" "$staging_version" "$WORK/kube"
  minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  done
  for cmd in "${missing_kube[@]}"; do
    log "building $cmd $KUBE_VERSION (the first one downloads modules and takes longest)"
    (cd "$WORK/kube" && go build -trimpath -tags selinux,notest -ldflags "$ldflags" \
      -o "$BIN_DIR/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
    mv "$BIN_DIR/$cmd.tmp" "$BIN_DIR/$cmd"
  done
fi

if [[ ! -x "$BIN_DIR/etcd" ]]; then
  write_wrapper go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION" "$WORK/etcd"
  log "building etcd $ETCD_VERSION"
  (cd "$WORK/etcd" && go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
fi

if [[ ! -x "$BIN_DIR/kwok" ]]; then
  log "building kwok $KWOK_VERSION"
  GOBIN="$BIN_DIR" GOFLAGS= go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
fi
# kwok's stage definitions (node heartbeat, pod ready, pod delete) ship in its module.
KWOK_SRC="$(GOFLAGS= go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION"
if [[ ! -d "$KWOK_SRC/kustomize/stage" ]]; then
  GOFLAGS= go mod download "sigs.k8s.io/kwok@$KWOK_VERSION"
fi
rm -rf "$BIN_DIR/../kwok-stages"
cp -r "$KWOK_SRC/kustomize/stage" "$BIN_DIR/../kwok-stages"
chmod -R u+w "$BIN_DIR/../kwok-stages"

if [[ ! -x "$BIN_DIR/actionlint" ]]; then
  log "building actionlint $ACTIONLINT_VERSION"
  GOBIN="$BIN_DIR" GOFLAGS= go install -trimpath -ldflags "-s -w" "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
fi

if [[ ! -x "$BIN_DIR/helm" ]]; then
  # helm v3 has no relative replace directives, so `go install` works; the ldflag sets `helm version`.
  log "building helm $HELM_VERSION"
  GOBIN="$BIN_DIR" GOFLAGS= go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi

"$BIN_DIR/kube-apiserver" --version >&2
touch "$STAMP"
log "control plane ready in $BIN_DIR"
echo "$BIN_DIR"
