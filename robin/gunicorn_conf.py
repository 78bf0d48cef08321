"""gunicorn settings that must be code (hooks); the rest comes from `robin serve`'s flags."""
from prometheus_client import multiprocess

worker_class = "gthread"
accesslog = None  # robin logs each request itself, as JSON


def post_worker_init(worker):
    # The purge and reconcile loop; only the worker holding the maintenance lock acts.
    from robin import maintenance

    maintenance.start(worker.wsgi)


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)
