"""`dicom-deid key init|show|export`: the site key shared by the CLI and the node.

Every pseudonym, UID and date offset is derived from this key: the same key gives the same
de-identified study, another key unrelated ones. Without --key-file or --config the key is
$DICOM_DEID_KEY, else <state folder>/site.key, which is also the node's default.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path

EXPORT_WARNING = (
    "WARNING: {where} holds the site secret. With it anyone can recompute the pseudonyms and "
    "UIDs of a patient whose identifiers they know. Keep it offline (encrypted medium, safe), "
    "never beside the de-identified data; restore it with: install -m 600 BACKUP KEYFILE"
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "key", help="create, locate or back up the site key",
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="key_command", metavar="init|show|export")
    commands.required = True

    def common(p: argparse.ArgumentParser) -> None:
        where = p.add_mutually_exclusive_group()
        where.add_argument("--key-file", type=Path, metavar="PATH",
                           help="the key file (default: $DICOM_DEID_KEY, else "
                                "<state folder>/site.key)")
        where.add_argument("--config", metavar="FILE",
                           help="use the key_file of this node configuration")

    init = commands.add_parser("init", help="create a new site key (never overwrites one)")
    common(init)
    init.set_defaults(func=run_init)
    show = commands.add_parser("show", help="print where the key is and its fingerprint "
                                            "(never the secret)")
    common(show)
    show.set_defaults(func=run_show)
    export = commands.add_parser("export", help="copy the key to a backup file (mode 0600)")
    export.add_argument("destination", metavar="FILE",
                        help="backup file to create ('-': standard output, to pipe into gpg)")
    common(export)
    export.set_defaults(func=run_export)


def key_path(args: argparse.Namespace) -> Path:
    """The key file the arguments name; raises ConfigError for a bad --config."""
    from dicom_deid.header.keys import default_key_path

    if getattr(args, "key_file", None):
        return Path(args.key_file)
    if getattr(args, "config", None):
        from dicom_deid.config import load_config

        return load_config(args.config).key_file
    return default_key_path()


def _resolve(args: argparse.Namespace, command: str) -> Path | None:
    from dicom_deid.config import ConfigError

    try:
        return key_path(args)
    except ConfigError as exc:
        print(f"dicom-deid key {command}: {exc}", file=sys.stderr)
        return None


def run_init(args: argparse.Namespace) -> int:
    from dicom_deid.header.keys import KeyFileError, create_key, load_key

    path = _resolve(args, "init")
    if path is None:
        return 2
    try:
        create_key(path)
        key = load_key(path)
    except KeyFileError as exc:
        print(f"dicom-deid key init: {exc}", file=sys.stderr)
        return 1
    print(f"created the site key {path} (mode 0600), fingerprint {key.fingerprint()}")
    print(f"back it up now: dicom-deid key export --key-file {path} BACKUPFILE")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from dicom_deid.header.keys import KEY_ENV, KeyFileError, default_key_path, load_key

    path = _resolve(args, "show")
    if path is None:
        return 2
    try:
        key = load_key(path, create=False)
    except KeyFileError as exc:
        print(f"dicom-deid key show: {exc}", file=sys.stderr)
        return 1
    mode = stat.S_IMODE(path.stat().st_mode)
    default = default_key_path()
    print(f"key file:    {path.resolve()}")
    print(f"fingerprint: {key.fingerprint()}")
    print(f"mode:        {mode:04o}")
    if path.resolve() == default.resolve():
        source = f"${KEY_ENV}" if os.environ.get(KEY_ENV) else "the per-user state folder"
        print(f"used by:     the CLI by default (from {source})")
    else:
        print(f"used by:     commands given --key-file {path}; the CLI's default is {default}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from dicom_deid.header.keys import KeyFileError, load_key

    path = _resolve(args, "export")
    if path is None:
        return 2
    try:
        key = load_key(path, create=False)
    except KeyFileError as exc:
        print(f"dicom-deid key export: {exc}", file=sys.stderr)
        return 1
    text = key.secret.decode("latin-1") + "\n"
    if args.destination == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        print(EXPORT_WARNING.format(where="the output"), file=sys.stderr)
        return 0
    target = Path(args.destination)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"dicom-deid key export: {target} already exists; choose a new file",
              file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"dicom-deid key export: cannot create {target}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    with os.fdopen(fd, "w", encoding="latin-1") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    print(f"exported the site key (fingerprint {key.fingerprint()}) to {target} (mode 0600)")
    print(EXPORT_WARNING.format(where=str(target)), file=sys.stderr)
    return 0
