"""Kubernetes' own OpenAPI schemas (from the `kubernetes-validate` package, offline) applied to every object written,
as the real API server's decoding does: unknown fields are dropped (with a warning, or refused, by the request's
`fieldValidation`), a value of the wrong type is a 400, quantities come back canonical ("1.5Gi" -> "1536Mi").

The schemas are those of Kubernetes KUBERNETES_VERSION, the version /version reports."""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from importlib import resources

import jsonschema
from referencing import Registry, Resource

from .errors import bad_request, invalid
from .schema_compiler import SchemaCompiler

KUBERNETES_VERSION = "1.32.0"
_SCHEMA_DIR = f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
FIELD_VALIDATION = ("Ignore", "Warn", "Strict")


@dataclass
class FieldValidation:
    """A request's `fieldValidation` (Warn when absent, as on the real server since 1.27) and the warnings its
    writes collected, answered as `Warning: 299 - "..."` headers."""
    mode: str = "Warn"
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.mode not in FIELD_VALIDATION:
            raise bad_request(f"fieldValidation must be one of {', '.join(FIELD_VALIDATION)}, not {self.mode!r}")


@functools.cache
def _definitions() -> dict:
    path = resources.files("kubernetes_validate").joinpath(f"{_SCHEMA_DIR}/_definitions.json")
    return json.loads(path.read_text())


def definition_name(rt) -> str:
    """The OpenAPI definition of a kind: io.k8s.api.<group's first label, or core>.<version>.<Kind>."""
    return f"io.k8s.api.{rt.group.split('.')[0] if rt.group else 'core'}.{rt.version}.{rt.kind}"


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    definitions = _definitions()
    registry = Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))
    return jsonschema.Draft202012Validator({"$ref": f"{definitions['$id']}#/$defs/{name}"}, registry=registry)


@functools.cache
def _compiler() -> SchemaCompiler:
    return SchemaCompiler(_definitions()["$defs"])


@functools.cache
def volume_sources() -> tuple[str, ...]:
    """The fields of a PersistentVolumeSpec that name its volume source (csi, glusterfs, rbd, hostPath, ...)."""
    properties = _definitions()["$defs"]["io.k8s.api.core.v1.PersistentVolumeSpec"]["properties"]
    return tuple(name for name, schema in properties.items() if schema.get("$ref", "").endswith("VolumeSource"))


def _resolve(schema: dict) -> tuple[dict, str | None]:
    name = None
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = _definitions()["$defs"][name]
    return schema, name


# --- quantities ----------------------------------------------------------------------------------------------

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIX = {v: k for k, v in _BINARY.items()} | {0: ""}
_DECIMAL_SUFFIX = {v: k for k, v in _DECIMAL.items()}
_NANO = Decimal("1e-9")


def _parse_quantity(text: str) -> tuple[Decimal, str]:
    """(value, format): format is "binary" (Ki..Ei), "si" (n..E, or none) or "exponent" (1e3)."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ValueError(text)
    number, suffix = match.groups()
    if number.count(".") > 1 or number.strip("+-.") == "":
        raise ValueError(text)
    value = Decimal(number)
    if suffix in _BINARY:
        return value * 1024 ** _BINARY[suffix], "binary"
    if suffix in _DECIMAL:
        return value.scaleb(_DECIMAL[suffix]), "si"
    if suffix[:1] in ("e", "E") and re.fullmatch(r"[-+]?[0-9]+", suffix[1:]):
        return value.scaleb(int(suffix[1:])), "exponent"
    raise ValueError(text)


def canonical_quantity(value) -> str:
    """resource.Quantity's canonical form: rounded up to nano units; binary-suffixed values that are integers of
    at least 1024 as the largest power of 1024 that divides them; the rest in powers of 1000 (decimal suffixes or
    exponents), the largest that leaves an integer."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(value)
    try:
        number, fmt = _parse_quantity(str(value)) if isinstance(value, str) else (Decimal(str(value)), "si")
    except InvalidOperation:
        raise ValueError(value) from None
    sign, number = ("-" if number < 0 else ""), abs(number)
    number = number.quantize(_NANO, rounding=ROUND_CEILING) if number.as_tuple().exponent < -9 else number
    if fmt == "binary" and (number < 1024 or number != number.to_integral_value(ROUND_FLOOR)):
        fmt = "si"
    if number == 0:
        return "0"
    if fmt == "binary":
        mantissa, power = int(number), 0
        while power < 6 and mantissa % 1024 == 0:
            mantissa, power = mantissa // 1024, power + 1
        return f"{sign}{mantissa}{_BINARY_SUFFIX[power]}"
    mantissa, exponent = int(number.scaleb(9)), -9
    while (exponent < 18 or fmt == "exponent") and mantissa % 1000 == 0:
        mantissa, exponent = mantissa // 1000, exponent + 3
    if fmt == "exponent":
        return f"{sign}{mantissa}" + (f"e{exponent}" if exponent else "")
    return f"{sign}{mantissa}{_DECIMAL_SUFFIX[exponent]}"


# --- decoding ------------------------------------------------------------------------------------------------

def _normalize(value, schema: dict, path: str, unknown: list[str]):
    """`value` as the real server's decoder leaves it: unknown fields dropped (their paths put in `unknown`),
    quantities canonical."""
    schema, name = _resolve(schema)
    if name == QUANTITY:
        try:
            return canonical_quantity(value)
        except ValueError:
            raise bad_request(f"quantities must match the regular expression "
                              f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {path}: {value!r}") from None
    if isinstance(value, dict):
        properties = schema.get("properties")
        if properties is not None:
            kept = {}
            for key, item in value.items():
                if key in properties:
                    kept[key] = _normalize(item, properties[key], f"{path}.{key}" if path else key, unknown)
                else:
                    unknown.append(f"{path}.{key}" if path else key)
            return kept
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return {key: _normalize(item, extra, f"{path}[{key}]", unknown) for key, item in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_normalize(item, schema["items"], f"{path}[{i}]", unknown) for i, item in enumerate(value)]
    return value


def _error_path(error: jsonschema.ValidationError) -> str:
    text = ""
    for part in error.absolute_path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _cause(error: jsonschema.ValidationError) -> tuple[str, str, str]:
    """A schema error as the real server's validation words it: (reason, field, message)."""
    path = _error_path(error)
    if error.validator == "required":
        missing = re.search(r"'([^']+)' is a required property", error.message)
        field_path = f"{path}.{missing.group(1)}" if path and missing else (missing.group(1) if missing else path)
        return "FieldValueRequired", field_path, "Required value"
    return "FieldValueInvalid", path, f"Invalid value: {error.message}"


def decode(rt, obj: dict, validation: FieldValidation | None = None) -> dict:
    """`obj` (a body for `rt`) checked against its schema and normalised; unknown fields are dropped with a
    warning (Warn), silently (Ignore) or refused with a 400 (Strict), as the request asked."""
    validation = validation or FieldValidation("Ignore")
    name = definition_name(rt)
    unknown: list[str] = []
    obj = _normalize(obj, _definitions()["$defs"][name], "", unknown)
    if unknown and validation.mode == "Strict":
        raise bad_request(f"{rt.kind} in version \"{rt.version}\" cannot be handled as a {rt.kind}: strict decoding "
                          f"error: " + ", ".join(f'unknown field "{path}"' for path in unknown))
    if validation.mode == "Warn":
        validation.warnings += [f'unknown field "{path}"' for path in unknown]
    if _compiler().definition(name)(obj):
        return obj  # surely valid: jsonschema would find nothing (see schema_compiler)
    errors = sorted(_validator(name).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    wrong_types = [e for e in errors if e.validator in ("type", "oneOf")]
    if wrong_types:  # the JSON does not decode into the Go struct at all
        error = wrong_types[0]
        raise bad_request(f"{rt.kind} in version \"{rt.version}\" cannot be handled as a {rt.kind}: "
                          f"{_error_path(error) or 'the object'}: {error.message}")
    causes = [_cause(e) for e in errors if e.validator != "enum" or _error_path(e) not in ("kind", "apiVersion")]
    if causes:
        raise invalid(rt, (obj.get("metadata") or {}).get("name", ""), causes)
    return obj

