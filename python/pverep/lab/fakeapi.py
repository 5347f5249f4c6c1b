"""FakePveApi: a stand-in for the Proxmox VE REST API, served from a node's /etc/pve tree.

Proxmox's API server cannot run here, so the lab and the tests use this fake. It serves the
subset pverep uses under ``/api2/json`` with Proxmox's shapes: ``{"data": …}`` bodies, the
error text in the HTTP reason phrase, ``{"errors": {param: msg}}`` on 400, 401 for bad
credentials, 595 when the node a request must be proxied to is offline. Auth: API tokens
(``/etc/pve/priv/token.cfg``, lines ``user@realm!name secret``) and password tickets
(``/etc/pve/priv/fakeapi-shadow.cfg``, lines ``user@realm sha256hex``; a fake's own format).

The data comes from the files backend (``FilesCluster``) of the node the fake runs for, so the
fake reads exactly what pvesr reads; requests for another node's data go to that node's fake
(a peer in the same process, or over HTTPS as pveproxy does).

Fault injection (``FakePveApi.faults``) lets tests get malformed answers and offline nodes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pverep.cluster.base import (
    ClusterError,
    GuestConfig,
    NodeOfflineError,
    NotFoundError,
    status_view,
)
from pverep.cluster.files import FilesCluster
from pverep.config.jobs import Job
from pverep.errors import ParameterError, PverepError, ValidationError
from pverep.lab import tlscerts
from pverep.paths import Paths
from pverep.schedule import JobStatus

API_PREFIX = "/api2/json"
TICKET_LIFETIME = 7200
#: Config keys PVE's schema types as integers/booleans (JSON numbers in answers).
_INT_KEYS = frozenset(
    {"cores", "sockets", "onboot", "template", "snaptime", "cpuunits", "vmstate", "protection"}
)
_STORAGE_INT_KEYS = frozenset({"shared", "disable", "sparse", "mkdir", "is_mountpoint"})

JsonValue = Any


@dataclass
class Reply:
    """One HTTP answer: status, reason phrase, JSON body (or raw bytes for faults)."""

    status: int
    reason: str
    body: JsonValue = None
    raw: bytes | None = None

    @classmethod
    def ok(cls, data: JsonValue, **extra: JsonValue) -> Reply:
        return cls(200, "OK", {"data": data, **extra})

    @classmethod
    def error(cls, status: int, message: str, errors: Mapping[str, str] | None = None) -> Reply:
        body: dict[str, JsonValue] = {"data": None, "message": message + "\n"}
        if errors:
            body["errors"] = dict(errors)
        return cls(status, message, body)


class ApiError(Exception):
    """Raised inside handlers; becomes a Reply."""

    def __init__(self, status: int, message: str, errors: Mapping[str, str] | None = None):
        super().__init__(message)
        self.reply = Reply.error(status, message, errors)


@dataclass
class Request:
    method: str
    path: str  # below /api2/json, no trailing slash
    params: dict[str, str]
    headers: Mapping[str, str]
    cookies: Mapping[str, str] = field(default_factory=dict)
    #: pvesh on the node itself: runs as root@pam without credentials.
    trusted: bool = False


Peer = Callable[[Request], Reply]


def _bool_param(params: Mapping[str, str], key: str) -> bool:
    raw = params.get(key)
    if raw is None:
        return False
    if raw in ("1", "0"):
        return raw == "1"
    # Over HTTP PVE's schema validator accepts only 1/0 (proxmoxer sends str(True) = "True").
    raise ApiError(400, "Parameter verification failed.", {key: "type check ('boolean') failed"})


def _int_like(key: str, value: str, int_keys: frozenset[str]) -> JsonValue:
    if key in int_keys and re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


class FakePveApi:
    """The request dispatcher (no sockets): ``handle(Request) -> Reply``."""

    def __init__(
        self,
        paths: Paths,
        node: str,
        *,
        tokens: Mapping[str, str] | None = None,
        users: Mapping[str, str] | None = None,
        ticket_lifetime: int = TICKET_LIFETIME,
        peers: Mapping[str, Peer] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.paths = paths
        self.node = node
        self.cluster = FilesCluster(paths, node)
        self._tokens = dict(tokens or {})
        self._users = {u: hashlib.sha256(p.encode()).hexdigest() for u, p in (users or {}).items()}
        self.ticket_lifetime = ticket_lifetime
        self.peers: dict[str, Peer] = dict(peers or {})
        self.clock = clock
        self._secret = secrets.token_bytes(32)
        #: path regex -> fault: "garbage", "nodata", "shape", "offline", "null", "slow<s>", "500"
        self.faults: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []

    # --- auth ---
    def _token_secret(self, tokenid: str) -> str | None:
        if tokenid in self._tokens:
            return self._tokens[tokenid]
        path = self.paths.etc_pve / "priv" / "token.cfg"
        try:
            for line in path.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] == tokenid:
                    return parts[1]
        except FileNotFoundError:
            pass
        return None

    def _password_ok(self, user: str, password: str) -> bool:
        want = self._users.get(user)
        if want is None:
            path = self.paths.etc_pve / "priv" / "fakeapi-shadow.cfg"
            try:
                for line in path.read_text(encoding="utf-8").splitlines():
                    parts = line.split()
                    if len(parts) == 2 and parts[0] == user:
                        want = parts[1]
            except FileNotFoundError:
                pass
        got = hashlib.sha256(password.encode()).hexdigest()
        return want is not None and hmac.compare_digest(want, got)

    def _sign(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), "sha256").hexdigest()

    def make_ticket(self, user: str, issued: float | None = None) -> str:
        stamp = f"{int(self.clock() if issued is None else issued):08X}"
        body = f"PVE:{user}:{stamp}"
        return f"{body}::{self._sign(body)}"

    def _check_ticket(self, ticket: str) -> str | None:
        body, sep, sig = ticket.rpartition("::")
        if not sep or not hmac.compare_digest(self._sign(body), sig):
            return None
        parts = body.split(":")
        if len(parts) != 3:
            return None
        age = self.clock() - int(parts[2], 16)
        if age > self.ticket_lifetime:
            return None
        return parts[1]

    def _csrf(self, user: str) -> str:
        return self._sign("csrf:" + user)[:40]

    def authenticate(self, req: Request) -> str:
        """The user a request acts as, or an ApiError 401."""
        auth = req.headers.get("Authorization", "")
        if auth.startswith("PVEAPIToken="):
            tokenid, sep, value = auth[len("PVEAPIToken=") :].partition("=")
            want = self._token_secret(tokenid) if sep else None
            if want is None or not hmac.compare_digest(want, value):
                raise ApiError(401, "invalid token value!")
            return tokenid
        ticket = req.cookies.get("PVEAuthCookie")
        if not ticket:
            raise ApiError(401, "No ticket")
        user = self._check_ticket(ticket)
        if user is None:
            raise ApiError(401, "permission denied - invalid PVE ticket")
        if req.method != "GET" and req.headers.get("CSRFPreventionToken") != self._csrf(user):
            raise ApiError(401, "Permission check failed (invalid csrf token)")
        return user

    def login(self, req: Request) -> Reply:
        user = req.params.get("username", "")
        password = req.params.get("password", "")
        if "@" not in user:
            user += "@pam"
        # PVE also accepts a valid ticket as password: that is how clients renew it.
        if self._check_ticket(password) == user or self._password_ok(user, password):
            return Reply.ok(
                {
                    "username": user,
                    "ticket": self.make_ticket(user),
                    "CSRFPreventionToken": self._csrf(user),
                    "cap": {},
                }
            )
        raise ApiError(401, "authentication failure")

    # --- dispatch ---
    def handle(self, req: Request) -> Reply:
        self.requests.append((req.method, req.path))
        fault = next((f for pat, f in self.faults.items() if re.fullmatch(pat, req.path)), None)
        try:
            if req.method == "POST" and req.path == "/access/ticket":
                return self.login(req)
            if not req.trusted:
                self.authenticate(req)
            if fault is not None:
                return self._fault(fault)
            return self._route(req)
        except ApiError as err:
            return err.reply
        except NodeOfflineError as err:
            return Reply.error(595, str(err))
        except NotFoundError as err:
            return Reply.error(500, str(err))
        except ParameterError as err:
            return Reply.error(400, "Parameter verification failed.", {err.param: err.detail})
        except ValidationError as err:
            return Reply.error(400, "Parameter verification failed.", {"value": str(err)})
        except (ClusterError, PverepError) as err:
            return Reply.error(500, str(err).splitlines()[0] if str(err) else "error")

    @staticmethod
    def _fault(fault: str) -> Reply:
        if fault == "null":
            return Reply.ok(None)
        if fault.startswith("slow"):
            time.sleep(float(fault[4:] or 2))
            return Reply.ok(None)
        if fault == "garbage":
            return Reply(200, "OK", raw=b"<html>502 Bad Gateway</html>")
        if fault == "nodata":
            return Reply(200, "OK", {"success": 1})
        if fault == "shape":
            return Reply.ok("unexpected string")
        if fault == "offline":
            return Reply.error(595, "No route to host")
        return Reply.error(500, "internal error (injected)")

    def _route(self, req: Request) -> Reply:
        seg = [urllib.parse.unquote(s) for s in req.path.strip("/").split("/") if s]
        m, p = req.method, req.params
        if seg == ["version"] and m == "GET":
            return Reply.ok({"version": "8.2.0", "release": "8.2", "repoid": "fakeapi"})
        if seg[:1] == ["cluster"]:
            return self._cluster(seg[1:], m, p)
        if seg == ["nodes"] and m == "GET":
            return Reply.ok(self._nodes())
        if seg == ["storage"] and m == "GET":
            return Reply.ok([self._storage_item(s) for s in self.cluster.storages().storages])
        if len(seg) == 2 and seg[0] == "storage" and m == "GET":
            return Reply.ok(self._storage_item(seg[1], digest=True))
        if len(seg) >= 2 and seg[0] == "nodes":
            node = seg[1]
            if node != self.node:
                return self._proxy(node, req)
            return self._node(seg[2:], m, p)
        raise ApiError(501, f"Method '{m} /{'/'.join(seg)}' not implemented")

    def _proxy(self, node: str, req: Request) -> Reply:
        members = self.cluster.members()
        if node not in members:
            raise ApiError(
                500, f"hostname lookup '{node}' failed - failed to get address info for: {node}"
            )
        peer = self.peers.get(node)
        if not members[node].online or peer is None:
            raise ApiError(595, "No route to host")
        return peer(req)

    # --- /cluster ---
    def _cluster(self, seg: list[str], m: str, p: dict[str, str]) -> Reply:
        if seg == ["resources"] and m == "GET":
            return Reply.ok(self._resources(p.get("type")))
        if seg == ["status"] and m == "GET":
            return Reply.ok(self._cluster_status())
        if seg == ["ha", "status", "current"] and m == "GET":
            return Reply.ok(self.cluster.ha_status())
        if seg == ["replication"]:
            if m == "GET":
                return Reply.ok([self._job_item(j) for j in self.cluster.jobs()])
            if m == "POST":
                self.cluster.create_job(self._job_from_params(p))
                return Reply.ok(None)
        if len(seg) == 2 and seg[0] == "replication":
            jobid = seg[1]
            if m == "GET":
                job, digest = self.cluster.job(jobid)
                return Reply.ok(self._job_item(job, digest))
            if m == "PUT":
                changes: dict[str, str | float | bool] = {}
                for key in ("schedule", "comment", "remove_job", "source"):
                    if key in p:
                        changes[key] = p[key]
                if "rate" in p:
                    changes["rate"] = p["rate"]
                if "disable" in p:
                    changes["disable"] = _bool_param(p, "disable")
                if "target" in p:
                    changes["target"] = p["target"]
                delete = [k for k in re.split(r"[,;\s]+", p.get("delete", "")) if k]
                self.cluster.update_job(jobid, changes, delete, p.get("digest"))
                return Reply.ok(None)
            if m == "DELETE":
                keep, force = _bool_param(p, "keep"), _bool_param(p, "force")
                self.cluster.delete_job(jobid, keep=keep, force=force)
                return Reply.ok(None)
        raise ApiError(501, f"Method '{m} /cluster/{'/'.join(seg)}' not implemented")

    def _job_from_params(self, p: dict[str, str]) -> Job:
        missing = {
            k: "property is missing and it is not optional" for k in ("id", "target", "type")
        }
        for key in list(missing):
            if key in p:
                del missing[key]
        if missing:
            raise ApiError(400, "Parameter verification failed.", missing)
        if p["type"] != "local":
            raise ApiError(400, "Parameter verification failed.", {"type": "value 'x' not allowed"})
        rate = p.get("rate")
        return Job(
            id=p["id"],
            target=p["target"],
            schedule=p.get("schedule"),
            rate=rate,
            comment=p.get("comment"),
            disable=_bool_param(p, "disable"),
            remove_job=p.get("remove_job"),
            source=p.get("source"),
        )

    @staticmethod
    def _job_item(job: Job, digest: str | None = None) -> dict[str, JsonValue]:
        item = job.to_api()
        if digest is not None:
            item["digest"] = digest
        return item

    def _resources(self, rtype: str | None) -> list[dict[str, JsonValue]]:
        out: list[dict[str, JsonValue]] = []
        if rtype in (None, "vm"):
            for guest in self.cluster.vmlist().values():
                item: dict[str, JsonValue] = {
                    "id": f"{guest.type}/{guest.vmid}",
                    "vmid": guest.vmid,
                    "node": guest.node,
                    "type": guest.type,
                    "status": "unknown",
                }
                out.append(item)
        if rtype in (None, "node"):
            for mem in self.cluster.members().values():
                out.append(
                    {
                        "id": f"node/{mem.name}",
                        "node": mem.name,
                        "type": "node",
                        "status": "online" if mem.online else "offline",
                    }
                )
        if rtype in (None, "storage"):
            for mem in self.cluster.members().values():
                for st in self.cluster.storages().storages.values():
                    if st.nodes is not None and mem.name not in st.nodes:
                        continue
                    out.append(
                        {
                            "id": f"storage/{mem.name}/{st.storeid}",
                            "storage": st.storeid,
                            "node": mem.name,
                            "type": "storage",
                            "plugintype": st.type,
                            "shared": int(st.shared),
                            "status": "available" if mem.online else "unknown",
                        }
                    )
        return out

    def _cluster_status(self) -> list[dict[str, JsonValue]]:
        members = list(self.cluster.members().values())
        online = sum(m.online for m in members)
        out: list[dict[str, JsonValue]] = [
            {
                "type": "cluster",
                "id": "cluster",
                "name": "pverep-lab",
                "nodes": len(members),
                "quorate": int(online * 2 > len(members)),
                "version": len(members),
            }
        ]
        for mem in members:
            item: dict[str, JsonValue] = {
                "type": "node",
                "id": f"node/{mem.name}",
                "name": mem.name,
                "online": int(mem.online),
                "local": int(mem.name == self.node),
                "level": "",
            }
            if mem.id is not None:
                item["nodeid"] = mem.id
            if mem.ip is not None:
                item["ip"] = mem.ip
            out.append(item)
        return out

    def _nodes(self) -> list[dict[str, JsonValue]]:
        out = []
        for mem in self.cluster.members().values():
            item: dict[str, JsonValue] = {
                "node": mem.name,
                "id": f"node/{mem.name}",
                "type": "node",
                "status": "online" if mem.online else "offline",
                "level": "",
            }
            cert = self.paths.node_dir(mem.name) / "pve-ssl.pem"
            if cert.exists():
                item["ssl_fingerprint"] = tlscerts.fingerprint(cert)
            out.append(item)
        return out

    def _storage_item(self, storeid: str, digest: bool = False) -> dict[str, JsonValue]:
        st = self.cluster.storages().get(storeid)  # raises "storage 'x' does not exist"
        item: dict[str, JsonValue] = {"storage": st.storeid, "type": st.type}
        for key, value in st.properties.items():
            item[key] = _int_like(key, value, _STORAGE_INT_KEYS)
        if digest:
            item["digest"] = _digest(self.paths.storage_cfg.read_text(encoding="utf-8"))
        return item

    # --- /nodes/{this node} ---
    def _node(self, seg: list[str], m: str, p: dict[str, str]) -> Reply:
        if len(seg) >= 2 and seg[0] in ("qemu", "lxc") and seg[1].isdigit() and m == "GET":
            conf = self._guest_here(seg[0], int(seg[1]))
            rest = seg[2:]
            if rest == ["config"]:
                return Reply.ok(self._config(conf, p))
            if rest == ["pending"]:
                return Reply.ok(self._pending(conf))
            if rest == ["snapshot"]:
                return Reply.ok(self._snapshots(conf))
        if seg == ["replication"] and m == "GET":
            guest = int(p["guest"]) if p.get("guest", "").isdigit() else None
            return Reply.ok(
                [self._status_item(s) for s in self.cluster.replication_status(self.node, guest)]
            )
        if len(seg) == 3 and seg[0] == "replication":
            jobid, what = seg[1], seg[2]
            if what == "status" and m == "GET":
                for st in self.cluster.replication_status(self.node):
                    if st.job.id == jobid:
                        return Reply.ok(self._status_item(st))
                raise ApiError(500, f"no such replication job '{jobid}'")
            if what == "schedule_now" and m == "POST":
                self.cluster.schedule_now(self.node, jobid)
                return Reply.ok(None)
            if what == "log" and m == "GET":
                return self._job_log(jobid, p)
        if len(seg) == 4 and seg[0] == "storage" and seg[2] == "content" and m == "GET":
            return Reply.ok(self._content(seg[1], p))
        raise ApiError(501, f"Method '{m} /nodes/{self.node}/{'/'.join(seg)}' not implemented")

    def _guest_here(self, vmtype: str, vmid: int) -> GuestConfig:
        guest = self.cluster.vmlist().get(vmid)
        if guest is None or guest.node != self.node or guest.type != vmtype:
            sub = "qemu-server" if vmtype == "qemu" else "lxc"
            raise ApiError(
                500, f"Configuration file 'nodes/{self.node}/{sub}/{vmid}.conf' does not exist"
            )
        return self.cluster.guest_config(vmid)

    def _values(self, section: Mapping[str, str]) -> dict[str, JsonValue]:
        return {k: _int_like(k, v, _INT_KEYS) for k, v in section.items()}

    def _config(self, conf: GuestConfig, p: Mapping[str, str]) -> dict[str, JsonValue]:
        parsed = conf.config
        snapname = p.get("snapshot")
        if snapname is not None:
            snap = parsed.snapshots.get(snapname)
            if snap is None:
                raise ApiError(500, f"snapshot '{snapname}' does not exist")
            return self._values(snap)
        values = dict(parsed.current)
        if not _bool_param(p, "current"):
            for key, value in parsed.pending.items():
                if key == "delete":
                    for gone in value.split(","):
                        values.pop(gone.lstrip("!"), None)
                else:
                    values[key] = value
        out = self._values(values)
        out["digest"] = _digest(self.cluster.guest_config_text(conf.guest))
        return out

    def _pending(self, conf: GuestConfig) -> list[dict[str, JsonValue]]:
        current, pending = conf.config.current, dict(conf.config.pending)
        deleted = {
            k.lstrip("!"): 2 if k.startswith("!") else 1
            for k in pending.pop("delete", "").split(",")
            if k
        }
        out: list[dict[str, JsonValue]] = []
        for key in sorted(set(current) | set(pending) | set(deleted)):
            item: dict[str, JsonValue] = {"key": key}
            if key in current:
                item["value"] = _int_like(key, current[key], _INT_KEYS)
            if key in pending:
                item["pending"] = _int_like(key, pending[key], _INT_KEYS)
            if key in deleted:
                item["delete"] = deleted[key]
            out.append(item)
        return out

    def _snapshots(self, conf: GuestConfig) -> list[dict[str, JsonValue]]:
        out: list[dict[str, JsonValue]] = []
        for name, snap in conf.config.snapshots.items():
            item: dict[str, JsonValue] = {"name": name}
            for key in ("snaptime", "parent", "vmstate"):
                if key in snap:
                    item[key] = _int_like(key, snap[key], _INT_KEYS)
            out.append(item)
        current: dict[str, JsonValue] = {"name": "current", "description": "You are here!"}
        if "parent" in conf.config.current:
            current["parent"] = conf.config.current["parent"]
        out.append(current)
        return out

    @staticmethod
    def _status_item(st: JobStatus) -> dict[str, JsonValue]:
        # what PVE's job_status items carry: config, vmtype, next_sync and the state fields
        return {k: v for k, v in status_view(st).items() if v is not None}

    def _job_log(self, jobid: str, p: Mapping[str, str]) -> Reply:
        self.cluster.job(jobid)  # the job must exist
        try:
            lines = self.paths.job_log(jobid).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError as err:
            lines = [f"unable to open file - {err.strerror}"]
        if not lines:
            lines = ["no content"]
        start = int(p.get("start", "0") or 0)
        limit = int(p.get("limit", "50") or 0)
        chosen = lines[start : start + limit] if limit else lines[start:]
        return Reply.ok(
            [{"n": start + i + 1, "t": t} for i, t in enumerate(chosen)], total=len(lines)
        )

    def _content(self, storeid: str, p: Mapping[str, str]) -> list[dict[str, JsonValue]]:
        """Volumes of guests on this node that live on ``storeid`` (from their configs)."""
        if storeid not in self.cluster.storages().storages:
            raise ApiError(500, f"storage '{storeid}' does not exist")
        vmid = int(p["vmid"]) if p.get("vmid", "").isdigit() else None
        seen: dict[str, int] = {}
        for guest in self.cluster.vmlist().values():
            if guest.node != self.node or (vmid is not None and guest.vmid != vmid):
                continue
            conf = self.cluster.guest_config(guest.vmid)
            for section in (
                conf.config.current,
                conf.config.pending,
                *conf.config.snapshots.values(),
            ):
                for value in section.values():
                    volid = value.split(",", 1)[0]
                    if volid.startswith(f"{storeid}:"):
                        seen.setdefault(volid, guest.vmid)
        return [
            {"volid": v, "vmid": g, "format": "raw", "content": "images"}
            for v, g in sorted(seen.items())
        ]


# --- HTTPS server ---


def https_peer(url: str, ca_file: Path, timeout: float = 10.0) -> Peer:
    """A peer reached over HTTPS (pveproxy-style forwarding with the caller's credentials)."""
    ctx = ssl.create_default_context(cafile=str(ca_file))

    def forward(req: Request) -> Reply:
        query = urllib.parse.urlencode(req.params)
        body = None
        full = f"{url}{API_PREFIX}{req.path}"
        if req.method in ("GET", "DELETE") and query:
            full += "?" + query
        elif query:
            body = query.encode()
        headers = {
            k: v for k, v in req.headers.items() if k in ("Authorization", "CSRFPreventionToken")
        }
        if req.cookies.get("PVEAuthCookie"):
            headers["Cookie"] = f"PVEAuthCookie={req.cookies['PVEAuthCookie']}"
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        r = urllib.request.Request(full, data=body, method=req.method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(r, context=ctx, timeout=timeout) as resp:  # noqa: S310
                return Reply(resp.status, resp.reason, raw=resp.read())
        except urllib.error.HTTPError as err:
            return Reply(err.code, str(err.reason), raw=err.read())
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            return Reply.error(595, str(getattr(reason, "strerror", None) or reason))

    return forward


class _Handler(BaseHTTPRequestHandler):
    server: FakePveApiServer
    protocol_version = "HTTP/1.1"
    # One write per answer and no Nagle: otherwise delayed ACKs cost 40 ms per request.
    wbufsize = -1
    disable_nagle_algorithm = True
    server_version = "pve-api-daemon/3.0"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: tests and the lab read results, not access logs

    def _serve(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        params = {
            k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()
        }
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            body = self.rfile.read(length).decode("utf-8", "replace")
            ctype = self.headers.get("Content-Type", "")
            if ctype.startswith("application/json"):
                with contextlib.suppress(ValueError, AttributeError):
                    params.update({k: str(v) for k, v in json.loads(body).items()})
            else:
                params.update(
                    {
                        k: v[-1]
                        for k, v in urllib.parse.parse_qs(body, keep_blank_values=True).items()
                    }
                )
        cookies: dict[str, str] = {}
        for part in self.headers.get("Cookie", "").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                cookies[name] = urllib.parse.unquote(value)
        if not url.path.startswith(API_PREFIX):
            reply = Reply.error(501, "Not Implemented")
        else:
            path = url.path[len(API_PREFIX) :].rstrip("/") or "/"
            req = Request(self.command, path, params, dict(self.headers.items()), cookies)
            reply = self.server.api.handle(req)
        raw = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
        self.send_response(reply.status, reply.reason)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Cache-Control", "max-age=0")
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


class FakePveApiServer(ThreadingHTTPServer):
    """``FakePveApi`` over HTTPS on ``address``; ``start()`` serves from a daemon thread."""

    daemon_threads = True

    def __init__(self, api: FakePveApi, address: tuple[str, int], cert: Path, key: Path) -> None:
        super().__init__(address, _Handler)
        self.api = api
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.socket = ctx.wrap_socket(self.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"https://{host!s}:{port}"

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> FakePveApiServer:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="fakeapi", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(5)


def serve(
    paths: Paths,
    node: str,
    host: str = "127.0.0.1",
    port: int = 0,
    addresses: tuple[str, ...] = (),
    **kwargs: Any,
) -> FakePveApiServer:
    """Certificates (created if missing) + a started server for ``node``."""
    cert, key = tlscerts.ensure_node_cert(paths, node, (host, *addresses))
    return FakePveApiServer(FakePveApi(paths, node, **kwargs), (host, port), cert, key).start()


def main(argv: list[str] | None = None) -> None:
    """``python -m pverep.lab.fakeapi --node pve1 --listen 10.0.0.1:8006`` (runs in a lab node)."""
    ap = argparse.ArgumentParser(prog="pverep.lab.fakeapi", description=__doc__)
    ap.add_argument("--root", default="/")
    ap.add_argument("--node", required=True)
    ap.add_argument("--listen", default="0.0.0.0:8006")
    args = ap.parse_args(argv)
    paths = Paths.from_env(args.root)
    host, _, port = args.listen.rpartition(":")
    members = FilesCluster(paths, args.node).members().values()
    ca = tlscerts.ensure_ca(paths)[0]
    peers = {
        m.name: https_peer(f"https://{m.ip}:{port}", ca)
        for m in members
        if m.ip and m.name != args.node
    }
    own_ips = tuple(m.ip for m in members if m.name == args.node and m.ip)
    srv = serve(paths, args.node, host, int(port), own_ips, peers=peers)
    try:
        srv.serve_forever() if srv._thread is None else srv._thread.join()
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
