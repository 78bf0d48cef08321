"""Wayne's wire habits, adapted at the WSGI edge of `/v1` so that everything inside (authentication,
the JSON error handler, the audit hook) is exactly what `/api/v2` runs.

- Wayne authenticates with a `token: <token>` header; robin's authentication reads
  `Authorization: Bearer <token>`. The header is translated on /v1 paths only (an Authorization
  header already there wins), so that /api/v2 keeps a single way in.
- Wayne's client (beego's httplib `.Body()`) sends its JSON bodies without a Content-Type, which
  webargs would ignore, and the audit hook would not record.
- Wayne shows the body of any non-200 answer to a person as the error text: robin's JSON error
  becomes `<code>: <message>` in plain text, on one line of at most MAX_TEXT_CHARS. This happens after
  the audit hook has read the JSON error, so /v1 failures are audited with their error code like any other.
"""
from __future__ import annotations

from werkzeug.wrappers import Response

PREFIX = "/v1"
NO_TOKEN_MESSAGE = "send a robin API token in the 'token' header"
# Wayne shows the text to a person as one line. A message that carries a tool's output (a failed mount's stderr)
# is cut to this; robin logs every 5xx's whole message.
MAX_TEXT_CHARS = 300


class WayneProtocol:
    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        if not environ.get("PATH_INFO", "").startswith(PREFIX + "/"):
            return self.wsgi_app(environ, start_response)
        _adapt_request(environ)
        # Buffered: /v1 answers are small JSON documents, and an error must be rewritten whole.
        response = Response.from_app(self.wsgi_app, environ, buffered=True)
        if response.status_code != 200 and response.is_json:
            _as_text(response, has_credentials=bool(environ.get("HTTP_AUTHORIZATION")))
        return response(environ, start_response)


def _adapt_request(environ: dict) -> None:
    token = environ.get("HTTP_TOKEN", "").strip()
    if token and not environ.get("HTTP_AUTHORIZATION"):
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    has_body = environ.get("CONTENT_LENGTH") not in (None, "", "0") or environ.get("HTTP_TRANSFER_ENCODING")
    if has_body and not environ.get("CONTENT_TYPE"):
        environ["CONTENT_TYPE"] = "application/json"


def _as_text(response: Response, has_credentials: bool) -> None:
    """Robin's `{"error": {"code", "message"}}` as `code: message`; the stable code stays in front."""
    error = (response.get_json(silent=True) or {}).get("error") or {}
    code, message = error.get("code", "error"), error.get("message", "")
    if code == "unauthenticated" and not has_credentials:
        message = NO_TOKEN_MESSAGE  # robin's own text names only the Authorization header
    text = f"{code}: {' '.join(message.split())}"
    response.set_data(text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS - 3] + "...")
    response.mimetype = "text/plain"
