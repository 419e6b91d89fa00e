# shellcheck shell=bash
# The deployment commands of thermoroute's multi-host Ray cluster, as shell functions.
#
# deploy/GUIDE.md shows these functions and tests/test_multihost.py runs exactly them (each
# "VM" there is a Linux network namespace), so the guide's commands are the tested ones.
# Source this file on every VM:   . deploy/commands.sh
#
# Every port is fixed so a firewall can allow exactly these (see GUIDE.md, "Ports").
# Override any of them in the environment before sourcing.

: "${THERMOROUTE_GCS_PORT:=6379}"               # head: GCS (cluster address), all nodes -> head
: "${THERMOROUTE_NODE_MANAGER_PORT:=6380}"      # every node: raylet
: "${THERMOROUTE_OBJECT_MANAGER_PORT:=6381}"    # every node: object transfer
: "${THERMOROUTE_RUNTIME_ENV_AGENT_PORT:=6382}" # every node: runtime-env agent
: "${THERMOROUTE_AGENT_GRPC_PORT:=6383}"        # every node: dashboard agent (gRPC)
: "${THERMOROUTE_AGENT_HTTP_PORT:=52365}"       # every node: dashboard agent (HTTP)
: "${THERMOROUTE_RAY_METRICS_PORT:=8080}"       # every node: Ray's own metrics (Prometheus)
: "${THERMOROUTE_MIN_WORKER_PORT:=10002}"       # every node: worker processes (range)
: "${THERMOROUTE_MAX_WORKER_PORT:=10101}"
: "${THERMOROUTE_DASHBOARD_PORT:=8265}"         # head only, bound to 127.0.0.1 (SSH tunnel)
: "${THERMOROUTE_COORDINATOR_METRICS_PORT:=9464}"  # head: the coordinator's /metrics
: "${THERMOROUTE_AGENT_METRICS_PORT:=9465}"        # site VMs: the agent's /metrics, if exported
: "${THERMOROUTE_PLAN_PORT:=8808}"                 # head: thermoroute serve's plan API and /metrics
# The cluster token: a shared secret, identical on every node and for every driver.
: "${THERMOROUTE_TOKEN_FILE:=/etc/thermoroute/ray_token}"
# The plan API's bearer token (thermoroute serve): for the load balancers and Prometheus,
# not the Ray cluster's token.
: "${THERMOROUTE_PLAN_TOKEN_FILE:=/etc/thermoroute/plan_token}"
# Fast failure detection (GCS health checks of every raylet; read by the head only):
# a dead node is declared after about period x threshold = 3 s instead of Ray's ~15 s.
: "${THERMOROUTE_HEALTH_CHECK_PERIOD_MS:=1000}"
: "${THERMOROUTE_HEALTH_CHECK_TIMEOUT_MS:=1000}"
: "${THERMOROUTE_HEALTH_CHECK_FAILURES:=3}"

# Mutual TLS (off unless set): a directory on each VM holding ca.crt (the cluster's CA) and
# that VM's own node.crt / node.key (thermoroute_tls_ca, thermoroute_tls_node).
: "${THERMOROUTE_TLS_DIR:=}"

# Token authentication on, with the token read from THERMOROUTE_TOKEN_FILE; with
# THERMOROUTE_TLS_DIR, Ray's mutual TLS too. Ray 2.60 turns token auth on by itself only for
# a local head that finds a token; a worker joining with --address (and a driver with an
# explicit address) never turns it on by itself, so the mode is set explicitly everywhere.
thermoroute_ray_env() {
    export RAY_AUTH_MODE=token
    export RAY_AUTH_TOKEN_PATH="$THERMOROUTE_TOKEN_FILE"
    unset RAY_AUTH_TOKEN  # it would take precedence over the file
    if [ -n "$THERMOROUTE_TLS_DIR" ]; then
        export RAY_USE_TLS=1
        export RAY_TLS_SERVER_CERT="$THERMOROUTE_TLS_DIR/node.crt"
        export RAY_TLS_SERVER_KEY="$THERMOROUTE_TLS_DIR/node.key"
        export RAY_TLS_CA_CERT="$THERMOROUTE_TLS_DIR/ca.crt"
    else
        unset RAY_USE_TLS RAY_TLS_SERVER_CERT RAY_TLS_SERVER_KEY RAY_TLS_CA_CERT
    fi
}

# thermoroute_token_generate FILE — a NEW random cluster token, owner-only (mode 0600),
# replacing FILE if it exists. Run on a trusted machine; copy FILE to THERMOROUTE_TOKEN_FILE
# on every VM. To rotate: generate, copy everywhere, restart every node (`ray stop`, then the
# start commands below); the old token is refused from then on.
thermoroute_token_generate() {
    thermoroute token generate "$1" > /dev/null
    test -s "$1"
}

# thermoroute_tls_ca DIR — the cluster's certificate authority: DIR/ca.key (keep it off the
# VMs) and DIR/ca.crt (copied to every VM). ECDSA P-256, ten years.
thermoroute_tls_ca() {
    local dir="$1"
    mkdir -p "$dir"
    (umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key")
    openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 3650 \
        -subj "/CN=thermoroute cluster CA" -out "$dir/ca.crt" 2> /dev/null
}

# thermoroute_tls_node CA_DIR OUT_DIR NODE_IP — one VM's key and certificate, signed by the
# CA, valid for NODE_IP (and loopback): OUT_DIR/{node.key,node.crt,ca.crt}, to copy to the VM
# as its THERMOROUTE_TLS_DIR. One year.
thermoroute_tls_node() {
    local ca="$1" out="$2" ip="$3"
    mkdir -p "$out"
    (umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out "$out/node.key")
    openssl req -new -key "$out/node.key" -subj "/CN=$ip" -out "$out/node.csr" 2> /dev/null
    printf 'subjectAltName=IP:%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' "$ip" \
        > "$out/node.ext"
    openssl x509 -req -in "$out/node.csr" -CA "$ca/ca.crt" -CAkey "$ca/ca.key" \
        -CAcreateserial -days 365 -sha256 -extfile "$out/node.ext" -out "$out/node.crt" \
        2> /dev/null
    cp "$ca/ca.crt" "$out/ca.crt"
    rm -f "$out/node.csr" "$out/node.ext"
}

# The ray start options every node uses: fixed ports, no usage reporting.
_thermoroute_node_ports() {
    printf '%s\n' \
        --node-manager-port "$THERMOROUTE_NODE_MANAGER_PORT" \
        --object-manager-port "$THERMOROUTE_OBJECT_MANAGER_PORT" \
        --runtime-env-agent-port "$THERMOROUTE_RUNTIME_ENV_AGENT_PORT" \
        --dashboard-agent-grpc-port "$THERMOROUTE_AGENT_GRPC_PORT" \
        --dashboard-agent-listen-port "$THERMOROUTE_AGENT_HTTP_PORT" \
        --metrics-export-port "$THERMOROUTE_RAY_METRICS_PORT" \
        --min-worker-port "$THERMOROUTE_MIN_WORKER_PORT" \
        --max-worker-port "$THERMOROUTE_MAX_WORKER_PORT" \
        --disable-usage-stats
}

# thermoroute_head_start NODE_IP [extra ray start options...]
# The head VM: GCS, dashboard (loopback only), and the coordinator of every run started
# here with thermoroute_admm. No CPUs, so no CPU-bound work is scheduled on the head.
# Answers up to 1 MiB travel inside the actor call's reply (the head's system config,
# which every node takes from it): a masked newton answer (~115 kB for 8 sites) is above
# Ray's 100 KiB default and would otherwise go through the object store, several round
# trips across a WAN.
thermoroute_head_start() {
    local node_ip="$1"
    shift
    thermoroute_ray_env
    local -a ports
    mapfile -t ports < <(_thermoroute_node_ports)
    RAY_health_check_period_ms="$THERMOROUTE_HEALTH_CHECK_PERIOD_MS" \
    RAY_health_check_timeout_ms="$THERMOROUTE_HEALTH_CHECK_TIMEOUT_MS" \
    RAY_health_check_failure_threshold="$THERMOROUTE_HEALTH_CHECK_FAILURES" \
        ray start --head \
        --node-ip-address "$node_ip" \
        --port "$THERMOROUTE_GCS_PORT" \
        --num-cpus 0 \
        --dashboard-host 127.0.0.1 \
        --dashboard-port "$THERMOROUTE_DASHBOARD_PORT" \
        --system-config '{"max_direct_call_object_size": 1048576}' \
        "${ports[@]}" "$@"
}

# thermoroute_site_start HEAD_IP NODE_IP SITE_ID [extra ray start options...]
# A site VM: offers the resource "site:SITE_ID", so that site's agent is placed here and
# nowhere else. The VM holds only that site's data directory (thermoroute scenario split).
thermoroute_site_start() {
    local head_ip="$1" node_ip="$2" site_id="$3"
    shift 3
    thermoroute_ray_env
    local -a ports
    mapfile -t ports < <(_thermoroute_node_ports)
    ray start \
        --address "$head_ip:$THERMOROUTE_GCS_PORT" \
        --node-ip-address "$node_ip" \
        --num-cpus 1 \
        --resources "{\"site:$site_id\": 1}" \
        "${ports[@]}" "$@"
}

# thermoroute_split SCENARIO OUT — OUT/coordinator (demand side, for the head) and
# OUT/sites/<site_id> (one private directory per site VM).
thermoroute_split() {
    thermoroute scenario split "$1" "$2"
}

# thermoroute_wait_for_sites HEAD_IP COUNT [TIMEOUT_S] — wait (bounded) until COUNT site VMs
# have joined, i.e. the cluster offers COUNT distinct "site:<id>" resources.
thermoroute_wait_for_sites() {
    local head_ip="$1" count="$2" timeout_s="${3:-300}"
    thermoroute_ray_env
    python3 - "$head_ip:$THERMOROUTE_GCS_PORT" "$count" "$timeout_s" <<'PY'
import sys
import time

import ray

address, count, timeout_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ray.init(address=address, logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + timeout_s
while True:
    sites = sorted(k for k in ray.cluster_resources() if k.startswith("site:"))
    if len(sites) >= count:
        print(" ".join(sites))
        break
    if time.monotonic() > deadline:
        sys.exit(f"only {len(sites)} of {count} site VMs joined in {timeout_s:g} s: {sites}")
    time.sleep(1.0)
PY
}

# thermoroute_solve HEAD_IP SPLIT_ROOT [extra thermoroute run options...]
# On the head: solve one horizon on the cluster with the default distributed method (the
# interior point with secure aggregation; `--method admm` for ADMM). The head holds
# SPLIT_ROOT/coordinator (and the site ids); the agent of site <id> reads
# SPLIT_ROOT/sites/<id> on its own VM. No comparison with the centralised baseline: the head
# has no site data to compute it. The coordinator serves its metrics on the head's private
# address (never 0.0.0.0 on a public VM).
thermoroute_solve() {
    local head_ip="$1" split_root="$2"
    shift 2
    thermoroute_ray_env
    thermoroute run "$split_root" \
        --solver distributed \
        --address "$head_ip:$THERMOROUTE_GCS_PORT" \
        --no-compare \
        --metrics-port "$THERMOROUTE_COORDINATOR_METRICS_PORT" \
        --metrics-addr "$head_ip" \
        "$@"
}

# thermoroute_admm HEAD_IP SPLIT_ROOT [extra options...]: thermoroute_solve with ADMM, the
# paper's method.
thermoroute_admm() {
    thermoroute_solve "$@" --method admm
}

# thermoroute_serve HEAD_IP SPLIT_ROOT [extra thermoroute serve options...]
# On the head: keep the site agents up and re-plan every step, publishing the plan on the
# head's private address (GET /plan, /status, /metrics on THERMOROUTE_PLAN_PORT) behind the
# bearer token in THERMOROUTE_PLAN_TOKEN_FILE (thermoroute_token_generate writes one). Each
# site VM's pipeline appends forecasts to its own SPLIT_ROOT/sites/<id>; the head's to
# SPLIT_ROOT/coordinator/demand.csv.
thermoroute_serve() {
    local head_ip="$1" split_root="$2"
    shift 2
    thermoroute_ray_env
    thermoroute serve "$split_root" \
        --address "$head_ip:$THERMOROUTE_GCS_PORT" \
        --host "$head_ip" \
        --port "$THERMOROUTE_PLAN_PORT" \
        --token-file "$THERMOROUTE_PLAN_TOKEN_FILE" \
        "$@"
}
