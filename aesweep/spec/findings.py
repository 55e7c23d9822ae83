"""A study's findings as data: the claims ``aesweep report`` checks on a sweep's trials.

A findings file (``sweeps/findings/<study>.yaml`` for the sweep file ``sweeps/<study>.yaml``) lists claims::

    claims:
      - id: mlp-over-logreg
        finding: the MLP probe is more accurate than logistic regression      # the study's sentence
        study: "MLP 0.86 vs LR 0.82 at d = 64 (Table 3)"                       # the study's numbers, as text
        per: model.latent_dim              # one verdict per value of this param (optional)
        where: {objective.variant: ae}     # both sides are these trials (optional)
        relation: greater                  # a > b
        a: {metric: probe/mlp/acc}
        b: {metric: probe/logreg/acc}

Relations: ``greater`` / ``less`` (side a against side b), ``within`` (side a's mean within ``tolerance`` of
``value``), ``rises_with`` / ``falls_with`` (side a's metric along param ``along``, on a log2 axis with ``log``),
``peaks_in`` (side a's mean is highest, or lowest with ``mode: min``, at one of ``values`` of ``along``). A side is
a metric and a ``where`` filter (param -> value, or a list of accepted values) on top of the claim's own.
``kind: sanity`` marks a check against a baseline (PCA, raw pixels): reported apart, never counted as a finding.
``testable: false`` with a ``reason`` records a finding this machine cannot test.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aesweep.spec import yamlsafe
from aesweep.spec.problems import Problem, SpecError, clean_loc, error_message, line_map, loc_path

Scalar = int | float | str | bool
COMPARISONS = ("greater", "less")
TRENDS = ("rises_with", "falls_with")


class Side(BaseModel):
    """One side of a claim: the trials ``where`` selects (on top of the claim's), and the metric read on them."""

    model_config = ConfigDict(extra="forbid")
    metric: str | None = None  # default: the claim's metric
    where: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)


class Claim(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    finding: str
    study: str = ""  # the study's own numbers, quoted
    kind: Literal["finding", "sanity"] = "finding"
    testable: bool = True
    reason: str = ""  # why a finding cannot be tested here (testable: false)
    relation: Literal["greater", "less", "within", "rises_with", "falls_with", "peaks_in"] | None = None
    metric: str | None = None
    per: str | None = None
    where: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)
    a: Side = Field(default_factory=Side)
    b: Side | None = None
    value: float | None = None  # within
    tolerance: float | None = Field(default=None, ge=0)  # within
    along: str | None = None  # rises_with, falls_with, peaks_in
    log: bool = False  # rises_with, falls_with: the param on a log2 axis
    values: list[Scalar] | None = None  # peaks_in
    mode: Literal["max", "min"] = "max"  # peaks_in

    @model_validator(mode="after")
    def _complete(self) -> Claim:
        if not self.testable:
            if not self.reason:
                raise ValueError("a claim with testable: false says why in reason")
            return self
        if self.relation is None:
            raise ValueError("a testable claim needs a relation (greater, less, within, rises_with, falls_with, "
                             "peaks_in)")
        if self.a.metric is None and self.metric is None:
            raise ValueError("no metric: give metric, or a.metric")
        if self.relation in COMPARISONS:
            if self.b is None:
                raise ValueError(f"relation {self.relation} compares side a with side b: give b")
            if self.b.metric is None and self.metric is None:
                raise ValueError("no metric for side b: give metric, or b.metric")
            if self.a == self.b:
                raise ValueError("sides a and b select the same trials and metric")
        elif self.b is not None:
            raise ValueError(f"relation {self.relation} reads side a only; b is for greater / less")
        if self.relation == "within" and (self.value is None or self.tolerance is None):
            raise ValueError("relation within needs value and tolerance")
        if self.relation in (*TRENDS, "peaks_in") and self.along is None:
            raise ValueError(f"relation {self.relation} needs along: the param the metric follows")
        if self.relation == "peaks_in" and not self.values:
            raise ValueError("relation peaks_in needs values: where along the peak should be")
        return self

    def metric_of(self, side: Side) -> str:
        return side.metric or self.metric or ""

    def filters(self, side: Side) -> dict[str, Scalar | list[Scalar]]:
        return {**self.where, **side.where}


class Findings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    claims: list[Claim] = Field(min_length=1)

    @field_validator("claims")
    @classmethod
    def _unique_ids(cls, claims: list[Claim]) -> list[Claim]:
        seen: set[str] = set()
        for claim in claims:
            if claim.id in seen:
                raise ValueError(f"claim id {claim.id!r} is used twice")
            seen.add(claim.id)
        return claims


def load_findings(path: str | Path) -> Findings:
    """Read and validate a findings file; raises SpecError (``FILE:LINE: field: message`` per problem)."""
    file = str(path)
    try:
        text = yamlsafe.read_text(path)
        yamlsafe.scan(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except OSError as err:
        raise SpecError([Problem(file, None, "(file)", err.strerror or str(err))]) from None
    except yamlsafe.DocumentError as err:
        raise SpecError([Problem(file, err.line, err.field, err.message, column=err.column)]) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise SpecError([Problem(file, mark.line + 1 if mark else None, "yaml",
                                 getattr(err, "problem", None) or str(err))]) from None
    if node is None or not isinstance(data, dict):
        raise SpecError([Problem(file, 1, "(top level)", "a findings file is a mapping with a list of claims")])
    problems: list[Problem] = []
    lines = line_map(node, problems, file)
    try:
        findings = Findings.model_validate(data)
    except ValidationError as err:
        for error in err.errors():
            loc = clean_loc(error["loc"])
            line = next((lines[loc[:cut]] for cut in range(len(loc), -1, -1) if loc[:cut] in lines), None)
            problems.append(Problem(file, line, loc_path(loc) or "(top level)", error_message(error, Findings)))
        raise SpecError(problems) from None
    if problems:
        raise SpecError(problems)
    return findings


def findings_beside(spec_file: str | Path) -> Path:
    """Where the findings of sweep file ``sweeps/NAME.yaml`` live: ``sweeps/findings/NAME.yaml`` (a folder of its
    own, so that ``aesweep validate sweeps/*.yaml`` reads sweep files only)."""
    path = Path(spec_file)
    return path.parent / "findings" / path.name
