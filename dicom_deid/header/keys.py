"""The site secret and everything derived from it with HMAC-SHA256.

A bare hash of a UID would let anyone holding the original confirm a match, so every
derived value (UIDs, pseudonyms, date offsets, donor choice) is keyed by the site secret
and separated by a purpose label.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from dicom_deid.errors import DeidError

MIN_KEY_BYTES = 32
KEY_ENV = "DICOM_DEID_KEY"

log = logging.getLogger(__name__)


class KeyFileError(DeidError, ValueError):
    """The key file is missing, unreadable, too short or readable by others."""


def default_state_dir() -> Path:
    """Per-user state folder: $DICOM_DEID_STATE, else $XDG_STATE_HOME/dicom-deid."""
    env = os.environ.get("DICOM_DEID_STATE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "dicom-deid"


def default_key_path() -> Path:
    """The site key the CLI and the node share by default: $DICOM_DEID_KEY, else
    <per-user state folder>/site.key (the node's own default when its state_dir is that
    folder, as in the Docker image and the systemd unit)."""
    env = os.environ.get(KEY_ENV)
    if env:
        return Path(env).expanduser()
    return default_state_dir() / "site.key"


def init_hint(path: Path) -> str:
    return f"create one with: dicom-deid key init --key-file {path}"


@dataclass(frozen=True)
class SiteKey:
    """The site secret. Its repr never shows the secret."""

    secret: bytes

    def __repr__(self) -> str:
        return f"SiteKey(<{len(self.secret)} bytes>)"

    def digest(self, purpose: str, value: str | bytes) -> bytes:
        """HMAC-SHA256 of value, domain-separated by purpose."""
        data = value.encode("utf-8") if isinstance(value, str) else value
        return hmac.new(self.secret, purpose.encode("ascii") + b"\x00" + data, hashlib.sha256).digest()

    def integer(self, purpose: str, value: str | bytes, modulo: int) -> int:
        """A keyed integer in [0, modulo)."""
        return int.from_bytes(self.digest(purpose, value), "big") % modulo

    def uid(self, original: str) -> str:
        """Keyed UID remap: `2.25.<128-bit integer>`; same input and key, same output."""
        value = int.from_bytes(self.digest("uid", original.strip())[:16], "big")
        return f"2.25.{value}"

    def token(self, purpose: str, value: str, length: int = 16) -> str:
        """A keyed upper-case hex token, for pseudonyms and file names."""
        return self.digest(purpose, value).hex()[:length].upper()

    def fingerprint(self) -> str:
        """A short keyed digest that tells two keys apart without revealing either:
        HMAC output under its own purpose label, so it is no input of any other derivation."""
        text = self.digest("fingerprint", b"").hex()[:16].upper()
        return ":".join(text[i:i + 4] for i in range(0, 16, 4))


# Values derived from the key outside the header stage. The purpose labels are part of the
# contract (docs/CONTRACTS.md): changing one changes every output UID or donor it derives.

def donor_seed(key: SiteKey, original_study_uid: str) -> int:
    """The synthetic donor (or mask tint) of a study: keyed, so two studies of one patient
    get unrelated donors."""
    return key.integer("donor", original_study_uid, 2**32)


def keypoint_sr_uids(key: SiteKey, original_study_uid: str,
                     original_sop_instance_uid: str) -> tuple[str, str]:
    """(series, instance) UIDs of the keypoint SR of a video: one SR series per study."""
    return (key.uid("keypoint-sr-series:" + original_study_uid),
            key.uid("keypoint-sr:" + original_sop_instance_uid))


def reencoded_uid(key: SiteKey, original_sop_instance_uid: str) -> str:
    """The instance UID a pixels-only command (`dicom-deid text` on DICOM) writes, its header
    otherwise kept: never the UID the de-identified copy gets (key.uid of the original)."""
    return key.uid("reencoded:" + original_sop_instance_uid)


def faces_only_uid(key: SiteKey, method: str, original_sop_instance_uid: str) -> str:
    """The instance UID `dicom-deid faces` writes on DICOM: per method, so other pixels never
    share a UID, nor with the copy `deidentify` writes."""
    return key.uid(f"faces:{method}:" + original_sop_instance_uid)


def _check_permissions(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
            "run: chmod 600 " + str(path)
        )


def load_key(path: Path | str | None = None, *, create: bool = True) -> SiteKey:
    """Load the site key from path, or from the per-user default (created on first use).

    A key file holds the secret as text (for example 64 hex characters); any content of at
    least 32 bytes is accepted, surrounding whitespace excluded.
    """
    if path is None:
        path = default_key_path()
        if not path.exists():
            if not create:
                raise KeyFileError(f"no key file at {path}; {init_hint(path)}")
            create_key(path)
            log.warning("created a new site key at %s; back it up (dicom-deid key export FILE): "
                        "without it the same patient gets new pseudonyms", path)
    path = Path(path)
    if path.is_dir():
        raise KeyFileError(f"key file {path} is a folder, not a file")
    if not path.is_file():
        raise KeyFileError(f"key file {path} does not exist; {init_hint(path)}")
    try:
        _check_permissions(path)
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    if len(secret) < MIN_KEY_BYTES:
        raise KeyFileError(
            f"key file {path} holds {len(secret)} bytes; at least {MIN_KEY_BYTES} are required"
        )
    return SiteKey(secret)


def create_key(path: Path | str) -> Path:
    """Write a new random 256-bit key to path (mode 0600); never overwrites a key."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"key file {path} already exists; it was left untouched") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(os.urandom(32).hex() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return path


def same_as_cli_key(key: SiteKey) -> bool | None:
    """Whether the CLI's default key (default_key_path) holds this key; None if it has none
    or it cannot be read (then nothing is known to differ)."""
    try:
        other = load_key(default_key_path(), create=False)
    except (KeyFileError, OSError):
        return None
    return hmac.compare_digest(other.secret, key.secret)
