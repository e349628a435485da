"""Checks recorded responses of the running service against openapi.yaml.

Usage: check_responses.py OPENAPI_YAML RECORDED_JSON

RECORDED_JSON is a list of {"method", "path", "status", "headers", "body"}
objects (header names lower-case, body as text) that the end-to-end test
collected from real requests. Each response must be documented for its
operation and status, carry the documented required headers, have a
documented content type, and have a body that validates against the
schema. Every documented (operation, status) must have been exercised,
except 500, which a correct service cannot be made to answer. A method a
path does not take must get 405 with an `Allow` header and a problem body.
"""

import json
import sys

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

NOT_TRIGGERABLE = {"500"}


def main(spec_path, recorded_path):
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    with open(recorded_path) as f:
        recorded = json.load(f)

    root = "urn:openapi"

    def resolve(node):
        while isinstance(node, dict) and "$ref" in node:
            pointer = node["$ref"].lstrip("#/").split("/")
            node = spec
            for part in pointer:
                node = node[part]
        return node

    def validate(schema, instance):
        # The schema is checked in place inside the spec document, so that its
        # "#/components/..." references resolve against the spec.
        spec["components"]["schemas"]["__probe__"] = schema
        registry = Registry().with_resource(root, Resource(spec, specification=DRAFT202012))
        probe = {"$ref": f"{root}#/components/schemas/__probe__"}
        validator = Draft202012Validator(probe, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)
        return [f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}" for e in validator.iter_errors(instance)]

    passed, failures, seen = 0, [], set()
    for r in recorded:
        label = f"{r['method']} {r['path']} -> {r['status']}"
        problems = []
        path_item = spec["paths"].get(r["path"])
        if path_item is None:
            failures.append(f"{label}: path not in the spec")
            continue
        operation = path_item.get(r["method"].lower())
        headers = {k.lower(): v for k, v in r["headers"].items()}
        if operation is None:
            # A method the path does not take: 405 problem naming the others.
            allowed = sorted(m.upper() for m in path_item)
            if r["status"] != 405:
                problems.append(f"expected 405 for an undocumented method, got {r['status']}")
            if sorted(m.strip() for m in headers.get("allow", "").split(",") if m.strip()) != allowed:
                problems.append(f"Allow header {headers.get('allow')!r}, expected {', '.join(allowed)}")
            if not headers.get("content-type", "").startswith("application/problem+json"):
                problems.append("not application/problem+json")
            else:
                body = json.loads(r["body"])
                problems += validate({"$ref": "#/components/schemas/Problem"}, body)
                if body.get("code") != "METHOD_NOT_ALLOWED":
                    problems.append(f"code {body.get('code')!r}")
            if problems:
                failures.append(f"{label}: " + "; ".join(problems))
            else:
                passed += 1
            continue
        response = operation["responses"].get(str(r["status"]))
        if response is None:
            failures.append(f"{label}: status not documented")
            continue
        seen.add((r["method"].upper(), r["path"], str(r["status"])))
        response = resolve(response)
        for name, header in response.get("headers", {}).items():
            value = headers.get(name.lower())
            if value is None:
                if header.get("required"):
                    problems.append(f"missing header {name}")
                continue
            problems += [f"header {name}: {m}" for m in validate(header["schema"], value)]
        content = response.get("content", {})
        if content:
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if media not in content:
                problems.append(f"content type {media!r} not documented (expected one of {sorted(content)})")
            else:
                try:
                    body = json.loads(r["body"])
                except ValueError as e:
                    problems.append(f"body is not JSON: {e}")
                else:
                    problems += validate(content[media]["schema"], body)
        if problems:
            failures.append(f"{label}: " + "; ".join(problems))
        else:
            passed += 1

    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for status in operation["responses"]:
                key = (method.upper(), path, status)
                if status not in NOT_TRIGGERABLE and key not in seen:
                    failures.append(f"{method.upper()} {path} -> {status}: documented but never exercised")

    for failure in failures:
        print(f"FAIL {failure}")
    print(f"openapi contract: {passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
