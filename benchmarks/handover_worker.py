"""robin serve's worker without its linger (robin/gunicorn_worker.py, LINGER_S = 0): every kept-alive connection
goes back to gthread's poller between two requests, as robin serve's did before. The `before` side of
benchmarks/stack_split.py and of `benchmarks/load.py --worker-classes robin,benchmarks.handover_worker.ThreadWorker`.
"""
from robin import gunicorn_worker


class ThreadWorker(gunicorn_worker.ThreadWorker):
    linger_s = 0
