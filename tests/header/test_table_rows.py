"""Every row of PS3.15 Table E.1-1: a value injected, its action checked, with every option."""

from __future__ import annotations

import io
from datetime import datetime

import pytest
from pydicom import dcmread

from dicom_deid.header import load_profile
from dicom_deid.header.engine import deidentify
from dicom_deid.header.keys import SiteKey
from dicom_deid.header.options import HEADER_OPTIONS
from dicom_deid.header.table import load_table
from tests.header.phi import NESTED_PERSON, every_row_instance, nested_instance, write

KEY = SiteKey(b"table-row-test-key-0123456789abcdef")

# The documented resolution of a compound action where the IOD is unknown (phi.py uses an
# SOP Class no table knows): keep the attribute present, dummy where a value may be needed.
UNKNOWN_IOD = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}

SINGLE_OPTIONS = sorted(HEADER_OPTIONS)
ALL_COMPATIBLE = tuple(o for o in SINGLE_OPTIONS if o != "retain-longitudinal-full-dates")


def expected_action(row, options: tuple[str, ...]) -> str:
    chosen = [row.options[o] for o in options if o in row.options]
    action = ("C" if "C" in chosen else "K") if chosen else row.basic
    return UNKNOWN_IOD.get(action, action)


def _empty(elem) -> bool:
    value = elem.value
    return value is None or value == "" or value == b"" or (hasattr(value, "__len__") and len(value) == 0)


def _roundtrip(ds):
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    return dcmread(io.BytesIO(data)), data


def _kept_tokens(injected, options) -> set[str]:
    """The injected strings of the rows the options keep (K): these may stay."""
    kept = set()
    for row in load_table().rows:
        if row.exact_tag in injected.values and expected_action(row, options) == "K":
            value = injected.values[row.exact_tag]
            text = value.decode() if isinstance(value, bytes) else str(value)
            kept.add(text.split("^")[0])
    return kept


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    ds, injected = every_row_instance()
    path = write(ds, tmp_path_factory.mktemp("rows") / "every.dcm")
    return dcmread(path), injected


def _check_row(row, action, original, out, profile, offsets: set[int]) -> str | None:
    """None if the output element is what the action says, else what is wrong."""
    tag = row.exact_tag
    present = tag in out
    elem = out[tag] if present else None
    if tag == 0x00100020:   # Patient ID: keyed pseudonym
        return None if elem.value == KEY.token("patient-id", "PHI-MRN-0001", 16) else "not pseudonymised"
    if tag == 0x00100010:
        return None if str(elem.value).startswith("ANONYMOUS^") else "not pseudonymised"
    if action == "X" or (action == "C" and row.vr in ("OB", "UN")):
        # C on a binary value removes it: bytes cannot be cleaned
        return "still present" if present else None
    if not present:
        return f"missing (expected {action})"
    if action == "Z":
        return None if _empty(elem) else "not empty"
    if row.vr == "SQ":
        items = elem.value
        if action == "K" or action == "U" or action in ("D", "C"):
            if len(items) != 1:
                return f"sequence has {len(items)} items"
            nested = items[0].get(NESTED_PERSON)
            if nested is None or "PHI" in str(nested.value):
                return "nested Person Name not dummied"
        return None
    if action == "K":
        return None if elem.value == original else "changed although kept"
    if action == "U":
        return None if elem.value == KEY.uid(original) else "UID not remapped by the key"
    if action == "D":
        if _empty(elem):
            return "empty, expected a dummy"
        if row.vr == "UI":
            return None if elem.value == KEY.uid(original) else "dummy UID is not the keyed one"
        return "dummy equals the original" if elem.value == original else None
    if action == "C":
        value = elem.value
        if row.vr == "DA":
            delta = (datetime.strptime(value, "%Y%m%d") - datetime.strptime(original, "%Y%m%d")).days
            offsets.add(delta)
            return None
        if row.vr == "DT":
            delta = (datetime.strptime(value[:8], "%Y%m%d") - datetime.strptime(original[:8], "%Y%m%d")).days
            offsets.add(delta)
            return None if value[8:] == original[8:] else "time part of DT changed"
        if row.vr == "TM":
            expect_kept = profile.date_mode in ("shift", "keep")
            return None if (value == original) == expect_kept else "TM wrong for the date mode"
        if row.vr == "AE":
            return None if value.startswith("AE") and value != original else "AE not pseudonymised"
        if row.vr in ("LO", "SH", "LT", "ST", "UT", "UC", "CS"):
            return None if "PHI" not in str(value) else "identifying text kept"
        return None
    return f"unexpected action {action}"


@pytest.mark.parametrize(
    "options",
    [()] + [(o,) for o in SINGLE_OPTIONS] + [ALL_COMPATIBLE],
    ids=lambda o: "+".join(o) or "basic",
)
def test_every_row_every_option(source, options):
    original, injected = source
    profile = load_profile("basic", options)
    result = deidentify(original, profile, KEY)
    out, data = _roundtrip(result.dataset)
    problems = []
    offsets: set[int] = set()
    checked = 0
    for row in load_table().rows:
        tag = row.exact_tag
        if tag is None or tag not in injected.values:
            continue
        action = expected_action(row, profile.options)
        problem = _check_row(row, action, injected.values[tag], out, profile, offsets)
        checked += 1
        if problem:
            problems.append(f"{row.display_tag} {row.name} [{row.basic}->{action}]: {problem}")
    assert checked >= 600, checked
    assert not problems, "\n".join(problems)
    # every date of the instance moved by the same whole number of days, inside the range
    if profile.date_mode == "shift":
        low, high = profile.date_shift_days
        assert len(offsets) == 1 and low <= offsets.pop() <= high
    # nothing that only the table's actions should have kept survives in the bytes
    kept = _kept_tokens(injected, profile.options)
    leaked = [t for t in injected.tokens if t.encode() in data and t not in kept]
    assert not leaked, leaked
    # the wildcard rows: curves, overlays, private attributes are gone
    for tag in (0x50003000, 0x50000005, 0x60003000, 0x60004000, 0x60000010, 0x00091001, 0x00090010):
        assert tag not in out, hex(tag)


def test_full_dates_keep_every_date(source):
    original, injected = source
    profile = load_profile("basic", ("retain-longitudinal-full-dates",))
    out, _ = _roundtrip(deidentify(original, profile, KEY).dataset)
    for row in load_table().rows:
        if row.options.get("retain-longitudinal-full-dates") == "K" and row.exact_tag in injected.values:
            if row.exact_tag in (0x00100010, 0x00100020) or row.vr == "SQ":
                continue
            assert out[row.exact_tag].value == injected.values[row.exact_tag], row.name
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"


@pytest.mark.parametrize("options", [(), ALL_COMPATIBLE], ids=["basic", "all-options"])
def test_nested_at_depth_three_and_four(options, tmp_path):
    for depth in (3, 4):
        ds, injected, chain = nested_instance(depth)
        src = dcmread(write(ds, tmp_path / f"nested{depth}.dcm"))
        profile = load_profile("basic", options)
        out, data = _roundtrip(deidentify(src, profile, KEY).dataset)
        kept = _kept_tokens(injected, profile.options)
        leaked = [t for t in injected.tokens if t.encode() in data and t not in kept]
        assert not leaked, (depth, leaked)
        assert not [u for u in injected.uids if u.encode() in data and "retain-uids" not in options]
        holder = out
        for tag in chain:  # the unlisted sequences themselves are kept
            holder = holder[tag].value[0]
        # a U attribute at depth is remapped with the same key as at the top
        uid_tag = 0x00081155
        original_uid = injected.values[uid_tag]
        expected = original_uid if "retain-uids" in options else KEY.uid(original_uid)
        assert holder[uid_tag].value == expected
