"""The WSGI entry point gunicorn loads in each worker: `robin.wsgi:app`."""
from robin import create_app

app = create_app()
