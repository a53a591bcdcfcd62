"""A `helm` command line for the chart checks, on the real Helm v4 Go SDK (helm-python-sdk).

No helm binary is installable here (not on PyPI or Debian), but helm-python-sdk ships Helm's own
engine as a library. This script implements the few `helm` subcommands the deploy tests and
checkov's helm framework call, with helm's arguments and output format:

    helm_cli.py version
    helm_cli.py dependency list CHART
    helm_cli.py template [NAME] CHART [-f FILE]... [--set K=V]... [--set-string K=V]...
                         [-n NAMESPACE] [--dependency-update] [--skip-tests]
    helm_cli.py lint CHART [--strict] [-f FILE]... [--set K=V]... [--kube-version V]

It runs under the deploy venv's Python (.venv-deploy, requirements-deploy.txt); the tests put a
`helm` wrapper script for it on checkov's PATH. Values layering follows helm: chart defaults,
then each -f file in order, then --set/--set-string; a null deletes a key.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import helm_python as helm

# Helm's values layering, shared with the k8s/ renderer (one implementation for both).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from render_k8s import merge_values  # noqa: E402

# Helm's name for a release rendered without one (`helm template CHART`).
DEFAULT_RELEASE_NAME = "release-name"


def user_values(args: argparse.Namespace) -> dict[str, Any]:
    """The values the user supplied (-f files, then --set, then --set-string), chart defaults excluded."""
    values: dict[str, Any] = {}
    for path in args.values:
        values = merge_values(values, helm.values_from_yaml(Path(path).read_text()) or {})
    for expression in args.set:
        values = merge_values(values, helm.parse_set_string(expression))
    for expression in args.set_string:
        values = merge_values(values, helm.parse_set_string_values(expression))
    return values


def manifest_stream(rendered: dict[str, str], skip_tests: bool) -> str:
    """Rendered templates as `helm template` prints them: one `# Source:` document per template."""
    documents = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt") or (skip_tests and "/templates/tests/" in path):
            continue
        for body in re.split(r"^---[ \t]*$", rendered[path], flags=re.MULTILINE):
            if body.strip():
                documents.append(f"---\n# Source: {path}\n{body.strip()}\n")
    return "".join(documents)


def cmd_version(_: argparse.Namespace) -> int:
    print(
        f'version.BuildInfo{{Version:"{helm.helm_sdk_version()}", GitCommit:"", '
        f'GoVersion:"", KubeClientVersion:"", HelmPythonSdk:"{helm.__version__}"}}'
    )
    return 0


def cmd_dependency(args: argparse.Namespace) -> int:
    if args.action != "list":
        print(f"Error: only `dependency list` is supported, not {args.action!r}", file=sys.stderr)
        return 1
    print("NAME\tVERSION\tREPOSITORY\tSTATUS")
    for dep in helm.dependency_list(args.chart):
        print(f"{dep['name']}\t{dep['version']}\t{dep['repository']}\t{dep['status']}")
    return 0


def cmd_template(args: argparse.Namespace) -> int:
    chart_path = args.chart or args.name
    release = args.name if args.chart else DEFAULT_RELEASE_NAME
    namespace = args.namespace or os.environ.get("HELM_NAMESPACE") or "default"
    try:
        with helm.Chart.load(chart_path) as chart:
            rendered = chart.render(user_values(args), name=release, namespace=namespace, is_install=True)
    except helm.HelmError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(manifest_stream(rendered, args.skip_tests))
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    try:
        report = helm.lint(args.chart, user_values(args), strict=args.strict, kube_version=args.kube_version)
    except helm.HelmError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report))
    else:
        names = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
        for message in report["messages"]:
            print(f"[{names.get(message['severity'], '?')}] {message['path']}: {message['error'].strip()}")
    failing = 2 if args.strict else 3  # strict: warnings fail too, as with `helm lint --strict`
    return 1 if any(m["severity"] >= failing for m in report["messages"]) else 0


def add_value_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--values", action="append", default=[], help="values file (repeatable)")
    parser.add_argument("--set", action="append", default=[], help="K=V (repeatable)")
    parser.add_argument("--set-string", action="append", default=[], help="K=V as strings (repeatable)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="helm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("version").set_defaults(run=cmd_version)

    dependency = commands.add_parser("dependency")
    dependency.add_argument("action")
    dependency.add_argument("chart")
    dependency.set_defaults(run=cmd_dependency)

    template = commands.add_parser("template")
    template.add_argument("name", help="release name, or the chart when no release name is given")
    template.add_argument("chart", nargs="?")
    template.add_argument("-n", "--namespace")
    template.add_argument("--dependency-update", action="store_true", help="accepted; the chart has no dependencies")
    template.add_argument("--skip-tests", action="store_true")
    add_value_options(template)
    template.set_defaults(run=cmd_template)

    lint = commands.add_parser("lint")
    lint.add_argument("chart")
    lint.add_argument("--strict", action="store_true")
    lint.add_argument("--kube-version")
    lint.add_argument("--json", action="store_true", help="print the SDK's report as JSON")
    add_value_options(lint)
    lint.set_defaults(run=cmd_lint)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
