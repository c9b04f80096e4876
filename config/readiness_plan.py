"""The production-readiness plan as data: categories, phases, steps, criteria, and each criterion's probe.

``config/readiness.yaml`` holds the plan; operators edit it to fit their
cluster. ``load_plan`` validates it and reports every problem as one
``path: problem`` line (as ``config.loading`` does for the settings), where
list positions are shown by the id of the element (``steps[1.2]``) so a
mistake is found without counting list items.

A probe is one of the kinds below, chosen by its ``kind`` key (a
discriminated union, so a typo in a kind or a key is an error, never a
probe that silently checks nothing). ``all``/``any`` combine probes.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from config.cron import parse_cron
from config.durations import Duration
from config.errors import ConfigError
from config.yaml import YamlProblem, load_strict_yaml

SHIPPED_PLAN = Path(__file__).resolve().parent / "readiness.yaml"

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,40}$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# "plural[.group]/version": configmaps/v1, clusterpolicies.kyverno.io/v1
_RESOURCE = re.compile(r"^(?P<plural>[a-z0-9]+)(?:\.(?P<group>[a-z0-9.-]+))?/(?P<version>v[a-z0-9]+)$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Prometheus durations: 90d, 1y, 2w, 12h30m, 500ms.
PROMETHEUS_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_PROMETHEUS_UNITS_S = (365 * 86_400, 7 * 86_400, 86_400, 3_600, 60, 1, 0.001)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def prometheus_duration_s(text: str) -> float | None:
    """Seconds in a Prometheus duration (``90d``, ``1y``, ``12h30m``); None if it is not one."""
    match = PROMETHEUS_DURATION.fullmatch(text.strip())
    if match is None or not text.strip():
        return None
    return float(
        sum(int(part or 0) * unit for part, unit in zip(match.groups(), _PROMETHEUS_UNITS_S, strict=True))
    )


class ResourceRef(_Model):
    """A resource type; written ``plural[.group]/version`` in the plan (``configmaps/v1``)."""

    group: str
    version: str
    plural: str

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        match = _RESOURCE.fullmatch(value.strip())
        if match is None:
            raise ValueError(
                "must be plural[.group]/version, e.g. configmaps/v1 or clusterpolicies.kyverno.io/v1"
            )
        return {"group": match["group"] or "", "version": match["version"], "plural": match["plural"]}

    def __str__(self) -> str:
        group = f".{self.group}" if self.group else ""
        return f"{self.plural}{group}/{self.version}"

    @property
    def resource(self) -> str:
        """``clusterpolicies.kyverno.io``: how the type is named in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _check_name(value: str) -> str:
    if len(value) > 253 or not _NAME.fullmatch(value):
        raise ValueError("must be a Kubernetes name (lower case letters, digits, '-', '.')")
    return value


KubeName = Annotated[str, AfterValidator(_check_name)]


# --- conditions on objects ----------------------------------------------------


class Condition(_Model):
    """One test on the value(s) at ``path`` of an object; exactly one operator is set.

    ``path`` is dotted (``spec.syncPolicy.automated``); ``[]`` after a key
    walks every element of a list (``spec.rules[].validate.failureAction``);
    a key containing dots is quoted: ``metadata.labels["app.kubernetes.io/name"]``.
    Through a ``[]`` a condition holds when it holds for any element, or for
    every element with ``each: true``. A missing path has no value: it fails
    ``equals``/``in``/``matches``/``mentions``/``longer_than`` and passes
    ``not_equals``/``not_in``. ``exists: true`` means present and not null
    (``{}`` exists); ``empty: true`` means missing, null or only empty
    containers.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    path: str = Field(min_length=1)
    equals: Any = None
    not_equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    not_in: list[Any] | None = None
    exists: bool | None = None
    # True: missing, null, or only empty mappings/lists/strings ({}, {matchLabels: {}}).
    empty: bool | None = None
    # A regular expression searched in every string under the path.
    matches: str | None = None
    # Strings that must each equal some string under the path.
    mentions: list[str] | None = None
    # A Prometheus duration (90d) longer than this one.
    longer_than: str | None = None
    each: bool = False

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        # model_fields_set tells "equals: null" (the value must be null) from "not given".
        if len(self._operators()) != 1:
            raise ValueError(f"set exactly one of {', '.join(_OPERATORS)}")
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as error:
                raise ValueError(f"matches: not a regular expression ({error.msg})") from None
        if self.longer_than is not None and prometheus_duration_s(self.longer_than) is None:
            raise ValueError("longer_than: not a Prometheus duration such as 15d")
        try:
            parse_path(self.path)
        except ValueError as error:
            raise ValueError(f"path: {error}") from None
        return self

    def _operators(self) -> list[str]:
        return [name for name in _OPERATORS if _FIELD_OF.get(name, name) in self.model_fields_set]

    @property
    def operator(self) -> str:
        """The operator's name as written in the plan (``in``, not ``in_``)."""
        return self._operators()[0]

    @property
    def operand(self) -> Any:
        return getattr(self, _FIELD_OF.get(self.operator, self.operator))


_OPERATORS = (
    "equals",
    "not_equals",
    "in",
    "not_in",
    "exists",
    "empty",
    "matches",
    "mentions",
    "longer_than",
)
_FIELD_OF = {"in": "in_"}


class AnyCondition(_Model):
    """Holds when at least one of its conditions holds."""

    any: list[Condition] = Field(min_length=1)


def _condition_tag(value: object) -> str:
    # An element with an "any" key is a disjunction; everything else one condition.
    if isinstance(value, dict):
        return "any_condition" if "any" in value else "condition"
    return "any_condition" if isinstance(value, AnyCondition) else "condition"


WhereItem = Annotated[
    Annotated[Condition, Tag("condition")] | Annotated[AnyCondition, Tag("any_condition")],
    Discriminator(_condition_tag),
]
Where = list[WhereItem]

_SEGMENT = re.compile(r'\s*(?:\["(?P<quoted>[^"]+)"\]|(?P<plain>[^.\[\]"]+))(?P<each>\[\])?')


def parse_path(path: str) -> list[tuple[str, bool]]:
    """``spec.rules[].exclude`` → [("spec", False), ("rules", True), ("exclude", False)]."""
    segments: list[tuple[str, bool]] = []
    rest = path.strip()
    while rest:
        match = _SEGMENT.match(rest)
        if match is None or match.end() == 0:
            raise ValueError(f'cannot read {path!r} (write a.b, a[].b or a["x.y"])')
        segments.append((match["quoted"] or match["plain"], bool(match["each"])))
        rest = rest[match.end() :]
        if rest.startswith("."):
            rest = rest[1:]
            if not rest:
                raise ValueError(f"{path!r} ends with a dot")
        elif rest.startswith("["):
            continue
        elif rest:
            raise ValueError(f"cannot read {path!r}")
    return segments


# --- probes ---------------------------------------------------------------------


class ManualProbe(_Model):
    """Not checked by the bot: a person confirms it; ``evidence`` says where to look."""

    kind: Literal["manual"]
    evidence: str = Field(min_length=1)


WorkloadKind = Literal["Deployment", "DaemonSet", "StatefulSet"]


class WorkloadProbe(_Model):
    """A Deployment/StatefulSet with all its replicas ready, or a DaemonSet ready on every node.

    With several ``workload`` kinds, the first that exists is checked
    (Tempo runs as a StatefulSet or a Deployment).
    """

    kind: Literal["workload"]
    workload: list[WorkloadKind] = Field(min_length=1)
    namespace: KubeName
    name: KubeName

    @field_validator("workload", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class ExistsProbe(_Model):
    """An object exists (cluster-scoped when ``namespace`` is not given)."""

    kind: Literal["exists"]
    resource: ResourceRef
    namespace: KubeName | None = None
    name: KubeName


class FieldProbe(_Model):
    """Each named object exists and satisfies every condition (a ConfigMap key, a sync policy…)."""

    kind: Literal["field"]
    resource: ResourceRef
    namespace: KubeName | None = None
    names: list[KubeName] = Field(min_length=1)
    where: Where = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _name_shorthand(cls, value: object) -> object:
        if isinstance(value, dict) and "name" in value:
            value = dict(value)
            if "names" in value:
                raise ValueError("set name or names, not both")
            value["names"] = [value.pop("name")]
        return value


class CountSource(_Model):
    """Objects of one type that count: listed (optionally by label), then filtered by ``where``.

    ``every``: conditions each counted object must also meet; those that do
    not are named in the evidence and make the probe fail.
    """

    resource: ResourceRef
    # None: all namespaces (or a cluster-scoped type).
    namespace: KubeName | None = None
    label_selector: str | None = None
    where: Where = Field(default_factory=list)
    every: Where = Field(default_factory=list)


class CountProbe(_Model):
    """At least ``min`` (and at most ``max``) objects over all sources match."""

    kind: Literal["count"]
    sources: list[CountSource] = Field(min_length=1)
    min: int = Field(default=1, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> CountProbe:
        if self.max is not None and self.max < self.min:
            raise ValueError("max must not be below min")
        return self


class NamespaceSelector(_Model):
    """Which namespaces must be covered: by label, by name, minus exclusions. Nothing set: all."""

    label_selector: str | None = None
    names: list[KubeName] = Field(default_factory=list)
    exclude: list[KubeName] = Field(default_factory=list)


class CoverageProbe(_Model):
    """Every selected namespace holds ``min_per_namespace`` matching objects; names the ones missing."""

    kind: Literal["coverage"]
    resource: ResourceRef
    namespaces: NamespaceSelector = Field(default_factory=NamespaceSelector)
    where: Where = Field(default_factory=list)
    min_per_namespace: int = Field(default=1, ge=1)
    # What one matching object is called in messages ("default-deny NetworkPolicy").
    noun: str | None = None


class CronJobProbe(_Model):
    """A CronJob runs at least every ``max_interval`` and succeeded since its last expected run (+ grace)."""

    kind: Literal["cronjob"]
    namespace: KubeName
    name: KubeName
    max_interval: Duration | None = None
    grace: Duration = timedelta(hours=1)


class ScheduleSpec(_Model):
    """One expected Velero schedule, found by its ``name`` or by its ``cron`` expression."""

    name: KubeName | None = None
    cron: str | None = None
    # How the schedule is called in messages ("daily").
    label: str | None = None

    @model_validator(mode="after")
    def _name_or_cron(self) -> ScheduleSpec:
        if (self.name is None) == (self.cron is None):
            raise ValueError("set name or cron (one of them)")
        if self.cron is not None:
            try:
                parse_cron(self.cron)
            except ValueError as error:
                raise ValueError(f"cron: {error}") from None
        return self


class VeleroSchedulesProbe(_Model):
    """Each expected Velero Schedule exists, is not paused, backed up since its last expected run
    (+ ``grace``), and its newest Backup completed."""

    kind: Literal["velero_schedules"]
    namespace: KubeName = "velero"
    schedules: list[ScheduleSpec] = Field(min_length=1)
    grace: Duration = timedelta(hours=2)
    require_completed: bool = True


Comparison = Literal[">", ">=", "==", "!=", "<", "<="]


class PrometheusProbe(_Model):
    """An instant query whose samples meet ``op value`` (any sample, or all with ``match: all``)."""

    kind: Literal["prometheus"]
    query: str = Field(min_length=1)
    op: Comparison = ">"
    value: float = 0.0
    match: Literal["any", "all"] = "any"
    # What an empty result means: usually the metric does not exist, a fail.
    empty: Literal["fail", "pass"] = "fail"


class PrometheusRuleProbe(_Model):
    """Prometheus has loaded an alerting rule with one of these names or with this expression."""

    kind: Literal["prometheus_rule"]
    alert: list[str] = Field(min_length=1)
    expr: str | None = None

    @field_validator("alert", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class AlertmanagerProbe(_Model):
    """Alertmanager's loaded configuration has at least ``min_receivers`` receivers that deliver
    somewhere; with ``route_labels``, counted among those an alert with these labels reaches."""

    kind: Literal["alertmanager"]
    min_receivers: int = Field(default=2, ge=1)
    route_labels: dict[str, str] | None = None

    @field_validator("route_labels")
    @classmethod
    def _label_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name in value or {}:
            if not _LABEL_NAME.match(name):
                raise ValueError("label names must match [a-zA-Z_][a-zA-Z0-9_]*")
        return value


class ReadybotProbe(_Model):
    """The bot's own state: a fresh Watchdog heartbeat, approval gates on the named apps, or a
    restore drill that passed within ``max_age``."""

    kind: Literal["readybot"]
    check: Literal["watchdog", "approval_gates", "restore_drill"]
    apps: list[KubeName] = Field(default_factory=list)
    # restore_drill: the last passed drill may be at most this old.
    max_age: Duration | None = None

    @model_validator(mode="after")
    def _apps_for_gates(self) -> ReadybotProbe:
        if self.check == "approval_gates" and not self.apps:
            raise ValueError("approval_gates needs apps (the Argo CD Applications that must be gated)")
        if self.check == "restore_drill" and self.max_age is None:
            raise ValueError("restore_drill needs max_age (how old the last passed drill may be, e.g. 35d)")
        return self


def _no_manual_part(probes: list[Any]) -> list[Any]:
    # A person's confirmation cannot be half of an automatic check.
    if any(isinstance(probe, ManualProbe) for probe in probes):
        raise ValueError("a manual probe cannot be part of all/any: make the whole criterion manual")
    return probes


class AllProbe(_Model):
    """Passes when every probe passes; fails when one fails; unknown otherwise."""

    kind: Literal["all"]
    probes: Annotated[list[Probe], AfterValidator(_no_manual_part)] = Field(min_length=1)


class AnyProbe(_Model):
    """Passes when one probe passes; fails when every probe fails; unknown otherwise."""

    kind: Literal["any"]
    probes: Annotated[list[Probe], AfterValidator(_no_manual_part)] = Field(min_length=1)


Probe = Annotated[
    ManualProbe
    | WorkloadProbe
    | ExistsProbe
    | FieldProbe
    | CountProbe
    | CoverageProbe
    | CronJobProbe
    | VeleroSchedulesProbe
    | PrometheusProbe
    | PrometheusRuleProbe
    | AlertmanagerProbe
    | ReadybotProbe
    | AllProbe
    | AnyProbe,
    Field(discriminator="kind"),
]

AllProbe.model_rebuild()
AnyProbe.model_rebuild()


# --- the plan -------------------------------------------------------------------


class PlanMark(_Model):
    """What the plan document itself says of a criterion: ticked, and its note."""

    done: bool = False
    note: str | None = None


class Criterion(_Model):
    id: str
    text: str = Field(min_length=1)
    probe: Probe
    # How to make it pass, for !readiness explain (from the plan's steps).
    fix: str = ""
    # Overrides the step's category.
    category: str | None = None
    plan: PlanMark = Field(default_factory=PlanMark)


class Step(_Model):
    """A numbered piece of work of a phase (``1.2 Deploy Trivy Operator``)."""

    id: str
    title: str = Field(min_length=1)
    category: str
    current_state: str | None = None
    # Deferred work (5.3) may have no criteria yet.
    deferred: bool = False
    recommendation: str | None = None
    criteria: list[Criterion] = Field(default_factory=list)


class Phase(_Model):
    id: str
    title: str = Field(min_length=1)
    goal: str | None = None
    effort: str | None = None
    impact: str | None = None
    timeline: str | None = None
    steps: list[Step] = Field(min_length=1)


class Category(_Model):
    id: str
    name: str = Field(min_length=1)
    # The plan's maturity table: rating, strengths, gaps.
    rating: str | None = None
    strengths: str | None = None
    gaps: str | None = None


class Plan(_Model):
    version: Literal[1] = 1
    title: str = "Production readiness"
    assessed: str | None = None
    categories: list[Category] = Field(min_length=1)
    phases: list[Phase] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Plan:
        # load_plan asks for the problems itself, to report one line each.
        if not (info.context or {}).get("defer_consistency"):
            problems = self.consistency_problems()
            if problems:
                raise ValueError("; ".join(problems))
        return self

    def consistency_problems(self) -> list[str]:
        """What the field types cannot say: unique ids, ids nested by number, known categories."""
        problems: list[str] = []
        seen: set[str] = set()
        category_ids = {category.id for category in self.categories}
        for category in self.categories:
            _check_id(category.id, "category", seen, problems)
        for phase in self.phases:
            _check_id(phase.id, "phase", seen, problems)
            for step in phase.steps:
                _check_id(step.id, "step", seen, problems)
                if not step.id.startswith(f"{phase.id}."):
                    problems.append(f"step {step.id}: its id must start with its phase's id {phase.id}.")
                if step.category not in category_ids:
                    problems.append(f"step {step.id}: unknown category {step.category!r}")
                if not step.criteria and not step.deferred:
                    problems.append(f"step {step.id}: needs criteria (or deferred: true)")
                for criterion in step.criteria:
                    _check_id(criterion.id, "criterion", seen, problems)
                    if not criterion.id.startswith(f"{step.id}."):
                        problems.append(
                            f"criterion {criterion.id}: its id must start with its step's id {step.id}."
                        )
                    if criterion.category is not None and criterion.category not in category_ids:
                        problems.append(f"criterion {criterion.id}: unknown category {criterion.category!r}")
        return problems

    # --- lookups ---------------------------------------------------------------

    def criteria(self) -> list[tuple[Phase, Step, Criterion]]:
        """Every criterion with its phase and step, in plan order."""
        return [(phase, step, c) for phase in self.phases for step in phase.steps for c in step.criteria]

    def category_of(self, step: Step, criterion: Criterion) -> str:
        return criterion.category or step.category

    def category(self, category_id: str) -> Category:
        return next(category for category in self.categories if category.id == category_id)


def _check_id(value: str, what: str, seen: set[str], problems: list[str]) -> None:
    if not _ID.fullmatch(value):
        problems.append(f"{what} id {value!r}: lower case letters, digits, '.', '_' or '-' (at most 41)")
    elif value in seen:
        problems.append(f"{what} id {value!r} is used twice")
    seen.add(value)


# --- loading ----------------------------------------------------------------------


def load_plan(path: Path) -> Plan:
    """Read and validate a plan file, or raise ``ConfigError`` with one ``path: problem`` line each."""
    where = f"readiness plan {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{where}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"{where}: cannot read it ({type(error).__name__})"]) from None
    try:
        data = load_strict_yaml(text)
    except YamlProblem as problem:
        raise ConfigError([f"{where}: {problem.what}{problem.at}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{where}: the top level must be a mapping (version, categories, phases)"])
    try:
        plan = Plan.model_validate(data, context={"defer_consistency": True})
    except ValidationError as error:
        raise ConfigError([f"{where}: {line}" for line in plan_problems(error, data)]) from None
    problems = plan.consistency_problems()
    if problems:
        raise ConfigError([f"{where}: {line}" for line in problems])
    return plan


def plan_problems(error: ValidationError, data: Any) -> list[str]:
    """One ``path: problem`` line per error; list positions shown as the element's id when it has one."""
    lines: list[str] = []
    for err in error.errors(include_url=False):
        loc = err["loc"]
        where = _pretty_loc(loc, data) or "plan"
        message = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "union_tag_invalid":
            message = f"unknown probe kind; one of: {', '.join(_PROBE_KINDS)}"
        line = f"{where}: {message}"
        if line not in lines:
            lines.append(line)
    return lines


def _pretty_loc(loc: tuple[int | str, ...], data: Any) -> str:
    parts: list[str] = []
    node: Any = data
    tag_seen = False
    for part in loc:
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) and part < len(node) else None
            ident = item.get("id") if isinstance(item, dict) else None
            parts[-1:] = [f"{parts[-1] if parts else ''}[{ident if ident is not None else part}]"]
            node, tag_seen = item, False
            continue
        if not tag_seen and _is_union_tag(part, node):
            # pydantic names the union member (the probe kind) in the location; it adds nothing.
            tag_seen = True
            continue
        node, tag_seen = (node.get(part) if isinstance(node, dict) else None), False
        parts.append(str(part))
    return ".".join(parts)


def _is_union_tag(part: str, node: Any) -> bool:
    if not isinstance(node, dict):
        return part in ("condition", "any_condition")
    if part in ("condition", "any_condition"):
        return part not in node
    return node.get("kind") == part and part in _PROBE_KINDS


_PROBE_KINDS = (
    "manual",
    "workload",
    "exists",
    "field",
    "count",
    "coverage",
    "cronjob",
    "velero_schedules",
    "prometheus",
    "prometheus_rule",
    "alertmanager",
    "readybot",
    "all",
    "any",
)
