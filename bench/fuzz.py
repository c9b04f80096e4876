"""The fuzz targets' long run: 100,000 Hypothesis cases per target, failures counted and shrunk.

Runs each target of ``tests/fuzz/targets.py`` (the same strategies and
checks as the CI tests) through ``@given`` with ``max_examples`` set to what
is left of ``--cases``. Hypothesis stops a run at its first failing case and
shrinks it (other distinct bugs seen on the way are reported too:
``report_multiple_bugs``); the run then continues with a fresh seed for the
remaining cases, so one bug does not hide the rest of the budget. Cases are
counted in the check itself (every call, shrinking included, is a case run;
"failing" counts the calls that raised).

Hypothesis runs are at most ``_CHUNK`` cases each: within a run Hypothesis
keeps what it explored (a tree of choices, a cache of up to 10,000 recent
cases), and with the renderers' large inputs one run of 100,000 grew past
8 GiB here, one of 5,000 to 3.7 GiB; between runs it is freed, so runs of
1,000 with fresh seeds explore as widely and stay small. Targets run in ``--jobs``
processes (one per core by default).

Prints per target: cases run, failing cases, distinct failures (exception
type and where it was raised) each with its minimal example, elapsed time;
``--json`` also writes them for bench/reliability.py. Exits 1 if any target
failed.

    uv run python bench/fuzz.py [--cases 100000] [--target NAME ...] [--seed N] [--jobs N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, Phase, given, seed, settings

from tests.fuzz.targets import Target, all_targets

# Cases per Hypothesis run (see the module docstring).
_CHUNK = 1_000
# Consecutive Hypothesis runs that found a failure before the budget ran out:
# past this, the target is failing everywhere and more runs say nothing new.
_MAX_FAILED_RUNS = 20


@dataclass
class Tally:
    cases: int = 0
    failing: int = 0
    # (exception type, file:line where it was raised) → minimal example and message.
    distinct: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)


def _where(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    ours = [
        f
        for f in frames
        if "/bot/" in f.filename or "/commands/" in f.filename or "/tests/fuzz/" in f.filename
    ]
    chosen = ours or frames
    if not chosen:
        return "?"
    return f"{Path(chosen[-1].filename).name}:{chosen[-1].lineno}"


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _example_of(error: BaseException) -> str:
    """The minimal example Hypothesis attached to the error ("Failing test case: ...")."""
    notes = getattr(error, "__notes__", [])
    shown = [note for note in notes if note.startswith(("Failing", "Falsifying"))]
    text = "\n".join(shown) or "(no example recorded)"
    return text if len(text) <= 2_000 else text[:2_000] + " …"


def run_target(target: Target, cases: int, first_seed: int | None) -> Tally:
    tally = Tally()

    def counted(case: Any) -> None:
        tally.cases += 1
        try:
            target.check(case)
        except Exception:
            tally.failing += 1
            raise

    failed_runs = 0
    run = 0
    while tally.cases < cases and failed_runs < _MAX_FAILED_RUNS:
        budget = min(_CHUNK, cases - tally.cases)
        test = settings(
            max_examples=budget,
            deadline=None,
            database=None,  # every run explores; nothing replayed from an earlier one
            derandomize=False,
            report_multiple_bugs=True,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )(given(target.strategy)(counted))
        if first_seed is not None:
            test = seed(first_seed + run)(test)
        run += 1
        before = tally.cases
        try:
            test()
        except Exception as error:
            failed_runs += 1
            for leaf in _leaves(error):
                key = (type(leaf).__name__, _where(leaf))
                tally.distinct.setdefault(key, (_example_of(leaf), str(leaf)[:300]))
        else:
            failed_runs = 0
            if tally.cases == before:
                break  # the strategy is exhausted
            if tally.cases < cases and tally.cases - before < budget // 2:
                break  # Hypothesis stopped early: it ran out of distinct cases
    return tally


@dataclass
class TargetResult:
    """What one target's run printed, and what --json writes."""

    target: str
    summary: str
    stats: str
    cases: int
    failing: int
    elapsed_s: float
    failures: list[str]

    def lines(self) -> list[str]:
        out = [
            f"{self.target}: {self.cases} cases run, {self.failing} failing, "
            f"{len(self.failures)} distinct failures, {self.elapsed_s:.1f} s "
            f"({1000 * self.elapsed_s / max(1, self.cases):.2f} ms/case)",
            f"  {self.summary}",
        ]
        if self.stats:
            out.append(f"  {self.stats}")
        out += ["  FAILURE " + failure.replace("\n", "\n    ") for failure in self.failures]
        return out


def run_named(name: str, cases: int, first_seed: int | None) -> TargetResult:
    """One target, by name (what a worker process is given: targets hold live resources)."""
    (target,) = [t for t in all_targets() if t.name == name]
    began = time.monotonic()
    try:
        tally = run_target(target, cases, first_seed)
    finally:
        target.close()
    failures = [
        f"{kind} at {where}: {message}\n{example}"
        for (kind, where), (example, message) in tally.distinct.items()
    ]
    return TargetResult(
        name, target.summary, target.stats(), tally.cases, tally.failing, time.monotonic() - began, failures
    )


def main() -> int:
    names = [t.name for t in all_targets()]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000, help="cases per target (default 100,000)")
    parser.add_argument("--target", action="append", choices=names, help="only this target (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first run of each target")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="targets run at once")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    chosen = [name for name in names if args.target is None or name in args.target]
    started = time.monotonic()
    results: list[TargetResult] = []
    with ProcessPoolExecutor(max_workers=max(1, min(args.jobs, len(chosen)))) as pool:
        pending = [pool.submit(run_named, name, args.cases, args.seed) for name in chosen]
        for future in as_completed(pending):
            result = future.result()
            results.append(result)
            print("\n".join(result.lines()), flush=True)
    failed = any(result.failures for result in results)
    results.sort(key=lambda result: chosen.index(result.target))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(result) for result in results], indent=2))
    print(f"total: {len(chosen)} targets, {time.monotonic() - started:.1f} s, {'FAILED' if failed else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
