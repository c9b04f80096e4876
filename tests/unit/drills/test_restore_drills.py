"""Restore drills, the pure parts (bot/velero/drill_plan.py): backup, namespaces, Restore, verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.drills.plan import (
    DRILL_LABEL,
    BackupFacts,
    DrillRefused,
    Judgement,
    NamespaceCheck,
    RestoreFacts,
    Verdict,
    backup_facts,
    drill_namespaces,
    headline,
    judge,
    may_delete_namespace,
    namespace_mapping,
    pick_backup,
    plan_restore,
    restore_facts,
    scratch_namespace,
    scratch_namespace_object,
)
from tests.kube import velero_objects

NOW = datetime(2026, 12, 8, 3, 0, tzinfo=UTC)


def backup(
    name: str,
    phase: str = "Completed",
    *,
    schedule: str | None = "daily",
    hours_ago: float = 1,
    ns: tuple[str, ...] = (),
) -> BackupFacts:
    moment = NOW - timedelta(hours=hours_ago)
    return BackupFacts(name, f"uid-{name}", phase, schedule, moment, moment, 412, ns)


def restore(
    phase: str = "Completed", restored: int | None = 412, total: int | None = 412, *, errors: int = 0
) -> RestoreFacts:
    return RestoreFacts(phase, restored, total, errors, 0, None, NOW)


def shop(pods: int = 6, ready: int = 6, pvcs: int = 3, bound: int = 3) -> NamespaceCheck:
    return NamespaceCheck("shop", "readybot-drill-3f9a0c1e-shop", {"Pod": pods}, pods, ready, pvcs, bound)


# --- which backup --------------------------------------------------------------------------


def test_a_schedule_name_picks_its_newest_completed_backup() -> None:
    """`!restore-drill daily`: the newest Completed backup of that schedule, not a newer failed one."""
    backups = [
        backup("daily-1", hours_ago=48),
        backup("daily-2", hours_ago=24),
        backup("daily-3", "Failed", hours_ago=1),
        backup("weekly-1", schedule="weekly", hours_ago=2),
    ]
    assert pick_backup(backups, "daily").name == "daily-2"
    assert pick_backup(backups, None).name == "weekly-1"


def test_a_backup_name_picks_that_backup_if_it_can_be_restored() -> None:
    """A named backup is restored even PartiallyFailed; a Failed or unknown one is refused with the reason."""
    backups = [backup("before-upgrade", "PartiallyFailed", schedule=None), backup("broken", "Failed")]
    assert pick_backup(backups, "before-upgrade").name == "before-upgrade"
    with pytest.raises(DrillRefused, match="broken is Failed"):
        pick_backup(backups, "broken")
    with pytest.raises(DrillRefused, match="no Velero schedule or backup named nope"):
        pick_backup(backups, "nope")
    with pytest.raises(DrillRefused, match="no Completed backup"):
        pick_backup([backup("x", "InProgress")], None)


def test_backup_facts_read_what_the_drill_needs_from_a_backup_object() -> None:
    """Name, uid, phase, schedule label, items backed up and the included namespaces come from the object."""
    obj = velero_objects.backup(
        "daily-20261207", "Completed", schedule="daily", completed=NOW, items=412, total=412
    )
    obj["metadata"]["uid"] = "u-1"
    obj["spec"]["includedNamespaces"] = ["shop", "db"]
    facts = backup_facts(obj)
    assert (facts.name, facts.uid, facts.phase, facts.schedule, facts.items) == (
        "daily-20261207",
        "u-1",
        "Completed",
        "daily",
        412,
    )
    assert facts.included_namespaces == ("shop", "db") and facts.completed == NOW


# --- which namespaces, where -------------------------------------------------------------


def test_the_backups_own_namespaces_are_restored_narrowed_by_the_configuration() -> None:
    """The backup's own namespaces, narrowed by velero.drills.namespaces; none left is refused."""
    named = backup("b", ns=("shop", "db", "kube-system"))
    assert drill_namespaces(named, []) == ["db", "kube-system", "shop"]
    assert drill_namespaces(named, ["shop", "other"]) == ["shop"]
    with pytest.raises(DrillRefused, match="holds none of"):
        drill_namespaces(named, ["other"])


def test_a_backup_of_every_namespace_needs_the_configured_namespaces() -> None:
    """`*`, wildcards or no list: only velero.drills.namespaces says what to restore, else refused."""
    for everything in ((), ("*",), ("shop-*",)):
        with pytest.raises(DrillRefused, match=r"set velero\.drills\.namespaces"):
            drill_namespaces(backup("b", ns=everything), [])
        assert drill_namespaces(backup("b", ns=everything), ["shop"]) == ["shop"]


def test_scratch_names_carry_prefix_and_drill_id_and_fit_a_dns_label() -> None:
    """readybot-drill-<id>-<ns>; a long namespace is cut and hashed to 63 characters, distinctly."""
    assert scratch_namespace("readybot-drill", "3f9a0c1e", "shop") == "readybot-drill-3f9a0c1e-shop"
    long_a, long_b = "a" * 60, "a" * 59 + "b"
    first = scratch_namespace("readybot-drill", "3f9a0c1e", long_a)
    second = scratch_namespace("readybot-drill", "3f9a0c1e", long_b)
    assert len(first) <= 63 and len(second) <= 63 and first != second
    assert first.startswith("readybot-drill-3f9a0c1e-") and not first.endswith("-")


def test_the_restore_maps_every_namespace_pins_the_backup_and_skips_cluster_resources() -> None:
    """One Restore named after the drill: backupName pinned, namespaceMapping to scratch, no cluster scope."""
    mapping = namespace_mapping("readybot-drill", "3f9a0c1e", ["shop", "db"])
    body = plan_restore(
        drill_id="3f9a0c1e",
        prefix="readybot-drill",
        velero_namespace="velero",
        backup="daily-20261207",
        mapping=mapping,
        restore_pvs=False,
    )
    assert body["metadata"]["name"] == "readybot-drill-3f9a0c1e"
    assert body["metadata"]["namespace"] == "velero"
    assert body["metadata"]["labels"][DRILL_LABEL] == "3f9a0c1e"
    assert body["spec"] == {
        "backupName": "daily-20261207",
        "includedNamespaces": ["db", "shop"],
        "namespaceMapping": {"db": "readybot-drill-3f9a0c1e-db", "shop": "readybot-drill-3f9a0c1e-shop"},
        "includeClusterResources": False,
        "restorePVs": False,
    }


def test_only_a_scratch_namespace_with_the_drills_name_and_label_may_be_deleted() -> None:
    """Name alone or label alone is not enough; another drill's namespace is not this drill's."""
    mapping = namespace_mapping("readybot-drill", "3f9a0c1e", ["shop"])
    ours = scratch_namespace_object("readybot-drill-3f9a0c1e-shop", "3f9a0c1e")
    assert may_delete_namespace(ours, "3f9a0c1e", mapping)
    unlabelled = {"metadata": {"name": "readybot-drill-3f9a0c1e-shop"}}
    assert not may_delete_namespace(unlabelled, "3f9a0c1e", mapping)
    elsewhere = scratch_namespace_object("shop", "3f9a0c1e")
    assert not may_delete_namespace(elsewhere, "3f9a0c1e", mapping)
    assert not may_delete_namespace(ours, "00000000", mapping)


# --- the verdict ----------------------------------------------------------------------------


def test_everything_back_pods_ready_and_pvcs_bound_passes() -> None:
    """Completed, 412/412 items, 6/6 pods Ready, 3 PVCs Bound: passed, with the issue's wording."""
    judged = judge_one(restore(), [shop()], waited=48)
    assert judged.verdict is Verdict.PASSED and not judged.problems
    assert judged.evidence == "412/412 items, 6/6 pods ready in 48s, 3 PVCs bound"
    assert (
        headline(judged.verdict, "daily-20261207", judged.evidence)
        == "✅ drill of daily-20261207 passed: 412/412 items, 6/6 pods ready in 48s, 3 PVCs bound"
    )


def test_missing_items_unready_pods_or_unbound_pvcs_are_partial() -> None:
    """Each shortfall alone makes the drill partial and is named; Velero's PartiallyFailed too."""
    missing = judge_one(restore(restored=398), [shop()], waited=12)
    assert missing.verdict is Verdict.PARTIAL
    assert missing.evidence.startswith("398/412 items (14 missing)")
    assert missing.problems == ("14 of 412 items were not restored",)
    pods = judge_one(restore(), [shop(ready=5)], waited=None)
    assert pods.verdict is Verdict.PARTIAL and "5/6 pods ready" in pods.evidence
    assert pods.problems == ("1 of 6 pods did not become Ready in time",)
    pvcs = judge_one(restore(), [shop(bound=2)], waited=3)
    assert pvcs.verdict is Verdict.PARTIAL and "2/3 PVCs bound" in pvcs.evidence
    velero = judge_one(restore("PartiallyFailed", errors=2), [shop()], waited=3)
    assert velero.verdict is Verdict.PARTIAL
    assert velero.problems == ("Velero ended the restore PartiallyFailed", "Velero counted 2 errors")


def test_a_failed_restore_fails_with_velero_s_reason() -> None:
    """Failed or FailedValidation: failed, whatever came back, Velero's reason first."""
    failed = RestoreFacts("Failed", 0, 412, 0, 0, "backup storage location unavailable", NOW)
    judged = judge_one(failed, [shop(0, 0, 0, 0)], waited=None)
    assert judged.verdict is Verdict.FAILED
    assert judged.problems[0] == "Velero ended the restore Failed: backup storage location unavailable"
    assert headline(judged.verdict, "b", judged.evidence, judged.problems[0]) == (
        "❌ drill of b failed: Velero ended the restore Failed: backup storage location unavailable"
        " (0/412 items (412 missing), no pods)"
    )


def test_without_velero_s_total_the_backup_s_item_count_is_expected() -> None:
    """No status.progress.totalItems: the backup's itemsBackedUp is what should have come back."""
    judged = judge_one(restore(restored=400, total=None), [shop()], waited=1, backup_items=412)
    assert judged.verdict is Verdict.PARTIAL and judged.evidence.startswith("400/412 items (12 missing)")


def test_pods_not_waited_for_are_counted_only() -> None:
    """pods_ready_timeout_s 0: the pods are counted, their readiness is not judged."""
    judged = judge_one(restore(), [shop(ready=0)], waited=None, checked=False)
    assert judged.verdict is Verdict.PASSED and "6 pods (readiness not checked)" in judged.evidence


def test_restore_facts_read_velero_s_progress_counts() -> None:
    """itemsRestored/totalItems, errors, warnings and the failure reason come from the Restore's status."""
    obj = velero_objects.restore("r", "PartiallyFailed", backup_name="b", errors=3, warnings=1, completed=NOW)
    obj["status"]["progress"] = {"itemsRestored": 398, "totalItems": 412}
    facts = restore_facts(obj)
    assert (facts.phase, facts.items_restored, facts.items_total, facts.errors, facts.warnings) == (
        "PartiallyFailed",
        398,
        412,
        3,
        1,
    )


def judge_one(
    facts: RestoreFacts,
    checks: list[NamespaceCheck],
    *,
    waited: float | None,
    checked: bool = True,
    backup_items: int | None = 412,
) -> Judgement:
    return judge(facts, backup_items, checks, pods_waited_s=waited, pods_checked=checked)
