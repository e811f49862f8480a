#!/usr/bin/env bash
# The topology of deploy/docker-compose.yml as local processes, for machines without
# Docker: a private redis-server (AOF), gateway nodes with broker.kind = redis on
# 127.0.0.1, and nginx in front of them when it is installed.
#
#   scripts/cluster.sh [start]  build the release binary (unless GATEWAY_BIN is set),
#                               start everything, wait until every /readyz answers 200,
#                               print how to use it, then stay in the foreground until
#                               Ctrl-C or `scripts/cluster.sh stop`, and stop everything
#   scripts/cluster.sh stop     stop the cluster of the same run directory
#   scripts/cluster.sh status   what runs, and each node's /readyz
#   scripts/cluster.sh clean    stop, then delete the run directory (Redis data too)
#
# Environment (all optional):
#   GATEWAY_BIN            the binary to run; the release build is skipped
#   CLUSTER_RUN_DIR        pids, logs, Redis data, generated config (default ./run/cluster)
#   CLUSTER_NODE_PORTS     node ports on 127.0.0.1, one node each (default "8081 8082 8083")
#   CLUSTER_LB_PORT        nginx's port on 127.0.0.1 (default 8080)
#   CLUSTER_REDIS_PORT     redis-server's port on 127.0.0.1 (default 6390)
#   CLUSTER_NGINX          auto (default: use nginx when installed), 1 (required), 0 (never)
#   CLUSTER_READY_TIMEOUT  seconds to wait for readiness (default 60)
#   CHAT_SIGNING_SECRET    the HS256 secret of key k1; default: one generated for the run
#                          directory and kept in <run dir>/env (mode 600)
#   CHAT_SERVICE_TOKEN     the static service bearer; default: generated, kept likewise
#   REDIS_SERVER, NGINX    the programs to run (default: found on PATH)
#   CHAT__SECTION__KEY     passed on to every node (e.g. CHAT__LOG__LEVEL=debug)
#
# Each process runs in a session of its own, so that Ctrl-C reaches only this script,
# which then stops them in order: the nodes first (they drain, closing WebSockets with
# 1012 while nginx still proxies), then nginx, then redis-server.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_DIR=${CLUSTER_RUN_DIR:-$REPO_ROOT/run/cluster}
[[ $RUN_DIR == /* ]] || RUN_DIR=$PWD/$RUN_DIR
NODE_PORTS=${CLUSTER_NODE_PORTS:-8081 8082 8083}
LB_PORT=${CLUSTER_LB_PORT:-8080}
REDIS_PORT=${CLUSTER_REDIS_PORT:-6390}
USE_NGINX=${CLUSTER_NGINX:-auto}
READY_TIMEOUT=${CLUSTER_READY_TIMEOUT:-60}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
NGINX=${NGINX:-nginx}
SIGNING_KID=k1
# A node's stop: the drain, then up to drain_secs + 5 s for requests in flight.
DRAIN_SECS=${CHAT__SHUTDOWN__DRAIN_SECS:-10}
NODE_STOP_TIMEOUT=$((2 * DRAIN_SECS + 10))

PIDS=$RUN_DIR/pids
LOGS=$RUN_DIR/logs
MARKER=$RUN_DIR/.chat-gateway-cluster  # only a directory holding it is ever deleted

say() { printf 'cluster: %s\n' "$*"; }
die() { printf 'cluster: error: %s\n' "$*" >&2; exit 1; }

# Node ports as words: "8081,8082 8083" -> 8081 8082 8083.
read -r -a PORTS <<<"${NODE_PORTS//,/ }"
[[ ${#PORTS[@]} -ge 1 ]] || die "CLUSTER_NODE_PORTS names no port"

# ----------------------------------------------------------------- processes
# Pid files: <run dir>/pids/<name>.pid, the pid on the first line and the program on
# the second, so that a pid reused by an unrelated process is never signalled.

alive() {  # alive PID: the process exists and is not a zombie
    local state
    if [[ -r /proc/$1/stat ]]; then
        state=$(<"/proc/$1/stat") 2>/dev/null || return 1
        state=${state##*) }
    else
        state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    fi
    [[ -n $state && $state != Z* ]]
}

args_of() {  # args_of PID: its command line
    if [[ -r /proc/$1/cmdline ]]; then
        tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null
    else
        ps -o args= -p "$1" 2>/dev/null
    fi
}

pid_of() {  # pid_of NAME: the recorded pid of NAME if that process still runs its program
    local file=$PIDS/$1.pid pid program args
    [[ -f $file ]] || return 1
    { read -r pid && read -r program; } <"$file" || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    args=$(args_of "$pid") || return 1
    [[ $args == *"$(basename "$program")"* ]] || return 1
    printf '%s\n' "$pid"
}

launch() {  # launch NAME [VAR=VALUE...] PROGRAM ARGS...: start in the background
    local name=$1 assignments=() setsid=()
    shift
    while [[ $1 == [A-Za-z_]*=* ]]; do
        assignments+=("$1")
        shift
    done
    # A session of its own keeps Ctrl-C away from it. The subshell is no process-group
    # leader (no job control here), so setsid execs in place and $! is the program.
    if command -v setsid >/dev/null; then setsid=(setsid); fi
    (
        # Exported here, so that secrets never appear on a command line.
        for assignment in ${assignments[@]+"${assignments[@]}"}; do export "${assignment?}"; done
        exec ${setsid[@]+"${setsid[@]}"} "$@" </dev/null >>"$LOGS/$name.log" 2>&1
    ) &
    printf '%s\n%s\n' "$!" "$1" >"$PIDS/$name.pid"
}

stop_one() {  # stop_one NAME SIGNAL TIMEOUT: signal, wait, then SIGKILL
    local name=$1 sig=$2 timeout=$3 pid waited=0
    pid=$(pid_of "$name") || { rm -f "$PIDS/$name.pid"; return 0; }
    kill "-$sig" "$pid" 2>/dev/null || true
    while alive "$pid" && ((waited < timeout * 10)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    if alive "$pid"; then
        say "$name (pid $pid) still runs after ${timeout}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true  # reap it when it is our child
    rm -f "$PIDS/$name.pid"
}

node_names() {
    local i
    for i in "${!PORTS[@]}"; do printf 'gw%d\n' $((i + 1)); done
}

stop_all() {
    local file name pid names=()
    # Every node at once (a run with other ports may have left more): each drains
    # over the same drain_secs, while nginx still passes their close frames on.
    for file in "$PIDS"/gw*.pid; do
        if [[ -e $file ]]; then
            name=$(basename "$file" .pid)
            if pid=$(pid_of "$name"); then
                kill -TERM "$pid" 2>/dev/null || true
                names+=("$name")
            fi
        fi
    done
    if ((${#names[@]})); then say "stopping ${names[*]} (drain up to ${DRAIN_SECS}s)"; fi
    for file in "$PIDS"/gw*.pid; do
        if [[ -e $file ]]; then stop_one "$(basename "$file" .pid)" TERM "$NODE_STOP_TIMEOUT"; fi
    done
    # The nodes have closed their WebSockets: nginx's fast shutdown loses nothing.
    if pid_of nginx >/dev/null; then say "stopping nginx"; fi
    stop_one nginx TERM 10
    # Last, so that the nodes could finish their writes: SIGTERM makes redis-server
    # flush the append-only file before it exits.
    if pid_of redis >/dev/null; then say "stopping redis-server"; fi
    stop_one redis TERM 15
}

# ------------------------------------------------------------------- probes
http_status() {  # http_status URL: the status code, or 000
    local url=$1
    if command -v curl >/dev/null; then
        curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null || printf '000'
        return 0
    fi
    # bash alone: GET over /dev/tcp (URL = http://HOST:PORT/PATH).
    local rest=${url#http://} host port path line
    host=${rest%%:*}
    rest=${rest#*:}
    port=${rest%%/*}
    path=/${rest#*/}
    if exec 3<>"/dev/tcp/$host/$port" 2>/dev/null; then
        printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$host" >&3
        read -r -t 2 _ line _ <&3 || line=000
        exec 3>&-
        printf '%s' "${line:-000}"
    else
        printf '000'
    fi
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

redis_ping() {
    if command -v redis-cli >/dev/null; then
        [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
    else
        local reply
        exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" 2>/dev/null || return 1
        printf 'PING\r\n' >&3
        read -r -t 2 reply <&3 || reply=
        exec 3>&-
        [[ $reply == +PONG* ]]
    fi
}

tail_log() {
    printf -- '--- last lines of %s\n' "$LOGS/$1.log" >&2
    tail -n 30 "$LOGS/$1.log" >&2 2>/dev/null || true
}

wait_until() {  # wait_until NAME DESCRIPTION COMMAND...: poll while NAME's process lives
    local name=$1 what=$2 deadline=$((SECONDS + READY_TIMEOUT))
    shift 2
    until "$@"; do
        pid_of "$name" >/dev/null || { tail_log "$name"; die "$name exited before $what"; }
        ((SECONDS < deadline)) || { tail_log "$name"; die "$name: no $what within ${READY_TIMEOUT}s"; }
        sleep 0.2
    done
}

ready() { [[ $(http_status "$1/readyz") == 200 ]]; }

# ----------------------------------------------------------------- commands
find_nginx() {
    case $USE_NGINX in
        0 | no | false | off) return 1 ;;
    esac
    if command -v "$NGINX" >/dev/null; then return 0; fi
    case $USE_NGINX in
        1 | yes | true | on) die "CLUSTER_NGINX=$USE_NGINX but '$NGINX' is not installed" ;;
    esac
    return 1
}

write_env_file() {  # the cluster's keys, for `chat-gateway token` and for clients
    local secret=$1 service=$2
    umask 077
    {
        printf '# Keys of the local cluster in %s (source it: set -a; . %s; set +a)\n' "$RUN_DIR" "$RUN_DIR/env"
        printf 'CHAT__AUTH__SIGNING_KID=%q\n' "$SIGNING_KID"
        printf 'CHAT__AUTH__KEYS__K1=%q\n' "$secret"
        printf 'CHAT__AUTH__SERVICE_TOKEN=%q\n' "$service"
    } >"$RUN_DIR/env.tmp"
    mv "$RUN_DIR/env.tmp" "$RUN_DIR/env"
    umask 022
}

saved_value() {  # saved_value VAR: its value in the env file of an earlier run
    [[ -f $RUN_DIR/env ]] || return 0
    (
        set +u
        # shellcheck disable=SC1091
        . "$RUN_DIR/env" >/dev/null 2>&1
        printf '%s' "${!1:-}"
    )
}

random_secret() { head -c 32 /dev/urandom | base64 | tr -d '\n'; }

render_nginx_conf() {
    local template=$REPO_ROOT/deploy/nginx.local.conf.template conf servers="" port user_line
    [[ -f $template ]] || die "missing $template"
    for port in "${PORTS[@]}"; do
        servers+="        server 127.0.0.1:$port;"$'\n'
    done
    servers=${servers%$'\n'}
    # As root, nginx would run its workers as an unprivileged default user that may
    # not exist here, nor be able to write the temp directories in the run directory;
    # the invoking user's (it listens on loopback only). Without root: no directive.
    if [[ $(id -u) -eq 0 ]]; then
        user_line="user $(id -un) $(id -gn);"
    else
        user_line="# (no user directive: nginx runs as the invoking user)"
    fi
    conf=$(<"$template")
    conf=${conf//@USER_DIRECTIVE@/"$user_line"}
    conf=${conf//@RUN_DIR@/"$RUN_DIR"}
    conf=${conf//@LISTEN_PORT@/"$LB_PORT"}
    conf=${conf//@UPSTREAM_SERVERS@/"$servers"}
    mkdir -p "$RUN_DIR/nginx"
    printf '%s\n' "$conf" >"$RUN_DIR/nginx/nginx.conf"
}

nginx_args() {  # the common arguments: prefix, config, and the start-up error log
    NGINX_ARGS=(-p "$RUN_DIR/nginx" -c "$RUN_DIR/nginx/nginx.conf")
    # -e (nginx >= 1.19.5) keeps even start-up messages out of /var/log/nginx.
    if "$NGINX" -h 2>&1 | grep -q -- '-e filename'; then
        NGINX_ARGS+=(-e "$LOGS/nginx-error.log")
    fi
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    stop_all
    rm -f "$PIDS/supervisor.pid"
    say "stopped"
    exit "$status"
}

cmd_start() {
    local pid name i port bin secret service with_nginx=0 nodes_env supervised
    if pid=$(pid_of supervisor); then
        die "a cluster already runs from $RUN_DIR (pid $pid): scripts/cluster.sh stop"
    fi
    for name in redis nginx $(node_names); do
        if pid=$(pid_of "$name"); then
            die "$name of an earlier run still runs (pid $pid): scripts/cluster.sh stop"
        fi
    done
    for port in "$REDIS_PORT" "${PORTS[@]}"; do
        if port_in_use "$port"; then die "port $port on 127.0.0.1 is taken (CLUSTER_REDIS_PORT, CLUSTER_NODE_PORTS)"; fi
    done
    if find_nginx; then
        with_nginx=1
        if port_in_use "$LB_PORT"; then die "port $LB_PORT on 127.0.0.1 is taken (CLUSTER_LB_PORT)"; fi
    fi
    command -v "$REDIS_SERVER" >/dev/null || die "'$REDIS_SERVER' is not installed (apt-get install redis-server)"

    if [[ -n ${GATEWAY_BIN:-} ]]; then
        bin=$GATEWAY_BIN
        [[ $bin == /* ]] || bin=$REPO_ROOT/$bin
    else
        say "building the release binary"
        (cd "$REPO_ROOT" && "${CARGO:-cargo}" build --release -p gateway --bin chat-gateway)
        bin=$REPO_ROOT/target/release/chat-gateway
    fi
    [[ -x $bin ]] || die "no executable gateway binary at $bin"
    say "gateway binary: $bin"

    mkdir -p "$RUN_DIR" "$PIDS" "$LOGS" "$RUN_DIR/redis"
    : >"$MARKER"
    rm -f "$PIDS"/*.pid "$LOGS"/*.log  # each run starts with fresh logs

    # Keys: the caller's, else those of an earlier run of this directory, else new ones.
    secret=${CHAT_SIGNING_SECRET:-$(saved_value CHAT__AUTH__KEYS__K1)}
    secret=${secret:-$(random_secret)}
    service=${CHAT_SERVICE_TOKEN:-$(saved_value CHAT__AUTH__SERVICE_TOKEN)}
    service=${service:-$(random_secret)}
    write_env_file "$secret" "$service"

    printf '%s\n%s\n' "$$" "cluster.sh" >"$PIDS/supervisor.pid"
    trap cleanup EXIT
    trap 'exit 0' INT TERM  # a requested stop: EXIT runs cleanup, status 0

    # More descriptors for the nodes when the hard limit allows (one per WebSocket).
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

    say "redis-server on 127.0.0.1:$REDIS_PORT (AOF, everysec) in $RUN_DIR/redis"
    launch redis "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$RUN_DIR/redis" \
        --appendonly yes --appendfsync everysec --maxmemory-policy noeviction --daemonize no
    wait_until redis "PONG" redis_ping

    # What every node shares, over the caller's CHAT__* variables (which pass through).
    nodes_env=(
        CHAT__BROKER__KIND=redis
        "CHAT__REDIS__URL=redis://127.0.0.1:$REDIS_PORT"
        "CHAT__AUTH__SIGNING_KID=$SIGNING_KID"
        "CHAT__AUTH__KEYS__K1=$secret"
        "CHAT__AUTH__SERVICE_TOKEN=$service"
        "NO_COLOR=${NO_COLOR:-1}"
    )
    # nginx connects from 127.0.0.1: believe its X-Forwarded-For for per-IP limits.
    if ((with_nginx)); then
        nodes_env+=("CHAT__SERVER__TRUSTED_PROXIES=${CHAT__SERVER__TRUSTED_PROXIES:-127.0.0.1}")
    fi
    for i in "${!PORTS[@]}"; do
        name=gw$((i + 1))
        say "$name on 127.0.0.1:${PORTS[$i]}"
        launch "$name" "${nodes_env[@]}" "CHAT__SERVER__BIND=127.0.0.1:${PORTS[$i]}" \
            "CHAT__SERVER__NODE_ID=$name" "$bin" serve
    done
    for i in "${!PORTS[@]}"; do
        wait_until "gw$((i + 1))" "200 from /readyz" ready "http://127.0.0.1:${PORTS[$i]}"
    done

    if ((with_nginx)); then
        render_nginx_conf
        nginx_args
        "$NGINX" -t -q "${NGINX_ARGS[@]}" >>"$LOGS/nginx-error.log" 2>&1 ||
            { tail_log nginx-error; die "nginx rejects $RUN_DIR/nginx/nginx.conf"; }
        say "nginx on 127.0.0.1:$LB_PORT"
        launch nginx "$NGINX" "${NGINX_ARGS[@]}" -g 'daemon off;'
        wait_until nginx "200 from /readyz through nginx" ready "http://127.0.0.1:$LB_PORT"
    fi

    print_usage "$bin" "$with_nginx"

    # Supervise: a process that dies takes the cluster down with a pointer to its log.
    supervised=(redis)
    for i in "${!PORTS[@]}"; do supervised+=("gw$((i + 1))"); done
    if ((with_nginx)); then supervised+=(nginx); fi
    while true; do
        for name in "${supervised[@]}"; do
            if ! pid_of "$name" >/dev/null; then
                tail_log "$name"
                die "$name exited unexpectedly (log: $LOGS/$name.log)"
            fi
        done
        sleep 1 &
        wait $! || true  # returns at once when INT or TERM arrives
    done
}

print_usage() {
    local bin=$1 with_nginx=$2 url i rel_run
    rel_run=${RUN_DIR#"$PWD"/}
    if ((with_nginx)); then url=http://127.0.0.1:$LB_PORT; else url=http://127.0.0.1:${PORTS[0]}; fi
    cat <<EOF

chat-gateway cluster ready: ${#PORTS[@]} nodes over redis://127.0.0.1:$REDIS_PORT
EOF
    if ((with_nginx)); then
        printf '  load balancer  %s  (nginx, round robin; ws://127.0.0.1:%s/ws/chat and /ws)\n' "$url" "$LB_PORT"
    else
        if command -v "$NGINX" >/dev/null; then
            printf '  no load balancer (CLUSTER_NGINX=%s): use a node directly\n' "$USE_NGINX"
        else
            printf '  nginx is not installed (apt-get install nginx): no load balancer; use a node directly\n'
        fi
    fi
    for i in "${!PORTS[@]}"; do
        printf '  node gw%d       http://127.0.0.1:%s  (/metrics, /readyz)\n' $((i + 1)) "${PORTS[$i]}"
    done
    cat <<EOF
  logs           $rel_run/logs/
  keys           $rel_run/env  (signing key k1 and the service token)

Try it:
  curl -s -X POST $url/api/v1/public/customer-token -H 'content-type: application/json' \\
       -d '{"name":"Ann","channel":"web"}'
  (set -a; . $rel_run/env; set +a; $bin token --role agent --sub a1 --name Alice)
  curl -s -X POST $url/api/v1/rooms/news/publish -H "authorization: Bearer \$(. $rel_run/env; echo \$CHAT__AUTH__SERVICE_TOKEN)" \\
       -H 'content-type: application/json' -d '{"data":{"hello":"world"}}'

Ctrl-C here, or scripts/cluster.sh stop, stops everything.
EOF
}

cmd_stop() {
    local pid waited=0
    if pid=$(pid_of supervisor); then
        say "asking the running cluster.sh (pid $pid) to stop"
        kill -TERM "$pid" 2>/dev/null || true
        while alive "$pid" && ((waited < (NODE_STOP_TIMEOUT + 40) * 10)); do
            sleep 0.1
            waited=$((waited + 1))
        done
    fi
    # Whatever is left: a cluster.sh that was killed, or that did not finish in time.
    stop_all
    rm -f "$PIDS/supervisor.pid"
}

cmd_status() {
    local file name pid state port i
    [[ -d $PIDS ]] || { say "nothing has run from $RUN_DIR"; return 0; }
    for file in "$PIDS"/*.pid; do
        [[ -e $file ]] || { say "nothing runs from $RUN_DIR"; return 0; }
        name=$(basename "$file" .pid)
        if pid=$(pid_of "$name"); then state="running (pid $pid)"; else state="not running"; fi
        printf '  %-11s %s\n' "$name" "$state"
    done
    for i in "${!PORTS[@]}"; do
        port=${PORTS[$i]}
        printf '  gw%d /readyz   %s\n' $((i + 1)) "$(http_status "http://127.0.0.1:$port/readyz")"
    done
}

cmd_clean() {
    cmd_stop
    if [[ -f $MARKER ]]; then
        rm -rf "$RUN_DIR"
        say "removed $RUN_DIR"
    elif [[ -e $RUN_DIR ]]; then
        die "$RUN_DIR was not made by this script (no $(basename "$MARKER")): not removing it"
    fi
}

case ${1:-start} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    clean) cmd_clean ;;
    -h | --help | help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" ;;
    *) die "unknown command '$1' (start, stop, status, clean)" ;;
esac
