"""`dicom-deid` entry point.

Each subcommand lives in dicom_deid/commands/<name>.py and exposes
`register(subparsers) -> None`, which adds its parser and sets `func(args) -> int`.
Command modules import heavy libraries (MediaPipe, PyAV, dlib) inside their
functions so that `dicom-deid --help` and light commands start quickly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from dicom_deid import __version__

COMMANDS = (
    "deidentify",
    "profiles",
    "key",
    "route",
    "lookup",
    "transcode",
    "faces",
    "text",
    "evaluate",
    "serve",
    "status",
    "retry",
    "quarantine",
    "reload",
    "worker",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicom-deid",
        description="De-identify DICOM studies: header profiles, faces in video, keypoint SR.",
    )
    parser.add_argument("--version", action="version", version=f"dicom-deid {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (never PHI)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"dicom_deid.commands.{name}")
        module.register(sub)
    return parser


# Loggers of libraries that report routine work at INFO (model loading, codec plugins,
# highdicom's copy notes); pydicom and pynetdicom may quote header values below WARNING.
_LIBRARY_LOGGERS = ("absl", "mediapipe", "tensorflow", "highdicom", "pydicom", "pynetdicom",
                    "PIL", "matplotlib", "numexpr", "h5py", "onnxruntime")


def _quiet_native_logs(verbose: bool) -> None:
    # MediaPipe and TensorFlow Lite write INFO/WARNING lines from C++ straight to stderr,
    # burying our own messages; only their errors are of use to an operator. These must be
    # set before the libraries load, and they reach the node's worker processes too. The absl
    # logging of MediaPipe 0.10 ignores them: stderr_filter.py drops those lines.
    level = "0" if verbose else "2"
    for name in ("GLOG_minloglevel", "TF_CPP_MIN_LOG_LEVEL"):
        os.environ.setdefault(name, level)


class RepeatLimiter(logging.Filter):
    """Per-frame messages (a leak covered in frame n) would fill a terminal on a long video:
    the first LIMIT records of each message template pass, the rest are counted, and
    report() sums them up at the end. Keyed by the template, so it runs before redaction."""

    LIMIT = 3

    def __init__(self) -> None:
        super().__init__()
        from collections import Counter

        self.seen: Counter[tuple[str, str]] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        self.seen[key] += 1
        return self.seen[key] <= self.LIMIT

    def report(self) -> None:
        for (name, template), count in list(self.seen.items()):
            if count > self.LIMIT:
                # The template alone: the values (which could be anything) are not repeated.
                logging.getLogger(name).warning(
                    "%d more message(s) like %r not shown (-v shows every one)",
                    count - self.LIMIT, template)


_limiter = RepeatLimiter()


def setup_cli_logging(verbose: bool) -> None:
    """Our messages at INFO (DEBUG with -v), libraries at WARNING, every record PHI-masked."""
    # The node's filter (node/logs.py), the same last line of defence for every command.
    from dicom_deid.node.logs import _RedactingFilter as RedactingFilter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if not verbose:
        _limiter.seen.clear()
        handler.addFilter(_limiter)
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    for name in ("pydicom", "pynetdicom"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if not verbose:
        logging.getLogger("absl").setLevel(logging.ERROR)


def _silence_stdout() -> None:
    # The reader of our output (head, less) has gone: point stdout at /dev/null so that the
    # interpreter's final flush does not raise a second BrokenPipeError.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    # Only a real run (not a test calling main()) may take over file descriptor 2.
    from_entry_point = argv is None
    argv = sys.argv[1:] if argv is None else argv
    verbose = "-v" in argv or "--verbose" in argv
    _quiet_native_logs(verbose)
    if from_entry_point and not verbose:
        from dicom_deid import stderr_filter

        stderr_filter.install()
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_cli_logging(args.verbose)
    command = f"dicom-deid {args.command}"
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        if not args.verbose:
            _limiter.report()
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as a program killed by the closed pipe would report
    except OSError as exc:
        # A file system problem the command did not expect (disk full, permissions): the
        # path and the reason, which is what an operator can act on.
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"{command}:{where}: {exc.strerror or exc}", file=sys.stderr)
        if args.verbose:
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
