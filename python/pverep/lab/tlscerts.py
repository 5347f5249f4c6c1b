"""A PVE-style certificate set for the fake API: cluster CA plus one certificate per node.

Same places as on PVE: CA at ``/etc/pve/pve-root-ca.pem`` (key in ``/etc/pve/priv``), node
certificate at ``/etc/pve/nodes/<node>/pve-ssl.{pem,key}``. Made with the ``openssl`` command
(a Debian package the Makefile installs) so no crypto library is needed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import ssl
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pverep.paths import Paths


def _openssl(args: Sequence[str]) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def ensure_ca(paths: Paths) -> tuple[Path, Path]:
    """Create the cluster CA once; concurrent callers converge on one (link is atomic)."""
    cert = paths.etc_pve / "pve-root-ca.pem"
    key = paths.etc_pve / "priv" / "pve-root-ca.key"
    if cert.exists() and key.exists():
        return cert, key
    key.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=paths.etc_pve) as tmp:
        tkey, tcert = Path(tmp, "ca.key"), Path(tmp, "ca.pem")
        _openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(tkey)])
        os.chmod(tkey, 0o600)
        _openssl(
            [
                "req",
                "-x509",
                "-new",
                "-key",
                str(tkey),
                "-days",
                "30",
                "-sha256",
                "-subj",
                "/CN=Fake Proxmox Virtual Environment CA (pverep lab)",
                "-out",
                str(tcert),
            ]
        )
        try:
            os.link(tkey, key)
            os.link(tcert, cert)
        except FileExistsError:
            pass
    return cert, key


def ensure_node_cert(paths: Paths, node: str, addresses: Sequence[str] = ()) -> tuple[Path, Path]:
    """The node's TLS certificate, signed by the cluster CA, valid for its name and addresses."""
    ca_cert, ca_key = ensure_ca(paths)
    node_dir = paths.node_dir(node)
    cert, key = node_dir / "pve-ssl.pem", node_dir / "pve-ssl.key"
    if cert.exists() and key.exists():
        return cert, key
    node_dir.mkdir(parents=True, exist_ok=True)
    sans = [f"DNS:{node}", "DNS:localhost"]
    for addr in ("127.0.0.1", "::1", *addresses):
        try:
            sans.append(f"IP:{ipaddress.ip_address(addr)}")
        except ValueError:
            sans.append(f"DNS:{addr}")
    with tempfile.TemporaryDirectory(dir=node_dir) as tmp:
        tkey, tcsr, tcert = Path(tmp, "k"), Path(tmp, "csr"), Path(tmp, "c")
        ext = Path(tmp, "ext")
        ext.write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage=serverAuth\nsubjectAltName={','.join(dict.fromkeys(sans))}\n",
            encoding="ascii",
        )
        _openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(tkey)])
        os.chmod(tkey, 0o600)
        _openssl(["req", "-new", "-key", str(tkey), "-subj", f"/CN={node}", "-out", str(tcsr)])
        _openssl(
            [
                "x509",
                "-req",
                "-in",
                str(tcsr),
                "-CA",
                str(ca_cert),
                "-CAkey",
                str(ca_key),
                "-CAcreateserial",
                "-days",
                "30",
                "-sha256",
                "-extfile",
                str(ext),
                "-out",
                str(tcert),
            ]
        )
        os.replace(tkey, key)
        os.replace(tcert, cert)
    return cert, key


def fingerprint(cert: Path) -> str:
    """SHA-256 fingerprint in PVE's ``AA:BB:…`` form (as ``/nodes`` reports it)."""
    der = ssl.PEM_cert_to_DER_cert(cert.read_text(encoding="ascii"))
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
