"""The OpenAPI schemas compiled once into plain Python checks: the fast path of `schemas.decode`.

jsonschema walks a schema anew for every object (resolving each `$ref` through its registry, making a validator
per level), which cost more CPU than everything else a write does here. A compiled check answers one question,
"is this object surely valid?", in a single pass over the object; only when it cannot say yes does `decode` ask
jsonschema, which finds and words the errors exactly as before. So the server accepts nothing jsonschema would
refuse: every check below is either exact for JSON values (type, enum of strings, required, properties,
additionalProperties, items, a oneOf of plain types) or answers "not sure" (False), and a keyword this compiler
does not know makes the whole schema "not sure". Annotations (description, format, which jsonschema does not
assert without a format checker, and the x-kubernetes-* extensions) assert nothing.
"""
from __future__ import annotations

from collections.abc import Callable

Check = Callable[[object], bool]
REF_PREFIX = "#/$defs/"
ANNOTATIONS = frozenset(("description", "format", "title", "default", "example", "examples"))
_TYPES: dict[str, Check] = {
    "string": lambda v: isinstance(v, str),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    # As jsonschema's draft 2020-12 type checker: bool is not a number; 1.0 is an integer.
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float)
                                                                            and v.is_integer()),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def _not_sure(value) -> bool:
    return False


def _always(value) -> bool:
    return True


class SchemaCompiler:
    """Compiles the definitions of one `$defs` document, each once (`$ref`s to the same definition share it)."""

    def __init__(self, definitions: dict):
        self._definitions = definitions
        self._compiled: dict[str, Check] = {}

    def definition(self, name: str) -> Check:
        check = self._compiled.get(name)
        if check is None:
            compiled: list[Check] = []
            # A definition that refers to itself (directly or not) meets this forwarder while being compiled.
            self._compiled[name] = lambda value: compiled[0](value)
            compiled.append(self.compile(self._definitions[name]))
            check = self._compiled[name] = compiled[0]
        return check

    def compile(self, schema) -> Check:
        if schema is True:
            return _always
        if not isinstance(schema, dict):
            return _not_sure
        checks: list[Check] = []
        for keyword, value in schema.items():
            if keyword in ANNOTATIONS or keyword.startswith("x-") or keyword in ("properties", "required",
                                                                                  "additionalProperties"):
                continue
            build = _KEYWORDS.get(keyword)
            if build is None:
                return _not_sure
            checks.append(build(self, value))
        if any(k in schema for k in ("properties", "required", "additionalProperties")):
            checks.append(self._object(schema))
        if not checks:
            return _always
        if len(checks) == 1:
            return checks[0]
        return lambda value: all(check(value) for check in checks)

    def _ref(self, ref) -> Check:
        if not isinstance(ref, str) or not ref.startswith(REF_PREFIX) or ref[len(REF_PREFIX):] not in \
                self._definitions:
            return _not_sure
        return self.definition(ref[len(REF_PREFIX):])

    def _type(self, names) -> Check:
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or any(name not in _TYPES for name in names):
            return _not_sure
        checks = [_TYPES[name] for name in names]
        return lambda value: any(check(value) for check in checks)

    def _enum(self, members) -> Check:
        """Exact for strings and null (jsonschema compares a string only with strings); anything else is left to
        jsonschema (its equality tells 1 from True)."""
        if not isinstance(members, list):
            return _not_sure
        strings, with_null = frozenset(m for m in members if isinstance(m, str)), None in members
        return lambda value: (isinstance(value, str) and value in strings) or (value is None and with_null)

    def _items(self, schema) -> Check:
        if not isinstance(schema, dict | bool):
            return _not_sure
        check = self.compile(schema)
        return lambda value: not isinstance(value, list) or all(check(item) for item in value)

    def _one_of(self, schemas) -> Check:
        """Exact only where each alternative is a bare type (resource.Quantity, IntOrString): exactly one must
        hold, and a conservative check could count one where two hold."""
        if not isinstance(schemas, list) or not all(isinstance(s, dict) and set(s) - ANNOTATIONS <= {"type"}
                                                    for s in schemas):
            return _not_sure
        checks = [self._type(s["type"]) if "type" in s else _always for s in schemas]
        return lambda value: sum(check(value) for check in checks) == 1

    def _object(self, schema: dict) -> Check:
        """properties, additionalProperties and required, which assert nothing about a value that is not an
        object."""
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            return _not_sure
        fields = {name: self.compile(sub) for name, sub in properties.items()}
        extra_schema = schema.get("additionalProperties", True)
        extra = self.compile(extra_schema) if extra_schema is not False else None
        required = tuple(schema.get("required", ()))

        def check(value) -> bool:
            if not isinstance(value, dict):
                return True
            for name in required:
                if name not in value:
                    return False
            for name, item in value.items():
                field = fields.get(name, extra)
                if field is None or not field(item):
                    return False
            return True
        return check


_KEYWORDS: dict[str, Callable[[SchemaCompiler, object], Check]] = {
    "$ref": SchemaCompiler._ref, "type": SchemaCompiler._type, "enum": SchemaCompiler._enum,
    "items": SchemaCompiler._items, "oneOf": SchemaCompiler._one_of,
}
