#!/usr/bin/env python3
"""Checks that the AWS SAM template describes the same service as the rest
of the repository:

* its HTTP API routes are exactly those of infra/routes.toml (method, path,
  and the function binary behind each), with the same timeout and memory per
  function;
* its DynamoDB table has the keys, indexes and billing mode of the code's
  table definition, read from `users-admin table-definition` (or from a JSON
  file in CreateTable shape);
* each function's IAM policy allows exactly the table actions it needs.

Usage:
  check_consistency.py [--routes infra/routes.toml] [--template infra/aws/template.yaml]
                       (--users-admin PATH | --table-definition FILE)
The last two also come from the environment: USERS_ADMIN, USERS_TABLE_DEFINITION.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from cfnlint.decode import decode

from checklib import Checks, die

REPO = Path(__file__).resolve().parents[2]

# What each function may do to the table, and nothing more (docs/deploy.md):
# register writes one new item with a condition; login reads it consistently
# and rewrites the hash when its parameters are outdated; jwks never touches it.
TABLE_ACTIONS = {
    "register": {"dynamodb:PutItem"},
    "login": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
    "jwks": set(),
}


# --- inputs -------------------------------------------------------------------


def load_table_definition(args: argparse.Namespace) -> dict[str, Any]:
    if args.table_definition:
        source = args.table_definition
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as err:
            die(f"cannot read the table definition: {err}")
    elif args.users_admin:
        source = f"{args.users_admin} table-definition"
        try:
            run = subprocess.run([args.users_admin, "table-definition"], capture_output=True,
                                 text=True, timeout=60, check=False)
        except OSError as err:
            die(f"cannot run {source}: {err}")
        if run.returncode != 0:
            die(f"`{source}` exited with {run.returncode}: {run.stderr.strip()}")
        text = run.stdout
    else:
        die("no table definition: pass --users-admin PATH (or USERS_ADMIN=PATH), the built "
            "users-admin binary, or --table-definition FILE (USERS_TABLE_DEFINITION=FILE)")
    try:
        definition = json.loads(text)
    except json.JSONDecodeError as err:
        die(f"{source} is not JSON: {err}")
    if isinstance(definition, dict) and isinstance(definition.get("Table"), dict):
        definition = definition["Table"]  # DescribeTable shape
    if not isinstance(definition, dict) or "KeySchema" not in definition:
        die(f"{source} is not a table definition in CreateTable shape (no KeySchema)")
    print(f"table definition from: {source}")
    return definition


def load_template(path: Path) -> dict[str, Any]:
    template, matches = decode(str(path))
    if matches or template is None:
        die(f"cannot parse {path}: {'; '.join(str(m) for m in matches)}")
    return template


# --- normal forms ------------------------------------------------------------


def keys(schema: list[dict[str, Any]] | None) -> list[tuple[str, str]]:
    """KeySchema as [(name, HASH|RANGE)], HASH first."""
    pairs = [(k["AttributeName"], k["KeyType"]) for k in schema or []]
    return sorted(pairs, key=lambda p: p[1] != "HASH")


def indexes(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Secondary indexes by name: keys and projection."""
    out = {}
    for index in items or []:
        projection = index.get("Projection") or {}
        out[index["IndexName"]] = {
            "keys": keys(index.get("KeySchema")),
            "projection": projection.get("ProjectionType"),
            "non_key": sorted(projection.get("NonKeyAttributes") or []),
        }
    return out


def table_shape(table: dict[str, Any]) -> dict[str, Any]:
    return {
        "attributes": sorted((a["AttributeName"], a["AttributeType"])
                             for a in table.get("AttributeDefinitions") or []),
        "keys": keys(table.get("KeySchema")),
        "global_indexes": indexes(table.get("GlobalSecondaryIndexes")),
        "local_indexes": indexes(table.get("LocalSecondaryIndexes")),
        "billing": table.get("BillingMode") or "PROVISIONED",
    }


# --- checks ------------------------------------------------------------------


def sam_functions(template: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Serverless functions by binary name: (logical id, resource)."""
    out = {}
    for logical_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") == "AWS::Serverless::Function":
            binary = ((resource.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
            out[binary or logical_id] = (logical_id, resource)
    return out


def check_routes(checks: Checks, routes: dict[str, Any], template: dict[str, Any]) -> None:
    functions = routes.get("functions") or {}
    expected = set()
    for route in routes.get("routes") or []:
        name = route["function"]
        binary = (functions.get(name) or {}).get("binary", name)
        expected.add((route["method"].upper(), route["path"], binary))
    checks.check("routes.toml has routes", bool(expected))

    sam = sam_functions(template)
    actual = set()
    for binary, (logical_id, resource) in sam.items():
        meta = resource.get("Metadata") or {}
        checks.equal(f"{logical_id}: BuildMethod", meta.get("BuildMethod"), "rust-cargolambda")
        for event_id, event in ((resource.get("Properties") or {}).get("Events") or {}).items():
            props = event.get("Properties") or {}
            checks.equal(f"{logical_id}.{event_id}: event type", event.get("Type"), "HttpApi")
            actual.add((str(props.get("Method", "")).upper(), props.get("Path"), binary))
    for route in sorted(expected | actual):
        checks.check(f"route {route[0]} {route[1]} -> {route[2]} in both",
                     route in expected and route in actual,
                     "only in routes.toml" if route in expected else "only in the SAM template")

    globals_fn = (template.get("Globals") or {}).get("Function") or {}
    for name, config in functions.items():
        binary = config.get("binary", name)
        if not checks.check(f"function {name}: a SAM function builds binary {binary!r}", binary in sam):
            continue
        logical_id, resource = sam[binary]
        props = resource.get("Properties") or {}
        checks.equal(f"{logical_id}: Timeout = timeout_seconds",
                     props.get("Timeout", globals_fn.get("Timeout")), config.get("timeout_seconds"))
        checks.equal(f"{logical_id}: MemorySize = memory_mb",
                     props.get("MemorySize", globals_fn.get("MemorySize")), config.get("memory_mb"))


def check_table(checks: Checks, template: dict[str, Any], definition: dict[str, Any]) -> str | None:
    tables = [(lid, r) for lid, r in (template.get("Resources") or {}).items()
              if r.get("Type") == "AWS::DynamoDB::Table"]
    if not checks.check("SAM template has one DynamoDB table", len(tables) == 1, f"found {len(tables)}"):
        return None
    logical_id, resource = tables[0]
    props = resource.get("Properties") or {}
    ours, code = table_shape(props), table_shape(definition)
    for aspect in ("attributes", "keys", "global_indexes", "local_indexes", "billing"):
        checks.equal(f"{logical_id}: {aspect} as in the code", ours[aspect], code[aspect])
    checks.check(f"{logical_id}: point-in-time recovery on",
                 (props.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled") is True)
    checks.check(f"{logical_id}: deletion protection on", props.get("DeletionProtectionEnabled") is True)
    checks.check(f"{logical_id}: retained on delete and replace",
                 resource.get("DeletionPolicy") == "Retain" and resource.get("UpdateReplacePolicy") == "Retain")
    return logical_id


def refers_to(value: Any, logical_id: str) -> bool:
    """Whether a CloudFormation value is (or is built only from) the given resource."""
    if isinstance(value, list):
        return bool(value) and all(refers_to(v, logical_id) for v in value)
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Ref":
            return arg == logical_id
        if fn == "Fn::GetAtt":
            target = arg.split(".")[0] if isinstance(arg, str) else arg[0]
            return target == logical_id
        if fn == "Fn::Sub":
            text = arg if isinstance(arg, str) else arg[0]
            return f"${{{logical_id}.Arn}}" in text
    return False


def check_iam(checks: Checks, template: dict[str, Any], table_id: str) -> None:
    sam = sam_functions(template)
    for binary, allowed in TABLE_ACTIONS.items():
        if binary not in sam:
            continue  # reported by check_routes
        logical_id, resource = sam[binary]
        props = resource.get("Properties") or {}
        actions: set[str] = set()
        resources_ok = True
        policies = props.get("Policies") or []
        if isinstance(policies, (str, dict)):
            policies = [policies]
        for policy in policies:
            if isinstance(policy, str) or "Statement" not in policy:
                checks.check(f"{logical_id}: policy is an inline statement (not a managed or SAM policy "
                             f"template, whose actions this check cannot see)", False, repr(policy))
                continue
            for statement in policy["Statement"]:
                acts = statement.get("Action")
                acts = [acts] if isinstance(acts, str) else acts or []
                actions.update(acts)
                if any(a.startswith("dynamodb:") for a in acts):
                    resources_ok &= refers_to(statement.get("Resource"), table_id)
        checks.check(f"{logical_id}: no managed policies or role override",
                     "Role" not in props and not props.get("ManagedPolicyArns"))
        checks.equal(f"{logical_id}: table actions", sorted(a for a in actions if a.startswith("dynamodb:")),
                     sorted(allowed))
        checks.check(f"{logical_id}: no wildcard actions", not any("*" in a for a in actions), str(sorted(actions)))
        checks.check(f"{logical_id}: table actions only on {table_id}", resources_ok)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=Path, default=REPO / "infra" / "routes.toml")
    parser.add_argument("--template", type=Path, default=REPO / "infra" / "aws" / "template.yaml")
    parser.add_argument("--users-admin", default=os.environ.get("USERS_ADMIN") or None,
                        help="users-admin binary, run as `users-admin table-definition` (env USERS_ADMIN)")
    parser.add_argument("--table-definition", default=os.environ.get("USERS_TABLE_DEFINITION") or None,
                        help="JSON file in CreateTable shape (env USERS_TABLE_DEFINITION)")
    args = parser.parse_args()

    try:
        routes = tomllib.loads(args.routes.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        die(f"cannot read {args.routes}: {err}")
    template = load_template(args.template)
    definition = load_table_definition(args)

    checks = Checks("check_consistency")
    print(f"routes: {args.routes}\ntemplate: {args.template}")
    check_routes(checks, routes, template)
    table_id = check_table(checks, template, definition)
    if table_id:
        check_iam(checks, template, table_id)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
