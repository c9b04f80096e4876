"""docs/reliability.md from a fresh run: the fault, attack and fuzz suites, and the long fuzz run.

One command (``make reliability``) produces the whole report, so its figures
are always from one run of the code they describe:

1. pytest runs tests/faults, tests/security and tests/fuzz with a JUnit XML
   report; each test records what it measured with ``record_property``;
2. bench/fuzz.py runs every fuzz target for ``--fuzz-cases`` cases (100,000
   by default) and writes its results as JSON;
3. this script writes docs/reliability.md: per suite, each test, what it
   proves (its docstring), its outcome and duration, and its figures; then
   the fuzz run's cases and failures per target.

It exits non-zero when a test or a fuzz target failed, after writing the
report (a red report is still a report).

    uv run python bench/reliability.py [--fuzz-cases 100000] [--output docs/reliability.md]
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# The suites the report covers, in the order it shows them, with their headings.
SUITES: dict[str, str] = {
    "tests/faults": "Fault suite",
    "tests/security": "Attack and permission suite",
    "tests/fuzz": "Fuzzing (CI-sized runs)",
}


@dataclass
class TestResult:
    """One test case as JUnit XML recorded it."""

    path: str  # tests/faults/test_x.py
    name: str  # test_y[param]
    seconds: float
    outcome: str  # passed, failed, error, skipped
    message: str = ""
    figures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def function(self) -> str:
        return self.name.split("[", 1)[0]


def run_pytest(junit: Path) -> int:
    """The three suites in one pytest session (one Synapse), reported to ``junit``."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        *(suite for suite in SUITES if (ROOT / suite).is_dir()),
        "-p",
        "no:cacheprovider",
        "-q",
        f"--junitxml={junit}",  # pyproject sets junit_family = xunit1: figures stay in the XML
    ]
    print("$", " ".join(command[2:]), flush=True)
    return subprocess.run(command, cwd=ROOT, check=False).returncode


def run_fuzz(cases: int, output: Path) -> int:
    command = [sys.executable, "bench/fuzz.py", "--cases", str(cases), "--json", str(output)]
    print("$", " ".join(command[1:]), flush=True)
    return subprocess.run(command, cwd=ROOT, check=False).returncode


def parse_junit(path: Path) -> list[TestResult]:
    results = []
    for case in ET.parse(path).getroot().iter("testcase"):  # noqa: S314 - see the import
        classname = case.get("classname", "")
        file = case.get("file") or classname.replace(".", "/") + ".py"
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                message = (found.get("message") or "").splitlines()[0][:200] if found.get("message") else ""
                break
        figures = [
            (prop.get("name", ""), prop.get("value", ""))
            for prop in case.iter("property")
            if prop.get("name")
        ]
        results.append(
            TestResult(file, case.get("name", ""), float(case.get("time") or 0), outcome, message, figures)
        )
    return results


def docstrings(path: Path) -> tuple[str, dict[str, str]]:
    """The module's docstring (first paragraph) and each test function's docstring, read without importing."""
    tree = ast.parse(path.read_text())
    module = (ast.get_docstring(tree) or "").split("\n\n", 1)[0].replace("\n", " ")
    functions = {
        node.name: " ".join((ast.get_docstring(node) or "").split())
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }
    return module, functions


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def render_suite(heading: str, results: list[TestResult]) -> list[str]:
    lines = [f"## {heading}", ""]
    if not results:
        return [*lines, "No test ran.", ""]
    by_file: dict[str, list[TestResult]] = {}
    for result in results:
        by_file.setdefault(result.path, []).append(result)
    for file, cases in sorted(by_file.items()):
        module_doc, function_docs = docstrings(ROOT / file)
        lines += [f"### `{file}`", ""]
        if module_doc:
            lines += [module_doc, ""]
        lines += ["| Test | What it proves | Result | Time | Figures |", "|---|---|---|---|---|"]
        for case in cases:
            figures = ", ".join(f"{name} = {value}" for name, value in case.figures) or "-"
            outcome = case.outcome if not case.message else f"{case.outcome}: {case.message}"
            lines.append(
                f"| `{cell(case.name)}` | {cell(function_docs.get(case.function, ''))} "
                f"| {cell(outcome)} | {case.seconds:.1f} s | {cell(figures)} |"
            )
        lines.append("")
    return lines


def render_fuzz(fuzz: list[dict[str, Any]] | None, cases: int) -> list[str]:
    lines = [f"## Long fuzz run (`bench/fuzz.py --cases {cases}`)", ""]
    if fuzz is None:
        return [*lines, "The fuzz run wrote no results (see the command's output).", ""]
    lines += ["| Target | Cases run | Failures | Time | First failure |", "|---|---|---|---|---|"]
    for target in fuzz:
        failures = target.get("failures", [])
        first = failures[0] if failures else "-"
        lines.append(
            f"| `{cell(str(target.get('target')))}` | {target.get('cases', 0):,} | {len(failures)} "
            f"| {float(target.get('elapsed_s', 0)):.0f} s | {cell(str(first))[:300]} |"
        )
    return [*lines, ""]


def summary(results: list[TestResult]) -> list[str]:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    parts = ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items()))
    return [f"Tests: {parts or 'none'}."]


def git_commit() -> str:
    try:
        found = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return found.stdout.strip()


def render(results: list[TestResult], fuzz: list[dict[str, Any]] | None, cases: int, took_s: float) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Reliability report",
        "",
        "What readybot's fault, attack and fuzz suites prove, with the figures of their latest run.",
        "Written by `make reliability` (`uv run python bench/reliability.py`); do not edit by hand.",
        "",
        f"- Run: {now}, commit `{git_commit()}`, {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {took_s / 60:.1f} min in all.",
        f"- {summary(results)[0]}",
        "",
    ]
    for directory, heading in SUITES.items():
        lines += render_suite(heading, [r for r in results if r.path.startswith(directory + "/")])
    lines += render_fuzz(fuzz, cases)
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz-cases", type=int, default=100_000, help="cases per fuzz target")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="readybot-reliability-") as work:
        junit, fuzz_json = Path(work) / "junit.xml", Path(work) / "fuzz.json"
        tests_code = run_pytest(junit)
        fuzz_code = run_fuzz(args.fuzz_cases, fuzz_json)
        results = parse_junit(junit) if junit.exists() else []
        fuzz = json.loads(fuzz_json.read_text()) if fuzz_json.exists() else None
    args.output.write_text(render(results, fuzz, args.fuzz_cases, time.monotonic() - began))
    print(f"wrote {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}")
    return 1 if tests_code or fuzz_code else 0


if __name__ == "__main__":
    sys.exit(main())
