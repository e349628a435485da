#!/usr/bin/env python3
"""Checks the OpenShift Route in rendered manifests (`kubectl kustomize`
output), which kubernetes-validate has no schema for: API version and kind,
that it targets the users Service through a port that Service really has,
and that it serves HTTPS only (edge TLS, plain HTTP redirected).

Usage: check_route.py RENDERED.yaml...
"""

from __future__ import annotations

import argparse
import sys

import yaml

from checklib import Checks, die, find, load_documents

SERVICE = "users"


def check_file(checks: Checks, path: str) -> None:
    docs = load_documents(path)
    routes = [d for d in docs if d.get("kind") == "Route"]
    if not checks.check(f"{path}: exactly one Route", len(routes) == 1, f"found {len(routes)}"):
        return
    route = routes[0]
    spec = route.get("spec") or {}
    checks.equal(f"{path}: Route apiVersion", route.get("apiVersion"), "route.openshift.io/v1")
    to = spec.get("to") or {}
    checks.equal(f"{path}: Route spec.to.kind", to.get("kind"), "Service")
    checks.equal(f"{path}: Route spec.to.name", to.get("name"), SERVICE)
    services = find(docs, "Service", to.get("name"))
    if checks.check(f"{path}: Route's Service is in the manifests", len(services) == 1,
                    f"no Service named {to.get('name')!r}"):
        ports = services[0].get("spec", {}).get("ports") or []
        names = {p.get("name") for p in ports if p.get("name")}
        numbers = {p.get("port") for p in ports}
        target = (spec.get("port") or {}).get("targetPort")
        checks.check(f"{path}: Route port.targetPort {target!r} is a port of the Service",
                     target in names or target in numbers,
                     f"Service ports are {sorted(map(str, names | numbers))}")
    tls = spec.get("tls") or {}
    checks.equal(f"{path}: Route tls.termination", tls.get("termination"), "edge")
    checks.equal(f"{path}: Route tls.insecureEdgeTerminationPolicy",
                 tls.get("insecureEdgeTerminationPolicy"), "Redirect")
    checks.check(f"{path}: Route carries no certificate or key",
                 not any(k in tls for k in ("key", "certificate", "caCertificate")),
                 "TLS material belongs in the platform, not in the repository")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifests", nargs="+", help="rendered manifests (multi-document YAML)")
    args = parser.parse_args()
    checks = Checks("check_route")
    for path in args.manifests:
        try:
            check_file(checks, path)
        except (OSError, yaml.YAMLError) as err:
            die(f"{path}: {err}")
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
