"""LightGBM TreeSHAP throughput by thread count, process count and OpenMP spin count.

    python -m benchmarks.openmp_spin [--model credit_pd_model:latest] [--seconds 4]

Why the service sets `GOMP_SPINCOUNT` (credit_pd.serving.settings.openmp_spin_count): a large
merged batch runs `pred_contrib` on 2 threads so a lone large request uses both cores, and when
both workers do that at once, 4 OpenMP threads share 2 cores. With libgomp's default spin count a
waiting thread burns its core spinning; this prints, for 100-row batches of sample applications,
the rows/s of one process on 1 and 2 threads and of two processes on 2 threads each, under the
default spin count and the service's. Each configuration runs in fresh processes (libgomp reads
the variable once, when LightGBM loads). Figures vary a few percent run to run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.results import command_line, recorded  # noqa: E402

ROWS = 100


def measure(model_tag: str, threads: int, seconds: float) -> float:
    """Rows/s of `pred_contrib` on 100-row batches, in this process."""
    from benchmarks.load_benchmark import sample_applications
    from credit_pd.model_store import load_from_store

    model = load_from_store(model_tag)
    matrix = model.encoder.encode_records(sample_applications(ROWS))
    model.explain(matrix, threads)  # warm-up
    rows, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.explain(matrix, threads)
        rows += ROWS
    return rows / (time.perf_counter() - started)


def run_processes(model_tag: str, processes: int, threads: int, seconds: float, spin: str | None) -> float:
    """Total rows/s of `processes` concurrent processes, each on `threads` threads."""
    env = {key: value for key, value in os.environ.items() if key not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    if spin is not None:
        env["GOMP_SPINCOUNT"] = spin
    command = [
        sys.executable,
        "-m",
        "benchmarks.openmp_spin",
        "--model",
        model_tag,
        "--seconds",
        str(seconds),
        "--child",
        str(threads),
    ]
    children = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    return sum(json.loads(child.communicate()[0].strip().splitlines()[-1])["rows_per_s"] for child in children)


def main(argv: list[str] | None = None) -> None:
    from credit_pd.serving.settings import ServingSettings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="credit_pd_model:latest")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # internal: measure in this process
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps({"rows_per_s": measure(args.model, args.child, args.seconds)}))
        return
    service_spin = str(ServingSettings().openmp_spin_count)
    print(
        f"{ROWS}-row pred_contrib batches, {os.cpu_count()} cores, {args.seconds:g} s each; rows/s (all processes together)"
    )
    print(f"{'GOMP_SPINCOUNT':<22}{'1 proc x 1 thread':>20}{'1 proc x 2 threads':>20}{'2 procs x 2 threads':>21}")
    for label, spin in (("libgomp default", None), (f"{service_spin} (the service's)", service_spin)):
        figures = [run_processes(args.model, p, t, args.seconds, spin) for p, t in ((1, 1), (1, 2), (2, 2))]
        print(f"{label:<22}" + "".join(f"{f:>20,.0f}" for f in figures[:2]) + f"{figures[2]:>21,.0f}", flush=True)


if __name__ == "__main__":
    with recorded("openmp-spin", command_line("")):
        main()
