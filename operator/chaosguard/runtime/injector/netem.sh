#!/bin/sh
# chaosguard network injector: holds a network fault in the current network namespace until an
# absolute deadline, then removes it. It runs as PID 1 of an ephemeral container with NET_ADMIN in
# the target pod's network namespace, and is its own dead man's switch: the fault ends at the
# deadline even if the operator is gone. POSIX sh (dash, busybox ash: nothing to load or start in a
# pod near its memory limit); needs iproute2's tc (and ip, only to find the default-route device).
#
#   netem.sh inject --deadline-at UNIX_SECONDS --fault WORDS --effect WORDS --tc LINE [--tc LINE]...
#                   [--device DEV] [--status-file PATH]
#   netem.sh clear  [--device DEV] [--status-file PATH]
#
# The operator decides the fault (chaosguard.decisions.netem renders and checks every `tc -batch`
# line); this script only holds it:
# - refuses a passed deadline: one that starts after it (an image pull back-off, a slow node)
#   injects nothing and exits 0 saying `not injected: ...`; at most MAX_DEADLINE seconds from now;
# - accepts only lines that add under chaosguard's handles (the contract's LINE_* shapes) and
#   inserts `dev DEV` into each; DEV is --device, else the default route's interface, else eth0;
# - checks ownership first: a root qdisc (when the batch adds one) or an ingress qdisc (when it adds
#   one) that is not chaosguard's is left alone and refused (exit EX_BUSY); chaosguard's own are
#   replaced. The root handle ca05: marks the root qdisc as chaosguard's, and an ingress qdisc is
#   chaosguard's when its filters carry the preferences 51717/51718;
# - applies the batch in one `tc -batch` (on failure it removes whatever of it went in), holds it
#   until the deadline, and removes it; SIGTERM, SIGINT or SIGHUP removes it at once.
# Removal is always `tc qdisc del dev DEV root handle ca05:`, which the kernel refuses unless the
# root qdisc has exactly that handle (a foreign one is never deleted, not even in a race), and of
# the ingress qdisc only when it carries chaosguard's preferences. `clear` does that removal alone.
#
# Exit codes and the first words of every output line come from the contract block below. Every
# step logs one line on stdout, `chaosguard-netem: <said>: <details>`; errors go to stderr.
# --status-file PATH also writes the last line there (e.g. /dev/termination-log); without the flag,
# $CHAOSGUARD_STATUS_FILE names it (the operator sets it in its containers' environment, so that
# the kubelet reports the script's last word as the container's termination message).

# Unquoted expansions are deliberate word splitting (tc output, the batch's lines); globbing is off.
# shellcheck disable=SC2086
set -u
set -f

# --- contract: generated from chaosguard.decisions.netem_contract.contract_block(); do not edit ---
PROG='chaosguard-netem'
EX_DONE=0
EX_USAGE=2
EX_BUSY=3
EX_APPLY=4
EX_REMOVE=5
EX_SIGHUP=129
EX_SIGINT=130
EX_SIGTERM=143
SAID_NOT_INJECTED='not injected'
SAID_REPLACING='replacing'
SAID_ADDED='added'
SAID_HOLDING='holding'
SAID_REMOVED='removed'
SAID_NOTHING_TO_REMOVE='nothing to remove'
SAID_NOTHING_TO_CLEAR='nothing to clear'
SAID_ERROR='error'
ROOT_HANDLE='ca05:'
INGRESS_HANDLE='ffff:'
INGRESS_PREF_V4=51717
INGRESS_PREF_V6=51718
MAX_DEADLINE=86400
LINE_ROOT_QDISC='qdisc add root handle ca05: '
LINE_NETEM_BAND='qdisc add parent ca05:4 handle ca06: netem '
LINE_INGRESS_QDISC='qdisc add handle ffff: ingress'
LINE_EGRESS_FILTER='filter add parent ca05: protocol '
LINE_INGRESS_FILTER_V4='filter add parent ffff: protocol ip pref 51717 u32 '
LINE_INGRESS_FILTER_V6='filter add parent ffff: protocol ipv6 pref 51718 u32 '
# --- end of contract ---

NL='
'

# Resolves a tool to its path on PATH, so that a shell preferring its own applets (busybox sh
# built with FEATURE_PREFER_APPLETS) still runs iproute2's tc rather than busybox's reduced tc.
find_tool() {
	found=$1
	old_ifs=$IFS
	IFS=:
	for dir in $PATH; do
		if [ -f "$dir/$1" ] && [ -x "$dir/$1" ]; then
			found=$dir/$1
			break
		fi
	done
	IFS=$old_ifs
}
find_tool tc
TC=$found
find_tool ip
IP=$found

STATUS_FILE=${CHAOSGUARD_STATUS_FILE:-}
DEV=
DEV_SOURCE=
SLEEP_PID=

# log SAID DETAILS: one line on stdout (and the status file).
log() {
	printf '%s: %s: %s\n' "$PROG" "$1" "$2"
	if [ -n "$STATUS_FILE" ]; then
		printf '%s: %s\n' "$1" "$2" >"$STATUS_FILE" 2>/dev/null || true
	fi
}

# die CODE MESSAGE: one line on stderr (and the status file), then exit CODE.
die() {
	printf '%s: %s: %s\n' "$PROG" "$SAID_ERROR" "$2" >&2
	if [ -n "$STATUS_FILE" ]; then
		printf '%s: %s\n' "$SAID_ERROR" "$2" >"$STATUS_FILE" 2>/dev/null || true
	fi
	exit "$1"
}

usage_error() {
	printf '%s: %s: %s\n' "$PROG" "$SAID_ERROR" "$*" >&2
	printf 'usage: %s inject --deadline-at UNIX_SECONDS --fault WORDS --effect WORDS --tc LINE [--tc LINE]... [--device DEV] [--status-file PATH]\n' "$0" >&2
	printf '       %s clear [--device DEV] [--status-file PATH]\n' "$0" >&2
	exit "$EX_USAGE"
}

# Joins a multi-line tc message into one line (word splitting turns newlines into spaces).
oneline() {
	set -- $1
	printf '%s' "$*"
}

is_ifname() {
	case $1 in
	'' | *[!A-Za-z0-9_.@-]*) return 1 ;;
	esac
	[ ${#1} -le 15 ]
}

# need_value FLAG "$@": the flag must be followed by a value.
need_value() {
	[ $# -ge 2 ] || usage_error "$1 needs a value"
	case $2 in
	--*) usage_error "$1 needs a value, got the flag $2" ;;
	esac
}

# A word that goes into a tc -batch line or an output line as it is: one line, nothing tc -batch
# reads specially (comments, quotes, escapes).
is_plain() {
	case $1 in
	'' | *"$NL"* | *[\#\'\"\\]*) return 1 ;;
	esac
	return 0
}

# add_line LINE: appends one of the contract's shapes to the batch; EGRESS/INGRESS say whether it
# adds a root or an ingress qdisc (what the ownership checks look at).
add_line() {
	is_plain "$1" || usage_error "--tc $1: one tc command per --tc, without #, quotes or backslashes"
	case " $1 " in
	*" dev "*) usage_error "--tc $1: names a device; the injector adds dev DEV itself" ;;
	esac
	case $1 in
	"$LINE_ROOT_QDISC"?*) EGRESS=1 ;;
	"$LINE_INGRESS_QDISC") INGRESS=1 ;;
	"$LINE_NETEM_BAND"?* | "$LINE_EGRESS_FILTER"?* | "$LINE_INGRESS_FILTER_V4"?* | "$LINE_INGRESS_FILTER_V6"?*) ;;
	*) usage_error "--tc $1: not a line chaosguard adds (a qdisc or filter under its handles $ROOT_HANDLE and $INGRESS_HANDLE)" ;;
	esac
	BATCH=$BATCH$1$NL
}

# --- qdisc inspection ------------------------------------------------------------------------

# The interface of the default route (IPv4, then IPv6), else eth0.
pick_device() {
	if [ -n "$DEV" ]; then
		DEV_SOURCE="--device"
		return
	fi
	for family in -4 -6; do
		route=$("$IP" "$family" route show default 2>/dev/null) || continue
		set -- $route
		while [ $# -ge 2 ]; do
			if [ "$1" = dev ]; then
				DEV=$2
				DEV_SOURCE="the default route"
				is_plain "$DEV" || die "$EX_USAGE" "the default route's device $DEV cannot be named in a tc batch; give --device"
				return
			fi
			shift
		done
	done
	DEV=eth0
	DEV_SOURCE="fallback: no default route"
}

# Sets ROOT_KIND and ROOT_ID from the device's root qdisc; exits EX_USAGE if there is no such device.
read_root() {
	if ! out=$("$TC" qdisc show dev "$DEV" root 2>&1); then
		case $out in
		*"find device"*) die "$EX_USAGE" "--device $DEV ($DEV_SOURCE): $(oneline "$out")" ;;
		esac
		die "$EX_APPLY" "'$TC qdisc show dev $DEV root' failed: $(oneline "$out")"
	fi
	set -- $out
	ROOT_KIND=${2:-none}
	ROOT_ID=${3:-none}
}

# Removes our root qdisc if it is there. REASON says why (deadline, signal TERM, clear).
# Returns 0 when ours was removed or was not there, 1 when removing it failed.
remove_root() {
	reason=$1
	if out=$("$TC" qdisc del dev "$DEV" root handle "$ROOT_HANDLE" 2>&1); then
		log "$SAID_REMOVED" "qdisc $ROOT_HANDLE from $DEV (reason: $reason)"
		return 0
	fi
	if ! shown=$("$TC" qdisc show dev "$DEV" root 2>&1); then
		log "$SAID_NOTHING_TO_REMOVE" "device $DEV is gone ($(oneline "$shown")) (reason: $reason)"
		return 0
	fi
	set -- $shown
	if [ "${3:-}" = "$ROOT_HANDLE" ]; then
		printf '%s: %s: %s\n' "$PROG" "$SAID_ERROR" "removing qdisc $ROOT_HANDLE from $DEV failed: $(oneline "$out") (reason: $reason)" >&2
		log "$SAID_ERROR" "qdisc $ROOT_HANDLE is still on $DEV: removing it failed: $(oneline "$out")"
		return 1
	fi
	if [ "${3:-}" = "0:" ]; then
		log "$SAID_NOTHING_TO_REMOVE" "no chaosguard qdisc on $DEV, root qdisc is the default ${2:-?} (reason: $reason)"
	else
		log "$SAID_NOTHING_TO_REMOVE" "root qdisc on $DEV is ${2:-?} ${3:-?}, not chaosguard's $ROOT_HANDLE; left alone (reason: $reason)"
	fi
	return 0
}

# Sets INGRESS_KIND to the kind (ingress or clsact) of the device's ingress-side qdisc, or empty.
read_ingress() {
	INGRESS_KIND=
	shown=$("$TC" qdisc show dev "$DEV" 2>/dev/null) || return 0
	while read -r _ kind handle _; do
		if [ "$handle" = "$INGRESS_HANDLE" ]; then
			INGRESS_KIND=$kind
		fi
	done <<EOF
$shown
EOF
}

# True when the ingress qdisc carries chaosguard's filter preferences, i.e. this script added it.
ingress_is_ours() {
	filters=$("$TC" filter show dev "$DEV" parent "$INGRESS_HANDLE" 2>/dev/null) || return 1
	case $filters in
	*"pref $INGRESS_PREF_V4 "* | *"pref $INGRESS_PREF_V6 "*) return 0 ;;
	esac
	return 1
}

# Removes our ingress qdisc (a partition's ingress side) if it is there; silent when it is not.
remove_our_ingress() {
	read_ingress
	[ "$INGRESS_KIND" = ingress ] && ingress_is_ours || return 0
	if out=$("$TC" qdisc del dev "$DEV" ingress 2>&1); then
		log "$SAID_REMOVED" "qdisc $INGRESS_HANDLE (ingress, chaosguard's drop filters) from $DEV (reason: $1)"
		return 0
	fi
	printf '%s: %s: %s\n' "$PROG" "$SAID_ERROR" "removing the ingress qdisc from $DEV failed: $(oneline "$out") (reason: $1)" >&2
	log "$SAID_ERROR" "chaosguard's ingress qdisc is still on $DEV: removing it failed: $(oneline "$out")"
	return 1
}

# Removes everything of ours on the device: the root qdisc and our ingress qdisc.
# Returns 0 when nothing of ours is left, 1 when a removal failed.
remove_ours() {
	removed_all=0
	remove_root "$1" || removed_all=1
	remove_our_ingress "$1" || removed_all=1
	return "$removed_all"
}

# --- inject ----------------------------------------------------------------------------------

# Runs from the traps set in cmd_inject.
# shellcheck disable=SC2317
on_signal() {
	trap '' TERM INT HUP
	# The hold's sleep is the only background job, so $! names it even when the signal landed
	# between `sleep &` and `SLEEP_PID=$!`.
	sleep_pid=${SLEEP_PID:-${!:-}}
	if [ -n "$sleep_pid" ]; then
		kill "$sleep_pid" 2>/dev/null || true
	fi
	remove_ours "signal $1" || exit "$EX_REMOVE"
	exit "$2"
}

# The batch with `dev DEV` after each line's first two words (`qdisc add`, `filter add`).
batch_for_device() {
	old_ifs=$IFS
	IFS=$NL
	for line in $BATCH; do
		rest=${line#* }
		printf '%s %s dev %s %s\n' "${line%% *}" "${rest%% *}" "$DEV" "${rest#* }"
	done
	IFS=$old_ifs
}

cmd_inject() {
	DEADLINE_AT=
	FAULT=
	EFFECT=
	BATCH=
	EGRESS=
	INGRESS=
	while [ $# -gt 0 ]; do
		case $1 in
		--*=*)
			flag=${1%%=*}
			value=${1#*=}
			shift
			set -- "$flag" "$value" "$@"
			continue
			;;
		--deadline-at)
			need_value "$@"
			case $2 in
			'' | 0* | *[!0-9]*) usage_error "--deadline-at $2: not a time in whole seconds since the epoch (date +%s)" ;;
			esac
			[ ${#2} -le 12 ] || usage_error "--deadline-at $2: not a time in whole seconds since the epoch (date +%s)"
			DEADLINE_AT=$2
			;;
		--fault | --effect)
			need_value "$@"
			is_plain "$2" || usage_error "$1 $2: one line of words, without #, quotes or backslashes"
			case $1 in
			--fault) FAULT=$2 ;;
			--effect) EFFECT=$2 ;;
			esac
			;;
		--tc)
			need_value "$@"
			add_line "$2"
			;;
		--device)
			need_value "$@"
			is_ifname "$2" || usage_error "--device $2: not an interface name"
			DEV=$2
			;;
		--status-file)
			need_value "$@"
			STATUS_FILE=$2
			;;
		*) usage_error "inject: unknown argument $1" ;;
		esac
		shift 2
	done
	[ -n "$DEADLINE_AT" ] || usage_error "inject: --deadline-at is required"
	[ -n "$BATCH" ] || usage_error "inject: at least one --tc is required"
	[ -n "$FAULT" ] || usage_error "inject: --fault is required (what is added, in words)"
	[ -n "$EFFECT" ] || usage_error "inject: --effect is required (what it does, in words)"

	# Checked before the device is touched: a fault must never go in after its deadline.
	NOW=$(date +%s) || die "$EX_USAGE" "inject: could not read the clock (date +%s)"
	if [ "$((DEADLINE_AT - NOW))" -gt "$MAX_DEADLINE" ]; then
		usage_error "--deadline-at $DEADLINE_AT: $((DEADLINE_AT - NOW))s from now, more than $MAX_DEADLINE; give a deadline at most $MAX_DEADLINE seconds away"
	fi
	if [ "$NOW" -ge "$DEADLINE_AT" ]; then
		log "$SAID_NOT_INJECTED" "the deadline $DEADLINE_AT passed $((NOW - DEADLINE_AT))s ago (started late); nothing added"
		exit "$EX_DONE"
	fi

	pick_device
	read_root
	case $ROOT_ID in
	"$ROOT_HANDLE")
		log "$SAID_REPLACING" "$DEV already has chaosguard's qdisc $ROOT_HANDLE ($ROOT_KIND); removing it to apply this one"
		out=$("$TC" qdisc del dev "$DEV" root handle "$ROOT_HANDLE" 2>&1) ||
			die "$EX_REMOVE" "could not remove the existing qdisc $ROOT_HANDLE from $DEV: $(oneline "$out")"
		;;
	0:) ;;
	*)
		[ -z "$EGRESS" ] ||
			die "$EX_BUSY" "device $DEV already has a root qdisc $ROOT_KIND $ROOT_ID that is not chaosguard's; refusing to replace it (it is left alone)"
		;;
	esac
	read_ingress
	if [ -n "$INGRESS_KIND" ]; then
		if [ "$INGRESS_KIND" = ingress ] && ingress_is_ours; then
			log "$SAID_REPLACING" "$DEV already has chaosguard's ingress qdisc; removing it to apply this one"
			out=$("$TC" qdisc del dev "$DEV" ingress 2>&1) ||
				die "$EX_REMOVE" "could not remove chaosguard's ingress qdisc from $DEV: $(oneline "$out")"
		elif [ -n "$INGRESS" ]; then
			die "$EX_BUSY" "device $DEV already has an $INGRESS_KIND qdisc that is not chaosguard's; refusing to share it (it is left alone)"
		fi
	fi

	trap 'on_signal TERM "$EX_SIGTERM"' TERM
	trap 'on_signal INT "$EX_SIGINT"' INT
	trap 'on_signal HUP "$EX_SIGHUP"' HUP

	if ! add_out=$(batch_for_device | "$TC" -batch - 2>&1); then
		remove_ours "apply failed" >/dev/null
		die "$EX_APPLY" "adding $FAULT on $DEV failed: $(oneline "$add_out")"
	fi
	log "$SAID_ADDED" "$FAULT on $DEV (device from $DEV_SOURCE), $EFFECT"

	NOW=$(date +%s) || NOW=$DEADLINE_AT
	HOLD=$((DEADLINE_AT - NOW))
	[ "$HOLD" -ge 0 ] || HOLD=0
	log "$SAID_HOLDING" "until the deadline $DEADLINE_AT, in ${HOLD}s; SIGTERM, SIGINT or SIGHUP removes it at once"
	sleep "$HOLD" &
	SLEEP_PID=$!
	held=0
	wait "$SLEEP_PID" || held=$?
	# A trapped signal never gets here (its trap exits). Finish the removal even if one comes now:
	# removing is what it would ask for.
	trap '' TERM INT HUP
	SLEEP_PID=
	if [ "$held" -eq 0 ]; then
		remove_ours deadline || exit "$EX_REMOVE"
	else
		remove_ours "hold ended early: its sleep exited with status $held" || exit "$EX_REMOVE"
	fi
	exit "$EX_DONE"
}

# --- clear -----------------------------------------------------------------------------------

cmd_clear() {
	while [ $# -gt 0 ]; do
		case $1 in
		--*=*)
			flag=${1%%=*}
			value=${1#*=}
			shift
			set -- "$flag" "$value" "$@"
			continue
			;;
		--device)
			need_value "$@"
			is_ifname "$2" || usage_error "--device $2: not an interface name"
			DEV=$2
			;;
		--status-file)
			need_value "$@"
			STATUS_FILE=$2
			;;
		*) usage_error "clear: unknown argument $1" ;;
		esac
		shift 2
	done
	pick_device
	if out=$("$TC" qdisc del dev "$DEV" root handle "$ROOT_HANDLE" 2>&1); then
		log "$SAID_REMOVED" "qdisc $ROOT_HANDLE from $DEV (reason: clear)"
	else
		read_root
		case $ROOT_ID in
		"$ROOT_HANDLE")
			remove_our_ingress clear || true
			die "$EX_REMOVE" "removing qdisc $ROOT_HANDLE from $DEV failed: $(oneline "$out")"
			;;
		0:) log "$SAID_NOTHING_TO_CLEAR" "no chaosguard qdisc on $DEV, root qdisc is the default $ROOT_KIND" ;;
		*) log "$SAID_NOTHING_TO_CLEAR" "root qdisc on $DEV is $ROOT_KIND $ROOT_ID, not chaosguard's $ROOT_HANDLE; left alone" ;;
		esac
	fi
	# A partition's ingress side (an injector killed before its deadline leaves both).
	remove_our_ingress clear || exit "$EX_REMOVE"
	exit "$EX_DONE"
}

[ $# -ge 1 ] || usage_error "missing command: inject or clear"
command=$1
shift
case $command in
inject) cmd_inject "$@" ;;
clear) cmd_clear "$@" ;;
-h | --help) usage_error "help requested" ;;
*) usage_error "unknown command $command: use inject or clear" ;;
esac
