"""Promotion: judge the latest registration against `@champion` and move the aliases.

`promote` judges the version selected for the primary profile with `components.gates.decide`
against the `@champion`'s recorded metrics (paired on the same val samples when both versions
recorded their per-sample correctness, `val_correct`; else on the point values, and the
decision says which) and moves aliases: `@challenger` when the gates pass,
`@champion` only on a champion decision. Every decision is recorded on the version; re-running it
writes nothing new. `promote_version` (by hand) and `rollback` keep `distillery.previous_champion`
on each champion so a rollback can walk back.
"""

from __future__ import annotations

import contextlib
import getpass
import json
from typing import Any

from components.config import HIGHER_IS_BETTER, PromotionPolicy, RegisterConfig
from components.evaluation.selection import select_candidate
from components.gates import Decision, decide
from flows.model_card import _num
from flows.registry import (
    CHALLENGER,
    CHAMPION,
    DECISION,
    DECISION_HEADING,
    DESCRIPTION_LIMIT,
    PREVIOUS,
    RECORD,
    ROLLED_BACK,
    SELECTED,
    VARIANT,
    T,
    _by_alias,
    _client,
    _metrics,
    latest_batch,
)


def pick_candidate(versions: list[Any], policy: PromotionPolicy) -> Any:
    """The version `evaluate` selected for the primary profile; else the registered variant
    that `select_candidate` would pick; else (none meets its budgets) the one best on the
    primary metric, so that its rejection is recorded."""
    p = policy.primary_profile
    chosen = [v for v in versions if p in v.tags.get(SELECTED, "").split(",")]
    if chosen:
        return chosen[0]
    on_p = {str(v.version): _metrics(v).get(p) for v in versions if _metrics(v).get(p)}
    best = select_candidate(on_p)
    if best is None and on_p:
        sign = -1 if HIGHER_IS_BETTER[policy.primary_metric] else 1
        best = min(on_p, key=lambda k: (sign * (on_p[k].get(policy.primary_metric) or 0), k))
    by_version = {str(v.version): v for v in versions}
    return by_version[best] if best else max(versions, key=lambda v: int(v.version))


def promote(cfg: RegisterConfig, client: Any = None, versions: list[Any] | None = None) -> Decision:
    """Judge the candidate of ``versions`` (default: the latest registration) and move aliases."""
    client = client or _client()
    name = cfg.model_name
    versions = versions or latest_batch(client, name)
    if not versions:
        raise RuntimeError(f"promote: `{name}` has no registered versions to judge")
    candidate = client.get_model_version(name, str(pick_candidate(versions, cfg.policy).version))
    champion = _by_alias(client, name, CHAMPION)
    version = str(candidate.version)
    ids = {"candidate_version": version, "champion_version": str(champion.version) if champion
           else None}
    if ids["champion_version"] == version:
        return Decision("champion", [f"version {version} is already the champion"], ids)
    if candidate.tags.get(ROLLED_BACK):
        decision = Decision("rejected", [f"rolled back from champion "
                                         f"({candidate.tags[ROLLED_BACK]}); restore it by hand "
                                         "with promote_version"], {})
    else:
        decision = decide(_metrics(candidate), _metrics(champion) if champion else None,
                          cfg.policy)
        theirs, ours = (champion.tags.get("data_hash") if champion else None,
                        candidate.tags.get("data_hash"))
        if decision.outcome == CHAMPION and champion and theirs != ours:
            # accuracies measured on different test data are not comparable: never auto-promote
            decision = Decision(CHALLENGER, [
                *decision.reasons, f"not promoted: the champion was evaluated on data "
                f"{str(theirs)[:12]}, this version on {str(ours)[:12]}; compare them on the same "
                "data, then promote by hand"], decision.compared)
    decision.compared.update(ids)
    aliases = client.get_registered_model(name).aliases
    # Order matters when a call fails midway: an alias is taken away before the decision that
    # takes it is recorded, and given only after the decision that earns it; `@champion`
    # moves last. Whatever call fails, no alias points at a version its record contradicts.
    if decision.outcome != CHALLENGER and str(aliases.get(CHALLENGER)) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    _record(client, candidate, decision)
    if decision.outcome == CHALLENGER and str(aliases.get(CHALLENGER)) != version:
        client.set_registered_model_alias(name, CHALLENGER, version)
    if decision.outcome == CHAMPION:
        _move_champion(client, name, version, champion)
    return decision


def promote_version(name: str, version: str | int, who: str | None = None, reason: str = "",
                    client: Any = None) -> Decision:
    """Make ``version`` the champion by hand (no gates), recording who and why."""
    client = client or _client()
    version = str(version)
    mv = client.get_model_version(name, version)
    champion = _by_alias(client, name, CHAMPION)
    ids = {"candidate_version": version,
           "champion_version": str(champion.version) if champion else None}
    if ids["champion_version"] == version:
        return Decision("champion", [f"version {version} is already the champion"], ids)
    who = who or getpass.getuser()
    decision = Decision("champion", [f"promoted by hand by {who}: {reason or 'no reason given'}"],
                        ids)
    client.set_model_version_tag(name, version, f"{T}promoted_by", who)
    client.set_model_version_tag(name, version, f"{T}promotion_reason", reason)
    if mv.tags.get(ROLLED_BACK):
        client.delete_model_version_tag(name, version, ROLLED_BACK)
    _record(client, mv, decision)
    _move_champion(client, name, version, champion)
    return decision


def rollback(name: str, who: str | None = None, reason: str = "", client: Any = None) -> Any:
    """Point `@champion` back at the version it replaced; return that version.

    The demoted version is tagged `distillery.rolled_back`, so `promote` will not re-promote it
    automatically; a further rollback follows the restored version's own previous champion.
    """
    client = client or _client()
    current = _by_alias(client, name, CHAMPION)
    if current is None:
        raise RuntimeError(f"rollback: `{name}` has no champion")
    previous = current.tags.get(PREVIOUS)
    if not previous:
        raise RuntimeError(f"rollback: champion version {current.version} of `{name}` has no "
                           "previous champion")
    restored = client.get_model_version(name, previous)
    who = who or getpass.getuser()
    demoted = str(current.version)
    try:
        client.set_model_version_tag(name, demoted, ROLLED_BACK,
                                     f"by {who}: {reason or 'no reason given'}")
        client.set_model_version_tag(name, demoted, DECISION, "rolled_back")
        client.set_registered_model_alias(name, CHAMPION, str(restored.version))  # the commit
    except Exception:
        # the champion did not move: it must not stay tagged as rolled back
        _restore_tags(client, current, (ROLLED_BACK, DECISION))
        raise
    return restored  # as read before the move: no call after the commit can fail it


def _restore_tags(client: Any, mv: Any, keys: tuple[str, ...]) -> None:
    """Put ``mv``'s tags ``keys`` back as ``mv`` holds them; best effort, on a failure path
    (a registry that is down stays down: the original error is the one to report)."""
    for key in keys:
        with contextlib.suppress(Exception):
            if key in mv.tags:
                client.set_model_version_tag(mv.name, str(mv.version), key, mv.tags[key])
            else:
                client.delete_model_version_tag(mv.name, str(mv.version), key)


def champion_summary(name: str, client: Any = None) -> str:
    """One line on the current `@champion` of ``name``: version, variant, decision."""
    client = client or _client()
    mv = _by_alias(client, name, CHAMPION)
    if mv is None:
        return f"champion of {name}: none"
    return (f"champion of {name}: version {mv.version} ({mv.tags.get(VARIANT, '?')}), "
            f"{mv.tags.get('distillery.decision', '')}")


def _record(client: Any, mv: Any, decision: Decision) -> None:
    """Decision tag, JSON record and description section; writes only what changed."""
    name, version = mv.name, str(mv.version)
    record = json.dumps(decision.to_dict(), sort_keys=True)
    if mv.tags.get(DECISION) != decision.outcome:
        client.set_model_version_tag(name, version, DECISION, decision.outcome)
    if mv.tags.get(RECORD) != record:
        client.set_model_version_tag(name, version, RECORD, record)
    c = decision.compared
    text = (f"Outcome: **{decision.outcome}**. Compared {c.get('metric', '-')} on "
            f"`{c.get('profile', '-')}`: candidate v{c.get('candidate_version')} "
            f"{_num(c.get('candidate'))} vs champion v{c.get('champion_version')} "
            f"{_num(c.get('champion'))} (improvement {_num(c.get('improvement'))}, needed > "
            f"{_num(c.get('min_improvement'))}; {_how(c)}).\n"
            + "".join(f"- {r}\n" for r in decision.reasons))
    head = (mv.description or "").split(DECISION_HEADING)[0]
    description = head[: DESCRIPTION_LIMIT - len(DECISION_HEADING) - len(text)]
    description += DECISION_HEADING + text
    if mv.description != description[:DESCRIPTION_LIMIT]:
        client.update_model_version(name, version, description[:DESCRIPTION_LIMIT])


def _how(compared: dict[str, Any]) -> str:
    """How the two were compared: paired (n samples, the gain's 95% lower bound) or by point."""
    if compared.get("paired"):
        return (f"paired on {compared.get('n')} samples, 95% lower bound of the improvement "
                f"{_num(compared.get('gain_lower'))}")
    return "point comparison" if compared.get("paired") is False else "not compared"


def _move_champion(client: Any, name: str, version: str, previous: Any) -> None:
    """Tag ``version`` with the champion it replaces, then move the alias (the commit point)."""
    if previous is not None:
        client.set_model_version_tag(name, version, PREVIOUS, str(previous.version))
    client.set_registered_model_alias(name, CHAMPION, version)
