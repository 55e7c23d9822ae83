#!/usr/bin/env bash
# The MLflow tracking server of a cluster's head node, behind MLflow's basic-auth app.
#
#   start-mlflow.sh ARTIFACTS_DESTINATION        e.g. s3://my-bucket/mlflow-artifacts (or a local directory)
#
# cluster.yaml runs this on the head after `ray start`; tests/deploy/test_cluster.py runs the same line on 127.0.0.1.
#
# Credentials: ~/.mlflow/credentials, the file every MLflow client already reads
#   [mlflow]
#   mlflow_tracking_username = admin
#   mlflow_tracking_password = <24+ random characters>
# cluster.yaml copies it to every node, so the server's admin account and the trials' client are the same
# account and no password appears in cluster.yaml, in this script or on a command line. There is no default:
# without the file, or with a password under 12 characters, the server does not start.
#
# Environment (optional):
#   MLFLOW_HOST   interface to bind; default: this node's private address (the one Ray advertises, so workers
#                 reach it). 0.0.0.0 / :: are refused: the UI is reached through an SSH tunnel, never publicly.
#   MLFLOW_PORT   default 5000
#   MLFLOW_WORKERS  server processes, default 4 (MLflow's default; the head has 4 vCPUs)
#   AESWEEP_MLFLOW_DIR        server state (run store, users, auth config); default ~/mlflow
#   MLFLOW_BACKEND_STORE_URI  default sqlite:///$AESWEEP_MLFLOW_DIR/mlflow.db (a postgresql:// URI for RDS)
set -euo pipefail

artifacts="${1:?usage: start-mlflow.sh ARTIFACTS_DESTINATION (e.g. s3://BUCKET/mlflow-artifacts)}"
state="${AESWEEP_MLFLOW_DIR:-$HOME/mlflow}"
port="${MLFLOW_PORT:-5000}"
host="${MLFLOW_HOST:-$(python -c 'import ray.util; print(ray.util.get_node_ip_address())')}"
case "$host" in
  0.0.0.0 | "::" | "[::]" | "")
    echo "start-mlflow.sh: refusing to bind MLflow to '$host' (all interfaces); use the private address" >&2
    exit 2 ;;
esac

# Username and password from the credentials file (MLflow's own format, read with MLflow's own parser rules).
mapfile -t creds < <(python - <<'EOF'
import configparser, os, sys
path = os.path.expanduser("~/.mlflow/credentials")
cfg = configparser.ConfigParser()
if not cfg.read(path) or "mlflow" not in cfg:
    sys.exit(f"start-mlflow.sh: no [mlflow] section in {path}; see docs/cluster.md (step 2)")
user = cfg["mlflow"].get("mlflow_tracking_username", "").strip()
password = cfg["mlflow"].get("mlflow_tracking_password", "").strip()
if not user or len(password) < 12:
    sys.exit(f"start-mlflow.sh: {path} needs mlflow_tracking_username and a mlflow_tracking_password of 12+ characters")
print(user)
print(password)
EOF
)
[ "${#creds[@]}" -eq 2 ] || exit 2

mkdir -p "$state"
chmod 700 "$state"
# A server from an earlier `ray up` (same container) holds the port: stop it. It was started in its own session
# (setsid in cluster.yaml), so its pid is its process group: the uvicorn workers go with it.
# The pid file outlives the container (the state directory is on the host), so check that the pid is MLflow's.
old_pid="$(cat "$state/server.pid" 2>/dev/null || true)"
if [ -n "$old_pid" ] && grep -qs "mlflow" "/proc/$old_pid/cmdline"; then
  kill -TERM -- "-$old_pid" 2>/dev/null || kill -TERM "$old_pid" || true
  sleep 3
fi
echo $$ > "$state/server.pid"
# Where clients find it (cluster.yaml's head_setup_commands export it as MLFLOW_TRACKING_URI on the head).
echo "http://$host:$port" > "$state/tracking_uri"
# The auth app's own settings. The admin password is not written here: MLflow reads it from
# MLFLOW_AUTH_ADMIN_PASSWORD when it creates the admin on first start (and ignores it afterwards).
# NO_PERMISSIONS: a user the admin adds later sees nothing until granted an experiment.
# auth_cache_ttl_seconds: MLflow checks the password hash (scrypt, ~0.1-0.3 s of CPU) on every request unless a
# check is cached; dozens of trials logging every epoch would keep the head's CPUs busy hashing. 60 s of caching
# (MLflow's documented option) means a changed or revoked password stops working within a minute, not at once.
umask 077
cat > "$state/basic_auth.ini" <<EOF
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = sqlite:///$state/basic_auth.db
admin_username = ${creds[0]}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
EOF

# The auth app's CSRF key must be static across its workers and restarts: made once, random, kept with the state.
[ -s "$state/flask_secret_key" ] || python -c 'import secrets; print(secrets.token_hex(32))' > "$state/flask_secret_key"
MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$state/flask_secret_key")"
export MLFLOW_FLASK_SERVER_SECRET_KEY
export MLFLOW_AUTH_CONFIG_PATH="$state/basic_auth.ini"
# MLflow's server-side job runner (GenAI jobs; on by default) is not used by aesweep: off, one attack surface less
# (its endpoints bypassed basic auth before MLflow 3.10, CVE-2026-2652) and no idle worker processes on the head.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
export MLFLOW_AUTH_ADMIN_USERNAME="${creds[0]}"
export MLFLOW_AUTH_ADMIN_PASSWORD="${creds[1]}"
echo "start-mlflow.sh: MLflow on http://$host:$port (basic auth, user ${creds[0]}), artifacts -> $artifacts" >&2
# exec: the server is this process, so stopping it (or the test's terminate) stops MLflow.
exec mlflow server \
  --app-name basic-auth \
  --host "$host" \
  --port "$port" \
  --backend-store-uri "${MLFLOW_BACKEND_STORE_URI:-sqlite:///$state/mlflow.db}" \
  --artifacts-destination "$artifacts" \
  --serve-artifacts \
  --workers "${MLFLOW_WORKERS:-4}"
