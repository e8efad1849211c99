"""`dicom-deid route test FILE... --config node.yaml`: which rule, profile, options, face method
and destinations the node would apply to each file, without running anything.

The calling and called AE titles are not in a file: give them with --calling/--called (default:
the first AE of listen.allowed_calling_aets, and the node's own AE title). Only the rule's
facts are printed (modality, SOP class); the study description is used but never shown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "route", help="show which routing rule the node would apply to files",
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="route_command", metavar="test")
    commands.required = True
    test = commands.add_parser("test", help="print the rule each file would get")
    test.add_argument("inputs", nargs="+", type=Path, metavar="FILE",
                      help="DICOM files or folders")
    test.add_argument("--config", metavar="FILE",
                      help="the node's configuration (default: the embedded default)")
    test.add_argument("--calling", metavar="AE", default=None,
                      help="calling AE title of the sender (default: the first allowed one)")
    test.add_argument("--called", metavar="AE", default=None,
                      help="called AE title (default: listen.ae_title)")
    test.set_defaults(func=run_test)


def run_test(args: argparse.Namespace) -> int:
    import warnings

    from pydicom import dcmread
    from pydicom.uid import UID

    from dicom_deid.commands.inputs import find_inputs, print_skipped
    from dicom_deid.config import ConfigError, load_config
    from dicom_deid.node.routing import InstanceFacts, choose_rule

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"dicom-deid route test: {exc}", file=sys.stderr)
        return 2
    calling = args.calling or (config.listen.allowed_calling_aets or ("ANY-SCU",))[0]
    called = args.called or config.listen.ae_title
    found = find_inputs(args.inputs)
    print_skipped(found)
    failed = 0
    for path, why in found.missing:
        print(f"FAILED {path}: {why}", file=sys.stderr)
        failed += 1
    print(f"routing as calling AE {calling!r} -> called AE {called!r} ({config.source})")
    for path in found.paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001 (any parser failure: not readable)
            print(f"FAILED {path}: not a readable DICOM file ({type(exc).__name__})",
                  file=sys.stderr)
            failed += 1
            continue
        sop_class = str(ds.get("SOPClassUID", "") or "")
        modality = str(ds.get("Modality", "") or "")
        facts = InstanceFacts(calling, called, modality, sop_class,
                              str(ds.get("StudyDescription", "") or ""))
        rule = choose_rule(config, facts)
        what = f"{path}: modality {modality or '-'}, {UID(sop_class).name if sop_class else '?'}"
        if rule is None:
            print(f"{what} -> no rule matches and there is no default rule: quarantined")
            continue
        where = ", ".join(rule.destinations) or "none (kept in the outbox)"
        options = ", ".join(rule.options) or "none"
        print(f"{what} -> rule {rule.name!r}: profile {rule.profile}, options {options}, "
              f"faces {rule.faces or 'the profile default'}, destinations {where}")
    return 1 if failed else 0
