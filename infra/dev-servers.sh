#!/usr/bin/env bash
# Local development servers: a real `mlflow server` (sqlite + local artifacts) and a real
# `prefect server start`, as background processes bound to 127.0.0.1 on free ports.
#
#   infra/dev-servers.sh start    # start both, wait until healthy, print `export ...` lines
#   infra/dev-servers.sh status   # healthy? (exit 1 if not)
#   infra/dev-servers.sh stop     # stop both (only the process groups this script started)
#   eval "$(infra/dev-servers.sh env)"   # point this shell at them
#
# State (pids, URLs, databases, logs) lives in $DISTILLERY_DEV_DIR (default: <repo>/.dev-servers).
# DISTILLERY_DEV_PREFECT_SERVICES=0: no scheduler / late-runs services (lighter, for tests). The
# event services stay on: Prefect 3 records task runs through them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${DISTILLERY_DEV_DIR:-$ROOT/.dev-servers}"
STATE="$DIR/state.env"
BIN="${DISTILLERY_BIN:-$ROOT/.venv/bin}"
PY="$BIN/python"
TIMEOUT="${DISTILLERY_DEV_TIMEOUT:-90}"

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

healthy() {  # URL -> exit 0 when it answers 200
    "$PY" - "$1" <<'EOF'
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

wait_healthy() {  # NAME URL PID
    local deadline=$((SECONDS + TIMEOUT))
    until healthy "$2"; do
        if ! kill -0 "$3" 2>/dev/null; then
            echo "$1 exited during start; see $DIR/$1.log" >&2
            tail -n 20 "$DIR/$1.log" >&2 || true
            return 1
        fi
        if ((SECONDS > deadline)); then
            echo "$1 not healthy after ${TIMEOUT}s; see $DIR/$1.log" >&2
            return 1
        fi
        sleep 0.5
    done
}

start() {
    if [[ -f "$STATE" ]] && status >/dev/null 2>&1; then
        cat "$STATE"
        return 0
    fi
    mkdir -p "$DIR/prefect" "$DIR/mlartifacts"
    local mport pport
    mport="$(free_port)"
    pport="$(free_port)"
    # setsid: each server leads its own process group, so `stop` ends it with its workers.
    setsid "$BIN/mlflow" server --host 127.0.0.1 --port "$mport" --workers 1 \
        --backend-store-uri "sqlite:///$DIR/mlflow.db" \
        --artifacts-destination "$DIR/mlartifacts" >"$DIR/mlflow.log" 2>&1 &
    local mpid=$!
    local services=()
    [[ "${DISTILLERY_DEV_PREFECT_SERVICES:-1}" == 0 ]] && services=(--no-scheduler --no-late-runs)
    # The UI reads its API address from /ui-settings, which defaults to port 4200 whatever
    # --port says: point it at this server.
    PREFECT_HOME="$DIR/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false \
        PREFECT_SERVER_UI_ENABLED="${PREFECT_SERVER_UI_ENABLED:-true}" \
        PREFECT_SERVER_UI_API_URL="http://127.0.0.1:$pport/api" \
        setsid "$BIN/prefect" server start --host 127.0.0.1 --port "$pport" \
        "${services[@]}" >"$DIR/prefect.log" 2>&1 &
    local ppid_=$!
    cat >"$STATE" <<EOF
export MLFLOW_TRACKING_URI=http://127.0.0.1:$mport
export PREFECT_API_URL=http://127.0.0.1:$pport/api
MLFLOW_PID=$mpid
PREFECT_PID=$ppid_
EOF
    if ! wait_healthy mlflow "http://127.0.0.1:$mport/health" "$mpid" ||
        ! wait_healthy prefect "http://127.0.0.1:$pport/api/health" "$ppid_"; then
        stop >/dev/null
        return 1
    fi
    grep '^export' "$STATE"
}

read_state() {
    [[ -f "$STATE" ]] || { echo "not running (no $STATE)" >&2; return 1; }
    # shellcheck disable=SC1090
    source "$STATE"
}

status() {
    read_state || return 1
    local ok=0
    if healthy "$MLFLOW_TRACKING_URI/health"; then echo "mlflow  up   $MLFLOW_TRACKING_URI"
    else echo "mlflow  down"; ok=1; fi
    if healthy "$PREFECT_API_URL/health"; then echo "prefect up   $PREFECT_API_URL"
    else echo "prefect down"; ok=1; fi
    return $ok
}

stop() {
    read_state || return 0
    local pid
    for pid in "$MLFLOW_PID" "$PREFECT_PID"; do
        # The pid leads its own group (setsid above): end that group only, then wait for it.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "$MLFLOW_PID" "$PREFECT_PID"; do
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    rm -f "$STATE"
    echo "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) read_state && grep '^export' "$STATE" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
