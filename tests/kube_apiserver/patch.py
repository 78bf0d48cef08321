"""JSON merge patch (RFC 7386), JSON patch (RFC 6902) and a small strategic merge patch."""
from __future__ import annotations

import copy

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
PATCH_TYPES = (MERGE_PATCH, STRATEGIC_MERGE_PATCH, JSON_PATCH)


class PatchError(ValueError):
    pass


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# Lists whose patch strategy is "merge" in the Kubernetes types these kinds use, by path of field names.
PRIMITIVE_MERGE_LISTS = {("metadata", "finalizers")}
KEYED_MERGE_LISTS = {("metadata", "ownerReferences"): "uid", ("status", "conditions"): "type"}


def strategic_merge_patch(target, patch, path: tuple[str, ...] = ()):
    """Merge patch plus the strategic directives these kinds need: `$patch: replace|delete`,
    `$deleteFromPrimitiveList/<field>`, `$setElementOrder/<field>` (ignored), `$retainKeys` (ignored),
    and merging (instead of replacing) of metadata.finalizers, metadata.ownerReferences, status.conditions."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    directives = []
    for key, value in patch.items():
        if key.startswith("$"):
            directives.append((key, value))
            continue
        sub = (*path, key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                result[key] = strategic_merge_patch(result.get(key), value, sub)
        elif isinstance(value, list) and sub in PRIMITIVE_MERGE_LISTS:
            current = list(result.get(key) or [])
            result[key] = current + [v for v in value if v not in current]
        elif isinstance(value, list) and sub in KEYED_MERGE_LISTS:
            result[key] = _merge_keyed_list(result.get(key) or [], value, KEYED_MERGE_LISTS[sub], sub)
        else:
            result[key] = copy.deepcopy(value)
    for key, value in directives:
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            remaining = [v for v in result.get(field) or [] if v not in (value or [])]
            if remaining:
                result[field] = remaining
            else:
                result.pop(field, None)
        elif key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        else:
            raise PatchError(f"unknown patch directive {key}")
    return result


def _merge_keyed_list(current: list, patch: list, merge_key: str, path):
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise PatchError(f"map in list {'.'.join(path)} lacks merge key {merge_key}")
        index = next((i for i, old in enumerate(result) if old.get(merge_key) == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append({k: v for k, v in copy.deepcopy(item).items() if k != "$patch"})
        else:
            result[index] = strategic_merge_patch(result[index], item, path)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _walk(doc, tokens: list[str]):
    for token in tokens:
        if isinstance(doc, dict) and token in doc:
            doc = doc[token]
        elif isinstance(doc, list) and token.isdigit() and int(token) < len(doc):
            doc = doc[int(token)]
        else:
            raise PatchError(f"path not found: /{'/'.join(tokens)}")
    return doc


def _get(doc, path: str):
    return _walk(doc, _pointer(path))


def _add(doc, path: str, value):
    tokens = _pointer(path)
    if not tokens:
        return value
    parent, last = _walk(doc, tokens[:-1]), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise PatchError(f"invalid index in {path}")
    else:
        raise PatchError(f"cannot add at {path}")
    return doc


def _remove(doc, path: str):
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent, last = _walk(doc, tokens[:-1]), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise PatchError(f"path not found: {path}")


def json_patch(doc, operations):
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            if _pointer(path):
                _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise PatchError(f"test failed at {path}")
        else:
            raise PatchError(f"unknown operation {kind!r}")
    return doc


def apply_patch(patch_type: str, doc: dict, body):
    if patch_type == JSON_PATCH:
        return json_patch(doc, body)
    if not isinstance(body, dict):
        raise PatchError("a merge patch must be a JSON object")
    if patch_type == STRATEGIC_MERGE_PATCH:
        return strategic_merge_patch(doc, body)
    return merge_patch(doc, body)
