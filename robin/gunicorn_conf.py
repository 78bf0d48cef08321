"""gunicorn settings that must be code (hooks); the rest comes from `robin serve`'s flags."""
import gc
import sys

from prometheus_client import multiprocess

worker_class = "robin.gunicorn_worker.ThreadWorker"  # gthread, with fewer heartbeats
accesslog = None  # robin logs each request itself, as JSON


def post_worker_init(worker):
    # The app is loaded, and what it loaded (modules, classes, schemas, SQLAlchemy's mappers: some 130,000 objects
    # the collector tracks) lives as long as the worker. Frozen, a full collection no longer walks them: it took
    # about 90 ms of CPU holding the interpreter's lock, every request of the worker waiting (BENCHMARKS.md).
    gc.collect()
    gc.freeze()
    settings = worker.wsgi.config["ROBIN_SETTINGS"]
    # A request thread gives up the interpreter's lock for every database round trip, Ceph call and socket read,
    # and retakes it behind whichever thread runs Python for up to the switch interval (docs/operations.md).
    sys.setswitchinterval(settings.switch_interval_ms / 1000)
    # The purge and reconcile loop; only the worker holding the maintenance lock acts.
    from robin import maintenance

    maintenance.start(worker.wsgi)


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)
