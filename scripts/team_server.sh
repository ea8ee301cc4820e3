#!/usr/bin/env bash
# A team MLflow tracking server: PostgreSQL backend store, shared artifact folder, one worker.
#
#   scripts/team_server.sh --backend-store-uri postgresql://mlflow:PASS@dbhost:5432/mlflow \
#                          --artifacts-destination /shared/mlflow-artifacts [--port 5000] [--host 127.0.0.1]
#                          [--basic-auth] [-- MORE MLFLOW SERVER OPTIONS]
#
# Options may also come from the environment: MLFLOW_BACKEND_STORE_URI, MLFLOW_ARTIFACTS_DESTINATION,
# MLFLOW_HOST (default 127.0.0.1: only this machine; use 0.0.0.0 to serve the network, behind a
# firewall or a TLS proxy, and pass MLflow's -- --allowed-hosts HOST:PORT), MLFLOW_PORT (default 5000).
#
# Artifacts are proxied by the server (--serve-artifacts): clients need only the URL
# (--mlflow.tracking_uri http://HOST:PORT), no access to the artifact folder or the database.
# The server runs one worker and no background job consumers
# (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false): about 0.5 GB instead of about 3 GB.
#
# --basic-auth starts MLflow's basic-auth app (--app-name basic-auth). The first start creates the
# admin user from MLFLOW_AUTH_ADMIN_PASSWORD (required then; MLFLOW_AUTH_ADMIN_USERNAME, default
# admin); users live in MLFLOW_AUTH_DATABASE_URI (default sqlite in MLFLOW_STATE_DIR, default
# ./mlflow-server), as does the CSRF key (MLFLOW_FLASK_SERVER_SECRET_KEY, generated once). It needs
# MLflow's auth extra (pip install 'mlflow[auth]'). Clients set MLFLOW_TRACKING_USERNAME and
# MLFLOW_TRACKING_PASSWORD. Basic auth sends the password in clear text: put a TLS proxy in front
# of a server bound beyond 127.0.0.1.
#
# The server replaces this shell (exec): its PID is this script's, and SIGTERM to it stops it.
set -euo pipefail

backend=${MLFLOW_BACKEND_STORE_URI:-}
artifacts=${MLFLOW_ARTIFACTS_DESTINATION:-}
host=${MLFLOW_HOST:-127.0.0.1}
port=${MLFLOW_PORT:-5000}
auth=false
extra=()

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --backend-store-uri) backend=$2; shift 2 ;;
        --artifacts-destination) artifacts=$2; shift 2 ;;
        --host) host=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --basic-auth) auth=true; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "team_server.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ -z "$backend" ]]; then
    echo "team_server.sh: --backend-store-uri postgresql://USER:PASS@HOST:PORT/DB is required" >&2; exit 2
fi
if [[ -z "$artifacts" ]]; then
    echo "team_server.sh: --artifacts-destination (a shared folder or s3://... URI) is required" >&2; exit 2
fi
if [[ "$artifacts" != *://* ]]; then
    mkdir -p "$artifacts"
    artifacts=$(cd "$artifacts" && pwd)
fi

# the mlflow of the project's virtual environment, else the one on PATH
here=$(cd "$(dirname "$0")/.." && pwd)
mlflow_bin=${MLFLOW_BIN:-}
if [[ -z "$mlflow_bin" ]]; then
    if [[ -x "$here/.venv/bin/mlflow" ]]; then mlflow_bin="$here/.venv/bin/mlflow"; else mlflow_bin=mlflow; fi
fi

args=(server --host "$host" --port "$port" --workers 1
      --backend-store-uri "$backend" --artifacts-destination "$artifacts" --serve-artifacts)
if [[ "$auth" == true ]]; then
    py="$(dirname "$(command -v "$mlflow_bin")")/python"
    if [[ -x "$py" ]] && ! "$py" -c "import flask_wtf" 2>/dev/null; then
        echo "team_server.sh: --basic-auth needs MLflow's auth extra: $py -m pip install 'mlflow[auth]'" >&2; exit 2
    fi
    state=${MLFLOW_STATE_DIR:-$PWD/mlflow-server}
    mkdir -p "$state"
    if [[ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]]; then  # CSRF key: kept, so restarts keep sessions valid
        if [[ ! -s "$state/secret_key" ]]; then
            (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$state/secret_key")
        fi
        MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$state/secret_key")
        export MLFLOW_FLASK_SERVER_SECRET_KEY
    fi
    if [[ -z "${MLFLOW_AUTH_CONFIG_PATH:-}" ]]; then
        export MLFLOW_AUTH_CONFIG_PATH="$state/basic_auth.ini"
        cat > "$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DATABASE_URI:-sqlite:///$state/basic_auth.db}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
    fi
    args+=(--app-name basic-auth)
fi

export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
echo "team_server.sh: mlflow server on http://$host:$port (backend ${backend%%://*}, artifacts $artifacts, basic auth $auth)" >&2
exec "$mlflow_bin" "${args[@]}" "${extra[@]}"
