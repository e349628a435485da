#!/usr/bin/env python3
"""Checks the users Deployment in rendered manifests (`kubectl kustomize`
output) for what APPUiO's restricted SCC and this service need, beyond what
a schema can say: the security posture (no root, no fixed UID, read-only
root filesystem, no capabilities, no privilege escalation, RuntimeDefault
seccomp), probes on the emulator's health endpoints, a rollout that never
drops capacity, resources, the Secrets and ConfigMap it needs, and the
wiring of Service, HorizontalPodAutoscaler and PodDisruptionBudget to it.

Usage: check_deployment.py [--expect-image IMAGE] RENDERED.yaml...
"""

from __future__ import annotations

import argparse
import posixpath
import sys
from typing import Any

import yaml

from checklib import Checks, die, find, load_documents

NAME = "users"
JWT_SECRET = "users-jwt"
STORE_SECRET = "users-dynamodb"
HEALTH_PREFIX = "/_emulator/health/"
PROBE_PATHS = {
    "startupProbe": HEALTH_PREFIX + "live",
    "livenessProbe": HEALTH_PREFIX + "live",
    "readinessProbe": HEALTH_PREFIX + "ready",
}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector (or a Service selector) picks these labels."""
    wanted = selector.get("matchLabels", selector) if selector else {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def check_security(checks: Checks, where: str, pod: dict[str, Any], container: dict[str, Any]) -> None:
    psc = pod.get("securityContext") or {}
    csc = container.get("securityContext") or {}
    checks.check(f"{where}: runAsNonRoot", csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True)
    checks.check(f"{where}: no runAsUser (OpenShift assigns an arbitrary UID)",
                 "runAsUser" not in psc and "runAsUser" not in csc)
    checks.check(f"{where}: no runAsGroup/fsGroup pinned",
                 not any(k in psc for k in ("runAsGroup", "fsGroup")) and "runAsGroup" not in csc)
    checks.check(f"{where}: not privileged", csc.get("privileged") is not True)
    checks.equal(f"{where}: allowPrivilegeEscalation", csc.get("allowPrivilegeEscalation"), False)
    checks.equal(f"{where}: readOnlyRootFilesystem", csc.get("readOnlyRootFilesystem"), True)
    caps = csc.get("capabilities") or {}
    checks.check(f"{where}: capabilities drop ALL", "ALL" in (caps.get("drop") or []), f"drop={caps.get('drop')}")
    checks.check(f"{where}: no capabilities added", not caps.get("add"), f"add={caps.get('add')}")
    seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    checks.equal(f"{where}: seccompProfile", seccomp, "RuntimeDefault")
    checks.check(f"{where}: no host namespaces",
                 not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")))


def check_probes(checks: Checks, where: str, container: dict[str, Any]) -> None:
    ports = container.get("ports") or []
    port_ids = {p.get("name") for p in ports} | {p.get("containerPort") for p in ports}
    for probe, path in PROBE_PATHS.items():
        get = (container.get(probe) or {}).get("httpGet") or {}
        checks.equal(f"{where}: {probe} path", get.get("path"), path)
        checks.check(f"{where}: {probe} port is a container port", get.get("port") in port_ids,
                     f"{get.get('port')!r} not in {sorted(map(str, port_ids))}")


def check_config(checks: Checks, docs: list[dict[str, Any]], where: str,
                 pod: dict[str, Any], container: dict[str, Any]) -> None:
    env_from = container.get("envFrom") or []
    cm_names = [e["configMapRef"]["name"] for e in env_from if "configMapRef" in e]
    secret_names = [e["secretRef"]["name"] for e in env_from if "secretRef" in e]
    checks.check(f"{where}: store settings from Secret {STORE_SECRET}", STORE_SECRET in secret_names,
                 f"envFrom secrets: {secret_names}")
    checks.check(f"{where}: no secret value inline in env",
                 not any("value" in e and (e.get("name", "").startswith("AWS_SECRET")
                                           or e.get("name") in ("AWS_ACCESS_KEY_ID", "JWT_PRIVATE_KEY"))
                         for e in container.get("env") or []))
    config: dict[str, str] = {}
    for name in cm_names:
        found = find(docs, "ConfigMap", name)
        if checks.check(f"{where}: ConfigMap {name} is in the manifests", len(found) == 1):
            config.update(found[0].get("data") or {})

    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    jwt_volumes = [n for n, v in volumes.items() if (v.get("secret") or {}).get("secretName") == JWT_SECRET]
    if not checks.check(f"{where}: Secret {JWT_SECRET} is a volume", len(jwt_volumes) == 1):
        return
    volume = volumes[jwt_volumes[0]]
    items = (volume.get("secret") or {}).get("items")
    checks.check(f"{where}: {JWT_SECRET} volume includes private.pem",
                 items is None or any(i.get("key") == "private.pem" for i in items))
    mounts = [m for m in container.get("volumeMounts") or [] if m.get("name") == jwt_volumes[0]]
    if not checks.check(f"{where}: {JWT_SECRET} is mounted read-only",
                        len(mounts) == 1 and mounts[0].get("readOnly") is True):
        return
    key_file = config.get("JWT_PRIVATE_KEY_FILE", "")
    checks.equal(f"{where}: JWT_PRIVATE_KEY_FILE is private.pem in the {JWT_SECRET} mount",
                 posixpath.normpath(key_file),
                 posixpath.join(mounts[0].get("mountPath", ""), "private.pem"))
    checks.check(f"{where}: /tmp is a writable emptyDir",
                 any(m.get("mountPath") == "/tmp" and "emptyDir" in volumes.get(m.get("name"), {})
                     for m in container.get("volumeMounts") or []))


def check_file(checks: Checks, path: str, expect_image: str | None) -> None:
    docs = load_documents(path)
    deployments = find(docs, "Deployment", NAME)
    if not checks.check(f"{path}: one Deployment {NAME}", len(deployments) == 1, f"found {len(deployments)}"):
        return
    deployment = deployments[0]
    spec = deployment.get("spec") or {}
    template = spec.get("template") or {}
    pod = template.get("spec") or {}
    pod_labels = (template.get("metadata") or {}).get("labels") or {}
    containers = pod.get("containers") or []

    strategy = spec.get("strategy") or {}
    checks.equal(f"{path}: rollout strategy", strategy.get("type"), "RollingUpdate")
    checks.equal(f"{path}: rollingUpdate.maxUnavailable",
                 (strategy.get("rollingUpdate") or {}).get("maxUnavailable"), 0)
    checks.check(f"{path}: no replicas (the HPA owns the count)", "replicas" not in spec)
    checks.check(f"{path}: no service account token mounted", pod.get("automountServiceAccountToken") is False)
    checks.check(f"{path}: selector matches the pod labels", selects(spec.get("selector") or {}, pod_labels))

    for container in containers:
        where = f"{path}: container {container.get('name')}"
        check_security(checks, where, pod, container)
        image = container.get("image", "")
        if expect_image:
            checks.equal(f"{where}: image pinned", image, expect_image)
        else:
            checks.check(f"{where}: image set by the overlay", image != NAME and (":" in image or "@" in image),
                         f"image is {image!r}")
        res = container.get("resources") or {}
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                checks.check(f"{where}: resources.{kind}.{resource} set", resource in (res.get(kind) or {}))
        check_probes(checks, where, container)
        check_config(checks, docs, where, pod, container)
    for container in pod.get("initContainers") or []:
        check_security(checks, f"{path}: initContainer {container.get('name')}", pod, container)

    services = find(docs, "Service", NAME)
    checks.check(f"{path}: Service {NAME} selects the pods",
                 len(services) == 1 and selects(services[0].get("spec", {}).get("selector") or {}, pod_labels))
    hpas = find(docs, "HorizontalPodAutoscaler", NAME)
    if checks.check(f"{path}: one HorizontalPodAutoscaler {NAME}", len(hpas) == 1):
        hpa = hpas[0]
        checks.equal(f"{path}: HPA apiVersion", hpa.get("apiVersion"), "autoscaling/v2")
        target = hpa.get("spec", {}).get("scaleTargetRef") or {}
        checks.equal(f"{path}: HPA scales the Deployment", (target.get("kind"), target.get("name")),
                     ("Deployment", NAME))
        lo, hi = hpa["spec"].get("minReplicas", 1), hpa["spec"].get("maxReplicas", 0)
        checks.check(f"{path}: HPA 1 <= minReplicas <= maxReplicas", 1 <= lo <= hi, f"{lo}..{hi}")
    pdbs = find(docs, "PodDisruptionBudget", NAME)
    checks.check(f"{path}: PodDisruptionBudget selects the pods",
                 len(pdbs) == 1 and selects(pdbs[0].get("spec", {}).get("selector") or {}, pod_labels))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifests", nargs="+", help="rendered manifests (multi-document YAML)")
    parser.add_argument("--expect-image", help="the exact image every container must run")
    args = parser.parse_args()
    checks = Checks("check_deployment")
    for path in args.manifests:
        try:
            check_file(checks, path, args.expect_image)
        except (OSError, yaml.YAMLError) as err:
            die(f"{path}: {err}")
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
