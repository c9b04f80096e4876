"""The scorecard as messages (status, details, explain, digest), targets by name, and the trend chart."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.errors import UserError
from bot.readiness.chart import trend_spec
from bot.readiness.chart_png import render_png
from bot.readiness.engine import CriterionResult, Tally, compare, score
from bot.readiness.render import detail_message, digest_message, explain_message, status_message
from bot.readiness.results import Mark
from bot.readiness.service import Report
from bot.readiness.store import StoredResult, StoredRun
from bot.readiness.targets import Target, resolve
from bot.render.message import MAX_FIELD_BYTES, escaped_size
from bot.render.templates import Templates
from tests.unit.readiness_env import shipped_plan

TEMPLATES = Templates()
AT = 1_772_596_800.0  # 2026-03-04 04:00 UTC


def report(marks: dict[str, Mark], *, previous: dict[str, Mark] | None = None, stored: bool = True) -> Report:
    plan = shipped_plan()
    results = []
    for _, _, criterion in plan.criteria():
        mark = marks.get(criterion.id, Mark.MANUAL)
        results.append(
            CriterionResult(criterion.id, mark, f"<found {criterion.id}>", f"expected {criterion.id}")
        )
    card = score(plan, results, AT)
    change = compare(card, previous, AT - 86_400 if previous else None, Tally(passed=1) if previous else None)
    return Report(card, change, run_id=7 if stored else None)


STARTING = {
    "1.1.1": Mark.PASS,
    "1.1.3": Mark.PASS,
    "1.2.1": Mark.PASS,
    "1.2.3": Mark.PASS,
    "1.3.1": Mark.FAIL,
    "2.1.1": Mark.UNKNOWN,
}


def test_status_has_a_row_per_category_and_phase_with_counts_and_marks() -> None:
    """Seven category rows, six phase rows with their steps, the score, coverage, manual count and change."""
    message = status_message(TEMPLATES, report(STARTING, previous={"1.1.1": Mark.FAIL}), "!")
    lines = message.plain.splitlines()
    assert lines[0] == (
        "Production Readiness Plan: 67% (4/6 checked criteria pass)"
        " · coverage 83% (5/6 could be checked) · 40 manual"
    )
    assert "❌ Security 4/5 +8 manual" in lines
    assert "❔ Infrastructure lifecycling 0/1 +5 manual" in lines
    assert "— Cultural readiness no criteria" in lines
    phase_one = next(line for line in lines if line.startswith("❌ 1 Security Enforcement"))
    assert "1.1 ✅ 2/2 +1 manual · 1.2 ✅ 2/2 +1 manual · 1.3 ❌ 0/1 +2 manual" in phase_one
    assert any(
        line.startswith("📝 5 Change Management Hardening") and "5.3 ⏸ deferred" in line for line in lines
    )
    change = next(line for line in lines if line.startswith("Change since"))
    assert change == "Change since 2026-03-03 04:00 UTC: +3 passing; ✅ now pass: 1.1.1"
    assert lines[-1] == "Details: !readiness status <category|phase|step> · !readiness explain <criterion>"
    assert sum(line[:1] in "✅❌❔📝—" for line in lines) == 13


def test_the_status_leads_with_what_now_fails() -> None:
    """Criteria that now fail are named right under the score line, before the ⚠️ lines and the rows."""
    previous = {"1.1.1": Mark.FAIL, "1.3.1": Mark.PASS, "2.1.1": Mark.PASS}
    for message in (
        status_message(TEMPLATES, report(STARTING, previous=previous), "!"),
        digest_message(TEMPLATES, report(STARTING, previous=previous), "!"),
    ):
        lines = message.plain.splitlines()
        change = next(index for index, line in enumerate(lines) if line.startswith("Change since"))
        assert lines[change] == (
            "Change since 2026-03-03 04:00 UTC: ❌ now fail: 1.3.1; +3 passing;"
            " ✅ now pass: 1.1.1; ❔ now unknown: 2.1.1"
        )
        assert change < lines.index("By category:")
        assert lines[change - 1].startswith("Production Readiness Plan: 67%")
        assert message.html is not None
        assert message.html.index("now fail") < message.html.index("By category")


def test_status_html_is_escaped_and_both_bodies_fit_a_matrix_event() -> None:
    """The HTML body carries the same rows; each field stays under the message size cap."""
    message = status_message(TEMPLATES, report(STARTING), "!")
    assert message.html is not None and "<strong>Production Readiness Plan: 67%</strong>" in message.html
    assert "first run: nothing to compare with yet" in message.plain
    assert escaped_size(message.plain) < MAX_FIELD_BYTES and escaped_size(message.html) < MAX_FIELD_BYTES


def test_the_terminal_scorecard_has_no_chat_hints_and_no_change_line() -> None:
    """Without a store and a prefix (the CLI), the Change and Details lines are left out."""
    plain = status_message(TEMPLATES, report(STARTING, stored=False), None).plain
    assert "Change since" not in plain and "first run" not in plain and "Details" not in plain


def test_details_give_every_criterion_of_a_category_with_its_evidence() -> None:
    """`status security` lists each security criterion under its step with found and expected, or evidence."""
    card = report(STARTING).scorecard
    message = detail_message(TEMPLATES, report(STARTING), resolve(card.plan, "security"))
    plain = message.plain
    assert plain.startswith("❌ Security: 4/5 +8 manual (rated Moderate; gaps: Cilium audit-only")
    assert "❌ 1.3 Strengthen Kyverno to Enforce Mode" in plain
    assert "  ❌ 1.3.1 At least 3 enforce-mode ClusterPolicies active\n      found: <found 1.3.1>\n" in plain
    assert "      expected: expected 1.3.1" in plain
    assert (
        "📝 1.1.2 No legitimate traffic dropped (verified via Hubble) — manual; evidence: <found 1.1.2>"
        in plain
    )
    assert "6.1.1" in plain and "2.1.1" not in plain
    assert message.html is not None and "&lt;found 1.3.1&gt;" in message.html


def test_details_of_a_phase_show_its_deferred_step() -> None:
    """Phase 5 shows 5.3 as deferred with the plan's recommendation."""
    message = detail_message(TEMPLATES, report({}), resolve(shipped_plan(), "phase 5"))
    assert "⏸ 5.3 Progressive Delivery (Future Consideration) — deferred: Defer until" in message.plain


def test_explain_says_what_is_checked_how_to_fix_and_the_last_result() -> None:
    """`explain 1.3` covers its three criteria: the probe in words, the fix, the last stored result."""
    plan = shipped_plan()
    last = CriterionResult("1.3.1", Mark.FAIL, "1 found: disallow-ingress-nginx-custom-snippets", "")
    message = explain_message(
        TEMPLATES, plan, resolve(plan, "1.3"), {"1.3.1": StoredResult(AT, last), "1.3.2": None}, "!"
    )
    plain = message.plain
    assert plain.startswith("1.3 Strengthen Kyverno to Enforce Mode")
    assert "1.3.1 At least 3 enforce-mode ClusterPolicies active (Security; step 1.3" in plain
    assert "  - at least 3 clusterpolicies.kyverno.io with (spec.validationFailureAction in" in plain
    assert "How to fix: Add enforce-mode policies one at a time" in plain
    assert (
        "Last result (2026-03-04 04:00 UTC): ❌ fail — 1 found: disallow-ingress-nginx-custom-snippets"
        in plain
    )
    assert "No stored result yet: !readiness status runs the probes." in plain
    assert "a person confirms: Kyverno policy reports" in plain


def test_explain_of_a_criterion_notes_what_the_plan_says_and_combinations() -> None:
    """1.2.1 is ticked in the plan and needs all of its two probes."""
    plan = shipped_plan()
    plain = explain_message(TEMPLATES, plan, resolve(plan, "1.2.1"), {}, "!").plain
    assert "The plan marks it done (excludes kube-system, kube-public, kube-node-lease)." in plain
    assert "What is checked (all of these must hold):" in plain
    assert "  - Deployment trivy-system/trivy-operator all replicas ready" in plain


def test_the_digest_lists_each_changed_criterion_with_its_text() -> None:
    """The digest adds "what changed" with before → after marks and the criterion's words."""
    message = digest_message(
        TEMPLATES, report(STARTING, previous={"1.1.1": Mark.FAIL, "1.3.1": Mark.PASS}), "!"
    )
    assert "❌ → ✅ 1.1.1 `policyAuditMode: false` committed and synced" in message.plain
    assert "✅ → ❌ 1.3.1 At least 3 enforce-mode ClusterPolicies active" in message.plain


def test_targets_resolve_by_id_name_and_unique_prefix() -> None:
    """security, "Cost controls", infra, phase 1, 1.3 and 1.3.1 resolve; unknown or ambiguous ones explain."""
    plan = shipped_plan()
    assert resolve(plan, "security") == Target("category", "security", "Security")
    assert resolve(plan, "Cost controls").id == "cost"
    assert resolve(plan, "infra").id == "infrastructure"
    assert resolve(plan, "phase 1") == Target("phase", "1", "Phase 1: Security Enforcement (Quick Wins)")
    assert resolve(plan, "1.3").kind == "step"
    assert resolve(plan, "1.3.1").kind == "criterion"
    with pytest.raises(
        UserError, match=r"no category, phase, step or criterion 'c'\. Categories: observability"
    ):
        resolve(plan, "c")  # change, cost, culture
    with pytest.raises(UserError, match=r"'9\.9'"):
        resolve(plan, "9.9")


# --- the chart ---------------------------------------------------------------------------


def runs(count: int) -> list[StoredRun]:
    return [
        StoredRun(
            id=index,
            at=AT + index * 86_400,
            trigger="command",
            overall=Tally(passed=index, failed=4 - index, unknown=1, manual=40),
            categories={"security": Tally(passed=index, failed=2), "culture": Tally()},
            notices=(),
        )
        for index in range(count)
    ]


def test_the_trend_has_the_overall_score_and_each_scored_category() -> None:
    """Overall and Security per run in percent; never-scored categories (culture) are left out."""
    spec = trend_spec(shipped_plan(), runs(3))
    assert [series.name for series in spec.series] == ["overall", "Security"]
    assert spec.series[0].values == (0.0, 20.0, 40.0)
    assert spec.series[1].values == (0.0, 33.3, 50.0)
    assert spec.labels == ("03-04 04:00", "03-05 04:00", "03-06 04:00")


@pytest.mark.parametrize("count", [1, 30])
def test_the_chart_is_a_small_png_of_the_announced_size(count: int) -> None:
    """A PNG of 800x420 (one run or many), a few tens of KB, that an image library opens."""
    png = render_png(trend_spec(shipped_plan(), runs(count)))
    assert png.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png.data) < 100_000
    with Image.open(io.BytesIO(png.data)) as image:
        assert image.size == (png.width, png.height) == (800, 420)
        # Not a blank canvas: the lines and the legend drew something dark.
        assert image.convert("L").getextrema()[0] < 60
