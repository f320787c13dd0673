#!/usr/bin/env python3
"""Check the manifests `kubectl kustomize` rendered for one overlay (YAML on stdin).

Usage: kubectl kustomize deploy/kubernetes/overlays/X | check_manifests.py evaluation|production
Exits 1 naming every property that does not hold; prints what it checked otherwise.
"""
import sys

import yaml

overlay = sys.argv[1]
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
problems = []
checked = 0


def check(cond, what):
    global checked
    checked += 1
    if not cond:
        problems.append(what)


def get(kind, name):
    obj = by_kind.get(kind, {}).get(name)
    check(obj is not None, f"{kind}/{name} is rendered")
    return obj or {}


secrets = by_kind.get("Secret", {})
config_maps = by_kind.get("ConfigMap", {})


def check_pod(deploy, container_name, needs_http):
    pod = deploy["spec"]["template"]["spec"]
    name = deploy["metadata"]["name"]
    psc = pod.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True, f"{name}: pod runAsNonRoot")
    check(psc.get("runAsUser") == 65532, f"{name}: pod runs as uid 65532 (the image's user)")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: seccomp RuntimeDefault")
    check(pod.get("automountServiceAccountToken") is False, f"{name}: no service account token")
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    sel = deploy["spec"]["selector"]["matchLabels"]
    check(all(labels.get(k) == v for k, v in sel.items()), f"{name}: selector matches the pod labels")
    [c] = [c for c in pod["containers"] if c["name"] == container_name] or [{}]
    csc = c.get("securityContext", {})
    check(csc.get("readOnlyRootFilesystem") is True, f"{name}: read-only root file system")
    check(csc.get("allowPrivilegeEscalation") is False, f"{name}: no privilege escalation")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: all capabilities dropped")
    res = c.get("resources", {})
    check("cpu" in res.get("requests", {}) and "memory" in res.get("requests", {}),
          f"{name}: CPU and memory requests")
    check("memory" in res.get("limits", {}), f"{name}: a memory limit")
    check(c.get("image", "").startswith("localhost/cloak-manager"), f"{name}: the manager image")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    check("/tmp" in mounts and "/var/lib/cloak" in mounts,
          f"{name}: writable /tmp and /var/lib/cloak on volumes (the root is read-only)")
    for path, vol in mounts.items():
        check(vol in volumes, f"{name}: volume {vol} mounted at {path} exists")
    for v in volumes.values():
        if "configMap" in v:
            check(v["configMap"]["name"] in config_maps, f"{name}: ConfigMap {v['configMap']['name']} rendered")
        if "secret" in v:
            check(v["secret"]["secretName"] in secrets, f"{name}: Secret {v['secret']['secretName']} rendered")
            check(v["secret"].get("defaultMode") == 0o400, f"{name}: secret files 0400")
            check("fsGroup" not in psc, f"{name}: no fsGroup with secret files (it makes them 0440)")
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            s = secrets.get(ref["name"])
            check(s is not None and ref["key"] in s.get("data", {}),
                  f"{name}: env {e['name']} names key {ref['key']} of a rendered Secret")
    env = {e["name"] for e in c.get("env", [])}
    if needs_http:
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        check(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", f"{name}: readiness /readyz")
        check(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", f"{name}: liveness /healthz")
        for probe in ("readinessProbe", "livenessProbe"):
            port = c.get(probe, {}).get("httpGet", {}).get("port")
            check(port in ports, f"{name}: {probe} port {port} is a container port")
    return c, env, volumes, psc


def flag(args, name):
    """The value of `--name V` or `--name=V` in a container's args (the last one wins), or None."""
    value = None
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(name + "="):
            value = a.split("=", 1)[1]
    return value


def toml_setting(key):
    """A key of the rendered manager.toml (the ConfigMap both Deployments mount), or None."""
    import tomllib

    for name, cm in config_maps.items():
        if name.startswith("cloak-manager-config"):
            return tomllib.loads(cm.get("data", {}).get("manager.toml", "")).get(key)
    return None


def serve_workers(c):
    """Conversion workers inside `cloak manager serve`, as it resolves them: the flag, else
    CLOAK_MANAGER_WORKERS, else `workers` in manager.toml, else 1."""
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    for v in (flag(c.get("args", []), "--workers"), env.get("CLOAK_MANAGER_WORKERS"),
              toml_setting("workers"), 1):
        if v is not None:
            return int(v)


manager = get("Deployment", "cloak-manager")
service = get("Service", "cloak-manager")
check(service.get("spec", {}).get("selector") == {"app.kubernetes.io/name": "cloak-manager"},
      "Service selects the manager pods")
mc, menv, mvol, mpsc = check_pod(manager, "manager", True)
check(any(p.get("targetPort") == "http" for p in service.get("spec", {}).get("ports", [])),
      "Service targets the named http port")
check("CLOAK_ADMIN_PASSWORD" in menv, "manager: admin password from a Secret")

if overlay == "evaluation":
    check(manager["spec"]["replicas"] == 1, "evaluation: one manager replica")
    check(manager["spec"]["strategy"]["type"] == "Recreate",
          "evaluation: Recreate (two processes never share the SQLite data dir)")
    check("CLOAK_MANAGER_DATABASE_URL" not in menv, "evaluation: no database URL (embedded SQLite)")
    data = mvol.get("data", {})
    check(data.get("persistentVolumeClaim", {}).get("claimName") in by_kind.get("PersistentVolumeClaim", {}),
          "evaluation: the data dir is on a rendered PersistentVolumeClaim")
    check("emptyDir" not in data, "evaluation: the data volume is not an emptyDir")
    check(mpsc.get("fsGroup") == 65532, "evaluation: fsGroup so the non-root user writes the volume")
    check("cloak-worker" not in by_kind.get("Deployment", {}), "evaluation: no worker (SQLite)")
    check(all(s.startswith("cloak-admin") for s in secrets), "evaluation: only the admin Secret")
    check(serve_workers(mc) >= 1, "evaluation: the manager converts in-process (there is no worker)")
elif overlay == "production":
    check(manager["spec"]["replicas"] == 3, "production: three manager replicas")
    check(manager["spec"]["strategy"].get("rollingUpdate", {}).get("maxUnavailable") == 0,
          "production: rolling updates keep every replica until its successor is ready")
    check("CLOAK_MANAGER_DATABASE_URL" in menv, "production: database URL from a Secret")
    check("persistentVolumeClaim" not in mvol.get("data", {}), "production: replicas keep no state on disk")
    worker = get("Deployment", "cloak-worker")
    check(worker.get("spec", {}).get("replicas") == 2, "production: two workers")
    wc, wenv, _, _ = check_pod(worker, "worker", False)
    check(wc.get("command", [])[-2:] == ["manager", "worker"], "worker: runs `cloak manager worker`")
    check("CLOAK_MANAGER_DATABASE_URL" in wenv, "worker: database URL from a Secret")
    check(serve_workers(mc) == 0,
          "production: the API replicas run no conversion workers (CLOAK_MANAGER_WORKERS=0)")
    # `cloak manager worker` takes its count from --workers only (default 1).
    check(int(flag(wc.get("args", []), "--workers") or 1) >= 1, "worker: at least one conversion worker")
    pdb = get("PodDisruptionBudget", "cloak-manager")
    check(pdb.get("spec", {}).get("selector", {}).get("matchLabels")
          == manager["spec"]["selector"]["matchLabels"], "PodDisruptionBudget selects the manager pods")
    check(pdb.get("spec", {}).get("maxUnavailable") == 1, "PodDisruptionBudget: one replica at a time")
    ing = get("Ingress", "cloak-manager")
    tls = ing.get("spec", {}).get("tls", [])
    check(bool(tls) and all(t.get("secretName") for t in tls), "Ingress: TLS with a certificate Secret")
    hosts = {h for t in tls for h in t.get("hosts", [])}
    backends = [p["backend"]["service"] for r in ing.get("spec", {}).get("rules", [])
                for p in r["http"]["paths"]]
    check(all(r.get("host") in hosts for r in ing.get("spec", {}).get("rules", [])),
          "Ingress: every rule's host is covered by TLS")
    check(backends and all(b["name"] == "cloak-manager" and b["port"].get("name") == "http" for b in backends),
          "Ingress: routes to the manager Service's http port")
    check({"master.key", "audit.key"} <= set(next((s["data"] for n, s in secrets.items()
                                                     if n.startswith("cloak-keys")), {})),
          "production: master and audit keys in a Secret")
else:
    sys.exit(f"unknown overlay {overlay!r}: evaluation or production")

if problems:
    print(f"{overlay}: {len(problems)} of {checked} checks FAILED:", file=sys.stderr)
    for p in problems:
        print(f"  - {p}", file=sys.stderr)
    sys.exit(1)
print(f"{overlay}: {checked} checks passed on {len(docs)} rendered objects")
