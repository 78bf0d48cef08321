"""Every OpenAPI operation's `operationId`, named by one rule from its method and path (docs/api.md, "Operation
ids"), so that generated clients keep their function names from release to release.

Under /api/v2 an id is a verb and the nouns of the path, in camel case:
  - the nouns are the path's fixed segments; one followed by a `{parameter}` names one item, so is singular;
  - a path ending in a parameter is an item: GET get, PATCH update, PUT replace, DELETE delete;
  - one ending in a plural noun (robin's collections are plural) is a collection: GET list, POST create (singular);
  - one ending in `collection:action` or, for a POST, in any other word is an action on what precedes it: the word
    is the verb (restore, flatten, rollback, adopt); a GET of such a word reads a singleton (getProjectUsage).
Other APIs served beside it (Wayne's /v1, whose methods do not mean what REST's do) are named by their tag, the HTTP
method and the fixed segments after the version: wayneV1PutImage.
"""
from __future__ import annotations

import re

from apispec import BasePlugin

REST_PREFIX = "/api/v2/"
ITEM_VERBS = {"get": "get", "patch": "update", "put": "replace", "delete": "delete"}
COLLECTION_VERBS = {"get": "list", "post": "create"}


def operation_id(method: str, path: str, tag: str) -> str:
    """The id the rule gives the operation `method` on `path` (an OpenAPI path, with `{parameters}`)."""
    if not path.startswith(REST_PREFIX):
        after_version = path.split("/")[2:]  # the tag names the API and its version
        return _camel([tag, method, *(s for s in after_version if s and not _is_parameter(s))])
    segments = [s for s in path[len(REST_PREFIX):].split("/") if s]
    last = segments[-1]
    if ":" in last:
        collection, action = last.split(":", 1)
        return _camel([action, *_nouns(segments[:-1]), _singular(collection)])
    if _is_parameter(last):
        return _camel([ITEM_VERBS[method], *_nouns(segments)])
    if last.endswith("s") and method in COLLECTION_VERBS:
        nouns = _nouns(segments)
        if method == "post":
            nouns[-1] = _singular(nouns[-1])
        return _camel([COLLECTION_VERBS[method], *nouns])
    if method == "post":
        return _camel([last, *_nouns(segments[:-1])])
    return _camel([method, *_nouns(segments)])


def _nouns(segments: list[str]) -> list[str]:
    """The fixed segments, each singular where a parameter follows it (`projects/{project}`: project)."""
    nouns = []
    for position, segment in enumerate(segments):
        if _is_parameter(segment):
            continue
        following = segments[position + 1] if position + 1 < len(segments) else ""
        nouns.append(_singular(segment) if _is_parameter(following) else segment)
    return nouns


def _is_parameter(segment: str) -> bool:
    return segment.startswith("{")


def _singular(noun: str) -> str:
    return noun[:-1] if noun.endswith("s") else noun


def _camel(words: list[str]) -> str:
    parts = [part for word in words for part in re.split(r"[-_]", word) if part]
    return parts[0].lower() + "".join(part[:1].upper() + part[1:] for part in parts[1:])


class OperationIds(BasePlugin):
    """An apispec plugin: names every operation by the rule, unless its view names it (`@blp.doc(operationId=)`),
    which is for a path the rule misreads."""

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        for method, operation in operations.items():
            tag = (operation.get("tags") or [""])[0]
            operation.setdefault("operationId", operation_id(method, path, tag))
