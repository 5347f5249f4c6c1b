"""The API backend of :class:`~pverep.cluster.base.Cluster`: the Proxmox REST API via proxmoxer.

The only module that imports proxmoxer. It smooths over proxmoxer's known quirks so callers see
one behaviour whatever the transport (https, or ``pvesh`` through the local/openssh backends):

* booleans go out as ``1``/``0`` (PVE's HTTP validator rejects ``True``);
* a ``ResourceException`` with ``exit_code == 0`` (pvesh wrote a warning to stderr but
  succeeded) is a success: its ``content`` is the answer;
* ``{'errors': ''}`` (a ``null`` result over the CLI backends) means ``None``, while any other
  ``{'errors': …}`` from the https serializer means the body was not JSON (malformed answer);
* 595/596 mean the node that had to answer is offline;
* every transport failure (auth, TLS, connect, timeout) becomes one ClusterError line that names
  the cause; a rejected ticket is renewed once by logging in again.
"""

from __future__ import annotations

import ast
import importlib
import json
import logging
import math
import re
import subprocess
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

import proxmoxer
import requests
import requests.adapters
from proxmoxer import AuthenticationError, ProxmoxAPI, ResourceException

from pverep.apiconfig import ApiSettings
from pverep.cluster.base import (
    ClusterError,
    GuestConfig,
    GuestLocation,
    GuestType,
    Member,
    NodeOfflineError,
    NotFoundError,
    normalise_pending_delete,
)
from pverep.config.jobs import Job
from pverep.config.state import JobState
from pverep.config.storage import StorageConfig, StorageDef
from pverep.guests import GuestConfig as ParsedConfig
from pverep.schedule import JobStatus

# proxmoxer logs POST data (passwords, tickets) at INFO: never let that through.
for _name in ("proxmoxer", "proxmoxer.core", "proxmoxer.backends.https"):
    logging.getLogger(_name).setLevel(logging.WARNING)

Json = Any


class ApiAuthError(ClusterError):
    """The API refused our credentials."""


class ApiConnectionError(ClusterError):
    """The API endpoint could not be reached (refused, unreachable, timeout, TLS)."""


class MalformedAnswerError(ClusterError):
    """The API answered something that is not what Proxmox sends."""


def _wire(value: object) -> object:
    """PVE wants booleans as 1/0 over HTTP; lists as comma-separated strings."""
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(v) for v in value)
    return value


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "yes", "on", "true")
    return bool(value)


class _PinnedAdapter(requests.adapters.HTTPAdapter):
    """Accept exactly the server certificate with this SHA-256 fingerprint (PVE's pinning)."""

    def __init__(self, fingerprint: str) -> None:
        self._fingerprint = fingerprint.replace(":", "").lower()
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_fingerprint"] = self._fingerprint
        super().init_poolmanager(*args, **kwargs)


def connect(settings: ApiSettings) -> ProxmoxAPI:
    """A proxmoxer client for ``settings`` (https/local/openssh); errors become ClusterError."""
    timeout = settings.timeout
    try:
        if settings.backend == "local":
            return ProxmoxAPI(backend="local", timeout=timeout)
        if settings.backend == "openssh":
            wrapper = _openssh_wrapper()
            try:
                return ProxmoxAPI(
                    settings.host_port,
                    backend="openssh",
                    user=settings.ssh_user,
                    port=settings.ssh_port,
                    identity_file=settings.identity_file,
                    # openssh_wrapper arms signal.alarm() with it, which takes whole seconds
                    timeout=max(1, math.ceil(timeout)),
                )
            except wrapper.SSHError as err:
                raise ClusterError(f"API configuration: {_text(err)}") from None
        verify: bool | str = settings.verify
        if settings.ca_file:
            verify = settings.ca_file
        if settings.fingerprint:
            verify = False  # the chain is not checked; the pinned adapter checks the key
        secret = settings.read_secret()
        kwargs: dict[str, Any] = {"verify_ssl": verify, "timeout": timeout}
        if settings.token:
            user, name = settings.token_parts()
            kwargs.update(user=user, token_name=name, token_value=secret)
        else:
            kwargs.update(user=settings.user, password=secret)
        api = ProxmoxAPI(settings.host_port, backend="https", **kwargs)
        if settings.fingerprint:
            session = api._store["session"]
            session.mount("https://", _PinnedAdapter(settings.fingerprint))
        return api
    except AuthenticationError as err:
        raise ApiAuthError(_auth_message(settings, str(err))) from None
    except requests.exceptions.RequestException as err:
        raise _transport_error(settings, err) from None
    except NotImplementedError as err:
        raise ClusterError(f"API configuration: {err}") from None


def _openssh_wrapper() -> ModuleType:
    """The module proxmoxer's openssh backend needs, imported here first: proxmoxer itself
    would ``sys.exit(1)`` without it. Its ``import pipes`` warns (and fails on Python 3.13)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return importlib.import_module("openssh_wrapper")
    except ImportError as err:
        raise ClusterError(
            f"the openssh API backend needs the Python module 'openssh_wrapper' ({err})"
        ) from None


def _ssh_errors() -> tuple[type[BaseException], ...]:
    """openssh_wrapper.SSHError if that backend was loaded (it is optional)."""
    error = getattr(sys.modules.get("openssh_wrapper"), "SSHError", None)
    return (error,) if isinstance(error, type) and issubclass(error, BaseException) else ()


def _text(err: BaseException) -> str:
    raw = err.args[0] if err.args else ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return text.strip()


#: What the ssh client itself says when it cannot get a session (vs. pvesh's own errors).
_SSH_CLIENT_FAILURE = re.compile(
    r"^(ssh: |Permission denied|Host key verification failed|Connection (closed|reset|timed)"
    r"|kex_exchange_identification|banner exchange|SSH connect timeout)"
)
_PVESH_STATUS = re.compile(r"^(\d{3}) ")


def _content(err: ResourceException) -> str:
    """The text of a ResourceException. The openssh backend hands proxmoxer pvesh's output as
    bytes, which proxmoxer turns into their repr (``"b'…'"``) on the way: undo that."""
    content = err.content
    if isinstance(content, bytes):
        return content.decode("utf-8", "replace")
    text = str(content or "")
    if re.fullmatch(r"b(['\"]).*\1", text, re.DOTALL):
        try:
            raw = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(raw, bytes):
            return raw.decode("utf-8", "replace")
    return text


def _auth_message(settings: ApiSettings, detail: str) -> str:
    who = settings.token or settings.user or "?"
    code = detail.rsplit("code: ", 1)[-1] if "code: " in detail else ""
    suffix = f" (HTTP {code})" if code else ""
    return f"API authentication failed for '{who}' at {settings.host_port}{suffix}"


def _transport_error(settings: ApiSettings, err: Exception) -> ClusterError:
    where = settings.host_port or "localhost"
    if isinstance(err, requests.exceptions.SSLError):
        text = str(err)
        if "Fingerprints did not match" in text:
            return ApiConnectionError(
                f"TLS certificate of {where} does not match the pinned fingerprint"
            )
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            detail = "hostname mismatch" if "match" in text.lower() else "untrusted certificate"
            return ApiConnectionError(f"TLS verification of {where} failed ({detail})")
        return ApiConnectionError(f"TLS handshake with {where} failed")
    if isinstance(err, requests.exceptions.Timeout):
        return ApiConnectionError(f"API request to {where} timed out after {settings.timeout:g} s")
    if isinstance(err, requests.exceptions.ConnectionError):
        text = str(err)
        for needle, why in (
            ("Connection refused", "connection refused"),
            ("No route to host", "no route to host"),
            ("Name or service not known", "unknown host name"),
            ("Temporary failure in name resolution", "host name does not resolve"),
            ("Network is unreachable", "network unreachable"),
        ):
            if needle in text:
                return ApiConnectionError(f"cannot reach API at {where}: {why}")
        return ApiConnectionError(f"cannot reach API at {where}")
    return ApiConnectionError(f"API request to {where} failed: {type(err).__name__}")


class ApiCluster:
    """Cluster discovery and job control through the Proxmox API."""

    def __init__(
        self,
        settings: ApiSettings,
        client: ProxmoxAPI | None = None,
        *,
        connector: Callable[[ApiSettings], ProxmoxAPI] = connect,
    ) -> None:
        self.settings = settings
        self._connector = connector
        self._client = client
        self._local_node: str | None = None

    # --- transport ---
    @property
    def client(self) -> ProxmoxAPI:
        if self._client is None:
            self._client = self._connector(self.settings)
        return self._client

    def call(self, method: str, path: str, **params: object) -> Json:
        """One API call with every proxmoxer quirk and failure mapped (see module doc)."""
        wire = {k: _wire(v) for k, v in params.items() if v is not None}
        try:
            try:
                return self._result(method, path, self._request(method, path, wire))
            except ResourceException as err:
                if err.status_code == 401 and self.settings.user and not self.settings.token:
                    # The ticket expired or the server forgot it: log in once more.
                    self._client = None
                    return self._result(method, path, self._request(method, path, wire))
                raise
        except ResourceException as err:
            return self._resource_error(method, path, err)
        except AuthenticationError as err:
            raise ApiAuthError(_auth_message(self.settings, str(err))) from None
        except requests.exceptions.RequestException as err:
            raise _transport_error(self.settings, err) from None
        except _ssh_errors() as err:
            return self._ssh_error(method, path, _text(err))
        except subprocess.TimeoutExpired:
            raise ApiConnectionError(
                f"pvesh did not answer {method} {path} within {self.settings.timeout:g} s"
            ) from None
        except FileNotFoundError as err:
            raise ClusterError(f"cannot run '{err.filename or 'pvesh'}': not installed") from None
        except (KeyError, TypeError, AttributeError):
            # proxmoxer's https serializer indexes ["data"] unguarded: a JSON body that is not
            # PVE's {"data": …} envelope surfaces as one of these.
            raise MalformedAnswerError(
                f"malformed API answer to {method} {path}: no data envelope"
            ) from None

    def _request(self, method: str, path: str, wire: dict[str, object]) -> Json:
        resource = self.client(path.strip("/"))
        if method == "GET":
            return resource.get(**wire)
        if method == "POST":
            return resource.post(**wire)
        if method == "PUT":
            return resource.put(**wire)
        if method == "DELETE":
            return resource.delete(**wire)
        raise ValueError(method)

    def _result(self, method: str, path: str, data: Json) -> Json:
        if isinstance(data, dict) and set(data) == {"errors"}:
            if data["errors"] in ("", b""):
                return None  # CLI backends: a null result
            raise MalformedAnswerError(f"malformed API answer to {method} {path}: not JSON")
        return data

    def _ssh_error(self, method: str, path: str, text: str) -> Json:
        """openssh_wrapper raises for every exit 255: ssh's own failures, and pvesh's errors
        (pvesh dies with 255 too). Tell them apart by the text and map pvesh's like the local
        backend's."""
        lines = text.splitlines() or [""]
        where = self.settings.host_port
        if lines[0] == "SSH connect timeout":
            raise ApiConnectionError(
                f"pvesh on {where} did not answer {method} {path} "
                f"within {self.settings.timeout:g} s"
            )
        if any(_SSH_CLIENT_FAILURE.match(line) for line in lines):
            raise ApiConnectionError(f"cannot reach {where} over ssh: {lines[-1]}")
        status = next((int(m[1]) for m in map(_PVESH_STATUS.match, lines) if m), 500)
        return self._resource_error(method, path, ResourceException(status, "", text, None, 255))

    def _resource_error(self, method: str, path: str, err: ResourceException) -> Json:
        if err.exit_code == 0:
            # pvesh succeeded but warned on stderr (proxmoxer #222): the answer is in content.
            try:
                return self._result(method, path, json.loads(_content(err) or "null"))
            except ValueError:
                raise MalformedAnswerError(
                    f"malformed API answer to {method} {path}: not JSON"
                ) from None
        code = err.status_code
        reason = (_content(err) or str(err.status_message or "")).strip().splitlines()
        text = reason[0] if reason else ""
        if text.startswith(f"{code} "):  # the CLI backends repeat the code in the text
            text = text[len(str(code)) + 1 :]
        if code in (595, 596):
            node = _node_of(path)
            what = f"node '{node}'" if node else "the node that must answer"
            raise NodeOfflineError(f"{what} is offline or unreachable ({code} {text})")
        if code == 401:
            who = self.settings.token or self.settings.user or "?"
            raise ApiAuthError(f"API authentication failed for '{who}': {text}")
        if code == 400 and isinstance(err.errors, dict) and err.errors:
            # the same line pvesr's CLIHandler prints for a parameter error
            detail = "; ".join(f"{k}: {str(v).strip()}" for k, v in sorted(err.errors.items()))
            raise ClusterError(f"400 {text} {detail}")
        if "does not exist" in text or text.startswith("no such"):
            raise NotFoundError(text)
        raise ClusterError(text or f"API error {code} on {method} {path}")

    # --- shape checks ---
    @staticmethod
    def _list(data: Json, path: str) -> list[dict[str, Json]]:
        if not isinstance(data, list) or not all(isinstance(i, dict) for i in data):
            raise MalformedAnswerError(f"malformed API answer to GET {path}: expected a list")
        return data

    @staticmethod
    def _dict(data: Json, path: str) -> dict[str, Json]:
        if not isinstance(data, dict):
            raise MalformedAnswerError(f"malformed API answer to GET {path}: expected an object")
        return data

    def _get_list(self, path: str, **params: object) -> list[dict[str, Json]]:
        return self._list(self.call("GET", path, **params), path)

    def _get_dict(self, path: str, **params: object) -> dict[str, Json]:
        return self._dict(self.call("GET", path, **params), path)

    # --- discovery ---
    def local_node(self) -> str:
        if self._local_node is None:
            for item in self._get_list("/cluster/status"):
                if item.get("type") == "node" and _truthy(item.get("local")):
                    self._local_node = _str(item, "name", "/cluster/status")
                    break
            else:
                raise MalformedAnswerError(
                    "malformed API answer to GET /cluster/status: no local node"
                )
        return self._local_node

    def members(self) -> dict[str, Member]:
        out = []
        items = self._get_list("/cluster/status")
        for item in items:
            if item.get("type") != "node":
                continue
            nodeid = item.get("nodeid")
            out.append(
                Member(
                    name=_str(item, "name", "/cluster/status"),
                    online=_truthy(item.get("online")),
                    ip=str(item["ip"]) if item.get("ip") else None,
                    id=int(nodeid)
                    if isinstance(nodeid, (int, str)) and str(nodeid).isdigit()
                    else None,
                )
            )
        if not any(i.get("type") == "cluster" for i in items):
            return {}  # outside a cluster PVE fakes one node entry; .members lists none
        return {m.name: m for m in sorted(out, key=lambda m: m.name)}

    def vmlist(self) -> dict[int, GuestLocation]:
        path = "/cluster/resources"
        out: dict[int, GuestLocation] = {}
        for item in self._get_list(path, type="vm"):
            vmtype = item.get("type")
            if vmtype not in ("qemu", "lxc"):
                continue
            try:
                vmid = int(item["vmid"])
            except (KeyError, TypeError, ValueError):
                raise MalformedAnswerError(
                    f"malformed API answer to GET {path}: bad vmid"
                ) from None
            out[vmid] = GuestLocation(vmid=vmid, node=_str(item, "node", path), type=vmtype)
        return dict(sorted(out.items()))

    def guest(self, vmid: int) -> GuestLocation:
        guest = self.vmlist().get(vmid)
        if guest is None:
            raise NotFoundError(f"Configuration file for guest '{vmid}' does not exist")
        return guest

    def guest_config(self, vmid: int, where: GuestLocation | None = None) -> GuestConfig:
        """current (``current=1``), pending (``/pending``) and every snapshot's config."""
        guest = where or self.guest(vmid)
        base = f"/nodes/{guest.node}/{guest.type}/{guest.vmid}"
        parsed = ParsedConfig(guest.type)
        parsed.current = _config_values(self._get_dict(f"{base}/config", current=True))
        delete: list[str] = []
        for item in self._get_list(f"{base}/pending"):
            key = _str(item, "key", f"{base}/pending")
            if "pending" in item and _scalar(item["pending"]):
                parsed.pending[key] = _value(item["pending"])
            if item.get("delete"):
                delete.append(("!" if str(item["delete"]) == "2" else "") + key)
        if delete:
            parsed.pending["delete"] = ",".join(delete)
        for item in self._get_list(f"{base}/snapshot"):
            name = _str(item, "name", f"{base}/snapshot")
            if name != "current":
                snap = self._get_dict(f"{base}/config", snapshot=name)
                parsed.snapshots[name] = _config_values(snap)
        normalise_pending_delete(parsed)
        return GuestConfig(guest=guest, config=parsed)

    def storages(self) -> StorageConfig:
        out: dict[str, StorageDef] = {}
        for item in self._get_list("/storage"):
            storeid = _str(item, "storage", "/storage")
            props = {
                k: _value(v)
                for k, v in item.items()
                if k not in ("storage", "type", "digest") and _scalar(v)
            }
            out[storeid] = StorageDef(storeid, _str(item, "type", "/storage"), props)
        return StorageConfig(out)

    def ha_status(self) -> list[dict[str, Json]]:
        return self._get_list("/cluster/ha/status/current")

    # --- replication jobs ---
    def jobs(self) -> list[Job]:
        items = self._get_list("/cluster/replication")
        return sorted((_job(i, "/cluster/replication") for i in items), key=lambda j: j.id)

    def job(self, jobid: str) -> tuple[Job, str]:
        path = f"/cluster/replication/{jobid}"
        item = self._get_dict(path)
        return _job(item, path), str(item.get("digest", ""))

    def create_job(self, job: Job) -> None:
        self.call(
            "POST",
            "/cluster/replication",
            id=job.id,
            type=job.type,
            target=job.target,
            schedule=job.schedule,
            rate=job.rate,
            comment=job.comment,
            disable=True if job.disable else None,
            remove_job=job.remove_job,
            source=job.source,
        )

    def update_job(
        self,
        jobid: str,
        changes: Mapping[str, str | float | bool],
        delete: Sequence[str] = (),
        digest: str | None = None,
    ) -> None:
        params: dict[str, object] = dict(changes)
        if delete:
            params["delete"] = list(delete)
        if digest:
            params["digest"] = digest
        self.call("PUT", f"/cluster/replication/{jobid}", **params)

    def delete_job(self, jobid: str, *, keep: bool = False, force: bool = False) -> None:
        self.call(
            "DELETE",
            f"/cluster/replication/{jobid}",
            keep=True if keep else None,
            force=True if force else None,
        )

    def replication_status(self, node: str, guest: int | None = None) -> list[JobStatus]:
        path = f"/nodes/{node}/replication"
        return [_job_status(i, path) for i in self._get_list(path, guest=guest)]

    def schedule_now(self, node: str, jobid: str) -> None:
        self.call("POST", f"/nodes/{node}/replication/{jobid}/schedule_now")


# --- conversions from Proxmox's JSON shapes ---


def _node_of(path: str) -> str | None:
    parts = path.strip("/").split("/")
    return parts[1] if len(parts) > 1 and parts[0] == "nodes" else None


def _str(item: Mapping[str, Json], key: str, path: str) -> str:
    value = item.get(key)
    if not isinstance(value, (str, int)) or isinstance(value, bool) or value == "":
        raise MalformedAnswerError(f"malformed API answer to GET {path}: no '{key}'")
    return str(value)


def _value(value: Json) -> str:
    """A config value as the file stores it (the API turns some into JSON numbers)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise MalformedAnswerError(f"malformed API answer: unexpected value {value!r}")


def _scalar(value: Json) -> bool:
    return isinstance(value, (str, int, float))


#: Keys the API adds to a config that pvesr's parser does not return: the digest, and the
#: description (the file's ``#`` comment lines, which the parser skips).
_NOT_IN_PARSED = frozenset({"digest", "description"})


def _config_values(data: Mapping[str, Json]) -> dict[str, str]:
    """A config section as ``guests.parse_guest_config`` gives it (raw ``lxc.*`` keys, which
    the API returns as a list of pairs, are left out as the parser does)."""
    return {
        k: _value(v)
        for k, v in data.items()
        if k not in _NOT_IN_PARSED and _scalar(v) and not k.startswith("lxc.")
    }


def _int(item: Mapping[str, Json], key: str, default: int = 0) -> int:
    value = item.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MalformedAnswerError(f"malformed API answer: '{key}' is not an integer") from None


def _job(item: Mapping[str, Json], path: str) -> Job:
    jobid = _str(item, "id", path)
    rate = item.get("rate")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float, str))):
        raise MalformedAnswerError(f"malformed API answer to GET {path}: bad rate")

    def opt(key: str) -> str | None:
        value = item.get(key)
        return None if value in (None, "") else str(value)

    return Job(
        id=jobid,
        target=_str(item, "target", path),
        type=str(item.get("type", "local")),
        schedule=opt("schedule"),
        rate=None if rate in (None, "") else _value(rate),
        comment=opt("comment"),
        disable=_truthy(item.get("disable", 0)),
        remove_job=opt("remove_job"),
        source=opt("source"),
    )


def _job_status(item: Mapping[str, Json], path: str) -> JobStatus:
    vmtype = item.get("vmtype")
    if vmtype not in ("qemu", "lxc"):
        raise MalformedAnswerError(f"malformed API answer to GET {path}: bad vmtype")
    typed: GuestType = vmtype
    duration = item.get("duration")
    try:
        duration_f = float(duration) if duration not in (None, "") else None
    except (TypeError, ValueError):
        raise MalformedAnswerError(f"malformed API answer to GET {path}: bad duration") from None
    error = item.get("error")
    state = JobState(
        last_sync=_int(item, "last_sync"),
        last_try=_int(item, "last_try"),
        fail_count=_int(item, "fail_count"),
        error=None if error in (None, "") else str(error),
        duration=duration_f,
        pid=_int(item, "pid") if item.get("pid") not in (None, "") else None,
    )
    return JobStatus(
        job=_job(item, path), state=state, vmtype=typed, next_sync=_int(item, "next_sync")
    )


__all__ = ["ApiCluster", "connect", "proxmoxer"]
