#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need, once, without starting any service:
#   prometheus          the real Prometheus the SLO-guard tests and the demo query
#   iproute2            ip netns / tc, for the latency fault's tests
#   qemu-system-x86 + linux-image-amd64   a kernel with sch_netem, booted with virtme-ng,
#                       because this machine's own kernel has no netem and loads no modules
#   busybox-static      gives the guest a tiny init-free toolset (nc, ping) for RTT checks
#   shellcheck          lets actionlint check the workflow's run: scripts
#   containerd + runc + containernetworking-plugins   the real node's container runtime, OCI
#                       runtime and CNI bridge (localcluster/realnode.py starts them by hand)
#   nftables            the `nft` that kube-proxy's nftables mode drives (Services on the real node)
#   buildah + debootstrap   the images the real node runs, built here without Docker or a registry
#                       (localcluster/realnode.py build_images): a Debian rootfs, then deploy/Dockerfile on top
# Debian's prometheus package starts a system service on :9090 when installed; policy-rc.d
# keeps that from happening, since tests start their own Prometheus on a free loopback port.
set -euo pipefail
PACKAGES=(prometheus iproute2 qemu-system-x86 linux-image-amd64 iputils-ping busybox-static shellcheck
  containerd runc containernetworking-plugins nftables buildah debootstrap)
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
echo "[install-system-deps] installing: ${missing[*]}" >&2
policy_rc=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy_rc ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy_rc" >/dev/null
  $SUDO chmod +x "$policy_rc"
  created_policy=1
fi
trap '[[ $created_policy -eq 1 ]] && $SUDO rm -f "$policy_rc"' EXIT
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The package's own service must never hold :9090 or write to /var/lib/prometheus behind our back.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
pkill -x prometheus 2>/dev/null || true
