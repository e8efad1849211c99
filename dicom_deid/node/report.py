"""What `dicom-deid status` shows, read from the journal (also while the node runs).

Only pseudonyms, counts, ages, destinations and reasons: the report never shows an
original UID, so it can be pasted into a ticket.
"""

from __future__ import annotations

import time
from typing import Any

from dicom_deid.config import NodeConfig
from dicom_deid.node.journal import Journal
from dicom_deid.node.service import node_running


def build_report(config: NodeConfig, journal: Journal, recent: int = 10) -> dict[str, Any]:
    now = time.time()
    counts = journal.counts()

    def age(t: float | None) -> float | None:
        return round(now - t, 1) if t else None

    destinations: dict[str, dict[str, Any]] = {
        d.name: {"pending": 0, "sent": 0, "quarantined": 0, "oldest_pending_age_s": None,
                 "configured": True} for d in config.destinations}
    for name, c in counts.sends.items():
        entry = destinations.setdefault(name, {"configured": False})
        entry.update(pending=c.pending, sent=c.sent, quarantined=c.quarantined,
                     oldest_pending_age_s=age(c.oldest_pending_output_at))
    items = [{"id": q.id, "study": q.study, **({"destination": q.destination}
                                               if q.destination is not None else {}),
              "age_s": round(now - q.since, 1), "reason": q.reason}
             for q in journal.quarantined(limit=50, newest_first=True)]
    in_quarantine, sends_quarantined = journal.quarantine_sizes()
    pid = node_running(config.state_dir)
    return {
        "node": {"running": pid is not None, "pid": pid if pid and pid > 0 else None,
                 "state_dir": str(config.state_dir), "config": config.source,
                 "listen": f"{config.listen.ae_title}@{config.listen.host}:{config.listen.port}"},
        "instances": counts.instances,
        "studies_waiting": counts.studies_waiting,
        "oldest_waiting_age_s": age(counts.oldest_waiting_at),
        "destinations": destinations,
        "held_in_outbox": {
            "outputs": counts.held_outputs,
            "oldest_age_s": age(counts.oldest_held_at),
            "why": "no destination configured for their rule" if counts.held_outputs else None,
        },
        "quarantine": {
            "instances": in_quarantine,
            "sends": sends_quarantined,
            "items": items,
        },
        "recent_failures": [
            {"age_s": round(now - e.at, 1), "kind": e.kind, "subject": e.subject,
             "message": e.message} for e in journal.recent_events(recent)],
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def format_report(report: dict[str, Any]) -> str:
    node = report["node"]
    lines = [
        f"node: {'running (pid ' + str(node['pid']) + ')' if node['running'] else 'not running'}"
        f", {node['listen']}, state {node['state_dir']}",
        "instances: " + ", ".join(f"{k} {v}" for k, v in report["instances"].items()),
        f"waiting: {report['studies_waiting']} studies, oldest item {_age(report['oldest_waiting_age_s'])}",
    ]
    if report["destinations"]:
        lines.append("destinations:")
        for name, d in report["destinations"].items():
            extra = "" if d["configured"] else " (no longer configured)"
            lines.append(f"  {name}: pending {d['pending']} (oldest {_age(d['oldest_pending_age_s'])}),"
                         f" sent {d['sent']}, quarantined {d['quarantined']}{extra}")
    else:
        lines.append("destinations: none configured")
    held = report["held_in_outbox"]
    if held["outputs"]:
        lines.append(f"held in outbox: {held['outputs']} files ({held['why']}), oldest "
                     f"{_age(held['oldest_age_s'])}")
    quarantine = report["quarantine"]
    lines.append(f"quarantine: {quarantine['instances']} instances, {quarantine['sends']} sends"
                 + (" (dicom-deid retry ID... or --all puts them back)" if quarantine["items"] else ""))
    for item in quarantine["items"][:20]:
        where = f" -> {item['destination']}" if "destination" in item else ""
        lines.append(f"  {item['id']} study {item['study']}{where}, {_age(item['age_s'])} ago: "
                     f"{item['reason']}")
    if report["recent_failures"]:
        lines.append("recent failures:")
        for f in report["recent_failures"]:
            lines.append(f"  {_age(f['age_s'])} ago {f['kind']} {f['subject'] or ''}: {f['message']}")
    return "\n".join(lines)
