# Shared by peers-compare and seqpub-compare (sourced, not run): starting
# and stopping the peers from PEERS_DIR, the order of each repetition, and
# the CPUs the servers and the load tool run on.
#
# env: SERVER_CPUS, LOADGEN_CPUS: taskset CPU lists (e.g. 0 and 1) that
#      keep every server on some CPUs and the load tool on the others, the
#      nearest one machine gets to a load tool on another host. A server
#      started that way sees only its CPUs (stentor then runs one worker per
#      CPU, the axum hub one tokio thread per CPU; nginx keeps its configured
#      worker_processes on them). Unset: every process may use every CPU.

# "${ON_SERVER_CPUS[@]}" CMD... / "${ON_LOADGEN_CPUS[@]}" CMD...: run CMD
# on those CPUs. A prefix, not a function, so that `prefix CMD &` leaves
# the program's own PID in $! (taskset execs it).
ON_SERVER_CPUS=(); [[ -z "${SERVER_CPUS:-}" ]] || ON_SERVER_CPUS=(taskset -c "$SERVER_CPUS")
ON_LOADGEN_CPUS=(); [[ -z "${LOADGEN_CPUS:-}" ]] || ON_LOADGEN_CPUS=(taskset -c "$LOADGEN_CPUS")

# start_nchan PEERS_DIR PREFIX PIDFILE SUB_PORT PUB_PORT: nginx+nchan in the
# background; prints its PIDs (master,workers) for CPU accounting.
start_nchan() {
    PREFIX="$2" PIDFILE="$3" "${ON_SERVER_CPUS[@]}" "$1/nchan/start" "$4" "$5" >/dev/null
    local master; master="$(cat "$3")"
    echo "$master,$(pgrep -P "$master" | paste -sd, -)"
}

# start_axum PEERS_DIR PIDFILE LOG PORT: the axum hub in the background
# (built once into AXUM_TARGET); prints its PID.
start_axum() {
    CARGO_TARGET_DIR="${AXUM_TARGET:-/tmp/peer-axum-hub-target}" PIDFILE="$2" LOG="$3" \
        "${ON_SERVER_CPUS[@]}" "$1/axum-hub/start" "$4" >/dev/null
    cat "$2"
}

# stop_peer PEERS_DIR nchan|axum-hub PIDFILE: stop it by its PID.
stop_peer() { PIDFILE="$3" "$1/$2/stop" >/dev/null; }

# rep_order REP ITEM...: the items, reversed on every even repetition, so
# no server always runs first (or right after the same one).
rep_order() {
    local rep="$1"; shift
    local items=("$@") i
    if (( rep % 2 == 0 )); then
        for ((i=${#items[@]}-1; i>=0; i--)); do echo "${items[i]}"; done
    else
        printf '%s\n' "${items[@]}"
    fi
}
