"""Small helpers shared by the infra check scripts: a pass/fail tally that
prints every check and a closing `N passed, N failed` line, and a loader for
multi-document YAML such as the output of `kubectl kustomize`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable

import yaml


class Checks:
    """Counts named checks; every failure is printed with what was expected."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.passed = 0
        self.failed = 0

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"  ok    {name}")
        else:
            self.failed += 1
            print(f"  FAIL  {name}" + (f": {detail}" if detail else ""))
        return ok

    def equal(self, name: str, actual: Any, expected: Any) -> bool:
        return self.check(name, actual == expected, f"expected {expected!r}, got {actual!r}")

    def finish(self) -> int:
        """Print the summary line and return the process exit code."""
        print(f"{self.title}: {self.passed} passed, {self.failed} failed")
        return 1 if self.failed or not self.passed else 0


def load_documents(path: str | Path) -> list[dict[str, Any]]:
    """All non-empty YAML documents of a file, in order."""
    with open(path, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def find(docs: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """Documents of one kind (and name, when given)."""
    return [
        d
        for d in docs
        if d.get("kind") == kind and (name is None or d.get("metadata", {}).get("name") == name)
    ]


def die(message: str) -> None:
    """Stop with a message on stderr (bad arguments, unreadable input)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
