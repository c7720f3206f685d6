#!/usr/bin/env bash
# Steering answers per tracker core with playback tokens on, against tokens off (issue 28's
# target: on >= 0.8x off), measured as the issue says: `wrk -t1 -c32 -d10s` against
# `/steer?title=ID` on a tracker like the demo's, with the release binary.
#
#   tools/bench-steer.sh [BIN] [ROUNDS]     (BIN: target/release/fillmesh; ROUNDS: 3)
#   env: DURATION (10s), CONNS (32), APPLIANCES (3), CLIENT_IP (127.1.0.42),
#        PERF=DIR: `perf record -g` each tracker over its first run, into DIR/{on,off}.perf.data
#
# Two meshes run side by side, each a tracker, an origin holding one published title (4 MiB)
# and APPLIANCES appliances that filled it, all on 127.0.0.x: one tracker with tokens on (the
# default: one Ed25519 token signed per answer, in every target's URL), one with --no-tokens.
# wrk then asks one tracker and the other in turn (ABAB, ROUNDS times each), first without
# client_ip (the token is not bound), then with client_ip=CLIENT_IP (the token is bound to
# its /24: --token-bind given). For each run: answers/s (wrk's Requests/sec), the tracker's
# CPU seconds over the run (utime+stime from /proc/PID/stat), and answers per CPU-second,
# the figure that does not move with whatever else the machine runs. Prints each run, the
# medians, and the ratio on/off of the medians and the median of the rounds' ratios.
#
# Needs wrk, curl and jq. Builds nothing; starts and stops its own processes (a trap stops
# them and removes its files on any exit).
set -euo pipefail

BIN=${1:-target/release/fillmesh}
ROUNDS=${2:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
APPLIANCES=${APPLIANCES:-3}
CLIENT_IP=${CLIENT_IP:-127.1.0.42}
BIN=$(realpath "$BIN")
for tool in wrk curl jq; do
    command -v "$tool" >/dev/null || { echo "bench-steer: $tool is needed" >&2; exit 2; }
done
[[ -x $BIN ]] || { echo "bench-steer: no binary at $BIN" >&2; exit 2; }

WORK=$(mktemp -d /tmp/bench-steer.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts `fillmesh ARGS...` with its output in $WORK/NAME.{out,log}; waits for its ready line
# and sets READY to it and PID to its process.
start() {
    local name=$1
    shift
    : >"$WORK/$name.out"
    FILLMESH_LOG=${FILLMESH_LOG:-warn} "$BIN" "$@" >"$WORK/$name.out" 2>"$WORK/$name.log" &
    PID=$!
    PIDS+=("$PID")
    local i
    for i in $(seq 300); do
        if [[ $(wc -l <"$WORK/$name.out") -ge 1 ]]; then
            READY=$(head -n1 "$WORK/$name.out")
            return 0
        fi
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench-steer: $name did not start; its log:" >&2
    tail -n 20 "$WORK/$name.log" >&2
    exit 1
}

# The title, the same bytes for both meshes.
head -c $((4 << 20)) /dev/urandom >"$WORK/title.bin"

# mesh NAME OCTET [TRACKER FLAGS...]: a tracker on 127.0.0.1, an origin on 127.0.0.OCTET and
# the appliances after it; sets TRACKER_PID, TRACKER_HTTP and TRACKER_ADMIN (by name).
declare -A TRACKER_PID TRACKER_HTTP TRACKER_ADMIN
mesh() {
    local name=$1 octet=$2
    shift 2
    local dir=$WORK/$name i
    mkdir -p "$dir"
    : >"$dir/trusted.txt"
    for i in origin $(seq 0 $((APPLIANCES - 1))); do
        "$BIN" node --print-id --data "$dir/$i" >>"$dir/trusted.txt" 2>/dev/null
    done
    start "$name-tracker" tracker --data "$dir/tracker" --listen 127.0.0.1:0 --http 127.0.0.1:0 \
        --admin-http 127.0.0.1:0 --trust-file "$dir/trusted.txt" "$@"
    TRACKER_PID[$name]=$PID
    local words
    read -r -a words <<<"$READY"
    local peer=${words[2]} tmesh=${words[4]}
    TRACKER_HTTP[$name]=http://${words[6]}
    # The ready line: fillmesh tracker PEER mesh ADDR http ADDR admin ADDR.
    TRACKER_ADMIN[$name]=http://${words[8]}
    start "$name-origin" node --data "$dir/origin" --origin --listen "127.0.0.$octet:0" \
        --http "127.0.0.$octet:0" --tracker "$tmesh" --tracker-id "$peer" --site origin --region core
    read -r -a words <<<"$READY"
    local origin_http=http://${words[6]}
    for i in $(seq 0 $((APPLIANCES - 1))); do
        start "$name-appliance-$i" node --data "$dir/$i" --listen "127.0.0.$((octet + 1 + i)):0" \
            --tracker "$tmesh" --tracker-id "$peer" --site "s$((i / 2))" --region r0 \
            --serve-prefix "127.1.$((i / 2)).0/24"
    done
    TITLE=$("$BIN" seed "$WORK/title.bin" --origin "$origin_http" 2>>"$dir/seed.log" | tail -n1)
    # Steering names appliances once they hold the whole title.
    for i in $(seq 600); do
        local complete
        complete=$(curl -fsS "${TRACKER_ADMIN[$name]}/status" |
            jq --arg t "$TITLE" '[.titles[] | select(.id == $t) | .complete_appliances] | first // 0')
        [[ $complete -ge $APPLIANCES ]] && return 0
        sleep 0.1
    done
    echo "bench-steer: the $name mesh did not fill in 60 s" >&2
    exit 1
}

mesh on 10 --token-bind given
mesh off 30 --no-tokens

# utime+stime of PID in seconds.
cpu() {
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }
    # Fields 14 and 15 of the line, 12 and 13 after the command name.
    local f
    read -r -a f <<<"$stat"
    echo "scale=3; (${f[11]} + ${f[12]}) / $(getconf CLK_TCK)" | bc
}

# Each mesh's answer must be what is measured: targets for every appliance, a token in their
# URLs with tokens on, none with them off.
check() {
    local side=$1 query=$2 answer
    answer=$(curl -fsS "${TRACKER_HTTP[$side]}/steer?$query")
    local targets tokens
    targets=$(jq '.targets | length' <<<"$answer")
    tokens=$(jq '[.targets[].url | select(contains("/p/"))] | length' <<<"$answer")
    local want=0
    [[ $side == on ]] && want=$targets
    if [[ $targets -lt $APPLIANCES || $tokens -ne $want || ($side == on && $(jq '.token | length' <<<"$answer") -lt 100) ]]; then
        echo "bench-steer: unexpected answer from the $side tracker: $answer" >&2
        exit 1
    fi
}

echo "title $TITLE held by $APPLIANCES appliances per mesh; wrk -t1 -c$CONNS -d$DURATION; $ROUNDS rounds, ABAB"
printf '%-8s %-4s %5s %10s %8s %12s\n' query side round answers/s cpu_s answers/cpu_s
declare -A RATE PER_CPU
for variant in plain client_ip; do
    query="title=$TITLE"
    [[ $variant == client_ip ]] && query="$query&client_ip=$CLIENT_IP"
    check on "$query"
    check off "$query"
    for round in $(seq "$ROUNDS"); do
        for side in on off; do
            pid=${TRACKER_PID[$side]}
            perf_pid=""
            if [[ -n ${PERF:-} && $round == 1 && $variant == plain ]]; then
                mkdir -p "$PERF"
                perf record -q -g -p "$pid" -o "$PERF/$side.perf.data" 2>/dev/null &
                perf_pid=$!
                PIDS+=("$perf_pid")
                sleep 0.5
            fi
            before=$(cpu "$pid")
            out=$(wrk -t1 -c"$CONNS" -d"$DURATION" "${TRACKER_HTTP[$side]}/steer?$query")
            after=$(cpu "$pid")
            if [[ -n $perf_pid ]]; then
                kill -INT "$perf_pid"
                wait "$perf_pid" || true
            fi
            if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then
                echo "bench-steer: errors in the run:" >&2
                echo "$out" >&2
                exit 1
            fi
            rate=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
            answers=$(awk '/ requests in / {print $1}' <<<"$out")
            used=$(echo "scale=3; $after - $before" | bc)
            per=$(echo "scale=0; $answers / $used" | bc)
            RATE[$variant.$side]+="$rate "
            PER_CPU[$variant.$side]+="$per "
            printf '%-8s %-4s %5d %10.0f %8.2f %12d\n' "$variant" "$side" "$round" "$rate" "$used" "$per"
        done
    done
done

# The median; of an even count, the mean of the two middle values.
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo
printf '%-9s %14s %14s %18s %18s %8s %8s\n' query 'on answers/s' 'off answers/s' 'on answers/cpu_s' 'off answers/cpu_s' 'ratio' 'rounds'
for variant in plain client_ip; do
    on_rate=$(median <<<"${RATE[$variant.on]}")
    off_rate=$(median <<<"${RATE[$variant.off]}")
    on_per=$(median <<<"${PER_CPU[$variant.on]}")
    off_per=$(median <<<"${PER_CPU[$variant.off]}")
    # Each round's own ratio (its on run and the off run right after it), and their median.
    read -r -a ons <<<"${PER_CPU[$variant.on]}"
    read -r -a offs <<<"${PER_CPU[$variant.off]}"
    per_round=""
    for i in "${!ons[@]}"; do per_round+="$(echo "scale=4; ${ons[$i]} / ${offs[$i]}" | bc) "; done
    printf '%-9s %14.0f %14.0f %18.0f %18.0f %8.3f %8.3f\n' "$variant" "$on_rate" "$off_rate" "$on_per" "$off_per" \
        "$(echo "scale=4; $on_per / $off_per" | bc)" "$(median <<<"$per_round")"
done
echo "ratio: answers per tracker CPU-second, tokens on / off (medians); rounds: median of each round's on/off ratio. Target >= 0.8"
