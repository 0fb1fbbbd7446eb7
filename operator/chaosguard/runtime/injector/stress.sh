# chaosguard-stress: holds stress-ng in an ephemeral container of the target pod (POSIX sh; the
# operator runs it as `sh -c "$(cat stress.sh)" chaosguard-stress DEADLINE STOP_FILE -- ARGS...`,
# see chaosguard.decisions.stress). It is PID 1 of its container, as uid 65534 with no capability.
#
# - DEADLINE is absolute (unix seconds): a holder the kubelet starts late holds only until then, and
#   one that starts after it stresses nothing. `timeout` ends stress-ng at the deadline even when
#   nobody is left to ask (the dead man's switch); when this shell ends, so does its PID namespace.
# - STOP_FILE lives in the pod's shared /dev/shm: a clean-up container of the same pod creates it to
#   end the stress early (an abort), since nothing can signal this container from outside it.
# - The last line said goes to $CHAOSGUARD_STATUS_FILE (the kubelet's termination message):
#   "ended: ...", "stopped: ...", "not stressed: ..." (exit 0), or "error: ..." (exit 2 usage,
#   4 stress-ng missing or failed before its deadline).
set -u
PROG=chaosguard-stress
status=${CHAOSGUARD_STATUS_FILE:-/dev/null}
say() {
    echo "$PROG: $*" >&2
    echo "$*" >"$status" 2>/dev/null || :
}

if [ $# -lt 3 ] || [ "$3" != "--" ]; then
    say "error: usage: $PROG DEADLINE STOP_FILE -- STRESS-NG-ARGUMENTS..."
    exit 2
fi
deadline=$1
stop=$2
shift 3
case $deadline in
'' | *[!0-9]*)
    say "error: the deadline $deadline is not unix seconds"
    exit 2
    ;;
esac
left=$((deadline - $(date +%s)))
if [ "$left" -le 0 ]; then
    say "not stressed: the deadline had passed when the kubelet started the stressor"
    exit 0
fi
if [ "$left" -gt 86400 ]; then
    say "error: the deadline is more than 24 h away"
    exit 2
fi
if [ -e "$stop" ]; then
    say "not stressed: a clean-up container had already asked it to stop"
    exit 0
fi
if ! command -v stress-ng >/dev/null 2>&1; then
    say "error: stress-ng is not in this image (give the operator the stressor image: --stressor-image)"
    exit 4
fi

# stress-ng refuses to start without a writable temp path; the container's working directory is
# the image's root, which uid 65534 cannot write. Its output goes to the container's log at the end,
# and its last line into an error.
tmp=/tmp
[ -w "$tmp" ] || tmp=/dev/shm
output=$(mktemp "$tmp/$PROG.XXXXXX" 2>/dev/null) || output=/dev/null
cd "$tmp" || :
# stress-ng's own --timeout, and `timeout` behind it should stress-ng not end by itself.
timeout "$((left + 2))" stress-ng --timeout "${left}s" --temp-path "$tmp" "$@" >"$output" 2>&1 &
stressor=$!
trap 'kill -TERM "$stressor" 2>/dev/null' TERM INT HUP
(
    while [ ! -e "$stop" ]; do sleep 0.1; done
    kill -TERM "$stressor" 2>/dev/null
) &
watcher=$!
say "stressing until $deadline: stress-ng $*"
code=0
wait "$stressor" || code=$?
# A trapped signal interrupts wait before stress-ng is gone: wait for it again.
while kill -0 "$stressor" 2>/dev/null; do wait "$stressor" || code=$?; done
kill "$watcher" 2>/dev/null
cat "$output" >&2 2>/dev/null
last=$(tail -n 1 "$output" 2>/dev/null)
if [ -e "$stop" ]; then
    say "stopped: a clean-up container asked it to stop (stress-ng exit $code)"
    exit 0
fi
if [ "$(date +%s)" -ge "$deadline" ] || [ "$code" -eq 0 ]; then
    say "ended: the deadline passed (stress-ng exit $code)"
    exit 0
fi
say "error: stress-ng exited $code before its deadline${last:+: $last}"
exit 4
