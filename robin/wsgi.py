"""The WSGI entry point gunicorn loads in each worker: `robin.wsgi:app`."""
from robin import create_app, log
from robin.config import Settings

settings = Settings.from_env()
# A worker is a fresh interpreter (robin serve execs gunicorn): set up the log lines here.
log.configure(settings.log_level, settings.log_format)
app = create_app(settings)
