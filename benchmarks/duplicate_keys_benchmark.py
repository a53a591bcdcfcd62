"""What refusing duplicate JSON keys costs, on a 100-application request, in-process.

    .venv/bin/python -m benchmarks.duplicate_keys_benchmark [--model-tag credit_pd_model:latest]

Times, interleaved and best of several rounds, on the same body: the service's check
(`credit_pd.serving.middleware.duplicate_key_location`, jiter with catch_duplicate_keys), a plain
jiter parse (the parse alone), the standard library's `json.loads`, and what BentoML does with the
body next (the request model's `model_validate_json`: parse and validation). Prints the check as
ratios to each, measured in this run. Then the whole read of a body: the check, whose parsed
document the request model validates (`contract.StrictInput`: the body is parsed once), against the
check followed by BentoML's own parse and validation (the body parsed twice, as before).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

from benchmarks.results import command_line, recorded  # noqa: E402

APPLICATIONS = 100
ROUNDS = 7
CALLS = 40


def request_body(model_tag: str) -> tuple[bytes, type]:
    """A 100-application body from the model's own sample rows, and the request model."""
    import tempfile
    from pathlib import Path

    from credit_pd.client import requests_from_frame
    from credit_pd.config import SampleConfig
    from credit_pd.dataset import load_dataset
    from credit_pd.model_store import get_stored_model, stored_contract
    from credit_pd.serving.contract import build_request_model
    from credit_pd.serving.settings import ServingSettings
    from credit_pd.training.sample import write_sample

    schema, encoder = stored_contract(get_stored_model(model_tag))
    path = Path(tempfile.mkdtemp(prefix="credit-pd-dupkeys-")) / "sample.csv"
    write_sample(path, SampleConfig(n_rows=2_000))  # the training sample's generator, in a temporary folder
    rows = requests_from_frame(load_dataset(path, schema).head(APPLICATIONS), schema)
    settings = ServingSettings()
    return json.dumps({"applications": rows}).encode(), build_request_model(schema, encoder, settings)


def best_times_us(candidates: dict[str, Callable[[], object]]) -> dict[str, float]:
    best = {name: float("inf") for name in candidates}
    for _ in range(ROUNDS):
        for name, call in candidates.items():
            started = time.perf_counter()
            for _ in range(CALLS):
                call()
            best[name] = min(best[name], (time.perf_counter() - started) / CALLS * 1e6)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-tag", default="credit_pd_model:latest")
    args = parser.parse_args(argv)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    import jiter

    from credit_pd.serving.middleware import duplicate_key_location, parse_unique_keys

    body, request_model = request_body(args.model_tag)
    validate = request_model.model_validate_json
    assert duplicate_key_location(body) is None
    document, _ = parse_unique_keys(body)
    assert request_model.model_validate(document) == validate(body)
    with recorded("duplicate-keys", command_line("")):
        times = best_times_us(
            {
                "duplicate-key check": lambda: duplicate_key_location(body),
                "jiter parse alone": lambda: jiter.from_json(body),
                "json.loads": lambda: json.loads(body),
                "BentoML's parse + validation": lambda: validate(body),
            }
        )
        print(f"{APPLICATIONS} applications, {len(body):,} bytes; best of {ROUNDS} interleaved rounds of {CALLS} calls")
        check = times["duplicate-key check"]
        for name, us in times.items():
            print(f"  {name:<30} {us:8,.0f} us   check / this = {check / us:.2f}")
        reads = best_times_us(
            {
                "parsed once": lambda: request_model.model_validate(parse_unique_keys(body)[0]),
                "parsed twice": lambda: (duplicate_key_location(body), validate(body)),
            }
        )
        once, twice = reads["parsed once"], reads["parsed twice"]
        print("the service's read of the body: the check, then validation")
        print(f"  of the check's document (parsed once)       {once:8,.0f} us")
        print(f"  of the body by BentoML (parsed twice)       {twice:8,.0f} us   once / twice = {once / twice:.2f}")


if __name__ == "__main__":
    main()
