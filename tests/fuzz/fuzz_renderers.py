"""Fuzz targets ``render_*``: every message the relays post, from arbitrary input of any size.

Each target builds its input the way the bot does (webhook payloads through
the webhook models, Velero objects through the view parser, readiness
results through the scorer) with arbitrary names, labels, annotations and
values, renders every message kind of that relay, and measures each as the
existing size tests do: the content as an encrypted edit (text twice, longest
ids, base64) must stay under 65,536 bytes. Rendering must not raise.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from bot.alertmanager.groups import merge
from bot.alertmanager.relay import notification_of
from bot.alertmanager.render import AlertRenderer
from bot.alertmanager.webhook import parse_payload
from bot.approvals.machine import State
from bot.approvals.render import prompt_content, render_list, render_outcome
from bot.approvals.store import ApprovalRecord
from bot.falco.events import event_key
from bot.falco.render import FalcoRenderer
from bot.falco.state import Aggregate, Digest, Mute
from bot.falco.webhook import parse_event
from bot.http.common import PayloadError
from bot.readiness.engine import CriterionResult, Tally, compare, score
from bot.readiness.render import detail_message, digest_message, status_message
from bot.readiness.results import Mark
from bot.readiness.service import Report
from bot.readiness.targets import Target as ReadinessTarget
from bot.render.templates import Templates
from bot.velero import render as velero
from bot.velero.model import Phase, RunKind, parse_location, parse_run
from bot.velero.store import OutcomeRecord
from config.alertmanager import AlertmanagerSettings
from config.falco import PRIORITIES, FalcoSettings
from config.readiness_plan import SHIPPED_PLAN, load_plan
from tests.fuzz.targets import Target, check_event_size

TEMPLATES = Templates()
ROOM = "!r:example.org"
NOW = 1_800_000_000.0

_any_char = st.characters(codec="utf-8", exclude_categories=["Cs"])
# Mostly short, sometimes up to ~50,000 characters; the escaping-heavy ones are in the alphabet.
_text = st.one_of(
    st.text(_any_char, max_size=60),
    st.text(st.sampled_from("<>&\"'\\\u2028\u0000€😀\n"), max_size=60),
    st.builds(lambda chunk, n: chunk * n, st.text(_any_char, min_size=1, max_size=8), st.integers(1, 6_000)),
)
_small_dict = st.dictionaries(_text, _text, max_size=6)
# RFC 3339 as the senders write it, any offset; years away from 1 and 9999, whose
# offsets may not convert to UTC (see test_fuzz_renderers.py for the Velero case).
_moments = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31))
_offsets = st.sampled_from(["Z", "+00:00", "-23:59", "+14:00", "+05:30"])
_stamp = st.builds(lambda moment, offset: moment.isoformat() + offset, _moments, _offsets)


def _check_all(messages: dict[str, dict[str, Any]]) -> None:
    for what, content in messages.items():
        check_event_size(content, what)


# --- Alertmanager groups -------------------------------------------------------------------------

_AM_SETTINGS = AlertmanagerSettings.model_validate(
    {"enabled": True, "default_rooms": [ROOM], "max_alerts_shown": 500}
)
_ALERTS = AlertRenderer(TEMPLATES, _AM_SETTINGS)
_annotations = st.fixed_dictionaries(
    {},
    optional={
        "summary": _text,
        "description": _text,
        "runbook_url": st.one_of(_text, _text.map(lambda t: "https://x/" + t)),
        "dashboard_url": st.one_of(_text, _text.map(lambda t: "http://x/" + t)),
    },
)
_annotations = st.builds(lambda extra, fixed: extra | fixed, _small_dict, _annotations)
_alert = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["firing", "resolved"]),
        "labels": st.builds(
            lambda labels, known: labels | known,
            _small_dict,
            st.fixed_dictionaries({}, optional={"alertname": _text, "severity": _text}),
        ),
        "annotations": _annotations,
        "startsAt": _stamp,
        "endsAt": st.one_of(st.just("0001-01-01T00:00:00Z"), _stamp),
        "generatorURL": _text,
        "fingerprint": st.text(_any_char, min_size=1, max_size=256),
    }
)
_am_payload = st.fixed_dictionaries(
    {
        "version": st.just("4"),
        "groupKey": st.text(_any_char, min_size=1, max_size=30),
        "truncatedAlerts": st.integers(0, 10**6),
        "status": st.sampled_from(["firing", "resolved"]),
        "receiver": st.text(_any_char, min_size=1, max_size=100),
        "groupLabels": _small_dict,
        "commonLabels": _small_dict,
        "commonAnnotations": _annotations,
        "externalURL": _text.map(lambda t: t[:4_096]),
        "alerts": st.lists(_alert, min_size=1, max_size=12),
    }
)


def check_alerts(case: tuple[dict[str, Any], list[bool]]) -> None:
    """A group's message (mentioning the room), a thread line for the next notification, a digest of 60.

    The next notification is the same group with some alerts flipped
    between firing and resolved, and some left out.
    """
    body, flips = case
    second = dict(body)
    second["alerts"] = [
        a | {"status": "resolved" if a["status"] == "firing" else "firing"} if flip else a
        for a, flip in zip(body["alerts"], flips, strict=False)
    ] or body["alerts"]
    try:
        one, two = parse_payload(json.dumps(body).encode()), parse_payload(json.dumps(second).encode())
    except PayloadError:
        assume(False)  # not an input the relay would render
        raise
    state, _ = merge(None, notification_of(one, one.alerts), NOW)
    later, change = merge(state, notification_of(two, two.alerts), NOW + 60)
    group = _ALERTS.group(later, mention=True).content()
    group["m.mentions"] = {"room": True}
    _check_all(
        {
            "alert group": group,
            "alert thread line": _ALERTS.thread_line(later, change).content(),
            "alert digest": _ALERTS.digest([state, later] * 30).content(),
        }
    )


RENDER_ALERTS = Target(
    name="render_alerts",
    summary="Alertmanager group message, thread line and digest from arbitrary valid payloads",
    strategy=st.tuples(_am_payload, st.lists(st.booleans(), max_size=12)),
    check=check_alerts,
)

# --- Falco events, digests, mutes ----------------------------------------------------------------

_FALCO_SETTINGS = FalcoSettings.model_validate({"enabled": True, "default_rooms": [ROOM]})
_FALCO = FalcoRenderer(TEMPLATES)
_field_value = st.one_of(_text, st.integers(), st.floats(allow_nan=False), st.booleans(), st.none())
_falco_event = st.fixed_dictionaries(
    {
        "output": _text,
        "priority": st.sampled_from([p.capitalize() for p in PRIORITIES] + list(PRIORITIES)),
        "rule": _text.map(lambda t: ("r" + t)[:1_024]),
        "time": _stamp,
        "output_fields": st.dictionaries(
            st.one_of(st.sampled_from(["k8s.ns.name", "k8s.pod.name", "proc.name", "user.name"]), _text),
            _field_value,
            max_size=12,
        ),
        "source": st.text(_any_char, max_size=256),
        "tags": st.lists(_text.map(lambda t: t[:256]), max_size=30),
        "hostname": _text.map(lambda t: t[:1_024]),
    },
    optional={"uuid": st.text(_any_char, max_size=256)},
)


def check_falco(case: tuple[list[dict[str, Any]], int]) -> None:
    """An aggregate's own message (mentioning), a digest of many kinds, a mute's end summary."""
    bodies, kinds = case
    try:
        events = [parse_event(json.dumps(body).encode()) for body in bodies]
    except PayloadError:
        assume(False)
        raise
    first = events[0]
    key = event_key(first, _FALCO_SETTINGS.aggregation_key)
    aggregate = Aggregate.start(1, ROOM, key, first, NOW, 60)
    mute = Mute(first.rule, "@a:example.org", ROOM, NOW, NOW + 60)
    for event in events[1:]:
        aggregate.add(event)
    for i, event in enumerate(events):
        mute.add(event, (*key, ("n", str(i))), [ROOM])
    members = [replace(aggregate, id=i, key=(*key, ("n", str(i)))) for i in range(kinds)]
    own = _FALCO.aggregate(aggregate, now=NOW, mention=True).content()
    own["m.mentions"] = {"room": True}
    _check_all(
        {
            "falco event": own,
            "falco digest": _FALCO.digest(Digest(0, ROOM, NOW, NOW + 60), members, now=NOW).content(),
            "falco mute ended": _FALCO.mute_ended(mute, now=NOW, lifted_by="@b:example.org").content(),
        }
    )


RENDER_FALCO = Target(
    name="render_falco",
    summary="Falco event, digest and mute summary from arbitrary valid falcosidekick events",
    strategy=st.tuples(st.lists(_falco_event, min_size=1, max_size=6), st.integers(1, 200)),
    check=check_falco,
)

# --- Velero outcomes ----------------------------------------------------------------------------

_anything = st.one_of(_text, st.integers(), st.floats(allow_nan=False), st.booleans(), st.none())
_count = st.one_of(st.integers(min_value=-5, max_value=10**30), st.integers(min_value=0), _anything)
_velero_object = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {"name": _text, "namespace": st.one_of(st.just("velero"), _text), "uid": _text},
            optional={
                "labels": st.fixed_dictionaries({"velero.io/schedule-name": _anything}),
                "creationTimestamp": st.one_of(_stamp, _anything),
            },
        ),
        "spec": st.fixed_dictionaries(
            {},
            optional={
                "storageLocation": _anything,
                "scheduleName": _anything,
                "backupName": _anything,
                "default": _anything,
                "provider": _anything,
            },
        ),
        "status": st.fixed_dictionaries(
            {
                "phase": st.one_of(
                    st.sampled_from(
                        [
                            Phase.COMPLETED,
                            Phase.PARTIALLY_FAILED,
                            Phase.FAILED,
                            Phase.FAILED_VALIDATION,
                            Phase.NEW,
                        ]
                    ),
                    _text,
                )
            },
            optional={
                "startTimestamp": st.one_of(_stamp, _anything),
                "completionTimestamp": st.one_of(_stamp, _anything),
                "expiration": _stamp,
                "errors": _count,
                "warnings": _count,
                "progress": st.fixed_dictionaries(
                    {}, optional={"itemsBackedUp": _count, "itemsRestored": _count, "totalItems": _count}
                ),
                "failureReason": _anything,
                "validationErrors": st.one_of(st.lists(_anything, max_size=30), _anything),
                "message": _anything,
                "lastValidationTime": st.one_of(_stamp, _anything),
            },
        ),
    }
)


def check_velero(case: list[tuple[dict[str, Any], bool]]) -> None:
    """Each run's outcome, the summary of all, the digest of their records, a location going down."""
    runs = [parse_run(RunKind.RESTORE if restore else RunKind.BACKUP, obj) for obj, restore in case]
    now = datetime.fromtimestamp(NOW, UTC)
    records = [
        OutcomeRecord(
            run.kind.value,
            run.outcome_key,
            run.namespace,
            run.name,
            run.schedule,
            run.phase,
            run.ended_at.timestamp() if run.ended_at else None,
            run.items_total,
            run.duration.total_seconds() if run.duration else None,
        )
        for run in runs
    ]
    messages = {f"velero outcome {i}": velero.outcome(TEMPLATES, run).content() for i, run in enumerate(runs)}
    messages["velero summary"] = velero.summary(TEMPLATES, runs * 20, now=now).content()
    messages["velero digest"] = velero.digest(TEMPLATES, records * 20, now=now).content()
    location = parse_location(case[0][0])
    messages["velero location down"] = velero.location_down(TEMPLATES, location).content()
    messages["velero location up"] = velero.location_up(
        TEMPLATES, location, outage=timedelta(hours=3)
    ).content()
    _check_all(messages)


RENDER_VELERO = Target(
    name="render_velero",
    summary="Velero outcome, summary, digest and location messages from arbitrary Backup/Restore objects",
    strategy=st.lists(st.tuples(_velero_object, st.booleans()), min_size=1, max_size=6),
    check=check_velero,
)

# --- approval prompts ----------------------------------------------------------------------------

# Matrix user ids are at most 255 bytes; the approvers come from the configuration.
_user = st.text(_any_char, max_size=60).map(lambda t: f"@{t}:example.org"[:255])
_epoch = st.floats(min_value=0, max_value=253_402_300_799)
_record = st.builds(
    ApprovalRecord,
    id=st.text(_any_char, min_size=1, max_size=40),
    app=_text,
    namespace=_text,
    application=_text,
    room_id=st.just(ROOM),
    requester=_user,
    request_event_id=st.just("$e"),
    prompt_outbox_id=st.none(),
    prompt_event_id=st.none(),
    state=st.sampled_from([s.value for s in State]),
    current_revision=st.one_of(st.none(), _text, st.text("0123456789abcdef", min_size=40, max_size=40)),
    target_revision=_text,
    source_fingerprint=st.just("fp"),
    approvals_required=st.integers(1, 10),
    four_eyes=st.booleans(),
    created_at=_epoch,
    expires_at=_epoch,
    decided_at=st.none() | _epoch,
    decided_by=st.none() | _user,
    started_at=st.none() | _epoch,
    finished_at=st.none() | _epoch,
    facts=st.fixed_dictionaries(
        {
            "sync_status": _text,
            "health_status": _text,
            "out_of_sync": st.lists(_text, max_size=30),
            "out_of_sync_total": st.integers(0, 10**6),
            "approvers": _text,
            "mention": st.lists(_user, max_size=20),
        }
    ),
    outcome=st.none()
    | st.fixed_dictionaries(
        {},
        optional={
            "message": _text,
            "sync_status": _text,
            "health_status": _text,
            "settled": st.booleans(),
            "revision": _text,
            "failed_resources": st.lists(_text, max_size=30),
        },
    ),
    updated_at=_epoch,
)


def check_approvals(records: list[ApprovalRecord]) -> None:
    """The prompt (mentioning the approvers) and the outcome of each request, and the list of all."""
    messages: dict[str, dict[str, Any]] = {}
    for i, record in enumerate(records):
        messages[f"approval prompt {i}"] = prompt_content(TEMPLATES, record, "!", mention=True)
        messages[f"approval outcome {i}"] = render_outcome(TEMPLATES, record, "!").content()
    messages["approval list"] = render_list(TEMPLATES, records * 10, "!").content()
    _check_all(messages)


RENDER_APPROVALS = Target(
    name="render_approvals",
    summary="approval prompt, outcome and list from arbitrary requests in every state",
    strategy=st.lists(_record, min_size=1, max_size=3),
    check=check_approvals,
)

# --- the readiness scorecard ---------------------------------------------------------------------

PLAN = load_plan(SHIPPED_PLAN)
_CRITERIA = [criterion.id for _, _, criterion in PLAN.criteria()]
_TARGETS = [
    *(ReadinessTarget("category", c.id, c.name) for c in PLAN.categories),
    *(ReadinessTarget("phase", p.id, p.title) for p in PLAN.phases),
    *(ReadinessTarget("step", s.id, s.title) for p in PLAN.phases for s in p.steps),
    *(ReadinessTarget("criterion", c, c) for c in _CRITERIA),
]
_marks = st.sampled_from(list(Mark))


_Finding = tuple[Mark, str, str]


def check_readiness(
    case: tuple[_Finding, dict[str, _Finding], dict[str, Mark] | None, ReadinessTarget],
) -> None:
    """The scorecard, its digest and the details of any category, phase, step or criterion."""
    default, results, previous, chosen = case
    card = score(
        PLAN,
        [CriterionResult(cid, *results.get(cid, default)) for cid in _CRITERIA],
        NOW,
    )
    change = compare(card, previous, NOW - 86_400 if previous is not None else None, Tally(passed=1))
    report = Report(card, change, run_id=1)
    _check_all(
        {
            "readiness status": status_message(TEMPLATES, report, "!").content(),
            "readiness digest": digest_message(TEMPLATES, report, "!").content(),
            "readiness detail": detail_message(TEMPLATES, report, chosen).content(),
        }
    )


RENDER_READINESS = Target(
    name="render_readiness",
    summary="readiness scorecard, digest and details with arbitrary marks and probe findings",
    # Every criterion gets the default finding but those drawn on their own (generating
    # ~50 findings per case would make the long run hours long, and finds no more).
    strategy=st.tuples(
        st.tuples(_marks, _text, _text),
        st.dictionaries(st.sampled_from(_CRITERIA), st.tuples(_marks, _text, _text), max_size=12),
        st.none() | st.dictionaries(st.sampled_from(_CRITERIA), _marks, max_size=len(_CRITERIA)),
        st.sampled_from(_TARGETS),
    ),
    check=check_readiness,
)

RENDERERS = [RENDER_ALERTS, RENDER_FALCO, RENDER_VELERO, RENDER_APPROVALS, RENDER_READINESS]
