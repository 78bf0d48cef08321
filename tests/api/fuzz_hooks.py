"""schemathesis hooks for tests/api/test_openapi_fuzz.py, loaded by the `st` process it runs.

- Path parameters are drawn either as schemathesis generates them (mostly names nothing has) or as the
  names of the resources the test made (FUZZ_KNOWN, JSON: path placeholder -> name, per collection), so
  that answers about real projects, images, paths and snapshots are checked too.
- The X-Request-Id robin answered every mutating request with is appended to FUZZ_REQUEST_IDS, so that the
  test can count each one's audit rows afterwards.
"""
from __future__ import annotations

import json
import os
import re

import schemathesis
from hypothesis import strategies as st

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
PLACEHOLDER = re.compile(r"\{(\w+)\}")
KNOWN = json.loads(os.environ.get("FUZZ_KNOWN", "{}"))


def _known_for(path: str) -> dict | None:
    """The made resources' names for this path's placeholders: the first collection in KNOWN whose
    prefix the path starts with."""
    for prefix, names in KNOWN.items():
        if path.startswith(prefix):
            wanted = PLACEHOLDER.findall(path)
            if all(name in names for name in wanted):
                return {name: names[name] for name in wanted}
    return None


@schemathesis.hook
def before_generate_path_parameters(context, strategy):
    known = _known_for(context.operation.path)
    return strategy if known is None else st.one_of(strategy, st.just(known))


@schemathesis.hook
def after_call(context, case, response):
    # robin answers every request with its X-Request-Id (the client's, or one it made up): the audit row's.
    if case.method.upper() not in MUTATING:
        return
    [request_id] = response.headers["x-request-id"]
    with open(os.environ["FUZZ_REQUEST_IDS"], "a") as ids:
        ids.write(f"{request_id} {case.method.upper()} {case.formatted_path}\n")
