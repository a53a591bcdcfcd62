"""The naive peer: the scoring server a user would write instead of this project's service.

    gunicorn --workers 2 'benchmarks.naive_peer:flask_app()'                   # Flask
    uvicorn --workers 2 --factory benchmarks.naive_peer:fastapi_app            # FastAPI

The same stored model (`CREDIT_PD_MODEL_TAG`, default the latest), the project's encoder to a
numpy matrix, `shap.TreeExplainer` built once per booster (and the GLM part's coefficient x
centred value when the model has one), the calibrated PD and the top 10 SHAP values per
row, plain JSON. No validation framework, no batching: what the load benchmark compares the
service with, on the same request bodies, in the same run (benchmarks/load_benchmark.py). It
serves the issue's two candidates, Flask under gunicorn and FastAPI under uvicorn; the benchmark
measures both and holds the service to the faster one. A baseline, not a product.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import shap

from credit_pd.model_store import load_from_store

TOP_K = 10

model = load_from_store(os.environ.get("CREDIT_PD_MODEL_TAG", "credit_pd_model:latest"))
# One shap explainer per booster that has trees (a blend has one or two, a GLM none): the peer explains
# the whole model, as the service does, so both do the same work per row.
explainers = [
    (weight, shap.TreeExplainer(booster))
    for weight, booster in zip(model.weights.trees, model.boosters, strict=True)
    if booster.num_trees()
]
names = list(model.feature_names)


def shap_values(matrix: np.ndarray) -> np.ndarray:
    """Per-feature contributions of the whole model: shap for the trees, coefficient x centred value for a GLM part."""
    values = np.zeros(matrix.shape)
    for weight, explainer in explainers:
        values += weight * np.asarray(explainer.shap_values(matrix))
    if model.linear is not None:
        values += model.weights.linear * model.linear.explain(matrix)[1]
    return values


def score(body: dict[str, Any]) -> list[dict[str, Any]]:
    """PD and top-10 SHAP contributions for `{"applications": one object or a list}`."""
    applications = body["applications"]
    if isinstance(applications, dict):
        applications = [applications]
    matrix = model.encoder.encode_records(applications)
    pds = model.predict_pd(matrix)
    results = []
    for application, pd_, row in zip(applications, pds, shap_values(matrix), strict=False):
        top = np.argsort(-np.abs(row))[:TOP_K]
        results.append(
            {
                "uuid": application.get("uuid"),
                "pd": float(pd_),
                "contributions": [
                    {"feature": names[i], "value": application.get(names[i]), "contribution": float(row[i])}
                    for i in top
                ],
            }
        )
    return results


def flask_app() -> Any:
    from flask import Flask, jsonify, request

    app = Flask(__name__)
    app.add_url_rule("/readyz", "readyz", lambda: "ok")
    app.add_url_rule("/predict", "predict", lambda: jsonify(score(request.get_json())), methods=["POST"])
    return app


def fastapi_app() -> Any:
    from fastapi import Body, FastAPI

    app = FastAPI()

    @app.get("/readyz")
    def readyz() -> str:
        return "ok"

    @app.post("/predict")
    def predict(body: dict = Body(...)) -> list[dict]:
        return score(body)

    return app
