"""Strict offline validation of SparkApplication objects against the spark-operator's own API schema.

kubernetes-validate knows only built-in kinds, and the operator's CRD YAML is not on PyPI. The
operator's API is: `kubeflow-spark-api` (Kubeflow's package, generated from the operator's
OpenAPI spec of sparkoperator.k8s.io/v1beta2, including the Kubernetes core types it embeds).
This script turns its `SparkV1beta2SparkApplication` model into a JSON Schema and validates with
jsonschema's Draft 2020-12 validator, as kubernetes-validate does for built-in kinds, and as
strictly (--strict): every object that lists its properties rejects any other key, so a
misspelt field fails instead of being ignored by the operator.

Runs under the deploy venv's Python (requirements-deploy.txt):

    spark_application_schema.py MANIFEST.yaml   ->  JSON list of "<path>: <message>" problems
"""

from __future__ import annotations

import json
import sys
from typing import Any

import jsonschema
import yaml
from kubeflow_spark_api.models import SparkV1beta2SparkApplication

API_VERSION = "sparkoperator.k8s.io/v1beta2"
KIND = "SparkApplication"


def strict(schema: Any) -> Any:
    """additionalProperties: false on every object schema that lists properties (kubernetes-validate --strict)."""
    if isinstance(schema, dict):
        out = {key: strict(value) for key, value in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def application_schema() -> dict[str, Any]:
    schema = strict(SparkV1beta2SparkApplication.model_json_schema(by_alias=True, mode="validation"))
    schema["properties"]["apiVersion"] = {"const": API_VERSION}
    schema["properties"]["kind"] = {"const": KIND}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind"})
    return schema


def problems(objects: list[dict[str, Any]]) -> list[str]:
    validator = jsonschema.Draft202012Validator(application_schema())
    found = []
    for obj in objects:
        name = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in error.absolute_path) or "<root>"
            found.append(f"{name} {path}: {error.message}")
    return found


def main(path: str) -> int:
    with open(path) as handle:
        objects = [doc for doc in yaml.safe_load_all(handle) if doc]
    print(json.dumps(problems(objects)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
