"""The group options that choose the cluster backend (``--api …``), merged with pverep.conf and
the ``PVEREP_API*`` environment by pverep.apiconfig. Secrets are only ever named by file."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from pverep.apiconfig import BACKENDS, ApiSettings, resolve
from pverep.paths import Paths

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("--api", "host", {"metavar": "HOST[:PORT]", "help": "Use the Proxmox API at this endpoint."}),
    ("--api-backend", "backend", {"type": click.Choice(BACKENDS), "help": "Cluster backend."}),
    ("--api-token", "token", {"metavar": "USER@REALM!NAME", "help": "API token id."}),
    ("--api-user", "user", {"metavar": "USER@REALM", "help": "User for password login."}),
    (
        "--api-secret-file",
        "secret_file",
        {"metavar": "FILE", "help": "File (mode 0600) holding the token value or password."},
    ),
    ("--api-ca-file", "ca_file", {"metavar": "PEM", "help": "CA to verify the API's TLS cert."}),
    (
        "--api-fingerprint",
        "fingerprint",
        {"metavar": "SHA256", "help": "Pin the API's TLS certificate (AA:BB:… form)."},
    ),
    ("--api-timeout", "timeout", {"type": float, "metavar": "SEC", "help": "API timeout (30)."}),
]


def api_options(func: F) -> F:
    for flag, dest, kwargs in reversed(_OPTIONS):
        func = click.option(flag, f"api_{dest}", default=None, **kwargs)(func)
    return func


def resolve_api_settings(paths: Paths, given: Mapping[str, Any]) -> ApiSettings:
    cli = {k[len("api_") :]: v for k, v in given.items() if k.startswith("api_")}
    return resolve(paths.pverep_conf, os.environ, cli)
