"""The lab's certificate authority for etcd's mutual TLS (``openssl`` from Debian's package).

Under ``<lab dir>/pki/``: ``ca.crt``/``ca.key``; one certificate per etcd member (server and
peer, with the member's address and 127.0.0.1 as IP SANs, usable as a client too for /health);
one client certificate per agent (CN = the node's name), one for the operator and one for the
lab's own tools (``podnet status``, tests). Keys are 0600; the directory 0700. Certificates are
made once per lab and reused by ``lab up`` (idempotent); ``lab down`` removes them with the lab.
The same layout works on a real cluster: docs/security.md shows the commands.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from podnet.lab import state as st
from podnet.store.client import TlsFiles

DAYS = "825"


class PkiError(RuntimeError):
    """A certificate could not be made; the message carries openssl's words."""


def pki_dir(lab: str) -> Path:
    return st.lab_dir(lab) / "pki"


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise PkiError("openssl not found: install the Debian package openssl")
    res = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise PkiError(f"openssl {args[0]} failed: {res.stderr.strip()[-400:]}")


def ensure_ca(lab: str) -> Path:
    d = pki_dir(lab)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not (d / "ca.crt").exists():
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", "ca.key", "-out", "ca.crt", "-days", DAYS, "-subj", f"/CN=podnet lab {lab} CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip
        os.chmod(d / "ca.key", 0o600)
    return d


def ensure_cert(
    lab: str,
    name: str,
    ips: tuple[str, ...] = (),
    server: bool = False,
    dns: tuple[str, ...] = (),
    org: str = "",
) -> TlsFiles:
    """The certificate ``<name>.crt`` signed by the lab's CA (made once), as TLS files. ``org``
    becomes the subject's O (Kubernetes reads it as the user's group, e.g. system:masters)."""
    d = ensure_ca(lab)
    cert, key = d / f"{name}.crt", d / f"{name}.key"
    if not cert.exists():
        usage = "serverAuth,clientAuth" if server else "clientAuth"
        ext = d / f"{name}.ext"
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                 f"extendedKeyUsage={usage}"]  # fmt: skip
        sans = [*(f"IP:{ip}" for ip in ips), *(f"DNS:{n}" for n in dns)]
        if sans:
            lines.append("subjectAltName=" + ",".join(sans))
        ext.write_text("\n".join(lines) + "\n")
        subject = f"/CN={name}" + (f"/O={org}" if org else "")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", key.name, "-out", f"{name}.csr", "-subj", subject, cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", cert.name, "-days", DAYS, "-extfile", ext.name, cwd=d)  # fmt: skip
        os.chmod(key, 0o600)
        (d / f"{name}.csr").unlink()
        ext.unlink()
    return TlsFiles(ca=str(d / "ca.crt"), cert=str(cert), key=str(key))


def ensure_signing_key(lab: str, name: str) -> tuple[Path, Path]:
    """An RSA key pair ``<name>.key``/``<name>.pub`` (the API server signs service-account
    tokens with it), made once."""
    d = ensure_ca(lab)
    key, pub = d / f"{name}.key", d / f"{name}.pub"
    if not pub.exists():
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key.name, cwd=d)
        os.chmod(key, 0o600)
        _openssl("pkey", "-in", key.name, "-pubout", "-out", pub.name, cwd=d)
    return key, pub


def client_tls(lab: str, who: str, make: bool = True) -> TlsFiles:
    """A client certificate of the lab (an agent by node name, ``operator``, or ``lab`` tools);
    ``make=False`` only names its files (a configuration checked before the lab exists)."""
    if not make:
        d, name = pki_dir(lab), f"client-{who}"
        return TlsFiles(ca=str(d / "ca.crt"), cert=str(d / f"{name}.crt"), key=str(d / f"{name}.key"))
    return ensure_cert(lab, f"client-{who}")
