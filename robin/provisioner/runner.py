"""Wires the provisioner together and runs it until stopped: four informers (StorageClasses, Namespaces,
PersistentVolumes, PersistentVolumeClaims) feed one work queue; worker threads drain it while this replica
leads; an event writer, a periodic resync and the metrics server run beside them."""
from __future__ import annotations

import dataclasses
import logging
import threading

from robin.client import ClientConfig, RobinClient
from robin.config import ProvisionerSettings
from robin.kube.client import Kube, load_api_client
from robin.provisioner import metrics
from robin.provisioner.controller import Controller
from robin.provisioner.events import EventRecorder
from robin.provisioner.informer import Informer
from robin.provisioner.leader import LeaderElector
from robin.provisioner.workqueue import WorkQueue

log = logging.getLogger(__name__)
COMPONENT = "robin-provisioner"


class Provisioner:
    def __init__(self, settings: ProvisionerSettings, client_config: ClientConfig):
        self.settings = settings
        self.stop_event = threading.Event()
        # One connection per worker, plus the four watches, events and leader election.
        self.kube = Kube(load_api_client(settings.kubeconfig, settings.workers + 8), settings.qps, settings.burst)
        self.robin = RobinClient(dataclasses.replace(client_config, pool_size=settings.workers + 2))
        self.queue = WorkQueue(settings.retry_base, settings.retry_max)
        self.recorder = EventRecorder(self.kube, COMPONENT, settings.identity, on_drop=metrics.EVENTS_DROPPED.inc)
        self.controller = Controller(settings, self.kube, self.robin, self.recorder, self.queue)
        self.elector = LeaderElector(self.kube, settings.lease_namespace, settings.lease_name, settings.identity,
                                     settings.lease_duration, settings.renew_deadline, settings.retry_period,
                                     self._leadership_changed) if settings.leader_elect else None
        self.informers = self._informers()
        self._threads: list[threading.Thread] = []
        self._metrics_server = None

    def _informers(self) -> list[Informer]:
        core, storage, c = self.kube.core, self.kube.storage, self.controller

        def informer(kind, api_version, method, on_change):
            return Informer(kind, api_version, method, self.kube, on_change, self.stop_event,
                            self.settings.watch_timeout, on_restart=self._watch_restarted)

        c.classes = informer("StorageClass", "storage.k8s.io/v1", storage.list_storage_class, c.on_class)
        c.namespaces = informer("Namespace", "v1", core.list_namespace, lambda *_: None)
        c.volumes = informer("PersistentVolume", "v1", core.list_persistent_volume, c.on_volume)
        c.claims = informer("PersistentVolumeClaim", "v1", core.list_persistent_volume_claim_for_all_namespaces,
                            c.on_claim)
        # Claims last: handling one needs its class, namespace and PV in the caches.
        return [c.classes, c.namespaces, c.volumes, c.claims]

    @staticmethod
    def _watch_restarted(kind: str, reason: str) -> None:
        metrics.WATCH_RESTARTS.labels(kind, reason).inc()

    def _leadership_changed(self, leading: bool) -> None:
        metrics.LEADER.set(1 if leading else 0)
        if leading:
            self.controller.resync()  # what happened while another replica led is looked at again

    def _start(self, name: str, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def run(self) -> None:
        """Blocks until stop(); returns once every thread has finished."""
        if self.settings.metrics_address:
            self._metrics_server = metrics.serve(self.settings.metrics_address)
        metrics.QUEUE_DEPTH.set_function(self.queue.depth)
        log.info("provisioner %s starting: %d workers, leader election %s", self.settings.identity,
                 self.settings.workers, "on" if self.elector else "off")
        self._start("events", self.recorder.run, self.stop_event)
        for informer in self.informers:
            self._start(f"informer-{informer.kind}", informer.run)
            while not informer.synced.wait(0.5):
                if self.stop_event.is_set():
                    return self._finish()
        for number in range(self.settings.workers):
            self._start(f"worker-{number}", self._work)
        self._start("resync", self._resync_periodically)
        if self.elector is None:
            self._leadership_changed(True)
            self.stop_event.wait()
        else:
            self.elector.run(self.stop_event)  # until stopped; then it gives up the lease
        self._finish()

    def _leading(self) -> bool:
        return self.elector is None or self.elector.leading.is_set()

    def _work(self) -> None:
        while not self.stop_event.is_set():
            if not self._leading():
                self.stop_event.wait(0.2)
                continue
            key = self.queue.get(timeout=0.5)
            if key is None:
                continue
            try:
                if self._leading():
                    self.controller.handle(key)
                else:
                    self.queue.add(key)  # for whoever leads next: after the resync, or us later
            except Exception:  # a bug must not kill the worker: log it and retry the key with backoff
                log.exception("unexpected error handling %s", key)
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)

    def _resync_periodically(self) -> None:
        while not self.stop_event.wait(self.settings.resync_interval):
            if self._leading():
                self.controller.resync()

    def stop(self) -> None:
        """Asks everything to end (from a signal handler, too); run() returns once it has. Repeatable."""
        self.stop_event.set()
        self.queue.shutdown()
        for informer in self.informers:
            informer.stop()

    def _finish(self) -> None:
        self.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        self.robin.close()
        self.kube.close()
        log.info("provisioner %s stopped", self.settings.identity)
