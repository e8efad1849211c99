"""DICOMweb STOW-RS (PS3.18 10.5): POST multipart/related; type="application/dicom".

Each request carries a batch of one study's files, streamed from the outbox as written
(no decoding), to `{url}/studies`. The answer is read per instance: the Store Instances
Response's ReferencedSOPSequence (stored) and FailedSOPSequence (refused, with a
FailureReason), in DICOM JSON or XML, so that a partly refused batch is recorded send by
send, exactly as C-STORE statuses are. Credentials are read from their files at each
request (they can be rotated without a restart) and never appear in a log or a reason.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3

from dicom_deid.config import Destination, NodeConfig
from dicom_deid.errors import DeidError
from dicom_deid.node.journal import DueSend
from dicom_deid.node.logs import short_reason
from dicom_deid.node.senders import Outcome, client_ssl_context

MAX_INSTANCES = 100  # per request
MAX_BYTES = 256 * 2**20  # per request (a larger file goes alone)
_CHUNK = 1 << 20

_REFERENCED = "00081199"  # ReferencedSOPSequence
_FAILED = "00081198"  # FailedSOPSequence
_SOP_INSTANCE = "00081155"  # ReferencedSOPInstanceUID
_FAILURE_REASON = "00081197"  # FailureReason


@dataclass(frozen=True)
class StowResponse:
    """What the archive said about each SOP instance of a request."""

    stored: set[str]
    failed: dict[str, int | None]  # SOP instance UID -> FailureReason


def parse_stow_response(body: bytes, content_type: str) -> StowResponse | None:
    """The Store Instances Response, from DICOM JSON or XML; None when there is none."""
    text = body.strip()
    if not text:
        return None
    if "xml" in content_type or text.startswith(b"<"):
        return _parse_xml(text)
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, list):  # some archives wrap the one dataset in a list
        data = data[0] if data and isinstance(data[0], dict) else {}
    if not isinstance(data, dict):
        return None

    def items(tag: str) -> list[dict[str, Any]]:
        value = data.get(tag) or {}
        return [i for i in (value.get("Value") or []) if isinstance(i, dict)]

    def first(item: dict[str, Any], tag: str) -> Any:
        values = (item.get(tag) or {}).get("Value") or [None]
        return values[0]

    stored = {str(first(i, _SOP_INSTANCE)) for i in items(_REFERENCED) if first(i, _SOP_INSTANCE)}
    failed: dict[str, int | None] = {}
    for item in items(_FAILED):
        uid = first(item, _SOP_INSTANCE)
        if uid:
            reason = first(item, _FAILURE_REASON)
            failed[str(uid)] = int(reason) if isinstance(reason, int | float) else None
    return StowResponse(stored, failed)


def _parse_xml(text: bytes) -> StowResponse | None:
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(text)  # noqa: S314 - expat refuses external entities
    except ET.ParseError:
        return None
    if root.tag.rsplit("}", 1)[-1] != "NativeDicomModel":
        return None  # a proxy's error page, not a Store Instances Response

    def attr(parent: ET.Element, tag: str) -> ET.Element | None:
        for el in parent:
            if el.tag.rsplit("}", 1)[-1] == "DicomAttribute" and el.get("tag", "").upper() == tag:
                return el
        return None

    def value(parent: ET.Element, tag: str) -> str | None:
        el = attr(parent, tag)
        if el is None:
            return None
        for child in el:
            if child.tag.rsplit("}", 1)[-1] == "Value" and child.text:
                return child.text.strip()
        return None

    def items(tag: str) -> list[ET.Element]:
        el = attr(root, tag)
        return [] if el is None else [c for c in el if c.tag.rsplit("}", 1)[-1] == "Item"]

    stored = {u for i in items(_REFERENCED) if (u := value(i, _SOP_INSTANCE))}
    failed: dict[str, int | None] = {}
    for item in items(_FAILED):
        uid = value(item, _SOP_INSTANCE)
        if uid:
            reason = value(item, _FAILURE_REASON)
            failed[uid] = int(reason) if reason and reason.isdigit() else None
    return StowResponse(stored, failed)


class _MultipartBody:
    """multipart/related body streamed from files, with its length known in advance."""

    def __init__(self, files: list[Path], boundary: str):
        self.parts: list[bytes | Path] = []
        head = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode()
        for path in files:
            self.parts += [head, path, b"\r\n"]
        self.parts.append(f"--{boundary}--\r\n".encode())
        self.length = sum(len(p) if isinstance(p, bytes) else p.stat().st_size
                          for p in self.parts)

    def __iter__(self) -> Iterator[bytes]:
        for part in self.parts:
            if isinstance(part, bytes):
                yield part
                continue
            with open(part, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    yield chunk


def _sop_instance_uid(path: Path) -> str:
    from pydicom.filereader import read_file_meta_info

    return str(read_file_meta_info(path).MediaStorageSOPInstanceUID)


class StowRsSender:
    """STOW-RS to `{url}/studies`, over http or https, with basic or bearer auth."""

    def __init__(self, config: NodeConfig, destination: Destination, stop: threading.Event):
        self.config = config
        self.dest = destination
        self.stop_event = stop
        timeout = destination.timeout or config.forward.timeout
        tls = client_ssl_context(destination)
        kwargs: dict[str, Any] = {}
        if tls is not None:
            kwargs = {"ssl_context": tls,
                      "assert_hostname": None if tls.check_hostname else False}
        # No retries or redirects here: the forwarder's policy retries, and a redirect
        # would carry the credentials to another server.
        self.http = urllib3.PoolManager(
            num_pools=2, maxsize=1, retries=False,
            timeout=urllib3.Timeout(connect=min(timeout, 30.0), read=timeout), **kwargs)

    def close(self) -> None:
        self.http.clear()

    def batches(self, sends: list[DueSend]) -> list[list[DueSend]]:
        batches: list[list[DueSend]] = []
        size = 0
        for send in sends:
            path = self.config.state_dir / send.path
            length = path.stat().st_size if path.is_file() else 0
            if not batches or len(batches[-1]) >= MAX_INSTANCES or size + length > MAX_BYTES:
                batches.append([])
                size = 0
            batches[-1].append(send)
            size += length
        return batches

    def _headers(self, boundary: str, length: int) -> dict[str, str]:
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
            "Content-Length": str(length),
        }
        auth = self.dest.auth
        if auth is None:
            return headers
        where = f"destination {self.dest.name}: cannot read its "
        try:
            if auth.type == "bearer":
                assert auth.token_file is not None
                token = auth.token_file.read_text(encoding="utf-8").strip()
                headers["Authorization"] = f"Bearer {token}"
            else:
                assert auth.password_file is not None
                password = auth.password_file.read_text(encoding="utf-8").rstrip("\r\n")
                headers.update(urllib3.make_headers(basic_auth=f"{auth.username}:{password}"))
        except OSError as exc:
            kind = "token_file" if auth.type == "bearer" else "password_file"
            raise _CredentialError(f"{where}auth.{kind} ({exc.strerror or exc})") from None
        return headers

    def deliver(self, batch: list[DueSend], outcome: Outcome) -> int:
        files: list[Path] = []
        uids: dict[str, DueSend] = {}
        for send in batch:
            path = self.config.state_dir / send.path
            try:
                uid = _sop_instance_uid(path)
            except FileNotFoundError:
                outcome.failed([send], f"de-identified file {path.name} is missing from the outbox")
                continue
            except Exception as exc:
                outcome.failed([send], f"cannot read {path.name}: {short_reason(exc)}")
                continue
            files.append(path)
            uids[uid] = send
        if not files:
            return 0
        boundary = f"dicom-deid-{uuid.uuid4().hex}"
        body = _MultipartBody(files, boundary)
        sends = list(uids.values())
        try:
            headers = self._headers(boundary, body.length)
        except _CredentialError as exc:
            outcome.failed(sends, str(exc))
            return 0
        where = f"{self.dest.url}/studies"
        try:
            response = self.http.request("POST", where, body=iter(body), headers=headers,
                                         redirect=False, chunked=False, preload_content=True)
        except urllib3.exceptions.HTTPError as exc:
            outcome.failed(sends, f"cannot reach {where}: {_transport_reason(exc)}")
            return 0
        status = response.status
        answer = parse_stow_response(response.data or b"",
                                     response.headers.get("Content-Type", ""))
        http_reason = f"HTTP {status} {response.reason or ''}".strip()
        if status in (401, 403):
            outcome.failed(sends, f"{http_reason} from {where}: check the auth of "
                                  f"destination {self.dest.name}")
            return 0
        if status not in (200, 202, 409) and not (200 <= status < 300):
            outcome.failed(sends, f"{http_reason} from {where}")
            return 0
        delivered = 0
        for uid, send in uids.items():
            if answer is not None and uid in answer.failed:
                code = answer.failed[uid]
                detail = f"FailureReason 0x{code:04X}" if code is not None else "no reason given"
                outcome.failed([send], f"archive refused it ({http_reason}, {detail})")
            elif (answer is not None and uid in answer.stored) or (
                    status == 200 and (answer is None or not answer.stored)):
                # 200 means every instance was stored (PS3.18 Table 10.5.3-1), also when
                # the archive sends no per-instance list.
                outcome.sent(send)
                delivered += 1
            else:
                outcome.failed([send], f"archive did not confirm it ({http_reason})")
        return delivered


class _CredentialError(DeidError):
    """A credential file of the destination cannot be read (names the key, not the secret)."""


def _transport_reason(exc: Exception) -> str:
    """Why a request failed, without the URL's query or any header."""
    reason = getattr(exc, "reason", None) or exc
    text = type(reason).__name__
    if isinstance(reason, urllib3.exceptions.NewConnectionError) or "refused" in str(reason).lower():
        return "connection refused"
    if isinstance(reason, urllib3.exceptions.TimeoutError | TimeoutError):
        return "timed out"
    if "SSL" in text or "ssl" in str(reason).lower():
        return f"TLS failed: {short_reason(reason)}"
    return short_reason(reason if isinstance(reason, Exception) else exc)
