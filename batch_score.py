"""Explained PD scoring of a whole book on Apache Spark; see `python batch_score.py --help` and docs/batch.md."""

import sys

from credit_pd.batch.cli import main

if __name__ == "__main__":
    sys.exit(main())
