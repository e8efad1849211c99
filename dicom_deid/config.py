"""Node configuration: YAML -> typed, validated pydantic models.

Every problem is reported with the path of the key that caused it
(`destinations[0].port: must be 1..65535, got 0`), all problems at once, so that an
operator fixes a config in one pass. No key is required: an empty file (or no file at all)
gives the embedded default, a node on 127.0.0.1:11112 that keeps de-identified studies in
its outbox because no destination is configured.

The field types below (`_int`, `_number`, `AETitle`, `Size`, `_path`...) carry the checks and
the wording of their messages; the models carry the structure (extra keys forbidden) and the
checks that span fields. Relative paths are taken from the config file's folder, passed in the
validation context.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from dicom_deid import face_methods
from dicom_deid.errors import DeidError
from dicom_deid.onnx_device import DEVICE_PATTERN
from dicom_deid.validation import fail, kind, model_in, problems

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII without backslash
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class ConfigError(DeidError, ValueError):
    """A config file is unreadable or invalid; `problems` holds one line per bad key."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid node configuration:\n  " + "\n  ".join(problems))


# --------------------------------------------------------------------------- field types


def _int(lo: int, hi: int | None) -> BeforeValidator:
    """An integer within lo..hi (hi None: no upper bound); booleans are not integers."""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(f"must be an integer, got {kind(value)}")
        if value < lo or (hi is not None and value > hi):
            span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise fail(f"must be {span}, got {value}")
        return value

    return BeforeValidator(check)


def _number(lo: float, hi: float | None = None) -> BeforeValidator:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail(f"must be a number, got {kind(value)}")
        if value < lo or (hi is not None and value > hi):
            span = f"{lo:g}..{hi:g}" if hi is not None else f">= {lo:g}"
            raise fail(f"must be {span}, got {value}")
        return float(value)

    return BeforeValidator(check)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(f"must be true or false, got {value!r}")
    return value


def _text(check: Callable[[str], str | None] | None = None) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise fail(f"must be a non-empty string, got {kind(value)}")
        value = value.strip()
        error = check(value) if check else None
        if error:
            raise fail(error)
        return value

    return parse


def _check_ae(value: str) -> str | None:
    if not _AE_RE.match(value) or value != value.strip():
        return f"must be an AE title of 1..16 printable ASCII characters without backslash, got {value!r}"
    return None


def _check_host(value: str) -> str | None:
    if value in ("localhost", "0.0.0.0", "::"):
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if re.fullmatch(r"[A-Za-z0-9.-]{1,253}", value):
            return None
        return f"must be an IP address or host name, got {value!r}"
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve_sop_class(value: str) -> str | None:
    if re.fullmatch(r"[0-9]+(\.[0-9]+)+", value):
        return value
    from pydicom.uid import UID_dictionary

    for uid, entry in UID_dictionary.items():
        if entry[4] == value or entry[0] == value:
            return uid
    return None


def _sop_class(value: str) -> str:
    uid = _resolve_sop_class(value)
    if uid is None:
        raise fail(f"{value!r} is neither a UID nor a SOP class keyword pydicom knows")
    return uid


def _size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    raise fail(f"must be a size in bytes or like '512M', '4G', got {value!r}")


def _strings(value: Any) -> Any:
    """One string or a list of them (each item then checked by its own type)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise fail(f"must be a string or a list of strings, got {kind(value)}")
    return value


def _list(value: Any) -> Any:
    if not isinstance(value, list):
        raise fail(f"must be a list, got {kind(value)}")
    return value


def _base_dir(info: ValidationInfo) -> Path:
    context = info.context or {}
    return Path(context.get("base_dir") or Path.cwd())


def _resolve_path(value: Any, base_dir: Path) -> Path:
    resolved = Path(_text()(value)).expanduser()
    return resolved if resolved.is_absolute() else base_dir / resolved


def _to_path(value: Any, info: ValidationInfo) -> Path:
    if isinstance(value, Path):         # a default computed from another key
        return value
    return _resolve_path(value, _base_dir(info))


def _existing(path: Path) -> Path:
    if not path.exists():
        raise fail(f"file {path} does not exist")
    return path


def _regex(value: Any) -> re.Pattern[str]:
    text = _text()(value)
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise fail(f"invalid regular expression: {exc}") from exc


def _face_method(value: str) -> str | None:
    choices = face_methods.choices()
    return None if value in choices else f"must be one of {', '.join(choices)}, got {value!r}"


def _check_name(value: str) -> str | None:
    return None if re.fullmatch(r"[A-Za-z0-9_.-]+", value) else (
        f"must be letters, digits, '_', '.', '-', got {value!r}")


Bool = Annotated[bool, BeforeValidator(_bool)]
Text = Annotated[str, BeforeValidator(_text())]
AETitle = Annotated[str, BeforeValidator(_text(_check_ae))]
Host = Annotated[str, BeforeValidator(_text(_check_host))]
Name = Annotated[str, BeforeValidator(_text(_check_name))]
Size = Annotated[int, BeforeValidator(_size)]
FilePath = Annotated[Path, BeforeValidator(_to_path)]
ExistingFile = Annotated[Path, BeforeValidator(_to_path), AfterValidator(_existing)]
AETitles = Annotated[tuple[AETitle, ...], BeforeValidator(_strings)]
Texts = Annotated[tuple[Text, ...], BeforeValidator(_strings)]


def _as_mapping(value: Any, keep_null: tuple[str, ...] = ()) -> Any:
    if value is None:
        return {}
    if isinstance(value, BaseModel):
        return value
    if not isinstance(value, dict):
        raise fail(f"must be a mapping, got {kind(value)}")
    return {k: v for k, v in value.items() if v is not None or k in keep_null}


class _Section(BaseModel):
    """A mapping of known keys; a key given as null takes its default. (Subclasses that need
    more before validation override `_mapping` and call `_as_mapping` first.)"""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, value: Any) -> Any:
        return _as_mapping(value)


# --------------------------------------------------------------------------- models


class TLSConfig(_Section):
    """TLS for the listener (server side) or one destination (client side)."""

    cert: ExistingFile | None = None  # PEM certificate chain presented to the peer
    key: ExistingFile | None = None  # PEM private key for `cert`
    ca: ExistingFile | None = None  # listener: clients must present a certificate signed by it;
    # destination: the archive's certificate is verified against it (else the system store)
    verify_hostname: Bool = True  # destination only: check the archive's name in its cert

    @model_validator(mode="after")
    def _pair(self) -> TLSConfig:
        if (self.cert is None) != (self.key is None):
            raise fail("'cert' and 'key' go together")
        return self


def _server_tls(value: Any) -> Any:
    if isinstance(value, dict) and "verify_hostname" in value:
        raise fail("unknown key (verify_hostname is for destinations)", "verify_hostname")
    if isinstance(value, dict) and (value.get("cert") is None or value.get("key") is None):
        raise fail("a listener needs both 'cert' and 'key'")
    return value


class ListenConfig(_Section):
    ae_title: AETitle = "DICOM-DEID"
    host: Host = "127.0.0.1"
    port: Annotated[int, _int(1, 65535)] = 11112
    allowed_calling_aets: AETitles = ()  # empty: any calling AE (loopback only)
    # Largest P-DATA PDU we accept: also what one connection may buffer in memory, so it
    # has no "unlimited" (0) setting, unlike forward.max_pdu.
    max_pdu: Annotated[int, _int(4096, 64 * 2**20)] = 262144
    max_associations: Annotated[int, _int(1, 1000)] = 10
    max_instance_size: Size = 4 * 1024**3
    min_free_disk: Size = 1024**3  # below this, new associations are refused
    accept_unknown_sop_classes: Bool = False  # private/unknown SOP classes as storage
    allowed_called_aets: AETitles = ()  # empty: only the node's own ae_title
    acse_timeout: Annotated[float, _number(0.1)] = 10.0
    dimse_timeout: Annotated[float, _number(0.1)] = 120.0
    network_timeout: Annotated[float, _number(0.1)] = 30.0  # an association idle this long is aborted
    # Hostile-network limits (see dicom_deid/node/transport.py).
    accept_timeout: Annotated[float, _number(0.1, 300)] = 10.0  # TCP accept to A-ASSOCIATE-AC, TLS handshake included
    pdu_timeout: Annotated[float, _number(0.1, 3600)] = 30.0  # first byte of a PDU to its last byte
    max_pending_connections: Annotated[int, _int(1, 10000)] = 64  # connections not yet accepted
    max_pending_per_address: Annotated[int, _int(1, 10000)] = 8  # of those, from one source address
    max_associations_per_address: Annotated[int, _int(1, 1000)] = 10  # accepted associations from one address
    # Plain C-STOREs served in the DUL thread, outside pynetdicom's DIMSE layer (node/fast_store.py);
    # off: every message through pynetdicom (same statuses, journal and files, slower).
    fast_store: Bool = True
    # Receiving processes (node/recv_pool.py): 1 receives in the node process itself; N > 1
    # starts N receive workers, the node process accepting and handing connections over.
    workers: Annotated[int, _int(1, 64)] = 1
    tls: Annotated[TLSConfig | None, BeforeValidator(_server_tls)] = None

    @model_validator(mode="after")
    def _allowlist_off_loopback(self) -> ListenConfig:
        if not self.allowed_calling_aets and not _is_loopback(self.host):
            raise fail(f"required when listening on a non-loopback address ({self.host}): "
                        "list the AE titles of the PACS that may send", "allowed_calling_aets")
        return self


def _broker_url(value: Any) -> str:
    text = _text()(value)
    if not re.match(r"^rediss?://", text):
        raise fail(f"must be a redis:// or rediss:// URL, got {text.split('@')[-1]!r}")
    return text


class CeleryConfig(_Section):
    """processing.backend celery (node/celery_app.py, celery_scheduler.py): study jobs on a Redis broker, run by
    `dicom-deid worker` processes on any host that mounts state_dir."""

    broker_url: Annotated[str, BeforeValidator(_broker_url)] = "redis://127.0.0.1:6379/0"
    # An unacknowledged job (its worker host died) is handed to another worker after this
    # long. It must exceed processing.job_timeout: a job still running past it is started
    # a second time elsewhere (harmless, keyed UIDs, but twice the work).
    visibility_timeout: Annotated[float, _number(1.0)] = 22200.0
    max_in_flight: Annotated[int, _int(1, 100000)] = 64  # jobs queued or running at once
    queue_prefix: Text = "dicom-deid"  # queues are <prefix>.<capability> (cpu, gpu)


class ProcessingConfig(_Section):
    backend: Literal["local", "celery"] = "local"  # local: worker processes of the node itself
    celery: CeleryConfig = Field(default_factory=CeleryConfig)
    stable_seconds: Annotated[float, _number(0.0)] = 30.0  # a study is processed after this long without arrivals
    workers: Annotated[int, _int(1, 256)] = 2  # local worker processes running study jobs
    max_attempts: Annotated[int, _int(1, 100)] = 3  # a job that crashes its worker this often is quarantined
    # A job running longer is stopped and counts as a failed attempt (0: no limit). Six hours
    # leave room for an hour of 1080p video on two workers; a hung decoder does not hold a
    # worker forever.
    job_timeout: Annotated[float, _number(0.0)] = 21600.0
    # Where the models run (dicom_deid/onnx_device.py): auto takes CUDA when onnxruntime
    # offers it (the `gpu` extra) and a probe session starts on it, cuda fails the start when not.
    device: Annotated[str, Field(pattern=DEVICE_PATTERN)] = "auto"
    # Who runs the face detector and mesh: MediaPipe's TFLite (CPU only) or the same models
    # on ONNX Runtime (on `device`); auto: ONNX when `device` resolves to a GPU.
    face_engine: Literal["auto", "mediapipe", "onnx"] = "auto"
    # Who runs the keypoint SR's body pose and hands: MediaPipe's TFLite or the same models on
    # ONNX Runtime (on `device`); auto: ONNX on every device (faster than MediaPipe on the CPU too).
    keypoint_engine: Literal["auto", "mediapipe", "onnx"] = "auto"

    @model_validator(mode="after")
    def _redelivery(self) -> ProcessingConfig:
        if (self.backend == "celery" and self.job_timeout > 0
                and self.celery.visibility_timeout <= self.job_timeout):
            raise fail(f"must exceed processing.job_timeout ({self.job_timeout:g} s), or a "
                       "running job is handed to a second worker",
                       "celery.visibility_timeout")
        return self


class ForwardConfig(_Section):
    max_attempts: Annotated[int, _int(1, 10000)] = 10
    initial_delay: Annotated[float, _number(0.0)] = 5.0
    max_delay: Annotated[float, _number(0.0)] = 600.0
    jitter: Annotated[float, _number(0.0, 1.0)] = 0.25  # each delay is multiplied by a random factor in [1-j, 1+j]
    timeout: Annotated[float, _number(0.1)] = 60.0  # ACSE, DIMSE and network timeout of one association
    max_pdu: Annotated[int, _int(0, 2**32 - 1)] = 0  # largest PDU we accept from the archive; 0 = unlimited
    associations: Annotated[int, _int(1, 64)] = 2  # concurrent associations per destination, each one study

    @model_validator(mode="after")
    def _delays(self) -> ForwardConfig:
        if self.max_delay < self.initial_delay:
            raise fail(f"must be >= forward.initial_delay ({self.initial_delay:g}), "
                        f"got {self.max_delay:g}", "max_delay")
        return self


def _http_url(value: Any) -> str:
    from urllib.parse import urlsplit

    text = _text()(value)
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (parts.scheme not in ("http", "https") or not parts.hostname or port == -1
            or parts.query or parts.fragment):
        raise fail(f"must be an http:// or https:// URL, got {text!r}")
    if parts.username or parts.password:
        # Credentials in the URL would be logged with it: they go in 'auth'.
        raise fail("must not hold credentials: use 'auth'")
    return text.rstrip("/")


class DestinationAuth(_Section):
    """How a DICOMweb destination authenticates: HTTP basic (the password read from a file)
    or a bearer token read from a file. Secrets never sit in the config itself."""

    type: Literal["basic", "bearer"]
    username: Text | None = None
    password_file: ExistingFile | None = None
    token_file: ExistingFile | None = None

    @model_validator(mode="after")
    def _complete(self) -> DestinationAuth:
        if self.type == "basic":
            missing = [k for k in ("username", "password_file") if getattr(self, k) is None]
            if missing:
                raise fail(f"basic auth needs {' and '.join(missing)}", missing[0])
            if self.token_file is not None:
                raise fail("is for bearer auth", "token_file")
        else:
            if self.token_file is None:
                raise fail("bearer auth needs token_file", "token_file")
            if self.username is not None or self.password_file is not None:
                raise fail("is for basic auth",
                            "username" if self.username is not None else "password_file")
        return self


class Destination(_Section):
    """Where de-identified studies go: a C-STORE SCP (`type: dicom`) or a DICOMweb archive's
    STOW-RS endpoint (`type: dicomweb`)."""

    name: Name
    type: Literal["dicom", "dicomweb"] = "dicom"
    ae_title: AETitle = ""  # dicom: the called AE title
    host: Host = ""
    port: Annotated[int, _int(1, 65535)] = 0
    calling_ae_title: AETitle = ""  # empty: the node's own AE title (filled in by NodeConfig)
    tls: TLSConfig | None = None
    url: Annotated[str, BeforeValidator(_http_url)] = ""  # dicomweb: STOW-RS base URL
    auth: DestinationAuth | None = None  # dicomweb only
    timeout: Annotated[float, _number(0.1)] | None = None  # dicomweb: seconds (forward.timeout)

    @model_validator(mode="after")
    def _by_type(self) -> Destination:
        if self.type == "dicom":
            missing = [k for k in ("ae_title", "host", "port") if not getattr(self, k)]
            if missing:
                raise fail(f"is required (a dicom destination needs "
                            f"{', '.join(missing)})", missing[0])
            for key in ("url", "auth", "timeout"):
                if getattr(self, key) not in ("", None):
                    raise fail("is for type: dicomweb destinations", key)
        else:
            if not self.url:
                raise fail("is required (a dicomweb destination needs url)", "url")
            for key in ("ae_title", "host", "port"):
                if getattr(self, key):
                    raise fail("is for type: dicom destinations (a dicomweb destination is "
                                "reached at its url)", key)
            from urllib.parse import urlsplit

            parts = urlsplit(self.url)
            if parts.scheme == "http" and self.tls is not None:
                raise fail("needs an https:// url", "tls")
            # host and port name the archive in logs, as for a dicom destination.
            object.__setattr__(self, "host", parts.hostname or "")
            object.__setattr__(self, "port", parts.port or (443 if parts.scheme == "https"
                                                            else 80))
        return self


class Match(_Section):
    """Every given criterion must hold; an empty criterion matches anything."""

    calling_aet: AETitles = ()
    called_aet: AETitles = ()
    modality: Annotated[tuple[Annotated[Text, AfterValidator(str.upper)], ...],
                        BeforeValidator(_strings)] = ()
    # UIDs (keywords are resolved when loading)
    sop_class: Annotated[tuple[Annotated[Text, AfterValidator(_sop_class)], ...],
                         BeforeValidator(_strings)] = ()
    # re.search, case-insensitive
    study_description: Annotated[re.Pattern[str] | None, BeforeValidator(_regex)] = None


def _known_destination(value: str, info: ValidationInfo) -> str:
    known = (info.context or {}).get("destination_names", ())
    if value not in known:
        raise fail(f"unknown destination {value!r} (configured: {sorted(known) or 'none'})")
    return value


class Rule(_Section):
    name: Text
    match: Match = Field(default_factory=Match)
    profile: Text = "basic"
    options: Texts = ()
    faces: Annotated[str, BeforeValidator(_text(_face_method))] | None = None  # None: profile's
    # Worker queue (capability) of its studies with processing.backend celery; None: gpu
    # when the rule (or its profile) replaces faces, else cpu.
    queue: Annotated[str, BeforeValidator(_text(_check_name))] | None = None
    destinations: Annotated[tuple[Annotated[Text, AfterValidator(_known_destination)], ...],
                            BeforeValidator(_strings)] = ()

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, value: Any, info: ValidationInfo) -> Any:
        value = _as_mapping(value)
        if isinstance(value, dict) and value.get("destinations") is None:
            # Omitted: every configured destination.
            value = {**value, "destinations": list((info.context or {}).get(
                "destination_names", ()))}
        return value


def _default_rule(value: Any) -> Any:
    if isinstance(value, dict):
        if "match" in value:
            raise fail("unknown key (the default rule takes what no rule matched)", "match")
        return {**value, "name": "default"} if value.get("name") is None else value
    return value


class RetentionConfig(_Section):
    keep_originals: Bool = False  # keep received files after every output was delivered
    keep_outputs: Bool = False  # keep de-identified files after every destination has them


def _level(value: Any) -> str:
    text = _text()(value)
    if text.upper() not in LOG_LEVELS:
        raise fail(f"must be one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return text.upper()


class LogConfig(_Section):
    level: Annotated[str, BeforeValidator(_level)] = "INFO"
    file: FilePath | None = None  # None: standard error
    # the file is rotated at this size (at least 64 KiB)
    max_bytes: Annotated[Size, AfterValidator(lambda v: max(v, 64 * 1024))] = 50 * 2**20
    backups: Annotated[int, _int(1, 100)] = 5  # rotated files kept


class HttpConfig(_Section):
    """The operators' HTTP endpoint (node/http.py): /healthz, /status, /metrics."""

    enabled: Bool = True
    host: Host = "127.0.0.1"
    port: Annotated[int, _int(0, 65535)] = 11180
    token_file: ExistingFile | None = None  # bearer token; required off loopback

    @model_validator(mode="after")
    def _token(self) -> HttpConfig:
        if self.token_file is not None and self.token_file.is_file():
            text = self.token_file.read_text(encoding="utf-8", errors="replace").strip()
            if len(text) < 16:
                raise fail(f"{self.token_file} must hold a token of at least 16 characters",
                            "token_file")
        if self.enabled and self.token_file is None and not _is_loopback(self.host):
            raise fail(f"required when the HTTP endpoint listens on a non-loopback address "
                        f"({self.host}): /status and /metrics describe the node's work",
                        "token_file")
        return self


def _unique_names(items: tuple[Any, ...], what: str) -> tuple[Any, ...]:
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item.name in seen:
            raise fail(f"duplicate {what} name {item.name!r}", f"[{i}].name")
        seen.add(item.name)
    return items


class NodeConfig(_Section):
    listen: ListenConfig = Field(default_factory=ListenConfig)
    state_dir: FilePath
    key_file: FilePath
    audit_log: FilePath
    # The node's SQLite journal, read and written by the node alone. With processing.backend
    # celery, state_dir is on storage shared with the workers: put this on a local disk.
    journal_file: FilePath
    processing: ProcessingConfig = Field(default_factory=ProcessingConfig)
    forward: ForwardConfig = Field(default_factory=ForwardConfig)
    destinations: Annotated[tuple[Destination, ...], BeforeValidator(_list),
                            AfterValidator(lambda v: _unique_names(v, "destination"))] = ()
    rules: Annotated[tuple[Rule, ...], BeforeValidator(_list),
                     AfterValidator(lambda v: _unique_names(v, "rule"))] = ()
    # None (an explicit null): what matches no rule is quarantined.
    default_rule: Annotated[Rule | None, BeforeValidator(_default_rule)] = None
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    _source: str = PrivateAttr(default="<embedded default>")

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, value: Any, info: ValidationInfo) -> Any:
        """Defaults that depend on other keys: the state folder's files, every rule's
        destinations, each destination's calling AE title and timeout, each rule's name."""
        from dicom_deid.header.keys import KEY_ENV, default_state_dir

        data = _as_mapping(value, keep_null=("default_rule",))
        if isinstance(data, BaseModel):
            return data
        base = _base_dir(info)
        try:
            state_dir = _resolve_path(data["state_dir"], base)
        except (KeyError, PydanticCustomError):
            state_dir = default_state_dir()
        data.setdefault("state_dir", state_dir)
        if data.get("key_file") is None:
            # $DICOM_DEID_KEY names the site key for the CLI and the node alike (header/keys.py).
            env_key = os.environ.get(KEY_ENV)
            data["key_file"] = Path(env_key).expanduser() if env_key else state_dir / "site.key"
        if data.get("audit_log") is None:
            data["audit_log"] = state_dir / "audit.log"
        if data.get("journal_file") is None:
            data["journal_file"] = state_dir / "journal.sqlite"
        listen = data.get("listen")
        node_ae = listen.get("ae_title") if isinstance(listen, dict) else None
        if not isinstance(node_ae, str) or not node_ae.strip():
            node_ae = ListenConfig.model_fields["ae_title"].default
        forward = data.get("forward")
        timeout = forward.get("timeout") if isinstance(forward, dict) else None
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0.1:
            timeout = ForwardConfig.model_fields["timeout"].default
        destinations = data.get("destinations")
        names: list[str] = []
        if isinstance(destinations, list):
            filled = []
            for item in destinations:
                if isinstance(item, dict):
                    if isinstance(item.get("name"), str):
                        names.append(item["name"].strip())
                    if item.get("type", "dicom") == "dicom":
                        if item.get("calling_ae_title") is None:
                            item = {**item, "calling_ae_title": node_ae}
                    elif item.get("timeout") is None:
                        item = {**item, "timeout": timeout}
                filled.append(item)
            data["destinations"] = filled
        if info.context is not None:
            info.context["destination_names"] = tuple(names)
        rules = data.get("rules")
        if isinstance(rules, list):
            data["rules"] = [{"name": f"rule-{i + 1}", **item}
                             if isinstance(item, dict) and item.get("name") is None else item
                             for i, item in enumerate(rules)]
        if "default_rule" not in data:
            data["default_rule"] = {}
        return data

    @property
    def source(self) -> str:
        return self._source

    @property
    def journal_path(self) -> Path:
        return self.journal_file

    @property
    def outbox_dir(self) -> Path:
        return self.state_dir / "outbox"

    @property
    def quarantine_dir(self) -> Path:
        return self.state_dir / "quarantine"

    def destination(self, name: str) -> Destination:
        for dest in self.destinations:
            if dest.name == name:
                return dest
        raise KeyError(name)


def parse_config(data: Any, source: str = "<embedded default>",
                 base_dir: Path | None = None) -> NodeConfig:
    """Validate a parsed YAML document; relative paths are taken from base_dir."""
    context: dict[str, Any] = {"base_dir": base_dir or Path.cwd()}
    try:
        config = NodeConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(source, problems(exc, NodeConfig)) from None
    config._source = source
    return config


def known_keys() -> set[str]:
    """Every key path the config knows (`listen.port`, `destinations.auth.type`...): the
    example config must document them all (tests)."""
    out: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            out.add(prefix + name)
            inner = model_in(field.annotation)
            if inner is not None:
                walk(inner, f"{prefix}{name}.")

    walk(NodeConfig, "")
    return out


def load_config(path: Path | str | None) -> NodeConfig:
    """Read and validate a node config file; None gives the embedded default."""
    if path is None:
        return parse_config(None)
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), [f"{where}not valid YAML: {problem}"]) from exc
    return parse_config(data, source=str(path), base_dir=path.resolve().parent)
