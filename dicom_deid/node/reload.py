"""Configuration reload (SIGHUP, or `dicom-deid reload`): what changes without a restart.

The file is read and validated again, profiles included. An invalid file changes nothing:
the node runs on with the configuration it has and logs the problems (key paths and
values of the configuration, never PHI). A valid one is applied where the running node can
take it: destinations and the forward policy (the forwarders are restarted, each
destination's queue stays in the journal), rules and the default rule, the calling/called
AE allowlists, the processing timing and limits, retention. Settings bound to what
started with the process (sockets, folders, the key, the worker pool, logging, the HTTP
endpoint) keep their running values; the log names each one that needs a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicom_deid.config import NodeConfig

# Listener settings that take effect for the next association without a restart.
_LIVE_LISTEN = ("allowed_calling_aets", "allowed_called_aets")
# Top-level sections applied as a whole.
_LIVE_SECTIONS = ("destinations", "forward", "rules", "default_rule", "retention")
# Sections (or keys) fixed for the life of the process.
_FIXED = ("state_dir", "key_file", "audit_log", "journal_file", "log", "http")


@dataclass(frozen=True)
class ReloadPlan:
    config: NodeConfig  # what the node runs on from now: the new file, fixed settings kept
    applied: list[str]  # settings that changed and take effect now
    need_restart: list[str]  # settings that changed in the file but keep their running value


def plan_reload(old: NodeConfig, new: NodeConfig) -> ReloadPlan:
    applied: list[str] = []
    need_restart: list[str] = []
    for name in _LIVE_SECTIONS:
        if getattr(old, name) != getattr(new, name):
            applied.append(name)

    listen_kept = {}
    for name in type(old.listen).model_fields:
        changed = getattr(old.listen, name) != getattr(new.listen, name)
        if name in _LIVE_LISTEN:
            applied += [f"listen.{name}"] if changed else []
        else:
            listen_kept[name] = getattr(old.listen, name)
            need_restart += [f"listen.{name}"] if changed else []

    # The pool's size and the engine under it.
    processing_kept = {"workers": old.processing.workers, "backend": old.processing.backend,
                       "celery": old.processing.celery}
    for name in type(old.processing).model_fields:
        if getattr(old.processing, name) != getattr(new.processing, name):
            (need_restart if name in processing_kept else applied).append(f"processing.{name}")

    fixed = {}
    for name in _FIXED:
        fixed[name] = getattr(old, name)
        if getattr(old, name) != getattr(new, name):
            need_restart.append(name)

    merged = new.model_copy(update={
        "listen": new.listen.model_copy(update=listen_kept),
        "processing": new.processing.model_copy(update=processing_kept), **fixed})
    return ReloadPlan(merged, applied, need_restart)
