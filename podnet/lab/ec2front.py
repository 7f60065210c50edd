"""The lab's EC2 API: moto's server behind a front that makes it behave like AWS where it does not.

Measured gaps of moto 5.2.5 that the front closes (every refusal is AWS's error code and text):
- instance-type limits: moto accepts any number of ENIs and addresses; the front refuses an
  attach past ``MaximumNetworkInterfaces`` (``AttachmentLimitExceeded``), a device index in use
  (``InvalidParameterValue``) and addresses past ``Ipv4AddressesPerInterface``
  (``PrivateIpAddressLimitExceeded``), with the limits from DescribeInstanceTypes;
- addresses: moto picks random ones (the subnet's network, router or an address in use
  included); the front picks the lowest free address of the subnet outside AWS's five reserved
  ones and passes it explicitly;
- Unassign of an ENI's primary address is refused (moto removes it);
- prefix delegation (``Ipv4PrefixCount``): moto ignores it silently; the front refuses it with
  ``UnsupportedOperation``, and podnet's ENI mode does not use it.
Every call is appended to ``ec2-calls.jsonl`` (action, parameters, answer) for tests to read.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

log = logging.getLogger("podnet.lab.ec2front")

RESERVED_HEAD = 4  # network, VPC router, DNS, future use
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # moto is on loopback
Params = list[tuple[str, str]]


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def error_xml(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{_escape(message)}</Message></Error></Errors>"
        "<RequestID>lab-ec2-front</RequestID></Response>"
    ).encode()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _get(params: Params, name: str) -> str | None:
    return next((v for k, v in params if k == name), None)


def _listed(params: Params, prefix: str) -> list[str]:
    return [v for k, v in params if k.startswith(prefix + ".")]


class Ec2Front:
    """Checks and rewrites calls for moto (``ec2``: a boto3 client straight to moto)."""

    def __init__(self, ec2: Any, calls_log: Path, on_change: Callable[[], None]) -> None:
        self.ec2 = ec2
        self.calls_log = calls_log
        self.on_change = on_change
        self.lock = threading.Lock()
        self._limits: dict[str, tuple[int, int]] = {}

    def limits(self, instance_type: str) -> tuple[int, int]:
        """(MaximumNetworkInterfaces, Ipv4AddressesPerInterface)."""
        if instance_type not in self._limits:
            info = self.ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"][0][
                "NetworkInfo"
            ]
            self._limits[instance_type] = (
                int(info["MaximumNetworkInterfaces"]),
                int(info["Ipv4AddressesPerInterface"]),
            )
        return self._limits[instance_type]

    def _eni(self, eni_id: str) -> dict[str, Any]:
        try:
            return self.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0]  # type: ignore[no-any-return]
        except Exception:
            raise Refused(
                "InvalidNetworkInterfaceID.NotFound", f"The networkInterface ID '{eni_id}' does not exist"
            ) from None

    def _instance(self, instance_id: str) -> dict[str, Any]:
        found = [
            i
            for r in self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
            for i in r["Instances"]
        ]
        return found[0]

    def _free_addresses(self, subnet_id: str, count: int) -> list[str]:
        subnet = self.ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]
        cidr = ipaddress.IPv4Network(subnet["CidrBlock"])
        used = {
            p["PrivateIpAddress"]
            for n in self.ec2.describe_network_interfaces(
                Filters=[{"Name": "subnet-id", "Values": [subnet_id]}]
            )["NetworkInterfaces"]
            for p in n.get("PrivateIpAddresses") or []
        }
        found = []
        for k in range(RESERVED_HEAD, cidr.num_addresses - 1):
            address = str(cidr.network_address + k)
            if address not in used:
                found.append(address)
                if len(found) == count:
                    return found
        raise Refused(
            "InsufficientFreeAddressesInSubnet",
            f"The specified subnet {subnet_id} has insufficient free addresses",
        )

    # ---- the checks ----------------------------------------------------------------------------

    def check(self, action: str, params: Params) -> Params:
        """The parameters to pass to moto, or ``Refused``."""
        if any(k.startswith(("Ipv4PrefixCount", "Ipv4Prefix")) for k, _ in params):
            raise Refused(
                "UnsupportedOperation",
                "prefix delegation (Ipv4PrefixCount, Ipv4Prefixes) is not available in this lab's EC2 "
                "(moto has none)",
            )
        handler = getattr(self, f"_check_{action}", None)
        return handler(params) if handler is not None else params  # type: ignore[no-any-return]

    def _check_CreateNetworkInterface(self, params: Params) -> Params:
        if _get(params, "PrivateIpAddress") is None:
            params = [
                *params,
                ("PrivateIpAddress", self._free_addresses(str(_get(params, "SubnetId")), 1)[0]),
            ]
        if _get(params, "SecondaryPrivateIpAddressCount"):
            raise Refused("UnsupportedOperation", "this lab's EC2 assigns secondary addresses with "
                          "AssignPrivateIpAddresses only")  # fmt: skip
        return params

    def _check_AttachNetworkInterface(self, params: Params) -> Params:
        instance = self._instance(str(_get(params, "InstanceId")))
        adapters, _ = self.limits(instance["InstanceType"])
        attached = self.ec2.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [instance["InstanceId"]]}]
        )["NetworkInterfaces"]
        index = int(_get(params, "DeviceIndex") or 0)
        if any(int(n["Attachment"]["DeviceIndex"]) == index for n in attached):
            iid = instance["InstanceId"]
            text = f"Instance '{iid}' already has an interface attached at device index '{index}'."
            raise Refused("InvalidParameterValue", text)
        if len(attached) >= adapters:
            kind = instance["InstanceType"]
            raise Refused(
                "AttachmentLimitExceeded", f"Interface count {len(attached) + 1} exceeds the limit for {kind}"
            )
        return params

    def _check_AssignPrivateIpAddresses(self, params: Params) -> Params:
        eni = self._eni(str(_get(params, "NetworkInterfaceId")))
        explicit = _listed(params, "PrivateIpAddress")
        count = int(_get(params, "SecondaryPrivateIpAddressCount") or 0) or len(explicit)
        attachment = eni.get("Attachment") or {}
        if attachment.get("InstanceId"):
            _, per_adapter = self.limits(self._instance(attachment["InstanceId"])["InstanceType"])
            if len(eni.get("PrivateIpAddresses") or []) + count > per_adapter:
                raise Refused(
                    "PrivateIpAddressLimitExceeded", "Number of private addresses will exceed limit."
                )
        if explicit:
            return params
        picked = self._free_addresses(eni["SubnetId"], count)
        kept = [(k, v) for k, v in params if k != "SecondaryPrivateIpAddressCount"]
        return kept + [(f"PrivateIpAddress.{i + 1}", a) for i, a in enumerate(picked)]

    def _check_UnassignPrivateIpAddresses(self, params: Params) -> Params:
        eni = self._eni(str(_get(params, "NetworkInterfaceId")))
        if eni["PrivateIpAddress"] in _listed(params, "PrivateIpAddress"):
            raise Refused(
                "InvalidParameterValue", "The primary IP address of an interface cannot be unassigned."
            )
        return params

    # ---- recording -----------------------------------------------------------------------------

    def record(self, action: str, params: Params, status: int, code: str = "") -> None:
        shown = {
            k: v for k, v in params if k not in ("Action", "Version") and not k.startswith("TagSpecification")
        }
        entry = {"time": time.time(), "action": action, "params": shown, "status": status, "code": code}
        with open(self.calls_log, "a") as f:
            f.write(json.dumps(entry) + "\n")


def serve(front: Ec2Front, backend: str, address: tuple[str, int]) -> ThreadingHTTPServer:
    """The front's HTTP server (started in a thread): checks, then forwards to moto at ``backend``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_GET(self) -> None:
            self._reply(200, b"ok", "text/plain")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            params = parse_qsl(body, keep_blank_values=True)
            action = _get(params, "Action") or ""
            with front.lock:
                try:
                    params = front.check(action, params)
                except Refused as exc:
                    front.record(action, params, 400, exc.code)
                    self._reply(400, error_xml(exc.code, exc.message), "text/xml")
                    return
                status, answer = _forward(backend, self.path, urlencode(params).encode(), self.headers)
                code = "" if status < 400 else _code_of(answer)
                front.record(action, params, status, code)
            if status < 400 and not action.startswith("Describe"):
                front.on_change()
            self._reply(status, answer, "text/xml")

        def _reply(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(address, Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="ec2-front", daemon=True).start()
    return server


def _forward(backend: str, path: str, body: bytes, headers: Any) -> tuple[int, bytes]:
    skip = {"host", "content-length", "connection"}
    kept = {k: v for k, v in headers.items() if k.lower() not in skip}
    request = urllib.request.Request(backend.rstrip("/") + path, data=body, headers=kept, method="POST")
    try:
        with _OPENER.open(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _code_of(answer: bytes) -> str:
    text = answer.decode(errors="replace")
    start = text.find("<Code>")
    return text[start + 6 : text.find("</Code>")] if start >= 0 else "?"
