"""Example client: send rows of a dataset file to a running service and print the answers.

    python scripts/predict_client.py --url http://localhost:3000 --rows 2 --top-k 3

Reads the rows from the dataset file (default: data/dataset.csv), so what it sends is exactly
what a client holding that file would send.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx

from credit_pd.client import requests_from_frame
from credit_pd.config import DEFAULT_DATASET_PATH
from credit_pd.dataset import load_dataset
from credit_pd.schema import DEFAULT_SCHEMA_PATH, load_schema


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://localhost:3000", help="service base URL (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATASET_PATH, help="dataset to take rows from")
    parser.add_argument("--schema", type=Path, default=DEFAULT_SCHEMA_PATH, help="schema of that dataset")
    parser.add_argument("--rows", type=int, default=1, help="how many rows to send in one request")
    parser.add_argument("--top-k", default="5", help='features per explanation, or "all"')
    parser.add_argument("--no-explain", action="store_true", help="ask for the PD only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    schema = load_schema(args.schema)
    frame = load_dataset(args.data, schema).head(args.rows)
    top_k = args.top_k if args.top_k == "all" else int(args.top_k)
    applications = [r | {"top_k": top_k, "explain": not args.no_explain} for r in requests_from_frame(frame, schema)]
    response = httpx.post(f"{args.url}/predict", json={"applications": applications}, timeout=60)
    print(f"HTTP {response.status_code}")
    print(json.dumps(response.json(), indent=2))
    return 0 if response.status_code == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
