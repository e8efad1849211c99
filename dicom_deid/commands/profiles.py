"""`dicom-deid profiles list | show NAME [--option NAME]...`: the shipped profiles and the
effective rules of one (the Annex E table with the options and the profile's overrides)."""

from __future__ import annotations

import argparse
import sys

from dicom_deid.header.options import OPTIONS

_ACTIONS = {
    "D": "dummy", "Z": "empty", "X": "remove", "K": "keep", "C": "clean", "U": "new keyed UID",
    "X/Z": "remove, or empty if the IOD requires it",
    "X/D": "remove, or dummy if the IOD requires it",
    "Z/D": "empty, or dummy if the IOD requires a value",
    "X/Z/D": "remove / empty / dummy by the IOD's type (3 / 2 / 1)",
    "X/Z/U*": "remove / empty / keep with new UIDs by the IOD's type (3 / 2 / 1)",
    "PSEUDO_ID": "keyed pseudonym (or the lookup table)",
    "PSEUDO_NAME": "keyed pseudonym (or the lookup table)",
    "REPLACE": "replace with",
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("profiles", help="list the profiles, or show one's effective rules")
    commands = parser.add_subparsers(dest="profiles_command", metavar="list|show")
    commands.required = True
    commands.add_parser("list", help="list the shipped profiles").set_defaults(func=run_list)
    show = commands.add_parser("show", help="print a profile's effective rules")
    show.add_argument("name", metavar="NAME|PATH", help="shipped profile name or YAML path")
    show.add_argument("--option", action="append", default=[], choices=OPTIONS, metavar="NAME",
                      help="add an option (repeatable): " + ", ".join(OPTIONS))
    show.set_defaults(func=run_show)


def run_list(args: argparse.Namespace) -> int:
    from dicom_deid.header import load_profile, shipped_profiles

    for name in shipped_profiles():
        profile = load_profile(name)
        options = ", ".join(profile.options) or "no options"
        print(f"{name:12s} {options}; faces {profile.pixels.faces}")
        if profile.description:
            print(f"{'':12s} {profile.description}")
    return 0


def _describe(rule, vr: str | None, date_mode: str) -> str:
    """The rule in words; C says what cleaning means for the attribute's VR."""
    text = _ACTIONS.get(rule.action, rule.action)
    if rule.action == "REPLACE":
        return f"{text} {rule.value!r}"
    if rule.action == "C":
        if vr in ("DA", "DT"):
            text = "shift by the patient's offset" if date_mode == "shift" else "dummy"
        elif vr == "TM":
            text = "keep (the shift is whole days)" if date_mode == "shift" else "dummy"
        elif vr == "AE":
            text = "keyed pseudonym"
        elif vr == "SQ":
            text = "clean: codes kept, text cleaned"
        elif vr in ("LO", "LT", "SH", "ST", "UT", "UC"):
            text = "clean: vocabulary words only"
        elif vr in ("OB", "OW", "UN", None):
            text = "remove (cannot be cleaned)"
    if rule.action in ("D", "Z", "X", "K", "C", "U"):
        return f"{rule.action} {text}"
    return text


def run_show(args: argparse.Namespace) -> int:
    from dicom_deid.header import ProfileError, load_profile

    try:
        profile = load_profile(args.name, tuple(args.option))
    except (ProfileError, ValueError) as exc:
        print(f"dicom-deid profiles: {exc}", file=sys.stderr)
        return 2
    table = profile.table
    low, high = profile.date_shift_days
    print(f"profile:      {profile.name}" + (f" ({profile.path})" if profile.path else ""))
    if profile.description:
        print(f"description:  {profile.description}")
    print(f"options:      {', '.join(profile.options) or 'none'}")
    print(f"faces:        {profile.pixels.faces}")
    print(f"dates:        {profile.date_mode}"
          + (f" (per-patient offset in [{low}, {high}] days)" if profile.date_mode == "shift" else ""))
    print(f"pseudonyms:   {'keyed' if profile.pseudonyms else 'off'}"
          + (f", lookup table of {len(profile.lookup)} patients" if profile.lookup else ""))
    print(f"private:      {'keep the safe list (' + str(len(profile.safe_private)) + ' entries)' if profile.retain_safe_private else 'remove all'}")
    print(f"table:        {table.source} sha256 {table.sha256} ({len(table.rows)} rows)")
    print("unlisted:     kept; UIDs remapped (class, syntax and DICOM-root UIDs kept)"
          + ("; dates shifted" if profile.date_mode == "shift" else ""))
    print()
    print(f"{'tag':22s} {'attribute':52s} {'rule':44s} source")
    from pydicom.datadict import DicomDictionary

    rows = []
    for row in table.rows:
        tag = row.exact_tag
        rule = profile.group_rules[row.tag] if tag is None else profile.rules[tag]
        rows.append((row.tag, row.display_tag, row.name, row.vr, rule))
    listed = {r.exact_tag for r in table.rows}
    for tag, rule in sorted(profile.rules.items()):
        if tag not in listed:
            vr = DicomDictionary.get(tag, (None,))[0]
            rows.append((f"{tag:08x}", f"({tag >> 16:04X},{tag & 0xFFFF:04X})", rule.name, vr, rule))
    for _key, display, name, vr, rule in sorted(rows, key=lambda r: r[0]):
        described = _describe(rule, vr, profile.date_mode)
        print(f"{display:22s} {name[:52]:52s} {described[:44]:44s} {rule.source}")
    return 0
