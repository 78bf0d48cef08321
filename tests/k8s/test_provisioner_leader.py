"""The provisioner's leader election and event recorder against the test Kubernetes API server (tests/kube_apiserver),
written and read through the official Python client."""
from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from robin.kube.client import Kube, load_api_client
from robin.provisioner import leader as leader_module
from robin.provisioner.events import EventRecorder
from robin.provisioner.leader import LeaderElector
from tests.kube_apiserver import KubeApiServer
from tests.support.net import eventually

NAMESPACE, LEASE = "default", "robin-provisioner"
# Short durations: a lost leader is noticed within a second of the electors' clock.
SHORT = {"lease_duration": 1.0, "renew_deadline": 0.7, "retry_period": 0.1}
# A lease nobody may take over by expiry within any test's deadline: a takeover then proves a release.
LONG = {"lease_duration": 60.0, "renew_deadline": 40.0, "retry_period": 0.1}
# How long the tests wait for what the electors do (they retry every retry_period of real time).
WAIT_S = 60


class Clock:
    """The electors' monotonic clock, moved only by the test: a lease expires and a renew deadline passes when the
    test says so, never because a loaded machine was slow to schedule a thread."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(leader_module, "time", fake)
    return fake


@pytest.fixture
def server():
    with KubeApiServer.running() as server:
        yield server


@pytest.fixture
def coordination(server):
    api_client = k8s_config.new_client_from_config(config_file=server.kubeconfig_path)
    try:
        yield k8s.CoordinationV1Api(api_client)
    finally:
        api_client.close()


@pytest.fixture
def core(server):
    api_client = k8s_config.new_client_from_config(config_file=server.kubeconfig_path)
    try:
        yield k8s.CoreV1Api(api_client)
    finally:
        api_client.close()


@pytest.fixture
def new_kube(server):
    made: list[Kube] = []

    def make() -> Kube:
        kube = Kube(load_api_client(server.kubeconfig_path, 4), qps=1000, burst=1000)
        made.append(kube)
        return kube

    yield make
    for kube in made:
        kube.close()


class Log:
    """What happened, in order: ("a", True) when a starts leading, ("a", False) when it stops, and the test's own
    markers. Records an overlap whenever a candidate starts leading while another still leads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.entries: list[tuple] = []
        self.leaders: set[str] = set()
        self.overlaps: list[tuple] = []

    def change(self, identity: str, leading: bool) -> None:
        with self._lock:
            if leading:
                if self.leaders - {identity}:
                    self.overlaps.append((identity, sorted(self.leaders)))
                self.leaders.add(identity)
            else:
                self.leaders.discard(identity)
            self.entries.append((identity, leading))

    def mark(self, what: str) -> None:
        with self._lock:
            self.entries.append(("test", what))

    def current(self) -> set[str]:
        with self._lock:
            return set(self.leaders)

    def snapshot(self) -> list[tuple]:
        with self._lock:
            return list(self.entries)


class Candidate:
    def __init__(self, kube: Kube, identity: str, log: Log, **durations):
        self.identity = identity
        self.elector = LeaderElector(kube, NAMESPACE, LEASE, identity, on_change=lambda leading: log.change(
            identity, leading), **durations)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.elector.run, args=(self.stop_event,), name=f"elector-{identity}",
                                       daemon=True)

    @property
    def leading(self) -> bool:
        return self.elector.leading.is_set()

    def start(self) -> Candidate:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        assert not self.thread.is_alive(), f"{self.identity}'s elector did not stop"


@pytest.fixture
def candidates(new_kube):
    """candidates(log, "a", "b", **durations) -> started Candidates, each with its own client; all stopped after."""
    started: list[Candidate] = []

    def start(log: Log, *identities: str, **durations) -> list[Candidate]:
        made = [Candidate(new_kube(), identity, log, **durations) for identity in identities]
        for candidate in made:
            started.append(candidate.start())
        return made

    yield start
    for candidate in started:
        candidate.stop_event.set()
    for candidate in started:
        candidate.thread.join(timeout=10)


def lease_spec(coordination) -> k8s.V1LeaseSpec:
    return coordination.read_namespaced_lease(LEASE, NAMESPACE).spec


def lease_history(server) -> list[tuple]:
    """(holderIdentity, leaseTransitions) of every version of the Lease the server stored, oldest first."""
    with server.store.lock:
        events = list(server.store.history)
    return [((e.object.get("spec") or {}).get("holderIdentity") or "", (e.object.get("spec") or {}).get(
        "leaseTransitions")) for e in events if e.object.get("kind") == "Lease" and e.type != "DELETED"]


def leaders(group: list[Candidate], log: Log) -> list[Candidate]:
    """The candidates leading, once each one's `leading` event and its on_change calls agree (on_change runs just
    after the event is set or cleared)."""
    leading = [c for c in group if c.leading]
    return leading if {c.identity for c in leading} == log.current() else []


def settled(group: list[Candidate], log: Log) -> bool:
    return {c.identity for c in group if c.leading} == log.current()


# --- leader election ---------------------------------------------------------------------------------------------

def test_a_single_candidate_leads_renews_and_releases_on_stop(candidates, coordination):
    log = Log()
    (a,) = candidates(log, "a", **SHORT)
    eventually(lambda: leaders([a], log) == [a], timeout=WAIT_S, what="a to lead")
    spec = lease_spec(coordination)
    assert spec.holder_identity == "a" and spec.lease_transitions == 0 and spec.lease_duration_seconds == 1
    first_renewal, acquired = spec.renew_time, spec.acquire_time
    eventually(lambda: lease_spec(coordination).renew_time != first_renewal, timeout=WAIT_S, what="a renewal")
    renewed = lease_spec(coordination)
    assert renewed.holder_identity == "a" and renewed.acquire_time == acquired and renewed.lease_transitions == 0
    a.stop()
    assert not a.leading
    assert log.snapshot() == [("a", True), ("a", False)]
    released = lease_spec(coordination)
    assert released.holder_identity in ("", None)
    assert released.lease_transitions == 0


def test_one_of_two_leads_and_the_other_takes_over_when_it_stops(server, candidates, coordination):
    log = Log()
    group = candidates(log, "a", "b", **LONG)
    eventually(lambda: len(leaders(group, log)) == 1, timeout=WAIT_S, what="a leader")
    (leader,) = leaders(group, log)
    (other,) = [c for c in group if c is not leader]
    assert lease_spec(coordination).holder_identity == leader.identity
    # The leader renews; the other sees a lease that keeps changing and never takes it.
    for _ in range(3):
        seen = lease_spec(coordination).renew_time
        eventually(lambda seen=seen: lease_spec(coordination).renew_time != seen, timeout=WAIT_S, what="a renewal")
    assert leaders(group, log) == [leader] and not other.leading
    assert lease_spec(coordination).lease_transitions == 0

    log.mark("stopping the leader")
    leader.stop()
    # The electors' clock stands still: only the release lets the other in.
    eventually(lambda: leaders(group, log) == [other], timeout=WAIT_S, what=f"{other.identity} to take over")
    assert log.snapshot() == [(leader.identity, True), ("test", "stopping the leader"), (leader.identity, False),
                              (other.identity, True)]
    assert log.overlaps == []
    spec = lease_spec(coordination)
    assert spec.holder_identity == other.identity
    assert spec.lease_transitions == 1
    holders = [holder for holder, _ in lease_history(server)]
    first_empty = holders.index("")  # the release ...
    assert set(holders[:first_empty]) == {leader.identity}
    assert set(holders[first_empty + 1:]) == {other.identity}  # ... then the other's takeover


def test_a_leader_that_cannot_renew_stops_leading(server, candidates, coordination, clock):
    log = Log()
    group = candidates(log, "a", "b", **SHORT)
    eventually(lambda: len(leaders(group, log)) == 1, timeout=WAIT_S, what="a leader")
    (leader,) = leaders(group, log)
    log.mark("faults on")
    server.faults.fail_requests(500, path_contains="leases")
    try:
        def stepped_down() -> bool:
            clock.advance(SHORT["retry_period"])  # time passes for the electors only while every renewal fails
            return not leader.leading and settled(group, log)

        eventually(stepped_down, timeout=WAIT_S, what="the leader to step down")
        assert log.current() == set()  # nobody can read the lease, so nobody else leads either
        failed = server.faults.failed
        eventually(lambda: server.faults.failed > failed + 4, timeout=WAIT_S, what="more failed lease requests")
        assert log.current() == set() and not any(c.leading for c in group)
    finally:
        log.mark("faults off")
        server.faults.clear()
    eventually(lambda: len(leaders(group, log)) == 1, timeout=WAIT_S, what="a leader again")
    (new_leader,) = leaders(group, log)
    assert log.snapshot()[:4] == [(leader.identity, True), ("test", "faults on"), (leader.identity, False),
                                  ("test", "faults off")]
    assert log.snapshot()[4] == (new_leader.identity, True)
    assert log.overlaps == []
    spec = lease_spec(coordination)
    assert spec.holder_identity == new_leader.identity
    assert spec.lease_transitions == (0 if new_leader is leader else 1)


def lease_reads(server, monkeypatch) -> list[int]:
    """[n]: how many GETs of the Lease the server has had so far, counted as they arrive."""
    reads = [0]
    check = server.faults.check

    def counting(method: str, path: str) -> None:
        if method == "GET" and path.endswith(f"/leases/{LEASE}"):
            reads[0] += 1
        check(method, path)

    monkeypatch.setattr(server.faults, "check", counting)
    return reads


def test_a_candidate_waits_while_another_holder_renews(server, candidates, coordination, clock, monkeypatch):
    now = datetime.now(UTC)
    coordination.create_namespaced_lease(NAMESPACE, k8s.V1Lease(
        metadata=k8s.V1ObjectMeta(name=LEASE),
        spec=k8s.V1LeaseSpec(holder_identity="elsewhere", lease_duration_seconds=1, acquire_time=now, renew_time=now,
                             lease_transitions=4)))
    reads = lease_reads(server, monkeypatch)
    log = Log()
    (c,) = candidates(log, "c", **SHORT)
    # The other holder, alive: renews the lease, c reads it, and then nine tenths of a lease duration pass, five
    # times over: four and a half lease durations while c keeps trying and never sees the lease go stale.
    for _ in range(5):
        lease = coordination.read_namespaced_lease(LEASE, NAMESPACE)
        lease.spec.renew_time = datetime.now(UTC)
        coordination.replace_namespaced_lease(LEASE, NAMESPACE, lease)
        seen = reads[0]
        eventually(lambda seen=seen: reads[0] > seen + 1, timeout=WAIT_S, what="c to read the renewed lease")
        clock.advance(0.9 * SHORT["lease_duration"])
    assert not c.leading and log.snapshot() == []
    log.mark("renewals stopped")
    assert lease_spec(coordination).holder_identity == "elsewhere"
    clock.advance(SHORT["lease_duration"])
    eventually(lambda: leaders([c], log) == [c], timeout=WAIT_S, what="c to take the abandoned lease")
    assert log.snapshot() == [("test", "renewals stopped"), ("c", True)]
    spec = lease_spec(coordination)
    assert spec.holder_identity == "c"
    assert spec.lease_transitions == 5


def test_lease_transitions_count_takeovers(candidates, coordination):
    log = Log()
    (a,) = candidates(log, "a", **LONG)
    eventually(lambda: leaders([a], log) == [a], timeout=WAIT_S, what="a to lead")
    identities = ["b", "c", "d"]
    previous = a
    for transitions, identity in enumerate(identities, start=1):
        (current,) = candidates(log, identity, **LONG)
        previous.stop()
        eventually(lambda current=current: leaders([current], log) == [current], timeout=WAIT_S,
                   what=f"{identity} to take over")
        spec = lease_spec(coordination)
        assert (spec.holder_identity, spec.lease_transitions) == (identity, transitions)
        previous = current
    assert [entry for entry in log.snapshot() if entry[1] is True] == [
        ("a", True), ("b", True), ("c", True), ("d", True)]
    assert log.overlaps == []


# --- events ------------------------------------------------------------------------------------------------------

def test_event_recorder_counts_repeats_and_separates_messages(new_kube, core):
    kube = new_kube()
    claim = kube.call(kube.core.create_namespaced_persistent_volume_claim, NAMESPACE, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    volume = {"apiVersion": "v1", "kind": "PersistentVolume",
              "metadata": {"name": "pvc-x", "uid": "3f1c6a0e-uid-of-the-pv"}}
    recorder = EventRecorder(kube, "robin-provisioner", "replica-1")
    stop = threading.Event()
    writer = threading.Thread(target=recorder.run, args=(stop,), daemon=True)
    writer.start()
    try:
        for _ in range(3):
            recorder.warning(claim, "ProvisioningFailed", "robin is unreachable")
        recorder.warning(claim, "ProvisioningFailed", "quota exceeded")
        recorder.normal(claim, "ProvisioningSucceeded", "robin is unreachable")
        recorder.normal(volume, "VolumeDeleted", "deleted rbd:team-a:pvc-x")
    finally:
        stop.set()
        writer.join(timeout=10)
    assert not writer.is_alive()

    events = core.list_namespaced_event(NAMESPACE).items
    by_key = {(e.type, e.reason, e.message): e for e in events}
    assert len(events) == 4 and len(by_key) == 4
    repeated = by_key[("Warning", "ProvisioningFailed", "robin is unreachable")]
    assert repeated.count == 3
    assert by_key[("Warning", "ProvisioningFailed", "quota exceeded")].count == 1
    assert by_key[("Normal", "ProvisioningSucceeded", "robin is unreachable")].count == 1
    meta = claim["metadata"]
    for key in (("Warning", "ProvisioningFailed", "robin is unreachable"), ("Warning", "ProvisioningFailed",
                                                                            "quota exceeded")):
        involved = by_key[key].involved_object
        assert (involved.kind, involved.name, involved.namespace, involved.uid) == (
            "PersistentVolumeClaim", "data", NAMESPACE, meta["uid"])
    assert repeated.metadata.namespace == NAMESPACE and repeated.metadata.name.startswith("data.")
    assert repeated.source.component == "robin-provisioner"
    assert repeated.reporting_component == "robin-provisioner" and repeated.reporting_instance == "replica-1"
    assert repeated.first_timestamp is not None and repeated.last_timestamp >= repeated.first_timestamp
    about_volume = by_key[("Normal", "VolumeDeleted", "deleted rbd:team-a:pvc-x")]  # cluster-scoped: in default
    assert (about_volume.involved_object.kind, about_volume.involved_object.name,
            about_volume.involved_object.namespace, about_volume.involved_object.uid) == (
        "PersistentVolume", "pvc-x", None, "3f1c6a0e-uid-of-the-pv")
