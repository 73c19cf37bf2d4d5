#!/usr/bin/env bash
# Validates everything under deploy/ without a cluster:
#
#   - deploy/crds/ebb.dev.yaml (what `ebb crd` prints) against the Kubernetes
#     schema of CustomResourceDefinition, plus what the API server would
#     refuse (non-structural schemas) and the names the operator relies on;
#     its copies in the Helm chart and the kustomize base must be identical;
#   - the kustomize base, rendered with `kubectl kustomize`;
#   - the Helm chart (`helm lint`, `helm template` with the default values and
#     each deploy/helm/ebb/ci/*-values.yaml), when helm -- or the Python
#     binding of Helm's Go SDK, helm-python-sdk -- is available;
#   - deploy/examples/*.yaml.
#
# Built-in kinds are checked with kubernetes-validate (strict: unknown fields
# fail) against Kubernetes 1.33 and the newest version it knows; EbbCluster
# and Database objects against the CRD's openAPIV3Schema; then references
# between the objects of one rendering (Service selectors, ServiceAccounts,
# role bindings, Secrets a Database or EbbCluster names) and the operator's
# command line. Exits non-zero on the first kind of failure, after printing
# every problem found.
#
# Environment: PYTHON (default python3); EBB_K8S_VERSIONS (default
# "1.33 latest"); EBB_VALIDATE_NO_INSTALL=1 to never pip-install
# kubernetes-validate or helm-python-sdk.
set -euo pipefail

deploy="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

say() { printf '%s\n' "$*"; }
die() { printf 'validate.sh: FAILED: %s\n' "$*" >&2; exit 1; }

pip_install() {
  [ "${EBB_VALIDATE_NO_INSTALL:-0}" = 1 ] && return 1
  say "installing $* (pip)"
  "$PY" -m pip install -q --disable-pip-version-check "$@" >/dev/null 2>&1 \
    || "$PY" -m pip install -q --disable-pip-version-check --break-system-packages "$@" >/dev/null 2>&1
}

command -v "$PY" >/dev/null 2>&1 || die "$PY not found (python 3 is needed)"
if ! "$PY" -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null; then
  pip_install kubernetes-validate || true
  "$PY" -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null \
    || die "kubernetes-validate is not installed and could not be: pip install kubernetes-validate"
fi

# --- CRDs and their copies -------------------------------------------------
crd="$deploy/crds/ebb.dev.yaml"
[ -f "$crd" ] || die "$crd is missing: generate it with 'cargo run --bin ebb -- crd > deploy/crds/ebb.dev.yaml'"
for copy in "$deploy/helm/ebb/crds/ebb.dev.yaml" "$deploy/kustomize/base/crds/ebb.dev.yaml"; do
  cmp -s "$crd" "$copy" \
    || die "${copy#"$deploy"/} differs from crds/ebb.dev.yaml: cp deploy/crds/ebb.dev.yaml ${copy#"$(dirname "$deploy")"/}"
done
say "ok   crds/ebb.dev.yaml is copied unchanged to helm/ebb/crds/ and kustomize/base/crds/"

inputs=()   # "label=path" pairs for the validator; one label is one set of objects

# --- kustomize ---------------------------------------------------------------
if command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize "$deploy/kustomize" >"$work/kustomize.yaml" \
    || die "kubectl kustomize deploy/kustomize failed"
elif command -v kustomize >/dev/null 2>&1; then
  kustomize build "$deploy/kustomize" >"$work/kustomize.yaml" \
    || die "kustomize build deploy/kustomize failed"
else
  die "neither kubectl nor kustomize is installed: cannot render deploy/kustomize/base"
fi
say "ok   rendered kustomize (deploy/kustomize -> base, $(grep -c '^kind:' "$work/kustomize.yaml") objects)"
inputs+=("kustomize/base=$work/kustomize.yaml")

# --- Helm ----------------------------------------------------------------------
chart="$deploy/helm/ebb"
value_sets=("default=")
for f in "$chart"/ci/*-values.yaml; do
  [ -f "$f" ] && value_sets+=("$(basename "$f" -values.yaml)=$f")
done
helm_rendered=""
if command -v helm >/dev/null 2>&1; then
  say "helm: $(helm version --short 2>/dev/null || echo unknown version)"
  helm lint --strict "$chart" >"$work/lint.txt" 2>&1 || { cat "$work/lint.txt"; die "helm lint --strict deploy/helm/ebb failed"; }
  say "ok   helm lint --strict helm/ebb"
  for set in "${value_sets[@]}"; do
    name="${set%%=*}"; file="${set#*=}"
    args=(template ebb "$chart" --namespace ebb-system --include-crds)
    [ -n "$file" ] && args+=(--values "$file")
    helm "${args[@]}" >"$work/helm-$name.yaml" || die "helm template with $name values failed"
    say "ok   helm template helm/ebb ($name values)"
    inputs+=("helm/$name=$work/helm-$name.yaml")
  done
  helm_rendered=1
else
  if ! "$PY" -c 'import helm_python' 2>/dev/null; then
    pip_install helm-python-sdk || true
  fi
  if "$PY" -c 'import helm_python' 2>/dev/null; then
    "$PY" - "$chart" "$work" "${value_sets[@]}" <<'PYHELM' || die "rendering the Helm chart with helm-python-sdk failed"
import sys, yaml, helm_python as helm
chart, work, sets = sys.argv[1], sys.argv[2], sys.argv[3:]
print(f"helm: not installed; using helm-python-sdk (Helm SDK {helm.helm_sdk_version()})")
report = helm.lint(chart, strict=True)
bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + [{"error": e} for e in report.get("errors") or []]
for m in report.get("messages", []):
    print(f"     lint: [{ {0:'UNKNOWN',1:'INFO',2:'WARNING',3:'ERROR'}.get(m.get('severity'), '?') }] {m.get('path','')}: {m.get('error')}")
if bad:
    sys.exit("helm lint --strict found problems")
print("ok   helm lint --strict helm/ebb")
with helm.Chart.load(chart) as c:
    crds = "".join(f"---\n# Source: {f.get('filename', f.get('name'))}\n{f['data']}\n" for f in c.crds)
    for s in sets:
        name, _, path = s.partition("=")
        values = yaml.safe_load(open(path)) if path else None
        manifests = c.render(values, name="ebb", namespace="ebb-system", is_install=True)
        notes = [v for k, v in manifests.items() if k.endswith("NOTES.txt")]
        if not notes or not notes[0].strip():
            sys.exit(f"NOTES.txt rendered empty with {name} values")
        docs = "".join(f"---\n# Source: {k}\n{v}\n" for k, v in sorted(manifests.items()) if not k.endswith(".txt"))
        open(f"{work}/helm-{name}.yaml", "w").write(crds + docs)
        print(f"ok   helm template helm/ebb ({name} values)")
PYHELM
    for set in "${value_sets[@]}"; do inputs+=("helm/${set%%=*}=$work/helm-${set%%=*}.yaml"); done
    helm_rendered=1
  else
    say "NOTE the Helm chart was NOT rendered or linted: helm is not installed (nor helm-python-sdk)."
    say "     Install helm (or 'pip install helm-python-sdk') to validate deploy/helm/ebb too."
  fi
fi

# --- Grafana dashboard ---------------------------------------------------------
"$PY" - "$deploy/grafana/ebb-dashboard.json" "$(dirname "$deploy")" <<'PYDASH' || die "deploy/grafana/ebb-dashboard.json"
import json, os, re, sys
path, root = sys.argv[1], sys.argv[2]
d = json.load(open(path))
if not any(i.get("name") == "DS_PROMETHEUS" and i.get("type") == "datasource" for i in d.get("__inputs", [])):
    sys.exit("FAIL grafana: no DS_PROMETHEUS datasource input")
targets = [(p.get("title"), t) for p in d.get("panels", []) for t in p.get("targets", [])]
bad = [title for title, t in targets if (t.get("datasource") or {}).get("uid") != "${DS_PROMETHEUS}" or not t.get("expr")]
if bad:
    sys.exit(f"FAIL grafana: panels without an expression on ${{DS_PROMETHEUS}}: {bad}")
used = {re.sub(r"_(bucket|count|sum)$", "", m) for _, t in targets for m in re.findall(r"\bebb_[a-z_]+", t["expr"])}
# Every metric the dashboard reads must be registered somewhere in the Rust sources.
defined = set()
for top in ("src", "storage", "compute", "proxy", "operator", "common"):
    for dirpath, dirs, files in os.walk(os.path.join(root, top)):
        dirs[:] = [x for x in dirs if x != "target"]
        for f in files:
            if f.endswith(".rs"):
                defined |= set(re.findall(r'"(ebb_[a-z_]+)"', open(os.path.join(dirpath, f), errors="replace").read()))
if not defined:
    print(f"NOTE grafana: no Rust sources beside deploy/; metric names not checked ({len(targets)} queries)")
else:
    missing = sorted(used - defined)
    if missing:
        sys.exit(f"FAIL grafana: the dashboard reads metrics no Rust source registers: {missing}")
    print(f"ok   grafana/ebb-dashboard.json ({len(targets)} queries over {len(used)} metrics, all registered in the sources)")
PYDASH

# --- examples ----------------------------------------------------------------
for f in "$deploy"/examples/*.yaml; do printf -- '---\n# Source: %s\n' "${f#"$deploy"/}"; cat "$f"; printf '\n'; done >"$work/examples.yaml"
inputs+=("examples=$work/examples.yaml")

# --- validate ------------------------------------------------------------------
cat >"$work/validate.py" <<'PYVALIDATE'
import copy, re, sys
import yaml, jsonschema
import kubernetes_validate.utils as kv

crd_path, versions, compare, pairs = sys.argv[1], sys.argv[2].split(), sys.argv[3] == "1", sys.argv[4:]
latest = kv.latest_version()
versions = sorted({latest if v == "latest" else v for v in versions})
problems, checked = [], 0

def fail(where, msg):
    problems.append(f"{where}: {msg}")
    print(f"FAIL {where}: {msg}")

def name_of(o):
    md = o.get("metadata") or {}
    return f"{o.get('kind')}/{md.get('name')}"

def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]

# --- the CRDs ---------------------------------------------------------------
def structural(schema, path, where, root=False):
    """The parts of the API server's structural-schema rules a mistake in
    the Rust types could break."""
    if not isinstance(schema, dict):
        return
    special = schema.get("x-kubernetes-int-or-string") or schema.get("x-kubernetes-preserve-unknown-fields")
    if "type" not in schema and not special and not root:
        fail(where, f"schema at {path or '.'} has no type (not structural)")
    if "properties" in schema and "additionalProperties" in schema:
        fail(where, f"schema at {path} has both properties and additionalProperties (the API server refuses it)")
    if schema.get("type") == "object" and "items" in schema or schema.get("type") == "array" and "items" not in schema:
        fail(where, f"schema at {path} mixes up array and object")
    for key in ("$ref", "definitions", "$schema"):
        if key in schema:
            fail(where, f"schema at {path} uses {key}, which a CRD may not")
    for k, v in (schema.get("properties") or {}).items():
        structural(v, f"{path}.{k}", where)
    if isinstance(schema.get("items"), dict):
        structural(schema["items"], f"{path}[]", where)
    if isinstance(schema.get("additionalProperties"), dict):
        structural(schema["additionalProperties"], f"{path}{{}}", where)

EXPECTED = {
    "EbbCluster": dict(plural="ebbclusters", short="ebbc", spec=["objectStore", "storage", "proxy", "pool", "databaseDefaults", "image"]),
    "Database": dict(plural="databases", short="ebbdb", spec=["cluster", "databaseName", "minReplicas", "maxReplicas", "idleTimeout", "targetSessions", "owner", "deletionPolicy"]),
}
schemas = {}
for crd in load(crd_path):
    where = f"crds/ebb.dev.yaml {name_of(crd)}"
    if crd.get("kind") != "CustomResourceDefinition":
        fail(where, "is not a CustomResourceDefinition")
        continue
    for v in versions:
        try:
            kv.validate(crd, v, strict=True)
        except kv.ValidationError as e:
            fail(where, f"k8s {e.version}: {'.'.join(map(str, e.path))}: {e.message}")
    spec = crd.get("spec", {})
    kind = spec.get("names", {}).get("kind")
    exp = EXPECTED.get(kind)
    if spec.get("group") != "ebb.dev" or exp is None:
        fail(where, f"unexpected group/kind {spec.get('group')}/{kind}")
        continue
    if spec["names"].get("plural") != exp["plural"] or exp["short"] not in (spec["names"].get("shortNames") or []):
        fail(where, f"names should be plural {exp['plural']} with short name {exp['short']}")
    if spec.get("scope") != "Namespaced":
        fail(where, "should be Namespaced")
    vers = {v["name"]: v for v in spec.get("versions", [])}
    ver = vers.get("v1alpha1")
    if not ver or not ver.get("served") or not ver.get("storage"):
        fail(where, "v1alpha1 should be served and the storage version")
        continue
    if "status" not in (ver.get("subresources") or {}):
        fail(where, "has no status subresource")
    schema = ver.get("schema", {}).get("openAPIV3Schema")
    if not schema:
        fail(where, "has no openAPIV3Schema")
        continue
    structural(schema, "", where, root=True)
    props = schema.get("properties", {}).get("spec", {}).get("properties", {})
    missing = [f for f in exp["spec"] if f not in props]
    if missing:
        fail(where, f"spec lacks {', '.join(missing)}")
    schemas[kind] = schema
    checked += 1
    print(f"ok   crds/ebb.dev.yaml {name_of(crd)} (k8s {', '.join(versions)}; structural; names)")
for kind in EXPECTED:
    if kind not in schemas:
        fail("crds/ebb.dev.yaml", f"no usable CRD for {kind}")

def to_jsonschema(s, root=False):
    """An openAPIV3Schema as JSON Schema (draft 4), strict like the API
    server's pruning would make it: unknown fields are errors."""
    if not isinstance(s, dict):
        return s
    s = copy.deepcopy(s)
    if s.pop("nullable", False) and "type" in s:
        s["type"] = [s["type"], "null"]
    if s.get("x-kubernetes-int-or-string") and "type" not in s and "anyOf" not in s:
        s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    for k in [k for k in s if k.startswith("x-kubernetes-")]:
        if k != "x-kubernetes-preserve-unknown-fields":
            s.pop(k)
    if "properties" in s:
        s["properties"] = {k: to_jsonschema(v) for k, v in s["properties"].items()}
    if root:
        s.setdefault("properties", {}).update({
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}}},
        })
    if "properties" in s and "additionalProperties" not in s and not s.get("x-kubernetes-preserve-unknown-fields"):
        if root:
            pass  # metadata has more fields than listed
        else:
            s["additionalProperties"] = False
    if isinstance(s.get("items"), dict):
        s["items"] = to_jsonschema(s["items"])
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = to_jsonschema(s["additionalProperties"])
    for k in ("allOf", "anyOf", "oneOf"):
        if k in s:
            s[k] = [to_jsonschema(x) for x in s[k]]
    s.pop("x-kubernetes-preserve-unknown-fields", None)
    return s

validators = {k: jsonschema.Draft4Validator(to_jsonschema(v, root=True)) for k, v in schemas.items()}
DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h|d))+$")

def check_custom(o, where):
    v = validators.get(o.get("kind"))
    if o.get("apiVersion") != "ebb.dev/v1alpha1" or v is None:
        fail(where, f"unknown ebb.dev kind or version {o.get('apiVersion')} {o.get('kind')}")
        return
    errs = sorted(v.iter_errors(o), key=lambda e: list(e.path))
    for e in errs:
        fail(where, f"{'.'.join(map(str, e.path)) or '.'}: {e.message}")
    spec = o.get("spec") or {}
    for d in (spec.get("idleTimeout"), (spec.get("databaseDefaults") or {}).get("idleTimeout")):
        if d is not None and not DURATION.match(str(d)):
            fail(where, f"idleTimeout {d!r} is not a duration like 300s or 5m")
    return not errs

# --- built-in kinds ---------------------------------------------------------
def check_builtin(o, where):
    ok = True
    for v in versions:
        try:
            kv.validate(o, v, strict=True)
        except kv.ValidationError as e:
            fail(where, f"k8s {e.version}: {'.'.join(map(str, e.path)) or '.'}: {e.message}")
            ok = False
        except kv.SchemaNotFoundError as e:
            fail(where, e.message)
            return False
    return ok

def check_monitor(o, where):
    # No schema ships for prometheus-operator kinds: check the shape we use.
    spec = o.get("spec") or {}
    eps = spec.get("endpoints") or spec.get("podMetricsEndpoints")
    if not isinstance(spec.get("selector"), dict) or not eps or not all(e.get("port") for e in eps):
        fail(where, "needs spec.selector and endpoints with a port")
        return False
    return True

# --- references between the objects of one set --------------------------------
def pod_spec(o):
    if o.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return ((o.get("spec") or {}).get("template") or {}).get("spec"), (((o.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
    return None, None

def references(objs, label):
    def ns(o):
        return (o.get("metadata") or {}).get("namespace")
    by = {}
    for o in objs:
        by.setdefault(o.get("kind"), {})[(ns(o), o["metadata"].get("name"))] = o
    def has(kind, namespace, name):
        return (namespace, name) in by.get(kind, {})
    workloads = [o for o in objs if pod_spec(o)[0] is not None]
    for o in objs:
        where = f"{label} {name_of(o)}"
        kind = o.get("kind")
        if kind in ("Deployment", "StatefulSet"):
            sel = ((o["spec"].get("selector") or {}).get("matchLabels")) or {}
            labels = pod_spec(o)[1]
            if any(labels.get(k) != v for k, v in sel.items()):
                fail(where, "selector does not match the pod template's labels")
            ps = pod_spec(o)[0]
            sa = ps.get("serviceAccountName")
            if sa and by.get("ServiceAccount") and not has("ServiceAccount", ns(o), sa):
                fail(where, f"ServiceAccount {sa} is not in the same rendering")
            for c in ps.get("containers", []):
                ports = {p.get("name") for p in c.get("ports", [])}
                for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                    port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        fail(where, f"{probe} uses port {port!r}, not a port of container {c.get('name')}")
                args = c.get("args") or []
                if args[:1] == ["operator"]:
                    flags = {a.split("=", 1)[0] for a in args if a.startswith("--")}
                    for need in ("--broker-listen", "--metrics-listen", "--broker-url", "--image"):
                        if need not in flags:
                            fail(where, f"the operator's command line lacks {need}")
                    env = {e.get("name") for e in c.get("env", [])}
                    for need in ("POD_NAMESPACE", "POD_NAME"):
                        if need not in env:
                            fail(where, f"the operator lacks env {need}")
        if kind == "Service":
            sel = (o.get("spec") or {}).get("selector") or {}
            # The leading operator labels its own pod at run time.
            sel = {k: v for k, v in sel.items() if k != "ebb.dev/leader"}
            targets = [w for w in workloads if ns(w) == ns(o) and all(pod_spec(w)[1].get(k) == v for k, v in sel.items())]
            if sel and workloads and not targets:
                fail(where, f"selector {sel} matches no pod template in the rendering")
            for t in targets:
                names = {p.get("name") for c in pod_spec(t)[0].get("containers", []) for p in c.get("ports", [])}
                for p in (o.get("spec") or {}).get("ports", []):
                    tp = p.get("targetPort")
                    if isinstance(tp, str) and tp not in names:
                        fail(where, f"targetPort {tp!r} is not a container port of {name_of(t)}")
        if kind in ("RoleBinding", "ClusterRoleBinding"):
            ref = o.get("roleRef") or {}
            rns = None if ref.get("kind") == "ClusterRole" else ns(o)
            if not has(ref.get("kind"), rns, ref.get("name")):
                fail(where, f"roleRef {ref.get('kind')}/{ref.get('name')} is not in the rendering")
            for s in o.get("subjects") or []:
                if s.get("kind") == "ServiceAccount" and by.get("ServiceAccount") and not has("ServiceAccount", s.get("namespace"), s.get("name")):
                    fail(where, f"subject ServiceAccount {s.get('namespace')}/{s.get('name')} is not in the rendering")
        if kind == "Database":
            spec = o.get("spec") or {}
            if by.get("EbbCluster") and not has("EbbCluster", ns(o), spec.get("cluster")):
                fail(where, f"cluster {spec.get('cluster')!r} is not an EbbCluster of the same namespace")
            sk = ((spec.get("owner") or {}).get("passwordSecret")) or {}
            if sk:
                sec = by.get("Secret", {}).get((ns(o), sk.get("name")))
                if sec is None:
                    fail(where, f"owner password Secret {sk.get('name')!r} is not in the rendering")
                elif sk.get("key", "password") not in {**(sec.get("data") or {}), **(sec.get("stringData") or {})}:
                    fail(where, f"Secret {sk.get('name')} has no key {sk.get('key', 'password')!r}")
        if kind == "EbbCluster":
            cs = ((o.get("spec") or {}).get("objectStore") or {}).get("credentialsSecret")
            sec = by.get("Secret", {}).get((ns(o), cs)) if cs else None
            if cs and sec is None:
                fail(where, f"credentials Secret {cs!r} is not in the rendering")
            if sec is not None:
                keys = set((sec.get("data") or {})) | set((sec.get("stringData") or {}))
                odd = keys - {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"}
                if odd:
                    fail(where, f"credentials Secret {cs} has keys that are not AWS_* settings: {sorted(odd)}")

# --- run ---------------------------------------------------------------------------
sets = {}
for pair in pairs:
    label, _, path = pair.partition("=")
    objs = load(path)
    sets[label] = objs
    for o in objs:
        if not isinstance(o, dict) or "kind" not in o or "apiVersion" not in o:
            fail(label, f"not a Kubernetes object: {str(o)[:80]}")
            continue
        where = f"{label} {name_of(o)}"
        group = o["apiVersion"].split("/")[0] if "/" in o["apiVersion"] else ""
        if o["kind"] == "CustomResourceDefinition":
            ok = check_builtin(o, where)
            how = "k8s " + ", ".join(versions)
        elif group == "ebb.dev":
            ok = check_custom(o, where)
            how = "CRD openAPIV3Schema"
        elif group == "monitoring.coreos.com":
            ok = check_monitor(o, where)
            how = "shape only: no schema for prometheus-operator kinds"
        else:
            ok = check_builtin(o, where)
            how = "k8s " + ", ".join(versions) + ", strict"
        if ok:
            checked += 1
            print(f"ok   {where} ({how})")
    references([o for o in objs if isinstance(o, dict) and "kind" in o and "metadata" in o], label)

# The kustomize base is the chart with its default values.
if compare and "helm/default" in sets:
    def norm(o):
        o = copy.deepcopy(o)
        md = o.get("metadata", {})
        for k in ("helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of", "app.kubernetes.io/version"):
            (md.get("labels") or {}).pop(k, None)
            (((o.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}).pop(k, None)
        for c in (((o.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers", []):
            c["args"] = [a.replace("$(POD_NAMESPACE)", "ebb-system") for a in c.get("args", [])]
            c["image"] = str(c.get("image"))
            for e in c.get("env", []):
                if "value" in e:
                    e["value"] = str(e["value"])
        return o
    helm = {name_of(o) + "@" + str(o["metadata"].get("namespace")): norm(o) for o in sets["helm/default"] if o.get("kind") != "CustomResourceDefinition"}
    kust = {name_of(o) + "@" + str(o["metadata"].get("namespace")): norm(o) for o in sets["kustomize/base"] if o.get("kind") not in ("CustomResourceDefinition", "Namespace")}
    for k in sorted(set(helm) | set(kust)):
        if k not in kust:
            fail("kustomize/base", f"lacks {k}, which the chart renders with its default values")
        elif k not in helm:
            fail("kustomize/base", f"has {k}, which the chart does not render with its default values")
        elif helm[k] != kust[k]:
            fail("kustomize/base", f"{k} differs from the chart's default rendering")
    if all(k in kust and helm[k] == kust.get(k) for k in helm):
        print(f"ok   kustomize/base equals the chart's default rendering ({len(helm)} objects, labels aside)")

print(f"validate.sh: {checked} objects valid, {len(problems)} problems")
sys.exit(1 if problems else 0)
PYVALIDATE

"$PY" "$work/validate.py" "$crd" "${EBB_K8S_VERSIONS:-1.33 latest}" "${helm_rendered:-0}" "${inputs[@]}" \
  || die "see the FAIL lines above"
if [ -z "$helm_rendered" ]; then
  say "validate.sh: passed (the Helm chart was not rendered: helm is not installed)"
else
  say "validate.sh: passed"
fi
