#!/bin/sh
# chaosguard network injector: adds a tc netem impairment (delay, loss, corruption, duplication,
# reordering, a rate cap) or a partition (tc filters that drop) in the current network namespace,
# holds it until an absolute deadline, then removes it. It runs as PID 1 of an ephemeral container with NET_ADMIN in
# the target pod's network namespace, and is its own dead man's switch: the fault ends at the
# deadline even if the operator is gone. POSIX sh (dash, busybox ash); needs iproute2's tc (and ip,
# only to find the default-route device).
#
#   netem.sh inject [--delay 200ms [--jitter 20ms [--correlation 25]]] [--loss PCT [--loss-correlation PCT]]
#                   [--corrupt PCT] [--duplicate PCT] [--reorder PCT [--reorder-correlation PCT]]
#                   [--rate RATE] (--deadline-at UNIX_SECONDS | --deadline-seconds N)
#                   [--device DEV] [--cidr CIDR]... [--port PORT]... [--status-file PATH]
#   netem.sh inject --drop [--direction both|egress|ingress] --cidr CIDR... [--port PORT]...
#                   (--deadline-at UNIX_SECONDS | --deadline-seconds N) [--device DEV] [--status-file PATH]
#   netem.sh clear  [--device DEV] [--status-file PATH]
#
# At least one impairment is required; PCT is a percentage 0-100 (fractions allowed, e.g. 0.5);
# --reorder needs --delay (netem reorders by sending some packets without the delay); RATE is a
# number and a unit bit, kbit, mbit or gbit (e.g. 1mbit).
#
# Deadline. --deadline-at is absolute (seconds since the epoch, as `date +%s` prints them): the hold
# is computed from the clock when the fault goes in, so an injector that starts late (an image pull
# back-off, a slow node) still ends it at the same moment, and one that starts after the deadline
# injects nothing and exits 0 saying `not injected: ...`. At most 86400 s from now. The operator
# always passes --deadline-at; --deadline-seconds N (1 to 86400, relative to the script's start) is for
# a person at a shell.
#
# Shape. With no --cidr/--port: `root handle ca05: netem delay ...` (all egress of DEV).
# With --cidr and/or --port: `root handle ca05: prio bands 4` whose priomap never names band 4,
# netem `ca06:` on class ca05:4, and u32 filters steering only matching egress there: destination
# in one of the CIDRs and (if ports are given) TCP/UDP destination port one of the ports; both
# given = both must match. Everything else goes through bands 1-3 by the default priomap.
# Only egress is shaped (tc cannot delay ingress without an ifb device).
#
# Partition (--drop). Egress: the same root prio ca05:, whose u32 filters drop matching packets
# (action drop) instead of steering them to a netem band. Ingress: an ingress qdisc (handle ffff:,
# fixed by the kernel) whose u32 filters drop packets FROM the CIDRs (and source ports); its filters
# carry chaosguard's preferences 51717/51718 (0xca05/0xca06), which is how the script knows that an
# ingress qdisc is its own: one without them is never touched, and inject refuses to share it.
#
# Ownership. The root handle ca05: marks the qdisc as chaosguard's. Removal is always
# `tc qdisc del dev DEV root handle ca05:`, which the kernel refuses unless the root qdisc has
# exactly that handle, so a foreign root qdisc is never deleted, not even in a race.
#
# Exit codes:
#   0    inject: added, held, removed at the deadline; or not injected: the deadline had passed.
#        clear: removed, or nothing of ours there
#   2    bad arguments (the message names the flag), or the device does not exist
#   3    inject refused: the device's root qdisc (or, for a partition's ingress side, its ingress
#        qdisc) is someone else's (left alone)
#   4    tc failed: it refused to add the qdisc or filters (e.g. no sch_netem or sch_prio; nothing of
#        ours is left behind), or to show the root qdisc
#   5    removing our qdisc failed: it may still be in place (run `clear`)
#   129, 130, 143   ended early by SIGHUP, SIGINT, SIGTERM after removing the qdisc (128 + signal)
#
# Every step logs one line on stdout, `chaosguard-netem: <event>: <details>`; errors go to stderr.
# --status-file PATH also writes the last event line there (e.g. /dev/termination-log); without the
# flag, $CHAOSGUARD_STATUS_FILE names it (the operator sets it in its containers' environment, so
# that the kubelet reports the script's last word as the container's termination message).

# Unquoted expansions are deliberate word splitting (tc output, flag lists); globbing is off (set -f).
# shellcheck disable=SC2086
set -u
set -f

PROG=chaosguard-netem
HANDLE=ca05:
NETEM_HANDLE=ca06:
INGRESS_HANDLE=ffff:
# Filter preferences that mark an ingress qdisc as chaosguard's (IPv4, IPv6).
INGRESS_PREF_V4=51717
INGRESS_PREF_V6=51718
BAND_CLASS=ca05:4
# The default priomap of prio; with 4 bands, band 4 (class :4) is reachable only through filters.
PRIOMAP="1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1"
MAX_DEADLINE=86400

EX_USAGE=2
EX_BUSY=3
EX_APPLY=4
EX_REMOVE=5

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

log() {
	printf '%s: %s\n' "$PROG" "$*"
	if [ -n "$STATUS_FILE" ]; then
		printf '%s\n' "$*" >"$STATUS_FILE" 2>/dev/null || true
	fi
}

# die CODE MESSAGE: one line on stderr (and the status file), then exit CODE.
die() {
	code=$1
	shift
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	if [ -n "$STATUS_FILE" ]; then
		printf 'error: %s\n' "$*" >"$STATUS_FILE" 2>/dev/null || true
	fi
	exit "$code"
}

usage_error() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	printf 'usage: %s inject [--delay TIME [--jitter TIME [--correlation PCT]]] [--loss PCT [--loss-correlation PCT]] [--corrupt PCT] [--duplicate PCT] [--reorder PCT [--reorder-correlation PCT]] [--rate RATE] (--deadline-at UNIX_SECONDS | --deadline-seconds N) [--device DEV] [--cidr CIDR]... [--port PORT]... [--status-file PATH]\n' "$0" >&2
	printf '       %s inject --drop [--direction both|egress|ingress] --cidr CIDR... [--port PORT]... (--deadline-at UNIX_SECONDS | --deadline-seconds N) [--device DEV] [--status-file PATH]\n' "$0" >&2
	printf '       %s clear [--device DEV] [--status-file PATH]\n' "$0" >&2
	exit "$EX_USAGE"
}

# Joins a multi-line tc message into one line (word splitting turns newlines into spaces).
oneline() {
	set -- $1
	printf '%s' "$*"
}

# Joins words with ", ".
join_comma() {
	joined=
	for word in $1; do
		joined="${joined:+$joined, }$word"
	done
	printf '%s' "$joined"
}

# --- argument checks -----------------------------------------------------------------------

# TIME as tc reads it: a number with an optional fraction and a unit us, ms or s.
is_time() {
	case $1 in
	*us) n=${1%us} ;;
	*ms) n=${1%ms} ;;
	*s) n=${1%s} ;;
	*) return 1 ;;
	esac
	case $n in
	'' | .* | *. | *.*.* | *[!0-9.]*) return 1 ;;
	esac
	return 0
}

is_zero_time() {
	case $1 in
	*[1-9]*) return 1 ;;
	esac
	return 0
}

# is_uint VALUE MIN MAX
is_uint() {
	case $1 in
	'' | *[!0-9]*) return 1 ;;
	esac
	[ ${#1} -le 6 ] || return 1
	[ "$1" -ge "$2" ] && [ "$1" -le "$3" ]
}

# A percentage as netem reads it: 0 to 100, with an optional fraction (0.5, 30, 100).
is_percent() {
	case $1 in
	'' | .* | *. | *.*.* | *[!0-9.]*) return 1 ;;
	esac
	whole=${1%%.*}
	fraction=
	case $1 in
	*.*) fraction=${1#*.} ;;
	esac
	is_uint "$whole" 0 100 || return 1
	if [ "$whole" -eq 100 ]; then
		case $fraction in
		*[1-9]*) return 1 ;;
		esac
	fi
	return 0
}

# A rate as tc reads it, limited to bit units: a number with an optional fraction and bit, kbit,
# mbit or gbit.
is_rate() {
	case $1 in
	*gbit) n=${1%gbit} ;;
	*mbit) n=${1%mbit} ;;
	*kbit) n=${1%kbit} ;;
	*bit) n=${1%bit} ;;
	*) return 1 ;;
	esac
	case $n in
	'' | .* | *. | *.*.* | *[!0-9.]*) return 1 ;;
	esac
	is_zero_time "$n" && return 1
	return 0
}

is_ipv4() {
	case $1 in
	*[!0-9.]* | .* | *. | *..*) return 1 ;;
	esac
	old_ifs=$IFS
	IFS=.
	set -- $1
	IFS=$old_ifs
	[ $# -eq 4 ] || return 1
	for octet in "$@"; do
		is_uint "$octet" 0 255 || return 1
	done
	return 0
}

is_ipv6() {
	case $1 in
	*:*) ;;
	*) return 1 ;;
	esac
	case $1 in
	*[!0-9a-fA-F:]* | *:::*) return 1 ;;
	esac
	return 0
}

# Prints the address family (ip or ipv6) of a CIDR or bare address, or fails.
cidr_family() {
	address=${1%/*}
	prefix=
	case $1 in
	*/*) prefix=${1#*/} ;;
	esac
	if is_ipv4 "$address"; then
		[ -z "$prefix" ] || is_uint "$prefix" 0 32 || return 1
		echo ip
	elif is_ipv6 "$address"; then
		[ -z "$prefix" ] || is_uint "$prefix" 0 128 || return 1
		echo ipv6
	else
		return 1
	fi
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
				return
			fi
			shift
		done
	done
	DEV=eth0
	DEV_SOURCE="fallback: no default route"
}

# Sets ROOT_KIND and ROOT_HANDLE from the device's root qdisc; exits 2 if there is no such device.
read_root() {
	if ! out=$("$TC" qdisc show dev "$DEV" root 2>&1); then
		case $out in
		*"find device"*) die "$EX_USAGE" "--device $DEV ($DEV_SOURCE): $(oneline "$out")" ;;
		esac
		die "$EX_APPLY" "'$TC qdisc show dev $DEV root' failed: $(oneline "$out")"
	fi
	set -- $out
	ROOT_KIND=${2:-none}
	ROOT_HANDLE=${3:-none}
}

# Removes our root qdisc if it is there. REASON says why (deadline, signal TERM, clear).
# Returns 0 when ours was removed or was not there, 1 when removing it failed.
remove_root() {
	reason=$1
	if out=$("$TC" qdisc del dev "$DEV" root handle "$HANDLE" 2>&1); then
		log "removed: qdisc $HANDLE from $DEV (reason: $reason)"
		return 0
	fi
	if ! shown=$("$TC" qdisc show dev "$DEV" root 2>&1); then
		log "nothing to remove: device $DEV is gone ($(oneline "$shown")) (reason: $reason)"
		return 0
	fi
	set -- $shown
	if [ "${3:-}" = "$HANDLE" ]; then
		printf '%s: error: %s\n' "$PROG" "removing qdisc $HANDLE from $DEV failed: $(oneline "$out") (reason: $reason)" >&2
		log "error: qdisc $HANDLE is still on $DEV: removing it failed: $(oneline "$out")"
		return 1
	fi
	if [ "${3:-}" = "0:" ]; then
		log "nothing to remove: no chaosguard qdisc on $DEV, root qdisc is the default ${2:-?} (reason: $reason)"
	else
		log "nothing to remove: root qdisc on $DEV is ${2:-?} ${3:-?}, not chaosguard's $HANDLE; left alone (reason: $reason)"
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
		log "removed: qdisc $INGRESS_HANDLE (ingress, chaosguard's drop filters) from $DEV (reason: $1)"
		return 0
	fi
	printf '%s: error: %s\n' "$PROG" "removing the ingress qdisc from $DEV failed: $(oneline "$out") (reason: $1)" >&2
	log "error: chaosguard's ingress qdisc is still on $DEV: removing it failed: $(oneline "$out")"
	return 1
}

# Removes everything of ours on the device: the root qdisc ca05: and our ingress qdisc.
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
	name=$1
	code=$2
	trap '' TERM INT HUP
	# The hold's sleep is the only background job, so $! names it even when the signal landed
	# between `sleep &` and `SLEEP_PID=$!`.
	sleep_pid=${SLEEP_PID:-${!:-}}
	if [ -n "$sleep_pid" ]; then
		kill "$sleep_pid" 2>/dev/null || true
	fi
	remove_ours "signal $name" || exit "$EX_REMOVE"
	exit "$code"
}

cmd_inject() {
	DELAY=
	JITTER=
	CORRELATION=
	LOSS=
	LOSS_CORRELATION=
	CORRUPT=
	DUPLICATE=
	REORDER=
	REORDER_CORRELATION=
	RATE=
	DROP=
	DIRECTION=
	DEADLINE=
	DEADLINE_AT=
	CIDRS=
	PORTS=
	while [ $# -gt 0 ]; do
		case $1 in
		--*=*)
			flag=${1%%=*}
			value=${1#*=}
			shift
			set -- "$flag" "$value" "$@"
			continue
			;;
		--drop)
			DROP=1
			shift
			continue
			;;
		--delay)
			need_value "$@"
			is_time "$2" || usage_error "--delay $2: not a time; write a number and a unit us, ms or s, e.g. 200ms"
			is_zero_time "$2" && usage_error "--delay $2: must be greater than zero"
			DELAY=$2
			;;
		--jitter)
			need_value "$@"
			is_time "$2" || usage_error "--jitter $2: not a time; write a number and a unit us, ms or s, e.g. 20ms"
			JITTER=$2
			;;
		--correlation)
			need_value "$@"
			is_uint "$2" 0 100 || usage_error "--correlation $2: not a whole percentage from 0 to 100"
			CORRELATION=$2
			;;
		--loss | --loss-correlation | --corrupt | --duplicate | --reorder | --reorder-correlation)
			need_value "$@"
			is_percent "$2" || usage_error "$1 $2: not a percentage from 0 to 100, e.g. 30 or 0.5"
			case $1 in
			--loss) LOSS=$2 ;;
			--loss-correlation) LOSS_CORRELATION=$2 ;;
			--corrupt) CORRUPT=$2 ;;
			--duplicate) DUPLICATE=$2 ;;
			--reorder) REORDER=$2 ;;
			--reorder-correlation) REORDER_CORRELATION=$2 ;;
			esac
			;;
		--rate)
			need_value "$@"
			is_rate "$2" || usage_error "--rate $2: not a rate; write a number above 0 and a unit bit, kbit, mbit or gbit, e.g. 1mbit"
			RATE=$2
			;;
		--direction)
			need_value "$@"
			case $2 in
			both | egress | ingress) DIRECTION=$2 ;;
			*) usage_error "--direction $2: use both, egress or ingress" ;;
			esac
			;;
		--deadline-seconds)
			need_value "$@"
			is_uint "$2" 1 "$MAX_DEADLINE" || usage_error "--deadline-seconds $2: not a whole number of seconds from 1 to $MAX_DEADLINE"
			DEADLINE=$2
			;;
		--deadline-at)
			need_value "$@"
			case $2 in
			'' | 0* | *[!0-9]*) usage_error "--deadline-at $2: not a time in whole seconds since the epoch (date +%s)" ;;
			esac
			[ ${#2} -le 12 ] || usage_error "--deadline-at $2: not a time in whole seconds since the epoch (date +%s)"
			DEADLINE_AT=$2
			;;
		--device)
			need_value "$@"
			is_ifname "$2" || usage_error "--device $2: not an interface name"
			DEV=$2
			;;
		--cidr)
			need_value "$@"
			cidr_family "$2" >/dev/null || usage_error "--cidr $2: not an IPv4 or IPv6 address or CIDR, e.g. 10.1.0.0/16"
			CIDRS="$CIDRS $2"
			;;
		--port)
			need_value "$@"
			is_uint "$2" 1 65535 || usage_error "--port $2: not a port number from 1 to 65535"
			PORTS="$PORTS $2"
			;;
		--status-file)
			need_value "$@"
			STATUS_FILE=$2
			;;
		*) usage_error "inject: unknown argument $1" ;;
		esac
		shift 2
	done
	[ -n "$DEADLINE" ] || [ -n "$DEADLINE_AT" ] || usage_error "inject: --deadline-at (or --deadline-seconds) is required"
	[ -z "$DEADLINE" ] || [ -z "$DEADLINE_AT" ] || usage_error "inject: give --deadline-at or --deadline-seconds, not both"
	START=$(date +%s) || die "$EX_USAGE" "inject: could not read the clock (date +%s)"
	if [ -n "$DEADLINE" ]; then
		DEADLINE_AT=$((START + DEADLINE))
	elif [ "$((DEADLINE_AT - START))" -gt "$MAX_DEADLINE" ]; then
		usage_error "--deadline-at $DEADLINE_AT: $((DEADLINE_AT - START))s from now, more than $MAX_DEADLINE; give a deadline at most $MAX_DEADLINE seconds away"
	fi
	if [ -n "$JITTER" ] && is_zero_time "$JITTER"; then
		JITTER=
	fi
	if [ -n "$CORRELATION" ] && [ -z "$JITTER" ]; then
		usage_error "--correlation needs a non-zero --jitter: it correlates the random jitter of successive packets"
	fi
	[ -z "$LOSS_CORRELATION" ] || [ -n "$LOSS" ] || usage_error "--loss-correlation needs --loss"
	[ -z "$REORDER_CORRELATION" ] || [ -n "$REORDER" ] || usage_error "--reorder-correlation needs --reorder"
	[ -z "$REORDER" ] || [ -n "$DELAY" ] || usage_error "--reorder needs --delay: netem reorders by sending some packets without the delay"
	IMPAIRMENTS="$DELAY$LOSS$CORRUPT$DUPLICATE$REORDER$RATE"
	if [ -n "$DROP" ]; then
		[ -z "$IMPAIRMENTS" ] || usage_error "--drop partitions: it takes no --delay, --loss, --corrupt, --duplicate, --reorder or --rate"
		[ -n "$CIDRS" ] || usage_error "--drop needs at least one --cidr: a partition never cuts a pod off from every address"
		DIRECTION=${DIRECTION:-both}
	else
		[ -n "$IMPAIRMENTS" ] || usage_error "inject: --delay is required, or another impairment (--loss, --corrupt, --duplicate, --reorder, --rate), or --drop"
		[ -z "$DIRECTION" ] || usage_error "--direction applies to --drop only (netem shapes egress)"
		DIRECTION=egress
	fi

	NETEM=netem
	[ -z "$DELAY" ] || NETEM="$NETEM delay $DELAY${JITTER:+ $JITTER}${CORRELATION:+ $CORRELATION%}"
	[ -z "$REORDER" ] || NETEM="$NETEM reorder $REORDER%${REORDER_CORRELATION:+ $REORDER_CORRELATION%}"
	[ -z "$LOSS" ] || NETEM="$NETEM loss random $LOSS%${LOSS_CORRELATION:+ $LOSS_CORRELATION%}"
	[ -z "$CORRUPT" ] || NETEM="$NETEM corrupt $CORRUPT%"
	[ -z "$DUPLICATE" ] || NETEM="$NETEM duplicate $DUPLICATE%"
	[ -z "$RATE" ] || NETEM="$NETEM rate $RATE"
	EGRESS=
	INGRESS=
	case $DIRECTION in
	both) EGRESS=1 INGRESS=1 ;;
	egress) EGRESS=1 ;;
	ingress) INGRESS=1 ;;
	esac

	# Checked before the device is touched: a fault must never go in after its deadline.
	NOW=$(date +%s) || die "$EX_USAGE" "inject: could not read the clock (date +%s)"
	if [ "$NOW" -ge "$DEADLINE_AT" ]; then
		log "not injected: the deadline $DEADLINE_AT passed $((NOW - DEADLINE_AT))s ago (started late); nothing added"
		exit 0
	fi

	pick_device
	read_root
	case $ROOT_HANDLE in
	"$HANDLE")
		log "replacing: $DEV already has chaosguard's qdisc $HANDLE ($ROOT_KIND); removing it to apply this one"
		out=$("$TC" qdisc del dev "$DEV" root handle "$HANDLE" 2>&1) ||
			die "$EX_REMOVE" "could not remove the existing qdisc $HANDLE from $DEV: $(oneline "$out")"
		;;
	0:) ;;
	*)
		[ -z "$EGRESS" ] ||
			die "$EX_BUSY" "device $DEV already has a root qdisc $ROOT_KIND $ROOT_HANDLE that is not chaosguard's; refusing to replace it (it is left alone)"
		;;
	esac
	read_ingress
	if [ -n "$INGRESS_KIND" ]; then
		if [ "$INGRESS_KIND" = ingress ] && ingress_is_ours; then
			log "replacing: $DEV already has chaosguard's ingress qdisc; removing it to apply this one"
			out=$("$TC" qdisc del dev "$DEV" ingress 2>&1) ||
				die "$EX_REMOVE" "could not remove chaosguard's ingress qdisc from $DEV: $(oneline "$out")"
		elif [ -n "$INGRESS" ]; then
			die "$EX_BUSY" "device $DEV already has an $INGRESS_KIND qdisc that is not chaosguard's; refusing to share it (it is left alone)"
		fi
	fi

	trap 'on_signal TERM 143' TERM
	trap 'on_signal INT 130' INT
	trap 'on_signal HUP 129' HUP

	if [ -n "$DROP" ]; then
		batch=$(build_drop_batch) || exit "$EX_USAGE"
		if ! add_out=$(printf '%s\n' "$batch" | "$TC" -batch - 2>&1); then
			remove_ours "apply failed" >/dev/null
			die "$EX_APPLY" "adding the partition's drop filters on $DEV failed: $(oneline "$add_out")"
		fi
		log "added: partition on $DEV (device from $DEV_SOURCE), dropping $(describe_direction) traffic of$(describe_match); other traffic unaffected"
	elif [ -z "$CIDRS" ] && [ -z "$PORTS" ]; then
		if ! add_out=$("$TC" qdisc add dev "$DEV" root handle "$HANDLE" $NETEM 2>&1); then
			remove_ours "apply failed" >/dev/null
			die "$EX_APPLY" "adding '$NETEM' on $DEV failed: $(oneline "$add_out")"
		fi
		log "added: root qdisc $HANDLE $NETEM on $DEV (device from $DEV_SOURCE), $(describe_effect) all egress traffic"
	else
		batch=$(build_batch) || exit "$EX_USAGE"
		if ! add_out=$(printf '%s\n' "$batch" | "$TC" -batch - 2>&1); then
			remove_ours "apply failed" >/dev/null
			die "$EX_APPLY" "adding prio + '$NETEM' with filters on $DEV failed: $(oneline "$add_out")"
		fi
		log "added: root qdisc $HANDLE prio with $NETEM on band $BAND_CLASS on $DEV (device from $DEV_SOURCE), $(describe_effect) only egress to$(describe_match); other traffic unaffected"
	fi

	NOW=$(date +%s) || NOW=$DEADLINE_AT
	HOLD=$((DEADLINE_AT - NOW))
	[ "$HOLD" -ge 0 ] || HOLD=0
	log "holding: until the deadline $DEADLINE_AT, in ${HOLD}s; SIGTERM, SIGINT or SIGHUP removes it at once"
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
	exit 0
}

# "delaying" for a pure delay (what the latency fault has always said), else "impairing".
describe_effect() {
	if [ "$IMPAIRMENTS" = "$DELAY" ]; then
		printf 'delaying'
	else
		printf 'impairing'
	fi
}

describe_direction() {
	case $DIRECTION in
	both) printf 'egress and ingress' ;;
	*) printf '%s' "$DIRECTION" ;;
	esac
}

describe_match() {
	text=
	if [ -n "$CIDRS" ]; then
		text=" destinations $(join_comma "$CIDRS")"
	else
		text=" any destination"
	fi
	if [ -n "$PORTS" ]; then
		text="$text, TCP/UDP ports $(join_comma "$PORTS")"
	fi
	printf '%s' "$text"
}

# Prints the `tc -batch` lines for the prio shape: the qdiscs, then the u32 filters that steer
# matching egress to the netem band.
build_batch() {
	echo "qdisc add dev $DEV root handle $HANDLE prio bands 4 priomap $PRIOMAP"
	echo "qdisc add dev $DEV parent $BAND_CLASS handle $NETEM_HANDLE $NETEM"
	filter_lines "$HANDLE" 1 2 dst "flowid $BAND_CLASS"
}

# Prints the `tc -batch` lines of a partition: egress filters on the root prio that drop packets TO
# the CIDRs (and ports), and ingress filters that drop packets FROM them (and their source ports).
build_drop_batch() {
	if [ -n "$EGRESS" ]; then
		echo "qdisc add dev $DEV root handle $HANDLE prio bands 4 priomap $PRIOMAP"
		filter_lines "$HANDLE" 1 2 dst "action drop" || return 1
	fi
	if [ -n "$INGRESS" ]; then
		echo "qdisc add dev $DEV handle $INGRESS_HANDLE ingress"
		filter_lines "$INGRESS_HANDLE" "$INGRESS_PREF_V4" "$INGRESS_PREF_V6" src "action drop" || return 1
	fi
}

# filter_lines PARENT PREF_V4 PREF_V6 SIDE ACTION: one u32 filter per (CIDR, port, protocol) that
# matches the CIDR as the SIDE (dst or src) address and the port as the SIDE port. IPv4 and IPv6
# filters need distinct preferences (a filter preference holds one protocol). Port matches need a
# 20-byte IPv4 header and a first fragment, so that bytes 20-23 are the ports; other packets do
# not match (a delay fails safe; a partition given no ports drops all of a CIDR's packets).
filter_lines() {
	parent=$1
	side=$4
	action=$5
	port_key=dport
	[ "$side" = dst ] || port_key=sport
	destinations=$CIDRS
	[ -n "$destinations" ] || destinations="any-ip any-ipv6"
	for destination in $destinations; do
		case $destination in
		any-ip)
			family=ip
			address_match=
			;;
		any-ipv6)
			family=ipv6
			address_match=
			;;
		*)
			family=$(cidr_family "$destination") || return 1
			if [ "$family" = ip ]; then
				address_match="match ip $side $destination"
			else
				address_match="match ip6 $side $destination"
			fi
			;;
		esac
		if [ "$family" = ip ]; then
			pref=$2
		else
			pref=$3
		fi
		prefix="filter add dev $DEV parent $parent protocol $family pref $pref u32"
		if [ -z "$PORTS" ]; then
			echo "$prefix $address_match $action"
			continue
		fi
		for port in $PORTS; do
			for proto in 6 17; do
				if [ "$family" = ip ]; then
					echo "$prefix $address_match match u8 0x05 0x0f at 0 match u16 0 0x1fff at 6 match ip protocol $proto 0xff match ip $port_key $port 0xffff $action"
				else
					echo "$prefix $address_match match ip6 protocol $proto 0xff match ip6 $port_key $port 0xffff $action"
				fi
			done
		done
	done
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
	if out=$("$TC" qdisc del dev "$DEV" root handle "$HANDLE" 2>&1); then
		log "removed: qdisc $HANDLE from $DEV (reason: clear)"
	else
		read_root
		case $ROOT_HANDLE in
		"$HANDLE")
			remove_our_ingress clear || true
			die "$EX_REMOVE" "removing qdisc $HANDLE from $DEV failed: $(oneline "$out")"
			;;
		0:) log "nothing to clear: no chaosguard qdisc on $DEV, root qdisc is the default $ROOT_KIND" ;;
		*) log "nothing to clear: root qdisc on $DEV is $ROOT_KIND $ROOT_HANDLE, not chaosguard's $HANDLE; left alone" ;;
		esac
	fi
	# A partition's ingress side (an injector killed before its deadline leaves both).
	remove_our_ingress clear || exit "$EX_REMOVE"
	exit 0
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
