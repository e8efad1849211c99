"""The node's journal: one SQLite database (WAL) recording every instance and send.

Every hand-off between receiver, scheduler, workers and forwarders is a transaction here,
so a node killed at any moment resumes from the journal alone. The journal is the only
place that links original identifiers (study, series and SOP instance UIDs) to anything
else; it is created readable by its owner only.

States
  instance: received -> processing -> done -> forwarded, or quarantined (with a reason)
  send (one per de-identified output and destination): pending -> sent, or quarantined
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_deid.errors import DeidError

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL UNIQUE,          -- original: PHI, lives only here
    token TEXT NOT NULL,                     -- keyed pseudonym used in logs and audit
    first_received_at REAL NOT NULL,
    last_received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    id INTEGER PRIMARY KEY,
    study_id INTEGER REFERENCES studies(id),  -- NULL when the header could not be read
    sop_instance_uid TEXT,
    sop_class_uid TEXT,
    transfer_syntax TEXT,
    modality TEXT,
    study_description TEXT,
    calling_aet TEXT,
    called_aet TEXT,
    path TEXT NOT NULL,                      -- relative to the state dir
    size INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN
        ('received', 'processing', 'done', 'forwarded', 'quarantined')),
    reason TEXT,
    route TEXT,                              -- JSON: the rule chosen when processing began
    job_id INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    received_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_state ON instances(state, study_id);
CREATE INDEX IF NOT EXISTS instances_by_sop ON instances(sop_instance_uid);
CREATE INDEX IF NOT EXISTS instances_by_job ON instances(job_id);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    state TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed', 'interrupted')),
    started_at REAL NOT NULL,
    finished_at REAL,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS outputs (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    job_id INTEGER NOT NULL,
    path TEXT NOT NULL UNIQUE,               -- relative to the state dir
    sop_class_uid TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    created_at REAL NOT NULL,
    removed INTEGER NOT NULL DEFAULT 0       -- file deleted after delivery (retention)
);
CREATE TABLE IF NOT EXISTS sends (
    id INTEGER PRIMARY KEY,
    output_id INTEGER NOT NULL REFERENCES outputs(id),
    destination TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'quarantined')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    updated_at REAL NOT NULL,
    UNIQUE (output_id, destination)
);
CREATE INDEX IF NOT EXISTS sends_due ON sends(destination, state, next_attempt_at);
CREATE TABLE IF NOT EXISTS inline_data (
    -- A small received instance's bytes, committed with its row (one WAL fsync) so that it
    -- is acknowledged before its spool file is fsync'd; dropped once that file is durable.
    instance_id INTEGER PRIMARY KEY REFERENCES instances(id) ON DELETE CASCADE,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,                      -- PHI-free: pseudonyms, counts, reasons
    subject TEXT,
    message TEXT NOT NULL
);
"""

INSTANCE_STATES = ("received", "processing", "done", "forwarded", "quarantined")


class JournalError(DeidError, RuntimeError):
    pass


@dataclass(frozen=True)
class ReceivedInstance:
    """What the receiver knows about one instance when it is spooled."""

    study_uid: str
    study_token: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    modality: str
    study_description: str
    calling_aet: str
    called_aet: str
    path: str  # relative to the state dir
    size: int


@dataclass(frozen=True)
class OutputRecord:
    """One de-identified file written by a job, and where it must go."""

    path: str  # relative to the state dir
    sop_class_uid: str
    transfer_syntax: str
    destinations: tuple[str, ...]


@dataclass(frozen=True)
class DueSend:
    send_id: int
    output_id: int
    path: str
    sop_class_uid: str
    transfer_syntax: str
    attempts: int
    study_id: int


@dataclass(frozen=True)
class InstanceRecord:
    """One journalled instance (a row of `instances`); its UIDs are originals: PHI."""

    id: int
    study_id: int | None
    sop_instance_uid: str | None
    sop_class_uid: str | None
    transfer_syntax: str | None
    modality: str | None
    study_description: str | None
    calling_aet: str | None
    called_aet: str | None
    path: str
    size: int
    state: str
    reason: str | None
    route: str | None  # JSON of the rule chosen when processing began
    job_id: int | None
    attempts: int
    received_at: float
    updated_at: float


@dataclass(frozen=True)
class StoredFile:
    """A file the journal names (relative to the state dir), by the id of its row."""

    id: int
    path: str


@dataclass(frozen=True)
class StudyRecord:
    id: int
    study_uid: str  # original: PHI
    token: str
    first_received_at: float


@dataclass(frozen=True)
class QuarantinedItem:
    """A quarantined instance (`I<n>`) or send (`S<n>`), PHI-free."""

    id: str
    study: str
    since: float
    reason: str
    destination: str | None = None  # sends only


@dataclass(frozen=True)
class Event:
    at: float
    kind: str
    subject: str | None
    message: str


@dataclass(frozen=True)
class DestinationCounts:
    pending: int = 0
    sent: int = 0
    quarantined: int = 0
    oldest_pending_output_at: float | None = None  # when its oldest pending output was made


@dataclass(frozen=True)
class JournalCounts:
    """The numbers `status` and /metrics show, read in one go."""

    instances: dict[str, int]  # every INSTANCE_STATES key
    studies_waiting: int
    oldest_waiting_at: float | None
    sends: dict[str, DestinationCounts]
    held_outputs: int  # outputs with no send (no destination for their rule)
    oldest_held_at: float | None
    jobs: dict[str, int]
    jobs_done: int
    jobs_done_seconds: float


def _create_private_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)


class Journal:
    """One connection to the journal; use one object per thread (or process)."""

    def __init__(self, path: Path | str, *, create: bool = True, readonly: bool = False):
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise JournalError(f"no journal at {self.path} (has the node ever run here?)")
            _create_private_file(self.path)
        self.conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None,
                                    check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self.conn.execute("PRAGMA busy_timeout = 60000")
        if readonly:
            self.conn.execute("PRAGMA query_only = ON")
            return
        self.conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk before the receiver acknowledges the instance.
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        # Deleted rows are overwritten: held instance bytes (inline_data) and superseded
        # rows do not linger in free pages of a file that may be copied for diagnosis.
        self.conn.execute("PRAGMA secure_delete = ON")
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, SCHEMA_VERSION):
            raise JournalError(f"journal {self.path} has schema version {version}; this "
                               f"dicom-deid understands {SCHEMA_VERSION}")
        if version == 0:
            # IF NOT EXISTS makes a race between two processes creating it harmless.
            self.conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA +
                                    f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        elif version == 1:  # 2 adds inline_data; a version-1 dicom-deid refuses the result
            self.conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA +
                                    f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""
        with self._lock:
            cur = self.conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Raw SQL for tests and diagnostics; the node's code calls the methods below."""
        with self._lock:
            return [tuple(r) for r in self.conn.execute(sql, params).fetchall()]

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    # ------------------------------------------------------------------ receiving

    def record_received(self, item: ReceivedInstance, now: float | None = None) -> tuple[int, list[int]]:
        """Journal a spooled instance; returns its id and the ids of copies it supersedes.

        A second copy of an instance that has not been processed yet supersedes the first
        (a PACS re-sending after a failed association); the caller drops the old copies
        with `drop_superseded` once the new file is durable. A copy of an instance that was
        already processed is processed again: keyed UIDs make the result identical, and the
        archive stores it once.
        """
        return self.record_received_many([item], now)[0]

    def record_received_many(self, items: Sequence[ReceivedInstance],
                             now: float | None = None,
                             data: Sequence[bytes | None] | None = None
                             ) -> list[tuple[int, list[int]]]:
        """record_received for several instances in one transaction (one fsync).

        data: per item, its bytes to keep in `inline_data` until its spool file is durable
        (see node/commit.py), or None for an item whose file is durable already.
        """
        now = time.time() if now is None else now
        results = []
        blobs = list(data) if data is not None else [None] * len(items)
        with self.transaction() as cur:
            for item, blob in zip(items, blobs, strict=True):
                cur.execute(
                    "INSERT INTO studies (study_uid, token, first_received_at, last_received_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT(study_uid) DO UPDATE SET"
                    " last_received_at = ?",
                    (item.study_uid, item.study_token, now, now, now))
                study_id = cur.execute("SELECT id FROM studies WHERE study_uid = ?",
                                       (item.study_uid,)).fetchone()[0]
                older = [r[0] for r in cur.execute(
                    "SELECT id FROM instances WHERE sop_instance_uid = ? AND study_id = ? "
                    "AND state = 'received'", (item.sop_instance_uid, study_id))]
                cur.execute(
                    "INSERT INTO instances (study_id, sop_instance_uid, sop_class_uid,"
                    " transfer_syntax, modality, study_description, calling_aet, called_aet,"
                    " path, size, state, received_at, updated_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,'received',?,?)",
                    (study_id, item.sop_instance_uid, item.sop_class_uid, item.transfer_syntax,
                     item.modality, item.study_description, item.calling_aet, item.called_aet,
                     item.path, item.size, now, now))
                if blob is not None:
                    cur.execute("INSERT INTO inline_data (instance_id, data) VALUES (?, ?)",
                                (cur.lastrowid, blob))
                results.append((cur.lastrowid, older))
        return results  # type: ignore[return-value]

    def defer_checkpoints(self) -> None:
        """Commits on this connection no longer checkpoint the WAL (SQLite does that in the
        committing connection once the WAL passes 1,000 pages: on the receiver's, inside a
        C-STORE's acknowledgement); `checkpoint()` on another connection does it instead."""
        with self._lock:
            self.conn.execute("PRAGMA wal_autocheckpoint = 0")

    def checkpoint(self) -> None:
        """Copy committed WAL pages into the database without waiting for readers/writers."""
        with self._lock:
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def inline_files(self, limit: int | None = None) -> list[StoredFile]:
        """Instances whose bytes are still held in the journal: their spool files may not
        be on disk yet (oldest first)."""
        cap = f" LIMIT {int(limit)}" if limit is not None else ""
        return [StoredFile(r["id"], r["path"]) for r in self._rows(
            "SELECT i.id, i.path FROM inline_data d JOIN instances i ON i.id = d.instance_id"
            " WHERE i.path != '' ORDER BY i.id" + cap)]

    def inline_bytes(self, instance_id: int) -> bytes | None:
        rows = self._rows("SELECT data FROM inline_data WHERE instance_id = ?", (instance_id,))
        return bytes(rows[0]["data"]) if rows else None

    def drop_inline(self, instance_ids: Sequence[int]) -> None:
        """Forget held bytes once their spool files are durable (or gone for good).

        Not synchronous: a drop lost to a power cut only means the file is checked again."""
        if not instance_ids:
            return
        with self._lock:
            self.conn.execute("PRAGMA synchronous = NORMAL")
            try:
                with self.transaction() as cur:
                    cur.executemany("DELETE FROM inline_data WHERE instance_id = ?",
                                    [(i,) for i in instance_ids])
                    # Removed originals (retention) keep no bytes either.
                    cur.execute("DELETE FROM inline_data WHERE instance_id IN"
                                " (SELECT id FROM instances WHERE path = '')")
            finally:
                self.conn.execute("PRAGMA synchronous = FULL")

    def drop_superseded(self, instance_ids: Sequence[int]) -> list[str]:
        """Remove older copies that are still waiting; returns their spool paths."""
        paths: list[str] = []
        with self.transaction() as cur:
            for instance_id in instance_ids:
                row = cur.execute("DELETE FROM instances WHERE id = ? AND state = 'received'"
                                  " RETURNING path", (instance_id,)).fetchone()
                if row:
                    paths.append(row[0])
        return paths

    def record_unreadable(self, *, path: str, size: int, calling_aet: str, called_aet: str,
                          sop_class_uid: str, transfer_syntax: str, reason: str) -> int:
        """Journal a spooled instance whose header cannot be used: quarantined at once."""
        now = time.time()
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO instances (study_id, sop_class_uid, transfer_syntax, calling_aet,"
                " called_aet, path, size, state, reason, received_at, updated_at)"
                " VALUES (NULL,?,?,?,?,?,?,'quarantined',?,?,?)",
                (sop_class_uid, transfer_syntax, calling_aet, called_aet, path, size, reason,
                 now, now))
            instance_id = cur.lastrowid
            self._event(cur, "quarantined", f"I{instance_id}", reason, now)
            return instance_id  # type: ignore[return-value]

    def forget_unacknowledged(self, instance_id: int) -> None:
        """Remove an instance whose spooling failed before it was acknowledged."""
        with self.transaction() as cur:
            cur.execute("DELETE FROM instances WHERE id = ? AND state = 'received'", (instance_id,))

    # ------------------------------------------------------------------ scheduling

    def stable_studies(self, quiet_since: float, limit: int = 100) -> list[int]:
        """Studies with received instances and no arrival since quiet_since, no job running."""
        rows = self._rows(
            "SELECT s.id FROM studies s WHERE s.last_received_at <= ?"
            " AND EXISTS (SELECT 1 FROM instances i WHERE i.study_id = s.id AND i.state = 'received')"
            " AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.study_id = s.id"
            "                 AND i.state = 'processing')"
            " ORDER BY s.last_received_at LIMIT ?", (quiet_since, limit))
        return [r["id"] for r in rows]

    def received_instances(self, study_id: int) -> list[InstanceRecord]:
        return [InstanceRecord(**dict(r)) for r in self._rows(
            "SELECT * FROM instances WHERE study_id = ? AND state = 'received' ORDER BY id",
            (study_id,))]

    def start_job(self, study_id: int, routed: Sequence[tuple[int, dict]],
                  unrouted: Sequence[tuple[int, str]]) -> int | None:
        """Move routed instances to processing under a new job; quarantine unrouted ones.

        Returns the job id, or None when nothing was routed.
        """
        now = time.time()
        with self.transaction() as cur:
            token = self._token(cur, study_id)
            for instance_id, reason in unrouted:
                cur.execute("UPDATE instances SET state = 'quarantined', reason = ?, updated_at = ?"
                            " WHERE id = ? AND state = 'received'", (reason, now, instance_id))
                self._event(cur, "quarantined", token, reason, now)
            if not routed:
                return None
            cur.execute("INSERT INTO jobs (study_id, state, started_at) VALUES (?, 'running', ?)",
                        (study_id, now))
            job_id = cur.lastrowid
            for instance_id, route in routed:
                cur.execute("UPDATE instances SET state = 'processing', route = ?, job_id = ?,"
                            " updated_at = ? WHERE id = ? AND state = 'received'",
                            (json.dumps(route, sort_keys=True), job_id, now, instance_id))
            return job_id

    def job_instances(self, job_id: int) -> list[InstanceRecord]:
        return [InstanceRecord(**dict(r)) for r in self._rows(
            "SELECT * FROM instances WHERE job_id = ? AND state = 'processing' ORDER BY id",
            (job_id,))]

    def study_token(self, study_id: int) -> str:
        rows = self._rows("SELECT token FROM studies WHERE id = ?", (study_id,))
        return rows[0]["token"] if rows else "?"

    def finish_job(self, job_id: int, done: Sequence[int], failed: Sequence[tuple[int, str]],
                   outputs: Sequence[OutputRecord]) -> bool:
        """Record a job's result in one transaction.

        Returns False (and changes nothing) when the job is no longer current: a node that
        restarted after a crash has handed its instances to a new job.
        """
        now = time.time()
        with self.transaction() as cur:
            row = cur.execute("SELECT study_id, state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["state"] != "running":
                return False
            current = {r[0] for r in cur.execute(
                "SELECT id FROM instances WHERE job_id = ? AND state = 'processing'", (job_id,))}
            if not current or not (set(done) | {i for i, _ in failed}) <= current:
                return False  # nothing written yet: the commit is empty
            study_id = row["study_id"]
            token = self._token(cur, study_id)
            for instance_id in done:
                cur.execute("UPDATE instances SET state = 'done', reason = NULL, updated_at = ?"
                            " WHERE id = ?", (now, instance_id))
            for instance_id, reason in failed:
                cur.execute("UPDATE instances SET state = 'quarantined', reason = ?, updated_at = ?"
                            " WHERE id = ?", (reason, now, instance_id))
                self._event(cur, "quarantined", token, reason, now)
            for out in outputs:
                cur.execute(
                    "INSERT INTO outputs (study_id, job_id, path, sop_class_uid, transfer_syntax,"
                    " created_at) VALUES (?,?,?,?,?,?) ON CONFLICT(path) DO UPDATE SET"
                    " job_id = excluded.job_id, sop_class_uid = excluded.sop_class_uid,"
                    " transfer_syntax = excluded.transfer_syntax, created_at = excluded.created_at,"
                    " removed = 0",
                    (study_id, job_id, out.path, out.sop_class_uid, out.transfer_syntax, now))
                output_id = cur.execute("SELECT id FROM outputs WHERE path = ?",
                                        (out.path,)).fetchone()[0]
                for dest in out.destinations:
                    cur.execute(
                        "INSERT INTO sends (output_id, destination, state, attempts,"
                        " next_attempt_at, updated_at) VALUES (?,?,'pending',0,?,?)"
                        " ON CONFLICT(output_id, destination) DO UPDATE SET state = 'pending',"
                        " attempts = 0, next_attempt_at = excluded.next_attempt_at,"
                        " last_error = NULL, updated_at = excluded.updated_at",
                        (output_id, dest, now, now))
            cur.execute("UPDATE jobs SET state = 'done', finished_at = ? WHERE id = ?", (now, job_id))
            self._mark_forwarded(cur, job_id, now)
            return True

    def fail_job(self, job_id: int, reason: str, max_attempts: int,
                 count_attempt: bool = True) -> list[int]:
        """A job died without recording a result (its worker crashed).

        Its instances go back to received, or to quarantine once they have used up
        max_attempts. Returns the ids quarantined. count_attempt=False: the job was stopped
        for another job's sake and its instances wait again without using an attempt.
        """
        now = time.time()
        quarantined: list[int] = []
        with self.transaction() as cur:
            row = cur.execute("SELECT study_id, state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["state"] != "running":
                return []
            token = self._token(cur, row["study_id"])
            cur.execute("UPDATE jobs SET state = 'failed', finished_at = ?, detail = ? WHERE id = ?",
                        (now, reason, job_id))
            for inst in cur.execute("SELECT id, attempts FROM instances WHERE job_id = ?"
                                    " AND state = 'processing'", (job_id,)).fetchall():
                attempts = inst["attempts"] + int(count_attempt)
                if count_attempt and attempts >= max_attempts:
                    full = f"{reason} ({attempts} attempts)"
                    cur.execute("UPDATE instances SET state = 'quarantined', reason = ?, attempts = ?,"
                                " updated_at = ? WHERE id = ?", (full, attempts, now, inst["id"]))
                    quarantined.append(inst["id"])
                else:
                    cur.execute("UPDATE instances SET state = 'received', attempts = ?,"
                                " updated_at = ? WHERE id = ?", (attempts, now, inst["id"]))
            self._event(cur, "job-failed", token, reason, now)
        return quarantined

    # ------------------------------------------------------------------ forwarding

    def due_sends(self, destination: str, now: float, limit: int = 500,
                  exclude: Collection[int] = ()) -> list[DueSend]:
        """The due sends of the study whose oldest due send is oldest (one association).

        Studies in `exclude` (being delivered by another association) are skipped.
        """
        skip = _not_in("o.study_id", exclude)
        with self._lock:
            first = self.conn.execute(
                "SELECT o.study_id FROM sends s JOIN outputs o ON o.id = s.output_id"
                " WHERE s.destination = ? AND s.state = 'pending' AND s.next_attempt_at <= ?"
                f"{skip} ORDER BY s.next_attempt_at, s.id LIMIT 1",
                (destination, now, *exclude)).fetchone()
            if first is None:
                return []
            rows = self.conn.execute(
                "SELECT s.id AS send_id, s.output_id, o.path, o.sop_class_uid, o.transfer_syntax,"
                " s.attempts, o.study_id FROM sends s JOIN outputs o ON o.id = s.output_id"
                " WHERE s.destination = ? AND s.state = 'pending' AND s.next_attempt_at <= ?"
                " AND o.study_id = ? ORDER BY o.path LIMIT ?",
                (destination, now, first["study_id"], limit)).fetchall()
        return [DueSend(**dict(r)) for r in rows]

    def next_due_time(self, destination: str, exclude: Collection[int] = ()) -> float | None:
        rows = self._rows("SELECT MIN(s.next_attempt_at) AS t FROM sends s JOIN outputs o"
                          " ON o.id = s.output_id WHERE s.destination = ? AND s.state = 'pending'"
                          + _not_in("o.study_id", exclude), (destination, *exclude))
        return rows[0]["t"] if rows else None

    def mark_sent(self, send_ids: Sequence[int]) -> list[int]:
        """Record delivered sends; returns the jobs whose instances became forwarded."""
        if not send_ids:
            return []
        now = time.time()
        with self.transaction() as cur:
            marks = ",".join("?" * len(send_ids))
            cur.execute(f"UPDATE sends SET state = 'sent', updated_at = ?, last_error = NULL"
                        f" WHERE id IN ({marks}) AND state = 'pending'", (now, *send_ids))
            jobs = [r[0] for r in cur.execute(
                f"SELECT DISTINCT o.job_id FROM sends s JOIN outputs o ON o.id = s.output_id"
                f" WHERE s.id IN ({marks})", tuple(send_ids))]
            finished = [job for job in jobs if self._mark_forwarded(cur, job, now)]
            return finished

    def mark_send_failed(self, send_ids: Sequence[int], error: str, next_attempt_at: float,
                         max_attempts: int) -> list[int]:
        """Count a failed attempt for each send; returns the ids now quarantined."""
        now = time.time()
        quarantined: list[int] = []
        destinations: set[str] = set()
        with self.transaction() as cur:
            for send_id in send_ids:
                row = cur.execute("SELECT attempts, destination FROM sends WHERE id = ?"
                                  " AND state = 'pending'", (send_id,)).fetchone()
                if row is None:
                    continue
                destinations.add(row["destination"])
                attempts = row["attempts"] + 1
                if attempts >= max_attempts:
                    reason = f"{error} (gave up after {attempts} attempts)"
                    cur.execute("UPDATE sends SET state = 'quarantined', attempts = ?,"
                                " last_error = ?, updated_at = ? WHERE id = ?",
                                (attempts, reason, now, send_id))
                    quarantined.append(send_id)
                else:
                    cur.execute("UPDATE sends SET attempts = ?, last_error = ?,"
                                " next_attempt_at = ?, updated_at = ? WHERE id = ?",
                                (attempts, error, next_attempt_at, now, send_id))
            subject = ",".join(sorted(destinations)) or None
            if quarantined:
                self._event(cur, "send-quarantined", subject,
                            f"{len(quarantined)} sends quarantined: {error}", now)
            if len(quarantined) < len(send_ids):
                self._event(cur, "send-failed", subject,
                            f"{len(send_ids) - len(quarantined)} sends will be retried: {error}",
                            now)
        return quarantined

    def _mark_forwarded(self, cur: sqlite3.Cursor, job_id: int, now: float) -> bool:
        """Instances of a job become forwarded once every send of its outputs is sent."""
        has_sends = cur.execute(
            "SELECT COUNT(*) FROM sends s JOIN outputs o ON o.id = s.output_id WHERE o.job_id = ?",
            (job_id,)).fetchone()[0]
        if not has_sends:
            return False  # nothing to deliver (no destination): outputs stay in the outbox
        open_sends = cur.execute(
            "SELECT COUNT(*) FROM sends s JOIN outputs o ON o.id = s.output_id"
            " WHERE o.job_id = ? AND s.state != 'sent'", (job_id,)).fetchone()[0]
        if open_sends:
            return False
        cur.execute("UPDATE instances SET state = 'forwarded', updated_at = ? WHERE job_id = ?"
                    " AND state = 'done'", (now, job_id))
        return True

    # ------------------------------------------------------------------ retention

    def removable_originals(self) -> list[StoredFile]:
        return [StoredFile(r["id"], r["path"]) for r in self._rows(
            "SELECT id, path FROM instances WHERE state = 'forwarded' AND path != ''")]

    def mark_original_removed(self, instance_id: int) -> None:
        with self.transaction() as cur:
            cur.execute("UPDATE instances SET path = '' WHERE id = ?", (instance_id,))

    def removable_outputs(self) -> list[StoredFile]:
        return [StoredFile(r["id"], r["path"]) for r in self._rows(
            "SELECT o.id, o.path FROM outputs o WHERE o.removed = 0"
            " AND EXISTS (SELECT 1 FROM sends s WHERE s.output_id = o.id)"
            " AND NOT EXISTS (SELECT 1 FROM sends s WHERE s.output_id = o.id AND s.state != 'sent')")]

    def mark_output_removed(self, output_id: int) -> None:
        with self.transaction() as cur:
            cur.execute("UPDATE outputs SET removed = 1 WHERE id = ?", (output_id,))

    # ------------------------------------------------------------------ recovery and retry

    def instance_paths(self) -> set[str]:
        """Every spool path an instance row names (what the spool must keep)."""
        return {r[0] for r in self._rows("SELECT path FROM instances")}

    def waiting_files(self) -> list[StoredFile]:
        """Instances received and not yet processed, with their spool paths."""
        return [StoredFile(r["id"], r["path"]) for r in self._rows(
            "SELECT id, path FROM instances WHERE state = 'received'")]

    def recover(self) -> dict[str, int]:
        """After a restart: interrupted jobs give their instances back to the scheduler."""
        now = time.time()
        with self.transaction() as cur:
            jobs = cur.execute("UPDATE jobs SET state = 'interrupted', finished_at = ?"
                               " WHERE state = 'running'", (now,)).rowcount
            instances = cur.execute("UPDATE instances SET state = 'received', job_id = NULL,"
                                    " updated_at = ? WHERE state = 'processing'", (now,)).rowcount
        return {"interrupted_jobs": jobs, "requeued_instances": instances}

    def retry(self, ids: Sequence[str] | None) -> dict[str, int]:
        """Put quarantined items back: `I<n>` instances, `S<n>` sends, None for all."""
        now = time.time()
        counts = {"instances": 0, "sends": 0}
        with self.transaction() as cur:
            if ids is None:
                counts["instances"] = cur.execute(
                    "UPDATE instances SET state = 'received', reason = NULL, attempts = 0,"
                    " job_id = NULL, updated_at = ? WHERE state = 'quarantined'"
                    " AND study_id IS NOT NULL AND path != ''", (now,)).rowcount
                counts["sends"] = cur.execute(
                    "UPDATE sends SET state = 'pending', attempts = 0, next_attempt_at = ?,"
                    " updated_at = ? WHERE state = 'quarantined'", (now, now)).rowcount
                return counts
            for item in ids:
                kind, number = parse_item_id(item)
                if kind == "I":
                    row = cur.execute("SELECT state, study_id, path FROM instances WHERE id = ?",
                                      (number,)).fetchone()
                    if row is None or row["state"] != "quarantined":
                        raise JournalError(f"{item}: no quarantined instance with this id")
                    if row["study_id"] is None:
                        raise JournalError(f"{item}: its header cannot be read, so it cannot be "
                                           "processed; fix the sender and send it again")
                    if not row["path"]:
                        raise JournalError(f"{item}: its spooled file was removed")
                    cur.execute("UPDATE instances SET state = 'received', reason = NULL,"
                                " attempts = 0, job_id = NULL, updated_at = ? WHERE id = ?",
                                (now, number))
                    counts["instances"] += 1
                else:
                    changed = cur.execute(
                        "UPDATE sends SET state = 'pending', attempts = 0, next_attempt_at = ?,"
                        " updated_at = ? WHERE id = ? AND state = 'quarantined'",
                        (now, now, number)).rowcount
                    if not changed:
                        raise JournalError(f"{item}: no quarantined send with this id")
                    counts["sends"] += 1
        return counts

    # ------------------------------------------------------------------ quarantine

    def quarantined(self, limit: int | None = None, newest_first: bool = False
                    ) -> list[QuarantinedItem]:
        """Quarantined instances, then sends, PHI-free (ids, pseudonyms, reasons).

        limit/newest_first: at most `limit` of each kind, most recently quarantined first.
        """
        order = "updated_at DESC" if newest_first else "id"
        cap = f" LIMIT {int(limit)}" if limit is not None else ""
        items = [
            QuarantinedItem(f"I{r['id']}", r["token"] or "-", r["updated_at"], r["reason"] or "")
            for r in self._rows("SELECT i.id, i.reason, i.updated_at, s.token FROM instances i"
                                " LEFT JOIN studies s ON s.id = i.study_id"
                                f" WHERE i.state = 'quarantined' ORDER BY i.{order}{cap}")]
        items += [
            QuarantinedItem(f"S{r['id']}", r["token"], r["updated_at"], r["last_error"] or "",
                            r["destination"])
            for r in self._rows("SELECT s.id, s.destination, s.last_error, s.updated_at,"
                                " st.token FROM sends s JOIN outputs o ON o.id = s.output_id"
                                " JOIN studies st ON st.id = o.study_id"
                                f" WHERE s.state = 'quarantined' ORDER BY s.{order}{cap}")]
        return items

    def quarantine_sizes(self) -> tuple[int, int]:
        """(instances, sends) in quarantine."""
        row = self._rows("SELECT (SELECT COUNT(*) FROM instances WHERE state = 'quarantined'),"
                         " (SELECT COUNT(*) FROM sends WHERE state = 'quarantined')")[0]
        return row[0], row[1]

    # ------------------------------------------------------------------ reporting

    def counts(self) -> JournalCounts:
        """Queue depths and totals for `status` and /metrics (a few indexed COUNTs)."""
        q = self._rows
        instances = dict.fromkeys(INSTANCE_STATES, 0)
        for row in q("SELECT state, COUNT(*) AS n FROM instances GROUP BY state"):
            instances[row["state"]] = row["n"]
        waiting = q("SELECT COUNT(DISTINCT study_id) AS n FROM instances"
                    " WHERE state = 'received'")[0]["n"]
        oldest = q("SELECT MIN(received_at) AS t FROM instances WHERE state IN"
                   " ('received', 'processing')")[0]["t"]
        per_dest: dict[str, dict[str, Any]] = {}
        for row in q("SELECT destination, state, COUNT(*) AS n FROM sends"
                     " GROUP BY destination, state"):
            per_dest.setdefault(row["destination"], {})[row["state"]] = row["n"]
        for row in q("SELECT s.destination, MIN(o.created_at) AS t FROM sends s JOIN outputs o"
                     " ON o.id = s.output_id WHERE s.state = 'pending' GROUP BY s.destination"):
            per_dest.setdefault(row["destination"], {})["oldest_pending_output_at"] = row["t"]
        held = q("SELECT COUNT(*) AS n, MIN(created_at) AS t FROM outputs o WHERE removed = 0"
                 " AND NOT EXISTS (SELECT 1 FROM sends s WHERE s.output_id = o.id)")[0]
        jobs = {row["state"]: row["n"] for row in
                q("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")}
        done = q("SELECT COUNT(*) AS n, COALESCE(SUM(finished_at - started_at), 0) AS s"
                 " FROM jobs WHERE state = 'done' AND finished_at IS NOT NULL")[0]
        return JournalCounts(
            instances=instances, studies_waiting=waiting, oldest_waiting_at=oldest,
            sends={d: DestinationCounts(**v) for d, v in per_dest.items()},
            held_outputs=held["n"], oldest_held_at=held["t"], jobs=jobs,
            jobs_done=done["n"], jobs_done_seconds=float(done["s"]))

    def recent_events(self, limit: int) -> list[Event]:
        return [Event(r["at"], r["kind"], r["subject"], r["message"]) for r in self._rows(
            "SELECT at, kind, subject, message FROM events ORDER BY id DESC LIMIT ?", (limit,))]

    def running_jobs(self) -> int:
        return self._rows("SELECT COUNT(*) FROM jobs WHERE state = 'running'")[0][0]

    # ------------------------------------------------------------------ lookup (operators)

    def studies(self) -> list[StudyRecord]:
        """Every study with its original UID: for `dicom-deid lookup` only (PHI)."""
        return [StudyRecord(r["id"], r["study_uid"], r["token"], r["first_received_at"])
                for r in self._rows("SELECT id, study_uid, token, first_received_at FROM studies")]

    def instance_uids(self) -> list[tuple[int, str]]:
        """(study id, original SOP Instance UID) of every instance: for lookup only (PHI)."""
        return [(r[0], r[1]) for r in self._rows(
            "SELECT study_id, sop_instance_uid FROM instances WHERE sop_instance_uid IS NOT NULL")]

    def quarantined_item(self, item: str) -> dict[str, Any]:
        """One quarantined item in detail, PHI-free: no patient or study UIDs."""
        kind, number = parse_item_id(item)
        if kind == "I":
            row = self._rows(
                "SELECT i.*, s.token FROM instances i LEFT JOIN studies s ON s.id = i.study_id"
                " WHERE i.id = ? AND i.state = 'quarantined'", (number,))
            if not row:
                raise JournalError(f"{item}: no quarantined instance with this id")
            r = row[0]
            return {"id": f"I{number}", "kind": "instance", "study": r["token"] or "-",
                    "reason": r["reason"] or "", "calling_aet": r["calling_aet"],
                    "called_aet": r["called_aet"], "sop_class": r["sop_class_uid"],
                    "transfer_syntax": r["transfer_syntax"], "modality": r["modality"],
                    "size": r["size"], "attempts": r["attempts"], "file": r["path"],
                    "received_at": r["received_at"], "since": r["updated_at"]}
        row = self._rows(
            "SELECT s.*, o.path, o.sop_class_uid, o.transfer_syntax, st.token FROM sends s"
            " JOIN outputs o ON o.id = s.output_id JOIN studies st ON st.id = o.study_id"
            " WHERE s.id = ? AND s.state = 'quarantined'", (number,))
        if not row:
            raise JournalError(f"{item}: no quarantined send with this id")
        r = row[0]
        return {"id": f"S{number}", "kind": "send", "study": r["token"],
                "destination": r["destination"], "reason": r["last_error"] or "",
                "sop_class": r["sop_class_uid"], "transfer_syntax": r["transfer_syntax"],
                "attempts": r["attempts"], "file": r["path"], "since": r["updated_at"]}

    def discard(self, item: str) -> dict[str, Any]:
        """Give up on one quarantined item: its journal row goes, and (for an instance)
        the caller deletes its spooled file. Returns what was discarded."""
        detail = self.quarantined_item(item)
        kind, number = parse_item_id(item)
        now = time.time()
        with self.transaction() as cur:
            if kind == "I":
                cur.execute("DELETE FROM instances WHERE id = ? AND state = 'quarantined'",
                            (number,))
            else:
                cur.execute("DELETE FROM sends WHERE id = ? AND state = 'quarantined'", (number,))
            self._event(cur, "discarded", detail["id"],
                        f"discarded by the operator: {detail['reason']}", now)
        return detail

    # ------------------------------------------------------------------ helpers

    def event(self, kind: str, subject: str | None, message: str) -> None:
        with self.transaction() as cur:
            self._event(cur, kind, subject, message, time.time())

    @staticmethod
    def _event(cur: sqlite3.Cursor, kind: str, subject: str | None, message: str,
               now: float) -> None:
        cur.execute("INSERT INTO events (at, kind, subject, message) VALUES (?,?,?,?)",
                    (now, kind, subject, message))
        # Keep the table bounded: status shows only recent failures.
        cur.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) - 1000 FROM events)")

    @staticmethod
    def _token(cur: sqlite3.Cursor, study_id: int) -> str:
        row = cur.execute("SELECT token FROM studies WHERE id = ?", (study_id,)).fetchone()
        return row[0] if row else "?"


def _not_in(column: str, values: Collection[int]) -> str:
    """An SQL condition excluding values (bound as parameters), or nothing."""
    return f" AND {column} NOT IN ({','.join('?' * len(values))})" if values else ""


def parse_item_id(item: str) -> tuple[str, int]:
    """`I12` (instance) or `S7` (send) -> ("I", 12)."""
    text = item.strip().upper()
    if len(text) < 2 or text[0] not in "IS" or not text[1:].isdigit():
        raise JournalError(f"{item!r}: an id is I<number> (instance) or S<number> (send), "
                           "as `dicom-deid status` lists them")
    return text[0], int(text[1:])
