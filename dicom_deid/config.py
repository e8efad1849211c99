"""Node configuration: YAML -> typed, validated dataclasses.

Every problem is reported with the path of the key that caused it
(`destinations[0].port: must be 1..65535, got 0`), all problems at once, so that an
operator fixes a config in one pass. No key is required: an empty file (or no file at all)
gives the embedded default, a node on 127.0.0.1:11112 that keeps de-identified studies in
its outbox because no destination is configured.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FACE_METHODS = ("none", "swap", "mask3d", "blur", "pixelate", "blackout")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII without backslash
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class ConfigError(ValueError):
    """A config file is unreadable or invalid; `problems` holds one line per bad key."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid node configuration:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class TLSConfig:
    """TLS for the listener (server side) or one destination (client side)."""

    cert: Path | None = None  # PEM certificate chain presented to the peer
    key: Path | None = None  # PEM private key for `cert`
    ca: Path | None = None  # listener: clients must present a certificate signed by it;
    # destination: the archive's certificate is verified against it (else the system store)
    verify_hostname: bool = True  # destination only: check the archive's name in its cert


@dataclass(frozen=True)
class ListenConfig:
    ae_title: str = "DICOM-DEID"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_calling_aets: tuple[str, ...] = ()  # empty: any calling AE (loopback only)
    # Largest P-DATA PDU we accept: also what one connection may buffer in memory, so it
    # has no "unlimited" (0) setting, unlike forward.max_pdu.
    max_pdu: int = 262144
    max_associations: int = 10
    max_instance_size: int = 4 * 1024**3
    min_free_disk: int = 1024**3  # below this, new associations are refused
    accept_unknown_sop_classes: bool = False  # private/unknown SOP classes as storage
    allowed_called_aets: tuple[str, ...] = ()  # empty: only the node's own ae_title
    acse_timeout: float = 10.0
    dimse_timeout: float = 120.0
    network_timeout: float = 30.0  # an association idle this long is aborted
    # Hostile-network limits (see dicom_deid/node/transport.py).
    accept_timeout: float = 10.0  # TCP accept to A-ASSOCIATE-AC, TLS handshake included
    pdu_timeout: float = 30.0  # first byte of a PDU to its last byte
    max_pending_connections: int = 64  # connections not yet accepted (before A-ASSOCIATE-AC)
    max_pending_per_address: int = 8  # of those, from one source address
    max_associations_per_address: int = 10  # accepted associations from one source address
    tls: TLSConfig | None = None


@dataclass(frozen=True)
class ProcessingConfig:
    stable_seconds: float = 30.0  # a study is processed after this long without arrivals
    workers: int = 2  # local worker processes running study jobs
    max_attempts: int = 3  # a job that crashes its worker this often is quarantined
    # A job running longer is stopped and counts as a failed attempt (0: no limit). Six hours
    # leave room for an hour of 1080p video on two workers; a hung decoder does not hold a
    # worker forever.
    job_timeout: float = 21600.0


@dataclass(frozen=True)
class ForwardConfig:
    max_attempts: int = 10
    initial_delay: float = 5.0
    max_delay: float = 600.0
    jitter: float = 0.25  # each delay is multiplied by a random factor in [1-j, 1+j]
    timeout: float = 60.0  # ACSE, DIMSE and network timeout of one association
    max_pdu: int = 0  # largest PDU we accept from the archive; 0 = unlimited
    associations: int = 2  # concurrent associations per destination, each one study


@dataclass(frozen=True)
class DestinationAuth:
    """HTTP credentials of a dicomweb destination, read from files at each request."""

    type: str  # "basic" or "bearer"
    username: str = ""
    password_file: Path | None = None
    token_file: Path | None = None


@dataclass(frozen=True)
class Destination:
    name: str
    ae_title: str  # dicomweb: empty
    host: str  # dicomweb: the URL's host
    port: int  # dicomweb: the URL's port
    calling_ae_title: str = ""  # empty: the node's own AE title
    tls: TLSConfig | None = None
    type: str = "dicom"  # "dicom" (C-STORE) or "dicomweb" (STOW-RS)
    url: str = ""  # dicomweb: the STOW-RS base URL ({url}/studies)
    auth: DestinationAuth | None = None
    timeout: float | None = None  # dicomweb: per request; None: forward.timeout


@dataclass(frozen=True)
class Match:
    """Every given criterion must hold; an empty criterion matches anything."""

    calling_aet: tuple[str, ...] = ()
    called_aet: tuple[str, ...] = ()
    modality: tuple[str, ...] = ()
    sop_class: tuple[str, ...] = ()  # UIDs (keywords are resolved when loading)
    study_description: re.Pattern[str] | None = None  # re.search, case-insensitive


@dataclass(frozen=True)
class Rule:
    name: str
    match: Match = field(default_factory=Match)
    profile: str = "basic"
    options: tuple[str, ...] = ()
    faces: str | None = None  # None: the profile's default face method
    destinations: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetentionConfig:
    keep_originals: bool = False  # keep received files after every output was delivered
    keep_outputs: bool = False  # keep de-identified files after every destination has them


@dataclass(frozen=True)
class LogConfig:
    level: str = "INFO"
    file: Path | None = None  # None: standard error
    max_bytes: int = 50 * 2**20  # the file is rotated at this size
    backups: int = 5  # rotated files kept


@dataclass(frozen=True)
class HttpConfig:
    """The operators' HTTP endpoint (node/http.py): /healthz, /status, /metrics."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 11180
    token_file: Path | None = None  # bearer token; required off loopback


@dataclass(frozen=True)
class NodeConfig:
    listen: ListenConfig
    state_dir: Path
    key_file: Path
    audit_log: Path
    processing: ProcessingConfig
    forward: ForwardConfig
    destinations: tuple[Destination, ...]
    rules: tuple[Rule, ...]
    default_rule: Rule | None
    retention: RetentionConfig
    log: LogConfig
    http: HttpConfig = field(default_factory=HttpConfig)
    source: str = "<embedded default>"

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "journal.sqlite"

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"

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


# --------------------------------------------------------------------------- parsing


class _Reader:
    """Walks the YAML tree, collecting problems with their key paths."""

    def __init__(self, base_dir: Path):
        self.problems: list[str] = []
        self.base_dir = base_dir

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path or '(top level)'}: {message}")

    def section(self, value: Any, path: str, known: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"must be a mapping, got {_kind(value)}")
            return {}
        for key in value:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.problem(_join(path, str(key)), f"unknown key{hint}")
        return value

    def integer(self, data: dict, path: str, key: str, default: int, lo: int, hi: int | None) -> int:
        if key not in data or data[key] is None:
            return default
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(_join(path, key), f"must be an integer, got {_kind(value)}")
            return default
        if value < lo or (hi is not None and value > hi):
            span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            self.problem(_join(path, key), f"must be {span}, got {value}")
            return default
        return value

    def number(self, data: dict, path: str, key: str, default: float, lo: float,
               hi: float | None = None) -> float:
        if key not in data or data[key] is None:
            return default
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(_join(path, key), f"must be a number, got {_kind(value)}")
            return default
        if value < lo or (hi is not None and value > hi):
            span = f"{lo:g}..{hi:g}" if hi is not None else f">= {lo:g}"
            self.problem(_join(path, key), f"must be {span}, got {value}")
            return default
        return float(value)

    def size(self, data: dict, path: str, key: str, default: int) -> int:
        if key not in data or data[key] is None:
            return default
        value = data[key]
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str):
            m = _SIZE_RE.match(value)
            if m:
                return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
        self.problem(_join(path, key),
                     f"must be a size in bytes or like '512M', '4G', got {value!r}")
        return default

    def boolean(self, data: dict, path: str, key: str, default: bool) -> bool:
        if key not in data or data[key] is None:
            return default
        value = data[key]
        if not isinstance(value, bool):
            self.problem(_join(path, key), f"must be true or false, got {value!r}")
            return default
        return value

    def string(self, data: dict, path: str, key: str, default: str | None,
               check: Callable[[str], str | None] | None = None) -> str | None:
        if key not in data or data[key] is None:
            return default
        value = data[key]
        if not isinstance(value, str) or not value.strip():
            self.problem(_join(path, key), f"must be a non-empty string, got {_kind(value)}")
            return default
        value = value.strip()
        if check:
            error = check(value)
            if error:
                self.problem(_join(path, key), error)
                return default
        return value

    def path(self, data: dict, path: str, key: str, default: Path | None,
             must_exist: bool = False) -> Path | None:
        value = self.string(data, path, key, None)
        if value is None:
            return default
        resolved = Path(value).expanduser()
        if not resolved.is_absolute():
            resolved = self.base_dir / resolved
        if must_exist and not resolved.exists():
            self.problem(_join(path, key), f"file {resolved} does not exist")
        return resolved

    def strings(self, data: dict, path: str, key: str,
                check: Callable[[str], str | None] | None = None) -> tuple[str, ...]:
        if key not in data or data[key] is None:
            return ()
        value = data[key]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.problem(_join(path, key), f"must be a string or a list of strings, got {_kind(value)}")
            return ()
        out: list[str] = []
        for i, item in enumerate(value):
            where = f"{_join(path, key)}[{i}]"
            if not isinstance(item, str) or not item.strip():
                self.problem(where, f"must be a non-empty string, got {_kind(item)}")
                continue
            error = check(item.strip()) if check else None
            if error:
                self.problem(where, error)
                continue
            out.append(item.strip())
        return tuple(out)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{value!r} ({type(value).__name__})"


def _check_ae(value: str) -> str | None:
    if not _AE_RE.match(value) or value != value.strip():
        return f"must be an AE title of 1..16 printable ASCII characters without backslash, got {value!r}"
    return None


def _check_sop_class(value: str) -> str | None:
    return None if _resolve_sop_class(value) else (
        f"{value!r} is neither a UID nor a SOP class keyword pydicom knows"
    )


def _resolve_sop_class(value: str) -> str | None:
    if re.fullmatch(r"[0-9]+(\.[0-9]+)+", value):
        return value
    from pydicom.uid import UID_dictionary

    for uid, entry in UID_dictionary.items():
        if entry[4] == value or entry[0] == value:
            return uid
    return None


def _read_tls(reader: _Reader, value: Any, path: str, server: bool) -> TLSConfig | None:
    known = ("cert", "key", "ca") if server else ("cert", "key", "ca", "verify_hostname")
    data = reader.section(value, path, known)
    if value is None:
        return None
    cert = reader.path(data, path, "cert", None, must_exist=True)
    key = reader.path(data, path, "key", None, must_exist=True)
    ca = reader.path(data, path, "ca", None, must_exist=True)
    if server and (cert is None or key is None):
        reader.problem(path, "a listener needs both 'cert' and 'key'")
    if (cert is None) != (key is None):
        reader.problem(path, "'cert' and 'key' go together")
    verify = reader.boolean(data, path, "verify_hostname", True) if not server else True
    return TLSConfig(cert=cert, key=key, ca=ca, verify_hostname=verify)


def _read_listen(reader: _Reader, value: Any) -> ListenConfig:
    path = "listen"
    data = reader.section(value, path, (
        "ae_title", "host", "port", "allowed_calling_aets", "max_pdu", "max_associations",
        "max_instance_size", "min_free_disk", "accept_unknown_sop_classes", "acse_timeout",
        "dimse_timeout", "network_timeout", "tls", "allowed_called_aets", "accept_timeout",
        "pdu_timeout", "max_pending_connections", "max_pending_per_address",
        "max_associations_per_address",
    ))
    d = ListenConfig()
    host = reader.string(data, path, "host", d.host, _check_host)
    allowed = reader.strings(data, path, "allowed_calling_aets", _check_ae)
    if host and not allowed and not _is_loopback(host):
        reader.problem(_join(path, "allowed_calling_aets"),
                       f"required when listening on a non-loopback address ({host}): "
                       "list the AE titles of the PACS that may send")
    return ListenConfig(
        ae_title=reader.string(data, path, "ae_title", d.ae_title, _check_ae),
        host=host,
        port=reader.integer(data, path, "port", d.port, 1, 65535),
        allowed_calling_aets=allowed,
        max_pdu=reader.integer(data, path, "max_pdu", d.max_pdu, 4096, 64 * 2**20),
        max_associations=reader.integer(data, path, "max_associations", d.max_associations, 1, 1000),
        max_instance_size=reader.size(data, path, "max_instance_size", d.max_instance_size),
        min_free_disk=reader.size(data, path, "min_free_disk", d.min_free_disk),
        accept_unknown_sop_classes=reader.boolean(
            data, path, "accept_unknown_sop_classes", d.accept_unknown_sop_classes),
        acse_timeout=reader.number(data, path, "acse_timeout", d.acse_timeout, 0.1),
        dimse_timeout=reader.number(data, path, "dimse_timeout", d.dimse_timeout, 0.1),
        network_timeout=reader.number(data, path, "network_timeout", d.network_timeout, 0.1),
        allowed_called_aets=reader.strings(data, path, "allowed_called_aets", _check_ae),
        accept_timeout=reader.number(data, path, "accept_timeout", d.accept_timeout, 0.1, 300),
        pdu_timeout=reader.number(data, path, "pdu_timeout", d.pdu_timeout, 0.1, 3600),
        max_pending_connections=reader.integer(
            data, path, "max_pending_connections", d.max_pending_connections, 1, 10000),
        max_pending_per_address=reader.integer(
            data, path, "max_pending_per_address", d.max_pending_per_address, 1, 10000),
        max_associations_per_address=reader.integer(
            data, path, "max_associations_per_address", d.max_associations_per_address, 1, 1000),
        tls=_read_tls(reader, data.get("tls"), _join(path, "tls"), server=True),
    )


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


def _read_destinations(reader: _Reader, value: Any, node_ae: str) -> tuple[Destination, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        reader.problem("destinations", f"must be a list, got {_kind(value)}")
        return ()
    out: list[Destination] = []
    names: set[str] = set()
    for i, item in enumerate(value):
        path = f"destinations[{i}]"
        data = reader.section(item, path, ("name", "ae_title", "host", "port",
                                           "calling_ae_title", "tls", "type", "url", "auth",
                                           "timeout"))
        if not isinstance(item, dict):
            continue
        kind = reader.string(data, path, "type", "dicom",
                             lambda v: None if v in ("dicom", "dicomweb")
                             else f"must be dicom or dicomweb, got {v!r}")
        for required in (("name", "url") if kind == "dicomweb" else
                         ("name", "ae_title", "host", "port")):
            if data.get(required) is None:
                reader.problem(_join(path, required), "is required")
        name = reader.string(data, path, "name", f"#{i}",
                             lambda v: None if re.fullmatch(r"[A-Za-z0-9_.-]+", v)
                             else f"must be letters, digits, '_', '.', '-', got {v!r}")
        if name in names:
            reader.problem(_join(path, "name"), f"duplicate destination name {name!r}")
        names.add(name)
        if kind == "dicomweb":
            out.append(_read_dicomweb(reader, data, path, name))
            continue
        for web_only in ("url", "auth", "timeout"):
            if data.get(web_only) is not None:
                reader.problem(_join(path, web_only), "only for type: dicomweb")
        out.append(Destination(
            name=name,
            ae_title=reader.string(data, path, "ae_title", "ANY-SCP", _check_ae),
            host=reader.string(data, path, "host", "127.0.0.1", _check_host),
            port=reader.integer(data, path, "port", 104, 1, 65535),
            calling_ae_title=reader.string(data, path, "calling_ae_title", node_ae, _check_ae),
            tls=_read_tls(reader, data.get("tls"), _join(path, "tls"), server=False),
        ))
    return tuple(out)


def _read_dicomweb(reader: _Reader, data: dict, path: str, name: str) -> Destination:
    from urllib.parse import urlsplit

    for dicom_only in ("ae_title", "host", "port", "calling_ae_title"):
        if data.get(dicom_only) is not None:
            reader.problem(_join(path, dicom_only), "only for type: dicom (give 'url')")
    url = reader.string(data, path, "url", "") or ""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 0
    if url and (parts.scheme not in ("http", "https") or not parts.hostname or not port
                or parts.query or parts.fragment):
        reader.problem(_join(path, "url"), f"must be an http:// or https:// URL, got {url!r}")
    elif parts.username or parts.password:
        # Credentials in the URL would be logged with it: they go in 'auth'.
        reader.problem(_join(path, "url"), "must not hold credentials: use 'auth'")
    auth = None
    apath = _join(path, "auth")
    adata = reader.section(data.get("auth"), apath,
                           ("type", "username", "password_file", "token_file"))
    if adata:
        atype = reader.string(adata, apath, "type", None,
                              lambda v: None if v in ("basic", "bearer")
                              else f"must be basic or bearer, got {v!r}")
        need = {"basic": ("username", "password_file"), "bearer": ("token_file",)}.get(atype or "")
        for key in need or ("type",):
            if adata.get(key) is None:
                reader.problem(_join(apath, key), "is required" + ("" if need else
                               " (basic or bearer)"))
        for key in set(("username", "password_file", "token_file")) - set(need or ()):
            if adata.get(key) is not None:
                reader.problem(_join(apath, key), f"not used by auth type {atype}")
        auth = DestinationAuth(
            type=atype or "basic", username=reader.string(adata, apath, "username", "") or "",
            password_file=reader.path(adata, apath, "password_file", None, must_exist=True),
            token_file=reader.path(adata, apath, "token_file", None, must_exist=True))
    if parts.scheme == "http" and data.get("tls") is not None:
        reader.problem(_join(path, "tls"), "needs an https:// url")
    timeout = data.get("timeout")
    return Destination(
        name=name, ae_title="", host=parts.hostname or "", port=port, type="dicomweb",
        url=url.rstrip("/"), auth=auth,
        tls=_read_tls(reader, data.get("tls"), _join(path, "tls"), server=False),
        timeout=None if timeout is None else reader.number(data, path, "timeout", 60.0, 0.1),
    )


_RULE_KEYS = ("name", "match", "profile", "options", "faces", "destinations")


def _read_rule(reader: _Reader, value: Any, path: str, default_name: str,
               destinations: tuple[Destination, ...], allow_match: bool) -> Rule:
    data = reader.section(value, path, _RULE_KEYS if allow_match else
                          tuple(k for k in _RULE_KEYS if k != "match"))
    match = Match()
    if allow_match:
        mpath = _join(path, "match")
        mdata = reader.section(data.get("match"), mpath, (
            "calling_aet", "called_aet", "modality", "sop_class", "study_description"))
        pattern = None
        text = reader.string(mdata, mpath, "study_description", None)
        if text is not None:
            try:
                pattern = re.compile(text, re.IGNORECASE)
            except re.error as exc:
                reader.problem(_join(mpath, "study_description"), f"invalid regular expression: {exc}")
        match = Match(
            calling_aet=reader.strings(mdata, mpath, "calling_aet", _check_ae),
            called_aet=reader.strings(mdata, mpath, "called_aet", _check_ae),
            modality=tuple(m.upper() for m in reader.strings(mdata, mpath, "modality")),
            sop_class=tuple(_resolve_sop_class(s) or s for s in
                            reader.strings(mdata, mpath, "sop_class", _check_sop_class)),
            study_description=pattern,
        )
    known = {d.name for d in destinations}
    if "destinations" in data and data["destinations"] is not None:
        dests = reader.strings(data, path, "destinations",
                               lambda v: None if v in known else
                               f"unknown destination {v!r} (configured: {sorted(known) or 'none'})")
    else:
        dests = tuple(d.name for d in destinations)  # omitted: every configured destination
    faces = reader.string(data, path, "faces", None,
                          lambda v: None if v in FACE_METHODS else
                          f"must be one of {', '.join(FACE_METHODS)}, got {v!r}")
    return Rule(
        name=reader.string(data, path, "name", default_name) or default_name,
        match=match,
        profile=reader.string(data, path, "profile", "basic") or "basic",
        options=reader.strings(data, path, "options"),
        faces=faces,
        destinations=dests,
    )


_TOP_KEYS = ("listen", "state_dir", "key_file", "audit_log", "processing", "forward",
             "destinations", "rules", "default_rule", "retention", "log", "http")


def parse_config(data: Any, source: str = "<embedded default>",
                 base_dir: Path | None = None) -> NodeConfig:
    """Validate a parsed YAML document; relative paths are taken from base_dir."""
    from dicom_deid.header.keys import KEY_ENV, default_state_dir

    reader = _Reader(base_dir or Path.cwd())
    top = reader.section(data, "", _TOP_KEYS)
    if data is not None and not isinstance(data, dict):
        raise ConfigError(source, reader.problems)

    listen = _read_listen(reader, top.get("listen"))
    state_dir = reader.path(top, "", "state_dir", None) or default_state_dir()
    # $DICOM_DEID_KEY names the site key for the CLI and the node alike (header/keys.py).
    env_key = os.environ.get(KEY_ENV)
    key_file = (reader.path(top, "", "key_file", None)
                or (Path(env_key).expanduser() if env_key else state_dir / "site.key"))
    audit_log = reader.path(top, "", "audit_log", None) or state_dir / "audit.log"

    pdata = reader.section(top.get("processing"), "processing",
                           ("stable_seconds", "workers", "max_attempts", "job_timeout"))
    pd = ProcessingConfig()
    processing = ProcessingConfig(
        stable_seconds=reader.number(pdata, "processing", "stable_seconds", pd.stable_seconds, 0.0),
        workers=reader.integer(pdata, "processing", "workers", pd.workers, 1, 256),
        max_attempts=reader.integer(pdata, "processing", "max_attempts", pd.max_attempts, 1, 100),
        job_timeout=reader.number(pdata, "processing", "job_timeout", pd.job_timeout, 0.0),
    )

    fdata = reader.section(top.get("forward"), "forward", (
        "max_attempts", "initial_delay", "max_delay", "jitter", "timeout", "max_pdu",
        "associations"))
    fd = ForwardConfig()
    forward = ForwardConfig(
        max_attempts=reader.integer(fdata, "forward", "max_attempts", fd.max_attempts, 1, 10000),
        initial_delay=reader.number(fdata, "forward", "initial_delay", fd.initial_delay, 0.0),
        max_delay=reader.number(fdata, "forward", "max_delay", fd.max_delay, 0.0),
        jitter=reader.number(fdata, "forward", "jitter", fd.jitter, 0.0, 1.0),
        timeout=reader.number(fdata, "forward", "timeout", fd.timeout, 0.1),
        max_pdu=reader.integer(fdata, "forward", "max_pdu", fd.max_pdu, 0, 2**32 - 1),
        associations=reader.integer(fdata, "forward", "associations", fd.associations, 1, 64),
    )
    if forward.max_delay < forward.initial_delay:
        reader.problem("forward.max_delay",
                       f"must be >= forward.initial_delay ({forward.initial_delay:g}), "
                       f"got {forward.max_delay:g}")

    destinations = _read_destinations(reader, top.get("destinations"), listen.ae_title)

    rules: list[Rule] = []
    raw_rules = top.get("rules")
    if raw_rules is not None and not isinstance(raw_rules, list):
        reader.problem("rules", f"must be a list, got {_kind(raw_rules)}")
    elif raw_rules:
        for i, item in enumerate(raw_rules):
            rules.append(_read_rule(reader, item, f"rules[{i}]", f"rule-{i + 1}",
                                    destinations, allow_match=True))
        names = [r.name for r in rules]
        for i, name in enumerate(names):
            if name in names[:i]:
                reader.problem(f"rules[{i}].name", f"duplicate rule name {name!r}")

    if "default_rule" in top and top["default_rule"] is None:
        default_rule = None  # explicit null: what matches no rule is quarantined
    else:
        default_rule = _read_rule(reader, top.get("default_rule"), "default_rule", "default",
                                  destinations, allow_match=False)

    rdata = reader.section(top.get("retention"), "retention", ("keep_originals", "keep_outputs"))
    retention = RetentionConfig(
        keep_originals=reader.boolean(rdata, "retention", "keep_originals", False),
        keep_outputs=reader.boolean(rdata, "retention", "keep_outputs", False),
    )

    ldata = reader.section(top.get("log"), "log", ("level", "file", "max_bytes", "backups"))
    level = reader.string(ldata, "log", "level", "INFO",
                          lambda v: None if v.upper() in LOG_LEVELS else
                          f"must be one of {', '.join(LOG_LEVELS)}, got {v!r}")
    log = LogConfig(level=(level or "INFO").upper(), file=reader.path(ldata, "log", "file", None),
                    max_bytes=max(reader.size(ldata, "log", "max_bytes", LogConfig.max_bytes),
                                  64 * 1024),
                    backups=reader.integer(ldata, "log", "backups", LogConfig.backups, 1, 100))

    http = _read_http(reader, top.get("http"))

    if reader.problems:
        raise ConfigError(source, reader.problems)
    return NodeConfig(
        listen=listen, state_dir=state_dir, key_file=key_file, audit_log=audit_log,
        processing=processing, forward=forward, destinations=destinations, rules=tuple(rules),
        default_rule=default_rule, retention=retention, log=log, http=http, source=source,
    )


def _read_http(reader: _Reader, value: Any) -> HttpConfig:
    path = "http"
    data = reader.section(value, path, ("enabled", "host", "port", "token_file"))
    d = HttpConfig()
    host = reader.string(data, path, "host", d.host, _check_host) or d.host
    token_file = reader.path(data, path, "token_file", None, must_exist=True)
    if token_file is not None and token_file.is_file():
        text = token_file.read_text(encoding="utf-8", errors="replace").strip()
        if len(text) < 16:
            reader.problem(_join(path, "token_file"),
                           f"{token_file} must hold a token of at least 16 characters")
    enabled = reader.boolean(data, path, "enabled", d.enabled)
    if enabled and token_file is None and not _is_loopback(host):
        reader.problem(_join(path, "token_file"),
                       f"required when the HTTP endpoint listens on a non-loopback address "
                       f"({host}): /status and /metrics describe the node's work")
    return HttpConfig(enabled=enabled, host=host,
                      port=reader.integer(data, path, "port", d.port, 0, 65535),
                      token_file=token_file)


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
