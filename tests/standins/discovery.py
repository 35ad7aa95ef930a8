"""Google's published API contracts, as stand-ins use them: route, validate, and answer errors as Google does.

Google publishes every API's schema as a discovery document; google-api-python-client ships them
(`googleapiclient/discovery_cache/documents/<api>.<version>.json`). A stand-in built on `Api`:

- routes a request to the method the document defines (HTTP verb + path template + path-parameter patterns),
  and answers 404 for anything the API does not have;
- rejects query parameters the method does not take, and list `filter` expressions that use a field the
  method's `filter` description does not name (or an enum value it does not list);
- validates the request body against the method's request schema: unknown fields, wrong JSON types, values
  outside a documented enum, malformed durations/timestamps/int64s, missing fields documented as "Required.";
- validates its own responses against the response schema, so a stand-in cannot drift from the contract
  either (a `StandInBug`, never a client error).

Errors carry the JSON shape Google APIs return (`{"error": {"code", "message", "status", "details"}}`).
Where a documented value set lives only in a field's description (not an `enum`), it is encoded once in
`DESCRIBED_VALUES`, quoting the document.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path

import googleapiclient

DOCUMENTS = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents"

# Proto packages whose REST clients (GAPIC) send enums as integers ($alt=json;enum-encoding=int): the
# integers are mapped back to names through Google's own generated descriptors.
PROTO_PACKAGES = {"aiplatform.v1": ("GoogleCloudAiplatformV1", "google.cloud.aiplatform.v1", "google.cloud.aiplatform_v1"),
                  "cloudbuild.v1": ("", "google.devtools.cloudbuild.v1", "google.cloud.devtools.cloudbuild_v1")}

# System parameters every Google API accepts on any method (https://cloud.google.com/apis/docs/system-parameters).
SYSTEM_PARAMETERS = {"$alt", "$fields", "$prettyPrint", "$callback", "$key", "$quotaUser", "$userIp", "$outputDefaults",
                     "$.xgafv", "alt", "fields", "prettyPrint", "key", "quotaUser", "access_token", "oauth_token", "callback",
                     "uploadType", "upload_protocol", "userProject"}

# Value sets that the documents state only in prose. Each entry quotes where it comes from.
DESCRIBED_VALUES: dict[tuple[str, str], tuple[str, ...]] = {
    # aiplatform.v1 GoogleCloudAiplatformV1PersistentDiskSpec.diskType: 'Type of the disk (default is "pd-standard").
    # Valid values: "pd-ssd" ... "pd-standard" ... "pd-balanced" ... "pd-extreme" ... "hyperdisk-*"'
    ("GoogleCloudAiplatformV1PersistentDiskSpec", "diskType"): (
        "pd-ssd", "pd-standard", "pd-balanced", "pd-extreme", "hyperdisk-balanced", "hyperdisk-extreme",
        "hyperdisk-balanced-high-availability", "hyperdisk-ml", "hyperdisk-throughput"),
    # aiplatform.v1 GoogleCloudAiplatformV1DiskSpec.bootDiskType: 'Type of the boot disk. For non-A3U machines, the
    # default value is "pd-ssd", for A3U machines, the default value is "hyperdisk-balanced". Valid values: "pd-ssd"
    # (Persistent Disk Solid State Drive), "pd-standard" (Persistent Disk Hard Disk Drive) or "hyperdisk-balanced".'
    ("GoogleCloudAiplatformV1DiskSpec", "bootDiskType"): ("pd-ssd", "pd-standard", "hyperdisk-balanced"),
}

_DURATION = re.compile(r"^-?\d+(\.\d{1,9})?s$")
_INT = re.compile(r"^-?\d+$")
# "`state` supports ..." (customJobs) and "* `state`: Supports ..." (pipelineJobs) both name a field.
_FILTER_FIELD = re.compile(r"`([A-Za-z_][\w.]*)`:?\s+(?:only\s+)?[Ss]upports")
_FILTER_ENUM = re.compile(r"`?(\w+)`?\s+enum:\s*\[([^\]]*)\]")
_FILTER_TERM = re.compile(r'^\s*(?P<field>[A-Za-z_][\w.]*|labels\."[^"]+")\s*(?P<op>!=|>=|<=|=~|=|:|<|>)\s*(?P<value>"[^"]*"|[^\s()]+)\s*$')


class StandInBug(AssertionError):
    """A stand-in answered something the published contract does not allow."""


@dataclass
class ApiError(Exception):
    """An error as Google APIs answer it over REST."""

    code: int
    message: str
    status: str = ""
    details: list = field(default_factory=list)

    STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS",
              412: "FAILED_PRECONDITION", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE"}

    def __post_init__(self) -> None:
        self.status = self.status or self.STATUS.get(self.code, "UNKNOWN")
        super().__init__(f"{self.code} {self.status}: {self.message}")

    def body(self) -> dict:
        err = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            err["details"] = self.details
        return {"error": err}


def bad_request(field_path: str, message: str) -> ApiError:
    return ApiError(400, message, details=[{"@type": "type.googleapis.com/google.rpc.BadRequest",
                                            "fieldViolations": [{"field": field_path, "description": message}]}])


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@dataclass(frozen=True)
class Method:
    id: str
    http_method: str
    path: str  # template, e.g. v1/{+parent}/customJobs
    regex: re.Pattern
    parameters: dict
    request: str | None
    response: str | None
    filter_fields: frozenset[str] | None  # supported `filter` fields (snake_case), None when the method has no filter
    filter_enums: dict[str, frozenset[str]]

    def path_params(self, path: str) -> dict[str, str] | None:
        m = self.regex.fullmatch(path)
        if not m:
            return None
        values = {k: v for k, v in m.groupdict().items()}
        for name, value in values.items():
            pattern = self.parameters.get(name, {}).get("pattern")
            if pattern and not re.match(pattern, value):
                return None
        return values


def _compile(template: str) -> re.Pattern:
    out, pos = [], 0
    for m in re.finditer(r"\{(\+?)(\w+)\}", template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(f"(?P<{m.group(2)}>.+?)" if m.group(1) else f"(?P<{m.group(2)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


def _filter_spec(description: str) -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    fields = {_snake(f.split(".")[0]) for f in _FILTER_FIELD.findall(description)}
    if "labels" in description and re.search(r"`labels`\s+supports", description):
        fields.add("labels")
    enums = {_snake(name): frozenset(v.strip() for v in values.split(",")) for name, values in _FILTER_ENUM.findall(description)}
    # serviceusage: "The allowed filter strings are `state:ENABLED` and `state:DISABLED`."
    if "allowed filter strings are" in description:
        for name, value in re.findall(r"`(\w+):(\w+)`", description):
            fields.add(_snake(name))
            enums[_snake(name)] = enums.get(_snake(name), frozenset()) | {value}
    return frozenset(fields), enums


class Api:
    """One API version's discovery document, loaded from google-api-python-client."""

    def __init__(self, name: str, version: str) -> None:
        self.name, self.version = name, version
        self.doc = json.loads((DOCUMENTS / f"{name}.{version}.json").read_text(encoding="utf-8"))
        self.schemas: dict[str, dict] = self.doc["schemas"]
        self.service_path = self.doc.get("servicePath", "")
        self.methods: list[Method] = []
        self._collect(self.doc)
        self._proto = PROTO_PACKAGES.get(f"{name}.{version}")

    @property
    def revision(self) -> str:
        return self.doc.get("revision", "")

    def _collect(self, node: dict) -> None:
        for m in node.get("methods", {}).values():
            params = m.get("parameters", {})
            flt = params.get("filter", {}).get("description")
            fields, enums = _filter_spec(flt) if flt else (None, {})
            templates = [m["path"]]
            upload = m.get("mediaUpload", {}).get("protocols", {})
            templates += [p["path"].lstrip("/") for p in upload.values()]
            for t in templates:
                full = t if t.startswith(("upload/", "download/")) else self.service_path + t
                self.methods.append(Method(m["id"], m["httpMethod"], full, _compile(full), params, m.get("request", {}).get("$ref"),
                                           m.get("response", {}).get("$ref"), fields, enums))
            if m.get("supportsMediaDownload") and m.get("useMediaDownloadService"):
                full = "download/" + self.service_path + m["path"]
                self.methods.append(Method(m["id"], m["httpMethod"], full, _compile(full), params, None, None, fields, enums))
        for child in node.get("resources", {}).values():
            self._collect(child)

    def method(self, method_id: str) -> Method:
        return next(m for m in self.methods if m.id == method_id)

    # -- routing ---------------------------------------------------------------------------------------------------

    def route(self, http_method: str, path: str) -> tuple[Method, dict[str, str]]:
        """The method a request path calls, with its path parameters; 404 as Google answers for anything else."""
        path = path.lstrip("/")
        for m in self.methods:
            if m.http_method != http_method:
                continue
            params = m.path_params(path)
            if params is not None:
                return m, params
        raise ApiError(404, f"The requested URL /{path} was not found on this server ({self.name}.{self.version} has no "
                            f"{http_method} method for it).")

    # -- query parameters and filters --------------------------------------------------------------------------------

    def check_query(self, method: Method, query: dict[str, list[str]]) -> None:
        for name, values in query.items():
            if name in SYSTEM_PARAMETERS or name in self.doc.get("parameters", {}):
                continue
            spec = method.parameters.get(name)
            if spec is None or spec.get("location") != "query":
                raise bad_request(name, f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query parameter. '
                                        f"Field '{name}' could not be found in request message ({method.id}).")
            for value in values:
                self._check_scalar(spec, value, name, from_query=True)
            if name == "filter" and values and values[0]:
                self.check_filter(method, values[0])

    def check_filter(self, method: Method, expression: str) -> list[tuple[str, str, str]]:
        """Parse `a = "x" AND b != y`; every field must be one the method's filter description names."""
        if method.filter_fields is None:
            raise bad_request("filter", f"{method.id} takes no filter")
        terms = []
        for raw in re.split(r"\s+AND\s+", expression.strip()):
            if re.search(r"\s(OR|NOT)\s|^NOT\s|[()]", raw):
                raise ApiError(501, f"stand-in: filter {expression!r} uses OR/NOT/parentheses, which this stand-in does not evaluate")
            m = _FILTER_TERM.match(raw)
            if not m:
                raise bad_request("filter", f"Invalid filter expression: {raw!r}")
            name, op, value = m.group("field"), m.group("op"), m.group("value").strip('"')
            root = _snake(name.split(".")[0])
            if root not in method.filter_fields:
                raise bad_request("filter", f"Unsupported field in filter: {name!r}. {method.id} supports filtering on "
                                            f"{', '.join(sorted(method.filter_fields))}.")
            allowed = method.filter_enums.get(root)
            if allowed and value not in allowed:
                raise bad_request("filter", f"Invalid value {value!r} for {name} in filter; one of {sorted(allowed)}")
            terms.append((name, op, value))
        return terms

    # -- bodies ------------------------------------------------------------------------------------------------------

    def check_request(self, method: Method, body) -> None:
        if method.request is None:
            if body not in (None, {}, b""):
                raise bad_request("", f"{method.id} takes no request body")
            return
        if body is None:
            body = {}
        self.check(method.request, body, "", request=True)

    def check_response(self, method: Method, body) -> None:
        if method.response is None:
            return
        try:
            self.check(method.response, body, "", request=False)
        except ApiError as e:
            raise StandInBug(f"stand-in answered {method.id} with a body the contract does not allow: {e.message}") from None

    def check(self, ref: str, value, path: str, request: bool = True) -> None:
        """Validate a JSON value against a schema; raises ApiError(400) naming the field."""
        self._check_object(self.schemas[ref], ref, value, path, self._proto_root(ref), request)

    def _proto_root(self, ref: str):
        if not self._proto:
            return None
        prefix, package, module = self._proto
        if not ref.startswith(prefix):
            return None
        __import__(module + ".types")
        from google.protobuf import descriptor_pool

        try:
            return descriptor_pool.Default().FindMessageTypeByName(f"{package}.{ref[len(prefix):]}")
        except KeyError:
            return None

    def _check_object(self, schema: dict, ref: str, value, path: str, proto, request: bool) -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            raise bad_request(path, f"Invalid value at '{path or ref}' ({ref}), expected an object, got {json.dumps(value)[:60]}")
        props = schema.get("properties")
        if props is None:
            extra = schema.get("additionalProperties")
            if extra is not None:
                for k, v in value.items():
                    self._check_value(extra, ref, v, f"{path}[{k!r}]", None, request)
            return
        by_snake = {_snake(k): k for k in props}
        for key, v in value.items():
            name = key if key in props else by_snake.get(key) or by_snake.get(_snake(key))
            if name is None or (key not in props and _camel(key) != name):
                where = f" at '{path}'" if path else ""
                raise bad_request(path or key, f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.')
            sub_proto = proto.fields_by_camelcase_name.get(name) if proto is not None else None
            self._check_value(props[name], ref, v, f"{path}.{name}" if path else name, sub_proto, request, prop=name)
        if request:
            for name, spec in props.items():
                if spec.get("description", "").startswith("Required.") and not spec.get("readOnly") and value.get(name) in (None, "", [], {}):
                    if not any(_snake(name) == _snake(k) and value[k] not in (None, "", [], {}) for k in value):
                        raise bad_request(f"{path}.{name}" if path else name, f"{(path + '.') if path else ''}{name} is required.")

    def _check_value(self, spec: dict, ref: str, value, path: str, proto_field, request: bool, prop: str | None = None) -> None:
        if value is None:
            return
        if "$ref" in spec:
            sub = proto_field.message_type if proto_field is not None else None
            return self._check_object(self.schemas[spec["$ref"]], spec["$ref"], value, path, sub, request)
        kind = spec.get("type")
        if kind == "array":
            if not isinstance(value, list):
                raise bad_request(path, f"Invalid value at '{path}', expected a list")
            for i, item in enumerate(value):
                self._check_value(spec["items"], ref, item, f"{path}[{i}]", proto_field, request)
            return
        if kind == "object":
            if not isinstance(value, dict):
                raise bad_request(path, f"Invalid value at '{path}', expected an object")
            if "properties" in spec:
                return self._check_object(spec, ref, value, path, None, request)
            extra = spec.get("additionalProperties")
            if extra is not None:
                value_field = proto_field.message_type.fields_by_name.get("value") if proto_field is not None and proto_field.message_type else None
                for k, v in value.items():
                    self._check_value(extra, ref, v, f"{path}[{k!r}]", value_field, request)
            return
        self._check_scalar(spec, value, path, proto_field=proto_field, ref=ref, prop=prop)

    def _check_scalar(self, spec: dict, value, path: str, from_query: bool = False, proto_field=None, ref: str = "", prop=None) -> None:
        kind, fmt = spec.get("type"), spec.get("format")
        if kind == "any":
            return
        if spec.get("repeated") and isinstance(value, list):
            for v in value:
                self._check_scalar({**spec, "repeated": False}, v, path, from_query)
            return
        enum = spec.get("enum")
        if enum:
            if isinstance(value, int) and not isinstance(value, bool) and proto_field is not None and proto_field.enum_type is not None:
                named = proto_field.enum_type.values_by_number.get(value)
                if named is None:
                    raise bad_request(path, f"Invalid value at '{path}' ({proto_field.enum_type.full_name}), {value}")
                value = named.name
            if value not in enum:
                raise bad_request(path, f"Invalid value at '{path}' ({ref or 'enum'}), \"{value}\": one of {', '.join(enum)}")
            return
        if kind == "string":
            if from_query:
                value = str(value)
            if not isinstance(value, str):
                if fmt in ("int64", "uint64") and isinstance(value, int) and not isinstance(value, bool):
                    return
                raise bad_request(path, f"Invalid value at '{path}' (TYPE_STRING), {json.dumps(value)[:60]}")
            if fmt in ("int64", "uint64") and not _INT.match(value):
                raise bad_request(path, f"Invalid value at '{path}' (TYPE_INT64), \"{value}\"")
            if fmt == "google-duration" and not _DURATION.match(value):
                raise bad_request(path, f"Invalid value at '{path}' (type.googleapis.com/google.protobuf.Duration), Field '{path}', "
                                        f"Illegal duration format; duration must end with 's'")
            if fmt == "google-datetime":
                try:
                    datetime.fromisoformat(value.replace("Z", "+00:00"))
                except ValueError:
                    raise bad_request(path, f"Invalid value at '{path}' (type.googleapis.com/google.protobuf.Timestamp), \"{value}\"") from None
            if fmt == "byte":
                try:
                    base64.b64decode(value.replace("-", "+").replace("_", "/") + "==", validate=False)
                except ValueError:
                    raise bad_request(path, f"Invalid value at '{path}' (TYPE_BYTES), not base64") from None
            allowed = DESCRIBED_VALUES.get((ref, prop or ""))
            if allowed and value not in allowed:
                raise bad_request(path, f"Invalid value at '{path}': \"{value}\" is not one of {', '.join(allowed)} "
                                        f"(the values the {self.name}.{self.version} discovery document lists for {ref}.{prop})")
            return
        if kind == "integer":
            if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and _INT.match(value))):
                raise bad_request(path, f"Invalid value at '{path}' (TYPE_INT32), {json.dumps(value)[:60]}")
            return
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise bad_request(path, f"Invalid value at '{path}' (TYPE_DOUBLE), {json.dumps(value)[:60]}")
            if isinstance(value, str):
                try:
                    float(value)
                except ValueError:
                    raise bad_request(path, f"Invalid value at '{path}' (TYPE_DOUBLE), \"{value}\"") from None
            return
        if kind == "boolean":
            if from_query and value in ("true", "false"):
                return
            if not isinstance(value, bool):
                raise bad_request(path, f"Invalid value at '{path}' (TYPE_BOOL), {json.dumps(value)[:60]}")


@cache
def api(name: str, version: str) -> Api:
    return Api(name, version)


def enum_values(api_name: str, version: str, ref: str, prop: str) -> tuple[str, ...]:
    """A field's allowed values from the document: its `enum`, or the prose list in DESCRIBED_VALUES."""
    spec = api(api_name, version).schemas[ref]["properties"][prop]
    return tuple(spec.get("enum") or DESCRIBED_VALUES[(ref, prop)])
