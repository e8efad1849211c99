"""`dicom-deid worker`: run study jobs of a node whose processing.backend is celery."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "worker", help="run Celery workers for a node with processing.backend: celery",
        description="Take study jobs from the node's Redis broker (processing.celery) and "
                    "de-identify them on this host. state_dir in FILE must be where this "
                    "host mounts the node's shared state folder; key_file the node's site "
                    "key. README, 'Scale out', gives the storage's requirements.")
    parser.add_argument("--config", metavar="FILE", required=True,
                        help="node configuration (YAML), as this host sees the shared paths")
    parser.add_argument("--queues", default="cpu,gpu", metavar="LIST",
                        help="capabilities taken, comma-separated (default: cpu,gpu; a "
                             "CPU-only host: cpu)")
    parser.add_argument("--concurrency", type=int, default=None, metavar="N",
                        help="worker processes, one job each (default: processing.workers)")
    parser.add_argument("--name", default=None, metavar="NAME",
                        help="Celery node name (default: celery@<hostname>)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dicom_deid.config import ConfigError, load_config
    from dicom_deid.node.service import check_profiles

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"dicom-deid worker: {exc}", file=sys.stderr)
        return 2
    problems = check_profiles(config)
    if config.processing.backend != "celery":
        problems.append("processing.backend: must be celery for a worker, got "
                        f"{config.processing.backend!r}")
    from dicom_deid.node.celery_app import CAPABILITIES, check_shared_state, run_worker

    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    rule_queues = {r.queue for r in (*config.rules, config.default_rule) if r and r.queue}
    unknown = [q for q in queues if q not in set(CAPABILITIES) | rule_queues]
    if not queues or unknown:
        problems.append(f"--queues: {', '.join(unknown) or 'empty'}: not a capability "
                        f"({', '.join(sorted(set(CAPABILITIES) | rule_queues))})")
    if args.concurrency is not None and not 1 <= args.concurrency <= 256:
        problems.append(f"--concurrency: must be 1..256, got {args.concurrency}")
    problems += check_shared_state(config)
    from dicom_deid.errors import DeidError
    from dicom_deid.onnx_device import ModelSettings

    try:
        # A GPU worker host whose onnxruntime has no CUDA must say so now, not at its first job.
        ModelSettings(config.processing.device, config.processing.face_engine,
                      config.processing.keypoint_engine).check()
    except DeidError as exc:
        problems.append(f"processing.device: {exc}")
    if problems:
        print(f"dicom-deid worker: {config.source}:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 2

    from dicom_deid.node.logs import setup_logging

    level = "DEBUG" if getattr(args, "verbose", False) else config.log.level
    setup_logging(level, config.log.file, max_bytes=config.log.max_bytes,
                  backups=config.log.backups)
    return run_worker(config, queues, args.concurrency or config.processing.workers,
                      name=args.name, loglevel=level)
