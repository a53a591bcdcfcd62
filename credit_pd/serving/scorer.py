"""Scoring a merged batch: one vectorised LightGBM + TreeSHAP call for every row (PD, grade, reasons).

`answers` builds the whole batch's answer at once, as plain JSON-ready dicts in the documented
`PredictionOut` shape (credit_pd.serving.contract): ranks, PDs and the selected contributions come
out of numpy in a few vectorised calls, and no pydantic object is made per row (a 100-application
request used to build 1,200 of them, more time than scoring it). The service writes the dicts to
the wire with orjson (`credit_pd.serving.runtime.prediction_output_spec`). `score` is the same
answers validated into `PredictionOut` objects, for Python callers and tests: what goes on the wire
is the documented contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

import anyio.to_thread
import numpy as np

from credit_pd.explanation import top_contributions
from credit_pd.monitoring.live import LiveMonitor, NullMonitor
from credit_pd.scoring_model import ScoringModel
from credit_pd.serving.contract import PredictionOut
from credit_pd.serving.records import DecisionRecorder, NullRecorder

# One answer: uuid, pd, grade, reasons, model_tag, explanation (or None), warnings; see contract.PredictionOut.
Prediction = dict[str, Any]


class ValidatedApplication(Protocol):
    """What the scorer reads of an application besides its features (`vars()` of it gives those).

    The application model is built at start-up from the stored model's schema
    (contract.build_application_model), so no static class names these options: this says which
    of its fields, and the request id `contract.ApplicationBase` remembers, the scorer relies on.
    """

    @property
    def uuid(self) -> str | None: ...

    @property
    def explain(self) -> bool: ...

    @property
    def top_k(self) -> int | Literal["all"]: ...

    @property
    def max_reasons(self) -> int: ...

    @property
    def _request_id(self) -> str | None: ...


class PDScorer:
    """Scores a merged batch: one vectorised LightGBM + TreeSHAP call for all rows, one decision record each."""

    def __init__(
        self,
        model: ScoringModel,
        model_tag: str,
        monitor: LiveMonitor | NullMonitor = NullMonitor(),
        large_batch_rows: int = 0,
        large_batch_threads: int = 1,
        recorder: DecisionRecorder | NullRecorder = NullRecorder(),
    ) -> None:
        self.model = model
        self.model_tag = model_tag
        self.recorder = recorder  # one decision record per scored application (credit_pd.serving.records)
        self.monitor = monitor  # live drift metrics (credit_pd.monitoring.live); observes each scored batch
        # A batch of at least `large_batch_rows` rows runs LightGBM on `large_batch_threads` threads
        # (0: never): see ServingSettings.large_batch_rows for why.
        self.large_batch_rows = large_batch_rows
        self.large_batch_threads = large_batch_threads
        self.feature_names = list(model.feature_names)
        self._names = np.array(self.feature_names, dtype=object)

    def score(self, applications: Sequence[ValidatedApplication]) -> list[PredictionOut]:
        """`answers`, validated into the response model (checks the contract; not the hot path)."""
        return [PredictionOut.model_validate(answer) for answer in self.answers(applications)]

    async def answers_async(
        self, applications: Sequence[ValidatedApplication], inline_max_rows: int
    ) -> list[Prediction]:
        """`answers` for the async API method: up to `inline_max_rows` rows on the event loop, more in a thread.

        A lone application or a small merged batch takes ~0.2-1 ms to score; handing it to a
        worker thread and back cost more than that under load (two thread switches, the GIL
        hand-over), and the worker has nothing else to do meanwhile: BentoML runs one batch at a
        time per worker and each worker has its own core. Batches above the limit go to a thread
        so the event loop keeps answering meanwhile (see `ServingSettings.inline_max_rows`).
        """
        if len(applications) <= inline_max_rows:
            return self.answers(applications)
        return await anyio.to_thread.run_sync(self.answers, applications)

    def answers(self, applications: Sequence[ValidatedApplication]) -> list[Prediction]:
        """One answer per application, in order, as JSON-ready dicts in the `PredictionOut` shape."""
        records = [vars(app) for app in applications]  # the validated fields, read-only (no copy)
        matrix = self.model.encoder.encode_records(records)
        explained = np.fromiter((app.explain for app in applications), dtype=np.bool_, count=len(records))
        threads = self.large_batch_threads if 0 < self.large_batch_rows <= len(records) else None
        # Capped at the model's number of codes (a JSON integer may exceed int64; asking for more than all means all).
        n_codes = len(self.model.reason_codes.codes)
        max_reasons = [min(app.max_reasons, n_codes) for app in applications]
        # Every row is explained: its reasons are the short form of its explanation (explain=false only
        # leaves the full list out of the answer). PD, grade and reasons come from the core's one path.
        decision = self.model.decide(matrix, max_reasons, threads)
        explanation, pds = decision.explanation, decision.pd
        raw = explanation.raw_score
        self.monitor.observe(records, matrix, pds, decision.grade_index)
        warnings = self.model.encoder.input_warnings(matrix, lambda row, name: records[row][name])
        answers = [
            {
                "uuid": app.uuid,
                "pd": pd,
                "grade": grade,
                "reasons": reasons,
                "model_tag": self.model_tag,
                "explanation": None,
                "warnings": row_warnings,
            }
            for app, pd, grade, reasons, row_warnings in zip(
                applications, pds.tolist(), decision.grade, decision.reasons, warnings, strict=True
            )
        ]
        self.recorder.record(records, answers, [app._request_id for app in applications], max_reasons)
        if explained.any():
            rows = np.flatnonzero(explained)
            chosen = rows.tolist()
            self._add_explanations(
                [answers[i] for i in chosen],
                [records[i] for i in chosen],
                [applications[i] for i in chosen],
                explanation.contributions[rows],
                explanation.base_value[rows],
                raw[rows],
            )
        return answers

    def _add_explanations(
        self,
        answers: list[Prediction],
        records: list[dict],
        applications: list[ValidatedApplication],
        contributions: np.ndarray,
        base: np.ndarray,
        raw: np.ndarray,
    ) -> None:
        """Rank the whole batch at once; each row keeps its own `top_k` of the ranked list."""
        n_features = contributions.shape[1]
        top_k = [n_features if app.top_k == "all" else min(app.top_k, n_features) for app in applications]
        order, ranked = top_contributions(contributions, max(top_k))
        # The ranked feature names of every row in one numpy gather (object array -> lists of str).
        ranked_names = self._names[order].tolist()
        for answer, record, k, names, values, base_value, raw_score in zip(
            answers, records, top_k, ranked_names, ranked.tolist(), base.tolist(), raw.tolist(), strict=False
        ):
            answer["explanation"] = {
                "unit": "log-odds",
                "base_value": base_value,
                "raw_score": raw_score,
                "contributions": [
                    {"feature": name, "value": record[name], "contribution": c}
                    for name, c in zip(names[:k], values[:k], strict=False)
                ],
            }
