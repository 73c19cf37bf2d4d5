#!/usr/bin/env bash
# End-to-end test of ebb on a real Kubernetes cluster made with kind or k3d.
#
# Where no kind/k3d cluster is reachable it says so and exits 0. Otherwise it
# builds the image (deploy/Dockerfile), loads it into the cluster, installs
# the operator (Helm chart, or the kustomize base when helm is missing), then
# creates an EbbCluster, a Database and its owner's Secret and checks the
# serverless cycle through the proxy with psql:
#
#   connect (resume from zero) -> CREATE TABLE, INSERT -> disconnect ->
#   the Database reports 0 replicas (idle timeout) -> connect again (resume
#   from the warm pool) -> the row is still there
#
# and prints how long each step took. Everything it made is deleted at the
# end (EBB_E2E_KEEP=1 keeps it).
#
# Settings (environment):
#   EBB_E2E_CLUSTER        kind/k3d cluster name (default: the first one found)
#   EBB_E2E_NAMESPACE      namespace to use (default ebb-e2e; deleted at the end)
#   EBB_E2E_IMAGE          image tag to build and load (default ebb:e2e)
#   EBB_E2E_SKIP_BUILD=1   use an already built EBB_E2E_IMAGE
#   EBB_E2E_OBJECT_STORE   file (default: a directory on the storage volume)
#                          or minio (a MinIO pod in the namespace; needs to
#                          pull minio/minio and minio/mc)
#   EBB_E2E_IDLE_TIMEOUT   the database's idle timeout (default 20s)
#   EBB_E2E_PORT           local port for kubectl port-forward (default 15432)
#   EBB_E2E_KEEP=1         leave everything installed
set -euo pipefail

deploy="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$deploy")"
ns="${EBB_E2E_NAMESPACE:-ebb-e2e}"
image="${EBB_E2E_IMAGE:-ebb:e2e}"
idle="${EBB_E2E_IDLE_TIMEOUT:-20s}"
port="${EBB_E2E_PORT:-15432}"
store="${EBB_E2E_OBJECT_STORE:-file}"
name=e2e          # the EbbCluster
db=e2e            # the Database (and its SQL name)
owner=e2e_owner

say() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[e2e] FAILED: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }

# --- is there a cluster? ---------------------------------------------------------
tool="" cluster="" ctx=""
if command -v kind >/dev/null 2>&1; then
  clusters="$(kind get clusters 2>/dev/null || true)"
  if [ -n "$clusters" ]; then
    cluster="${EBB_E2E_CLUSTER:-$(printf '%s\n' "$clusters" | head -n1)}"
    printf '%s\n' "$clusters" | grep -qx "$cluster" && { tool=kind; ctx="kind-$cluster"; }
  fi
fi
if [ -z "$tool" ] && command -v k3d >/dev/null 2>&1; then
  clusters="$(k3d cluster list --no-headers 2>/dev/null | awk '{print $1}' || true)"
  if [ -n "$clusters" ]; then
    cluster="${EBB_E2E_CLUSTER:-$(printf '%s\n' "$clusters" | head -n1)}"
    printf '%s\n' "$clusters" | grep -qx "$cluster" && { tool=k3d; ctx="k3d-$cluster"; }
  fi
fi
if [ -z "$tool" ]; then
  echo "e2e.sh: no kind or k3d cluster exists on this machine: the Kubernetes end-to-end test was NOT run (skipped)."
  echo "        Create one (kind create cluster, or k3d cluster create) and run deploy/e2e.sh again."
  exit 0
fi
command -v kubectl >/dev/null 2>&1 || { echo "e2e.sh: kubectl is not installed: the Kubernetes end-to-end test was NOT run (skipped)."; exit 0; }
if ! kubectl --context "$ctx" --request-timeout=10s get --raw /readyz >/dev/null 2>&1; then
  echo "e2e.sh: the $tool cluster '$cluster' (context $ctx) is not reachable: the Kubernetes end-to-end test was NOT run (skipped)."
  exit 0
fi
command -v psql >/dev/null 2>&1 || die "psql is needed (apt-get install postgresql-client)"
command -v docker >/dev/null 2>&1 || die "docker is needed to build the image"
k() { kubectl --context "$ctx" "$@"; }
say "using the $tool cluster '$cluster' (context $ctx), namespace $ns"

# --- cleanup ---------------------------------------------------------------------
pf_pid=""
installed=""
work="$(mktemp -d)"
dump() {
  echo "[e2e] what the cluster shows:" >&2
  {
    k -n "$ns" get ebbclusters,databases,pods,svc -o wide || true
    k -n "$ns" get events --sort-by=.lastTimestamp | tail -n 30 || true
    k -n "$ns" logs deploy/ebb-operator --tail=60 || true
  } >&2
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$pf_pid" ]; then kill "$pf_pid" 2>/dev/null || true; fi
  [ $rc -ne 0 ] && [ -n "$installed" ] && dump
  if [ "${EBB_E2E_KEEP:-0}" = 1 ]; then
    say "EBB_E2E_KEEP=1: leaving namespace $ns and the operator installed"
  elif [ -n "$installed" ]; then
    say "cleaning up"
    # Custom resources first, while the operator can still remove finalizers.
    k -n "$ns" delete databases.ebb.dev --all --wait=true --timeout=120s >/dev/null 2>&1 || true
    k -n "$ns" delete ebbclusters.ebb.dev --all --wait=true --timeout=120s >/dev/null 2>&1 || true
    case "$installed" in
      helm) helm --kube-context "$ctx" -n "$ns" uninstall ebb --wait >/dev/null 2>&1 || true ;;
      kustomize) k delete -k "$work/overlay" --ignore-not-found --wait=false >/dev/null 2>&1 || true ;;
    esac
    k delete namespace "$ns" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  [ $rc -ne 0 ] && echo "[e2e] failed (exit $rc)" >&2
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for DESCRIPTION TIMEOUT_SECONDS COMMAND...: polls COMMAND every second.
wait_for() {
  local what="$1" limit="$2"; shift 2
  local start; start=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    [ $(( $(date +%s) - start )) -ge "$limit" ] && die "timed out after ${limit}s waiting for $what"
    sleep 1
  done
}

# --- image ---------------------------------------------------------------------------
if [ "${EBB_E2E_SKIP_BUILD:-0}" = 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
  say "using the existing image $image"
else
  say "building $image (deploy/Dockerfile)"
  t0=$(now_ms)
  DOCKER_BUILDKIT=1 docker build -f "$deploy/Dockerfile" -t "$image" "$root"
  say "image built in $(( ($(now_ms) - t0) / 1000 ))s"
fi
say "loading $image into $tool"
case "$tool" in
  kind) kind load docker-image "$image" --name "$cluster" ;;
  k3d) k3d image import "$image" --cluster "$cluster" ;;
esac
repo="${image%:*}" tag="${image##*:}"

# --- operator ------------------------------------------------------------------------
k create namespace "$ns" --dry-run=client -o yaml | k apply -f - >/dev/null
t0=$(now_ms)
if command -v helm >/dev/null 2>&1; then
  say "installing the Helm chart (watching namespace $ns)"
  installed=helm
  helm --kube-context "$ctx" upgrade --install ebb "$deploy/helm/ebb" -n "$ns" \
    --set image.repository="$repo" --set image.tag="$tag" --set image.pullPolicy=Never \
    --set operator.watchNamespace="$ns" --wait --timeout 5m >/dev/null
else
  say "helm is not installed: applying the kustomize base (in namespace $ns)"
  installed=kustomize
  mkdir -p "$work/overlay"
  rel="$(python3 -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$deploy/kustomize/base" "$work/overlay")"
  cat >"$work/overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: $ns
resources:
  - $rel
images:
  - name: ebb
    newName: $repo
    newTag: "$tag"
patches:
  - target: {kind: Deployment, name: ebb-operator}
    patch: |-
      - op: replace
        path: /spec/template/spec/containers/0/imagePullPolicy
        value: Never
      - op: replace
        path: /spec/template/spec/containers/0/args/4
        value: --image=$image
EOF
  k apply --server-side -k "$work/overlay" >/dev/null
  k wait --for=condition=Established crd/ebbclusters.ebb.dev crd/databases.ebb.dev --timeout=60s >/dev/null
  k -n "$ns" rollout status deployment/ebb-operator --timeout=5m >/dev/null
fi
say "operator ready in $(( ($(now_ms) - t0) / 1000 ))s"

# --- object store --------------------------------------------------------------------
creds=""
if [ "$store" = minio ]; then
  say "starting MinIO"
  k -n "$ns" apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Secret
metadata: {name: e2e-s3}
stringData:
  AWS_ACCESS_KEY_ID: ebb-e2e
  AWS_SECRET_ACCESS_KEY: ebb-e2e-secret
  AWS_REGION: us-east-1
  AWS_ENDPOINT_URL: http://minio:9000
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: minio}
spec:
  selector: {matchLabels: {app: minio}}
  template:
    metadata: {labels: {app: minio}}
    spec:
      containers:
        - name: minio
          image: minio/minio
          args: ["server", "/data"]
          env:
            - {name: MINIO_ROOT_USER, value: ebb-e2e}
            - {name: MINIO_ROOT_PASSWORD, value: ebb-e2e-secret}
          ports: [{containerPort: 9000}]
          readinessProbe: {httpGet: {path: /minio/health/ready, port: 9000}}
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: minio}
spec:
  selector: {app: minio}
  ports: [{port: 9000}]
EOF
  k -n "$ns" rollout status deployment/minio --timeout=5m >/dev/null
  k -n "$ns" run minio-mb --rm -i --restart=Never --image=minio/mc --command -- \
    sh -c 'mc alias set m http://minio:9000 ebb-e2e ebb-e2e-secret >/dev/null && mc mb -p m/ebb' >/dev/null
  url="s3://ebb/e2e" creds="e2e-s3"
else
  url="file:///var/lib/ebb/objects"
fi

# --- cluster and database ----------------------------------------------------------------
creds_line=""
[ -n "$creds" ] && creds_line="    credentialsSecret: $creds"
password="$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')"
say "creating EbbCluster $name (object store $url) and Database $db (idle timeout $idle)"
t0=$(now_ms)
k -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata: {name: $db-owner}
stringData: {password: "$password"}
---
apiVersion: ebb.dev/v1alpha1
kind: EbbCluster
metadata: {name: $name}
spec:
  objectStore:
    url: $url
$creds_line
  storage: {replicas: 1, volumeSize: 1Gi}
  proxy: {replicas: 1, serviceType: ClusterIP}
  pool: {size: 2}
  databaseDefaults: {minReplicas: 0, maxReplicas: 2, idleTimeout: $idle, targetSessions: 8}
---
apiVersion: ebb.dev/v1alpha1
kind: Database
metadata: {name: $db}
spec:
  cluster: $name
  owner:
    name: $owner
    passwordSecret: {name: $db-owner, key: password}
EOF
phase() { k -n "$ns" get "$1" -o jsonpath='{.status.phase}' 2>/dev/null; }
replicas() { k -n "$ns" get "database/$db" -o jsonpath='{.status.replicas}' 2>/dev/null; }
warm() { k -n "$ns" get pods -l "ebb.dev/cluster=$name,ebb.dev/pool=warm" --field-selector=status.phase=Running -o name | wc -l; }
# Predicates for wait_for (run at every poll).
cluster_ready() { [ "$(phase "ebbcluster/$name")" = Ready ]; }
pool_full() { [ "$(warm)" -ge 2 ]; }
db_served() { local p; p="$(phase "database/$db")"; [ -n "$p" ] && [ "$p" != Pending ]; }
db_at_zero() { [ "$(replicas)" = 0 ]; }
wait_for "statefulset $name-storage" 300 k -n "$ns" rollout status "statefulset/$name-storage" --timeout=5s
wait_for "deployment $name-proxy" 300 k -n "$ns" rollout status "deployment/$name-proxy" --timeout=5s
wait_for "EbbCluster $name to be Ready" 300 cluster_ready
wait_for "2 warm compute pods" 300 pool_full
wait_for "Database $db to be served" 120 db_served
say "cluster ready in $(( ($(now_ms) - t0) / 1000 ))s: $(warm) warm pods; database phase $(phase "database/$db")"
k -n "$ns" get pods -l "ebb.dev/cluster=$name" -L app.kubernetes.io/component,ebb.dev/pool,ebb.dev/database

# --- connect ---------------------------------------------------------------------------------
k -n "$ns" port-forward "svc/$name-proxy" "$port:5432" >"$work/port-forward.log" 2>&1 &
pf_pid=$!
wait_for "kubectl port-forward on 127.0.0.1:$port" 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"
export PGPASSWORD="$password" PGCONNECT_TIMEOUT=60
dsn="postgresql://$owner@127.0.0.1:$port/$db?sslmode=disable"
sql() { psql "$dsn" -v ON_ERROR_STOP=1 -qtAX "$@"; }

t0=$(now_ms)
sql -c 'SELECT 1' >/dev/null || die "could not connect to $db through the proxy"
first_ms=$(( $(now_ms) - t0 ))
say "first connection + SELECT 1 (resume from zero): ${first_ms} ms"
sql -c 'CREATE TABLE e2e_notes (id int PRIMARY KEY, body text)' \
    -c "INSERT INTO e2e_notes VALUES (1, 'survives scale to zero')" >/dev/null
say "database phase $(phase "database/$db"), replicas $(replicas)"
k -n "$ns" get pods -l "ebb.dev/cluster=$name,ebb.dev/database=$db" -L ebb.dev/pool,ebb.dev/database

# --- scale to zero ---------------------------------------------------------------------------------
say "waiting for the database to scale to zero (idle timeout $idle)"
t0=$(now_ms)
wait_for "Database $db at 0 replicas" 300 db_at_zero
zero_ms=$(( $(now_ms) - t0 ))
say "scaled to zero ${zero_ms} ms after the last session (phase $(phase "database/$db"))"
wait_for "the warm pool back at 2" 120 pool_full

# --- resume ------------------------------------------------------------------------------------------
t0=$(now_ms)
row="$(sql -c 'SELECT body FROM e2e_notes WHERE id = 1')"
resume_ms=$(( $(now_ms) - t0 ))
[ "$row" = "survives scale to zero" ] || die "read back '$row' after resuming, expected 'survives scale to zero'"
say "resumed and read the row back: ${resume_ms} ms (connection + query, through kubectl port-forward)"
say "database phase $(phase "database/$db"), replicas $(replicas)"

echo
echo "ebb e2e on $tool/$cluster: passed"
printf '  %-44s %8s ms\n' "first connection (resume from zero)" "$first_ms" \
  "scale to zero after the last session" "$zero_ms" \
  "resume from zero + SELECT" "$resume_ms"
