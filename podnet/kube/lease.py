"""Leader election for the operator on ``datastore: kubernetes``: a coordination.k8s.io Lease
(``kube-system/podnet-operator``), as kube-controller-manager and Cilium's operator hold theirs.

Design fact: Kubernetes has no transaction over several objects, so two operators planning from
different snapshots could each give one CIDR to a different node (each write's precondition is
only that node's resourceVersion). A Deployment runs two for a moment at every rollout; only the
holder of the lease reconciles. The lease is judged by this process's own clock: a holder's
record that has not changed for ``duration`` seconds since this process first saw it is expired,
whatever the clocks of the two hosts say (the way client-go's leader election does it). A holder
that stops cleanly gives the lease up, so the next one takes over at its next round.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

log = logging.getLogger(__name__)

NAMESPACE, NAME = "kube-system", "podnet-operator"
CONFLICT, NOT_FOUND = 409, 404


class LeaderLease:
    def __init__(
        self,
        client: Client,
        identity: str,
        duration: int = 15,
        name: str = NAME,
        namespace: str = NAMESPACE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.identity = identity
        self.duration = duration
        self.name, self.namespace = name, namespace
        self._monotonic = monotonic
        self._seen: tuple[str, str] | None = None  # (holder, renewTime) of the last record seen
        self._seen_at = 0.0
        self.leading = False
        self._told: bool | None = None  # what the log last said: leading, standing by, or nothing yet

    def held(self) -> bool:
        """Take or renew the lease; True while this process holds it (raises on API outages)."""
        try:
            lease = self.client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code != NOT_FOUND:
                raise
            return self._changed(self._create())
        spec = lease.spec or LeaseSpec()
        holder = spec.holderIdentity or ""
        record = (holder, str(spec.renewTime or ""))
        now = self._monotonic()
        if record != self._seen:
            self._seen, self._seen_at = record, now
        duration = spec.leaseDurationSeconds or self.duration
        if holder and holder != self.identity and now - self._seen_at < duration:
            return self._changed(False, holder)
        taking = holder != self.identity
        stamp = _now()
        lease.spec = LeaseSpec(
            holderIdentity=self.identity,
            leaseDurationSeconds=self.duration,
            acquireTime=stamp if taking else spec.acquireTime,
            renewTime=stamp,
            leaseTransitions=(spec.leaseTransitions or 0) + (1 if taking and holder else 0),
        )
        try:
            self.client.replace(lease)  # with the resourceVersion read: a rival's write wins
        except ApiError as exc:
            if exc.status.code not in (CONFLICT, NOT_FOUND):
                raise
            return self._changed(False, holder)
        return self._changed(True)

    def _create(self) -> bool:
        stamp = _now()
        spec = LeaseSpec(
            holderIdentity=self.identity,
            leaseDurationSeconds=self.duration,
            acquireTime=stamp,
            renewTime=stamp,
            leaseTransitions=0,
        )
        try:
            self.client.create(
                Lease(metadata=ObjectMeta(name=self.name, namespace=self.namespace), spec=spec)
            )
        except ApiError as exc:
            if exc.status.code != CONFLICT:
                raise
            return False
        return True

    def _changed(self, leading: bool, holder: str = "") -> bool:
        if leading != self._told:  # the first answer too: a standby says so at once
            self._told = leading
            if leading:
                log.info("holding the lease %s/%s as %s: this operator reconciles", self.namespace,
                         self.name, self.identity)  # fmt: skip
            else:
                log.info(
                    "lease %s/%s is held by %s: standing by", self.namespace, self.name, holder or "another"
                )
        self.leading = leading
        return leading

    def release(self) -> None:
        """Give the lease up if this process holds it (a clean stop), so a standby takes over now."""
        if not self.leading:
            return
        try:
            lease = self.client.get(Lease, self.name, namespace=self.namespace)
            if lease.spec is not None and lease.spec.holderIdentity == self.identity:
                lease.spec.holderIdentity = None
                lease.spec.renewTime = None
                self.client.replace(lease)
        except ApiError as exc:
            log.warning("cannot give up the lease %s/%s: %s", self.namespace, self.name, exc.status.message)
        self.leading = False
        self._told = None


def _now() -> datetime.datetime:
    """Now, never on a whole second: lightkube writes a whole second without its fraction, which
    the API server's MicroTime does not parse."""
    now = datetime.datetime.now(datetime.UTC)
    return now.replace(microsecond=now.microsecond or 1)
