"""What `dicom-deid status` shows, read from the journal (also while the node runs).

Only pseudonyms, counts, ages, destinations and reasons: the report never shows an
original UID, so it can be pasted into a ticket.
"""

from __future__ import annotations

import time
from typing import Any

from dicom_deid.config import NodeConfig
from dicom_deid.node.journal import INSTANCE_STATES, Journal
from dicom_deid.node.service import node_running


def build_report(config: NodeConfig, journal: Journal, recent: int = 10) -> dict[str, Any]:
    now = time.time()
    q = journal.query
    instances = {state: 0 for state in INSTANCE_STATES}
    for row in q("SELECT state, COUNT(*) AS n FROM instances GROUP BY state"):
        instances[row["state"]] = row["n"]

    waiting_studies = q("SELECT COUNT(DISTINCT study_id) AS n FROM instances"
                        " WHERE state = 'received'")[0]["n"]
    oldest_waiting = q("SELECT MIN(received_at) AS t FROM instances WHERE state IN"
                       " ('received', 'processing')")[0]["t"]

    configured = [d.name for d in config.destinations]
    destinations: dict[str, dict[str, Any]] = {
        name: {"pending": 0, "sent": 0, "quarantined": 0, "oldest_pending_age_s": None,
               "configured": True} for name in configured}
    for row in q("SELECT destination, state, COUNT(*) AS n, MIN(CASE WHEN state = 'pending'"
                 " THEN updated_at END) AS oldest FROM sends GROUP BY destination, state"):
        entry = destinations.setdefault(row["destination"], {
            "pending": 0, "sent": 0, "quarantined": 0, "oldest_pending_age_s": None,
            "configured": False})
        entry[row["state"]] = row["n"]
    for row in q("SELECT s.destination, MIN(o.created_at) AS t FROM sends s JOIN outputs o"
                 " ON o.id = s.output_id WHERE s.state = 'pending' GROUP BY s.destination"):
        destinations[row["destination"]]["oldest_pending_age_s"] = round(now - row["t"], 1)

    held = q("SELECT COUNT(*) AS n, MIN(created_at) AS t FROM outputs o WHERE removed = 0"
             " AND NOT EXISTS (SELECT 1 FROM sends s WHERE s.output_id = o.id)")[0]

    quarantined_instances = [
        {"id": f"I{r['id']}", "study": r["token"] or "-", "age_s": round(now - r["updated_at"], 1),
         "reason": r["reason"]}
        for r in q("SELECT i.id, i.reason, i.updated_at, s.token FROM instances i LEFT JOIN"
                   " studies s ON s.id = i.study_id WHERE i.state = 'quarantined'"
                   " ORDER BY i.updated_at DESC LIMIT 50")]
    quarantined_sends = [
        {"id": f"S{r['id']}", "study": r["token"], "destination": r["destination"],
         "age_s": round(now - r["updated_at"], 1), "reason": r["last_error"]}
        for r in q("SELECT s.id, s.destination, s.last_error, s.updated_at, st.token FROM sends s"
                   " JOIN outputs o ON o.id = s.output_id JOIN studies st ON st.id = o.study_id"
                   " WHERE s.state = 'quarantined' ORDER BY s.updated_at DESC LIMIT 50")]
    failures = [
        {"age_s": round(now - r["at"], 1), "kind": r["kind"], "subject": r["subject"],
         "message": r["message"]}
        for r in q("SELECT at, kind, subject, message FROM events ORDER BY id DESC LIMIT ?",
                   (recent,))]
    pid = node_running(config.state_dir)
    return {
        "node": {"running": pid is not None, "pid": pid if pid and pid > 0 else None,
                 "state_dir": str(config.state_dir), "config": config.source,
                 "listen": f"{config.listen.ae_title}@{config.listen.host}:{config.listen.port}"},
        "instances": instances,
        "studies_waiting": waiting_studies,
        "oldest_waiting_age_s": round(now - oldest_waiting, 1) if oldest_waiting else None,
        "destinations": destinations,
        "held_in_outbox": {
            "outputs": held["n"],
            "oldest_age_s": round(now - held["t"], 1) if held["t"] else None,
            "why": "no destination configured for their rule" if held["n"] else None,
        },
        "quarantine": {
            "instances": sum(1 for _ in q("SELECT id FROM instances WHERE state = 'quarantined'")),
            "sends": sum(1 for _ in q("SELECT id FROM sends WHERE state = 'quarantined'")),
            "items": quarantined_instances + quarantined_sends,
        },
        "recent_failures": failures,
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
