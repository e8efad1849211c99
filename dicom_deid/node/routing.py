"""Routing rules: which profile, options, face method and destinations an instance gets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dicom_deid.config import NodeConfig, Rule


@dataclass(frozen=True)
class InstanceFacts:
    calling_aet: str
    called_aet: str
    modality: str
    sop_class_uid: str
    study_description: str


def matches(rule: Rule, facts: InstanceFacts) -> bool:
    m = rule.match
    if m.calling_aet and facts.calling_aet.strip() not in m.calling_aet:
        return False
    if m.called_aet and facts.called_aet.strip() not in m.called_aet:
        return False
    if m.modality and facts.modality.strip().upper() not in m.modality:
        return False
    if m.sop_class and facts.sop_class_uid not in m.sop_class:
        return False
    return not (m.study_description is not None
                and not m.study_description.search(facts.study_description or ""))


def choose_rule(config: NodeConfig, facts: InstanceFacts) -> Rule | None:
    """The first matching rule, else the default rule (None: quarantine)."""
    for rule in config.rules:
        if matches(rule, facts):
            return rule
    return config.default_rule


def route_of(rule: Rule) -> dict[str, Any]:
    """What a job needs to know about its rule, as plain JSON (the journal stores it)."""
    return {
        "rule": rule.name,
        "profile": rule.profile,
        "options": list(rule.options),
        "faces": rule.faces,
        "destinations": list(rule.destinations),
    }


def no_match_reason(facts: InstanceFacts) -> str:
    """Why nothing matched; names only non-identifying facts (no study description)."""
    from pydicom.uid import UID

    sop = UID(facts.sop_class_uid).name if facts.sop_class_uid else "?"
    return (f"no routing rule matched and no default rule is configured (calling AE "
            f"{facts.calling_aet!r}, called AE {facts.called_aet!r}, modality "
            f"{facts.modality or '-'!r}, SOP class {sop})")
