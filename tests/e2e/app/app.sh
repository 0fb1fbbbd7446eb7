#!/bin/sh
# The e2e tests' workload: logs every signal it receives, with the node's uptime clock (shared by
# every container on a node, so two lines from one pod can be subtracted), and serves a readiness
# endpoint only from READY_AFTER_SECONDS after its start until it receives SIGTERM.
#
# On SIGTERM it does NOT exit: it keeps logging `draining` every DRAIN_TICK_SECONDS, so that the
# kubelet's SIGKILL at the end of the grace period is what stops it. The tests read the gap between
# `received SIGTERM` and the last `draining` line: the grace period, honoured.
#   READY_AFTER_SECONDS   default 2
#   DRAIN_TICK_SECONDS    default 0.2
set -u
READY_AFTER_SECONDS=${READY_AFTER_SECONDS:-2}
DRAIN_TICK_SECONDS=${DRAIN_TICK_SECONDS:-0.2}
WWW=/tmp/www
TERMINATING=0

now() {
	read -r uptime _ </proc/uptime
	printf '%s' "$uptime"
}

log() {
	printf 'e2e-app uptime=%s %s\n' "$(now)" "$*"
}

on_signal() {
	log "received SIG$1"
	if [ "$1" = TERM ]; then
		TERMINATING=1
		rm -f "$WWW/ready"
	fi
}

trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
trap 'on_signal HUP' HUP
trap 'on_signal USR1' USR1

mkdir -p "$WWW"
log "started: pid $$, ready in ${READY_AFTER_SECONDS}s"
httpd -f -p 8080 -h "$WWW" &
sleep "$READY_AFTER_SECONDS" &
wait $! || true
if [ "$TERMINATING" -eq 0 ]; then
	echo ok >"$WWW/ready"
	log "ready: GET :8080/ready answers 200"
fi
while :; do
	sleep "$DRAIN_TICK_SECONDS" &
	wait $! || true
	if [ "$TERMINATING" -eq 1 ]; then
		log "draining"
	fi
done
