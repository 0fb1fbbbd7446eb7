#!/usr/bin/env bash
# Builds the images the real node runs (localcluster/realnode.py), with buildah and no Docker
# engine and no registry, into docker-archives that `ctr images import` loads into containerd:
#
#   busybox-static  Debian's busybox-static in an empty image; the base of the two below
#   pause           the pod sandbox image (containerd's sandbox_image): busybox `sleep`
#   e2e-app         tests/e2e/app (a workload that logs the signals it receives and has a real
#                   readiness endpoint), built from its Containerfile on busybox-static
#   python-base     a Debian rootfs from debootstrap with Python 3.11 in a venv on PATH: what
#                   deploy/Dockerfile's PYTHON_IMAGE (python:3.11-slim from a registry) provides
#   chaosguard      the operator's own image: deploy/Dockerfile, built by `buildah bud`
#   injector        what the faults' ephemeral containers run (busybox, tc, netem.sh), and
#   stressor        the same with stress-ng, for the stress fault:
#                   deploy/Dockerfile.injector, built by `buildah bud` on python-base's Debian
#
# Each archive is named after a hash of what it is built from and kept in the cache, so a rebuild
# happens only when its inputs change (the operator image: whenever operator/ changes).
# Prints `name<TAB>image reference<TAB>archive` for each image on stdout; logs go to stderr.
#
# Usage: hack/build-images.sh [image ...]     (default: all of them)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
CACHE_ROOT="${CHAOSGUARD_CACHE:-$HOME/.cache/chaosguard}"
OUT="$CACHE_ROOT/images"
STORE="$CACHE_ROOT/buildah"
DEBIAN_SUITE=bookworm
CA_BUNDLE="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
BASE_PACKAGES=python3,python3-venv,passwd,ca-certificates

log() { printf '[build-images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

for tool in buildah debootstrap busybox; do
  command -v "$tool" >/dev/null || { log "$tool is missing: run hack/install-system-deps.sh"; exit 1; }
done
mkdir -p "$OUT" "$STORE/tmp" "$STORE/debs"
# buildah's storage, run state and temporary files stay in the cache, not in /var/lib/containers.
export TMPDIR="$STORE/tmp"
export BUILDAH_ISOLATION=chroot
buildah_() { buildah --root "$STORE/root" --runroot "$STORE/run" --storage-driver overlay "$@"; }

hash_of() { sha256sum "$@" | sha256sum | cut -c1-12; }

# The machine's own Debian mirror, as apt is configured here (deb822 or one-line sources).
debian_mirror() {
  local uri
  uri="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1 || true)"
  if [[ -z "$uri" ]]; then
    uri="$(grep -hsE '^deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -v security | head -1 || true)"
  fi
  [[ -n "$uri" ]] || { log "no Debian mirror found in /etc/apt"; exit 1; }
  printf '%s' "$uri"
}

# save NAME REFERENCE ARCHIVE: write the committed image to a docker-archive (atomically).
save() {
  local name="$1" reference="$2" archive="$3"
  rm -f "$archive.tmp"
  buildah_ push --quiet "$reference" "docker-archive:$archive.tmp:$reference" >/dev/null
  mv "$archive.tmp" "$archive"
  log "$name: $reference -> $archive ($(du -h "$archive" | cut -f1))"
}

emit() { printf '%s\t%s\t%s\n' "$1" "$2" "$3"; }

busybox_version="$(dpkg-query -W -f='${Version}' busybox-static)"
BUSYBOX_REF="localhost/chaosguard-busybox-static:${busybox_version//[^A-Za-z0-9_.-]/_}"

build_busybox() {
  local archive
  archive="$OUT/busybox-static-$(hash_of /bin/busybox).tar"
  if [[ ! -f "$archive" ]] || ! buildah_ inspect --type image "$BUSYBOX_REF" >/dev/null 2>&1; then
    local container mount
    container="$(buildah_ from scratch)"
    mount="$(buildah_ mount "$container")"
    mkdir -p "$mount/bin" "$mount/tmp" "$mount/etc"
    chmod 1777 "$mount/tmp"
    cp /bin/busybox "$mount/bin/busybox"
    chroot "$mount" /bin/busybox --install -s /bin
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65532:65532:nobody:/nonexistent:/bin/false\n' >"$mount/etc/passwd"
    printf 'root:x:0:\nnobody:x:65532:\n' >"$mount/etc/group"
    buildah_ umount "$container" >/dev/null
    buildah_ config --cmd /bin/sh --env PATH=/bin "$container"
    buildah_ commit --quiet --rm "$container" "$BUSYBOX_REF" >/dev/null
    save busybox-static "$BUSYBOX_REF" "$archive"
  fi
  emit busybox-static "$BUSYBOX_REF" "$archive"
}

build_pause() {
  local reference="localhost/chaosguard-pause:1" archive
  archive="$OUT/pause-$(hash_of /bin/busybox).tar"
  if [[ ! -f "$archive" ]]; then
    local container
    container="$(buildah_ from --pull=never "$BUSYBOX_REF")"
    # PID 1 of every pod sandbox: holds the pod's namespaces and does nothing else.
    buildah_ config --entrypoint '["/bin/sleep", "2147483647"]' --cmd '[]' --user 65535:65535 "$container"
    buildah_ commit --quiet --rm "$container" "$reference" >/dev/null
    save pause "$reference" "$archive"
  fi
  emit pause "$reference" "$archive"
}

build_e2e_app() {
  local reference="docker.io/library/chaosguard-e2e-app:dev"
  local archive
  archive="$OUT/e2e-app-$(hash_of /bin/busybox "$REPO"/tests/e2e/app/*).tar"
  if [[ ! -f "$archive" ]]; then
    buildah_ bud --quiet --pull=never --layers=false --build-arg "BASE=$BUSYBOX_REF" \
      -t "$reference" -f "$REPO/tests/e2e/app/Containerfile" "$REPO/tests/e2e/app" >/dev/null
    save e2e-app "$reference" "$archive"
  fi
  emit e2e-app "$reference" "$archive"
}

# Bump PYTHON_BASE_RECIPE when build_python_base changes what it puts in the image.
PYTHON_BASE_RECIPE=3
PYTHON_BASE_KEY="$(printf '%s %s %s' "$DEBIAN_SUITE" "$BASE_PACKAGES" "$PYTHON_BASE_RECIPE" | sha256sum | cut -c1-12)"
PYTHON_BASE_REF="localhost/chaosguard-python-base:$DEBIAN_SUITE-$PYTHON_BASE_KEY"

build_python_base() {
  local archive="$OUT/python-base-$PYTHON_BASE_KEY.tar"
  if [[ ! -f "$archive" ]] || ! buildah_ inspect --type image "$PYTHON_BASE_REF" >/dev/null 2>&1; then
    if [[ -f "$archive" ]]; then  # the archive outlived buildah's storage: load it back
      buildah_ pull --quiet "docker-archive:$archive" >/dev/null
    else
      local rootfs="$STORE/rootfs-$PYTHON_BASE_KEY" mirror
      mirror="$(debian_mirror)"
      rm -rf "$rootfs"
      log "python-base: debootstrap $DEBIAN_SUITE (minbase + $BASE_PACKAGES); the first run downloads ~40 MB"
      debootstrap --variant=minbase --include="$BASE_PACKAGES" --cache-dir="$STORE/debs" \
        "$DEBIAN_SUITE" "$rootfs" "$mirror" >"$STORE/debootstrap.log" 2>&1 \
        || { tail -20 "$STORE/debootstrap.log" >&2; exit 1; }
      # What python:3.11-slim gives a Dockerfile: `python` and `pip` on PATH, installable into.
      # Debian's own python refuses pip installs (PEP 668), so a venv stands in for /usr/local.
      chroot "$rootfs" /usr/bin/python3 -m venv /opt/python
      # pip trusts the system's CA bundle (Debian's ca-certificates), not only its own copy: the
      # build below mounts this machine's bundle there, so pip works behind an intercepting proxy.
      printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
      rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
      # What python:3.11-slim leaves out too: documentation, manual pages, translations.
      rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
      local container mount
      container="$(buildah_ from scratch)"
      mount="$(buildah_ mount "$container")"
      cp -a "$rootfs"/. "$mount"/
      buildah_ umount "$container" >/dev/null
      rm -rf "$rootfs"
      buildah_ config --env PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd python3 "$container"
      buildah_ commit --quiet --rm "$container" "$PYTHON_BASE_REF" >/dev/null
      save python-base "$PYTHON_BASE_REF" "$archive"
    fi
  fi
  emit python-base "$PYTHON_BASE_REF" "$archive"
}

build_chaosguard() {
  local reference="docker.io/library/chaosguard:dev" key archive
  key="$(cd "$REPO" && { git ls-files -co --exclude-standard operator pyproject.toml README.md deploy/Dockerfile .dockerignore \
    | grep -v -e __pycache__ -e '\.egg-info/' | sort | xargs sha256sum; echo "$PYTHON_BASE_REF"; } | sha256sum | cut -c1-12)"
  archive="$OUT/chaosguard-$key.tar"
  if [[ ! -f "$archive" ]]; then
    log "chaosguard: buildah bud -f deploy/Dockerfile (pip installs the operator's dependencies)"
    # The machine's CA bundle, for the RUN steps only (pip and apt reach their registries through
    # whatever TLS this machine trusts); it is not part of the image.
    buildah_ bud --quiet --pull=never --layers=false --build-arg "PYTHON_IMAGE=$PYTHON_BASE_REF" \
      --volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro" \
      -t "$reference" -f "$REPO/deploy/Dockerfile" "$REPO" >/dev/null
    save chaosguard "$reference" "$archive"
    # Older operator archives are dead weight (~200 MB each).
    find "$OUT" -maxdepth 1 -name 'chaosguard-*.tar' ! -name "chaosguard-$key.tar" -delete
  fi
  emit chaosguard "$reference" "$archive"
}

# The references the operator is given (--injector-image, --stressor-image);
# localcluster.realnode.INJECTOR_IMAGE and STRESSOR_IMAGE.
INJECTOR_REF="docker.io/library/chaosguard-injector:dev"
STRESSOR_REF="docker.io/library/chaosguard-stressor:dev"

# build_fault_image NAME REFERENCE: deploy/Dockerfile.injector's target NAME (injector | stressor).
build_fault_image() {
  local name="$1" reference="$2" key archive
  key="$(cd "$REPO" && { sha256sum deploy/Dockerfile.injector operator/chaosguard/runtime/injector/netem.sh; echo "$PYTHON_BASE_REF"; } \
    | sha256sum | cut -c1-12)"
  archive="$OUT/$name-$key.tar"
  if [[ ! -f "$archive" ]]; then
    log "$name: buildah bud --target $name -f deploy/Dockerfile.injector (apt installs busybox-static, iproute2, stress-ng)"
    # python-base is a Debian bookworm rootfs with apt: what debian:bookworm-slim gives a Dockerfile.
    buildah_ bud --quiet --pull=never --layers=false --build-arg "DEBIAN_IMAGE=$PYTHON_BASE_REF" \
      --volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro" --target "$name" \
      -t "$reference" -f "$REPO/deploy/Dockerfile.injector" "$REPO" >/dev/null
    # Older archives stay (7 and 37 MB): another worktree's real node may be importing one.
    save "$name" "$reference" "$archive"
  fi
  emit "$name" "$reference" "$archive"
}

wanted=("$@")
[[ ${#wanted[@]} -gt 0 ]] || wanted=(busybox-static pause e2e-app python-base chaosguard injector stressor)
needs_busybox=0 needs_base=0
for name in "${wanted[@]}"; do
  case "$name" in
    busybox-static | pause | e2e-app) needs_busybox=1 ;;
    python-base | chaosguard | injector | stressor) needs_base=1 ;;
    *) log "unknown image $name"; exit 2 ;;
  esac
done
[[ $needs_busybox -eq 0 ]] || build_busybox >/dev/null
[[ $needs_base -eq 0 ]] || build_python_base >/dev/null
for name in "${wanted[@]}"; do
  case "$name" in
    busybox-static) build_busybox ;;
    pause) build_pause ;;
    e2e-app) build_e2e_app ;;
    python-base) build_python_base ;;
    chaosguard) build_chaosguard ;;
    injector) build_fault_image injector "$INJECTOR_REF" ;;
    stressor) build_fault_image stressor "$STRESSOR_REF" ;;
  esac
done
