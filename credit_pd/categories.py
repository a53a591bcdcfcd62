"""Canonical spellings: one rule for the loader, training, the batch job and the service.

Categories have one canonical spelling, chosen here and used by the loader, training, the service
and batch scoring: a numeric code is written without a trailing ".0" (`1`, `1.0`, `"1"` and
`"1.0"` all become `"1"`), any other label stays as it is, and the empty string is missing.
The Klarna export writes `account_status` as `1.0` but `status_last_archived_0_24m` as `1`,
and pandas hands a client numbers for both; without one canonical form the same status would be
scored as an unseen category, i.e. as missing.

`CategoryRule` is what one categorical field accepts: its training labels, how a numeric code may
be spelled, and the unseen-category policy. Booleans are spelled `True`/`False` (also
`true`/`false`, `TRUE`/`FALSE`, `1`/`0`) in files.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import pandas as pd
from pydantic import ValidationInfo
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from credit_pd.features import FeatureEncoder

# Spellings accepted for boolean features in files; the Klarna export writes True/False.
TRUE_SPELLINGS = frozenset({"True", "true", "TRUE", "1"})
FALSE_SPELLINGS = frozenset({"False", "false", "FALSE", "0"})
# What to do with a category value never seen in training: `reject` it, or score it as missing.
# One definition for the service (default reject) and the batch job (default score_as_missing).
UnseenPolicy = Literal["reject", "score_as_missing"]
UNSEEN_POLICIES: tuple[str, ...] = get_args(UnseenPolicy)
# A category label that is a plain decimal number ("1", "1.0", "-2.50", "3e2"); such labels are codes.
NUMERIC_CODE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def canonical_category(value: Any) -> str | None:
    """The one spelling of a category label; None for missing (None, NaN or the empty string).

    Numbers and numeric strings become their shortest decimal form without a trailing ".0";
    booleans are rejected because `True == 1` would silently turn a flag into status code 1.
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"a boolean ({value!r}) is not a category label")
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise ValueError(f"{value!r} is not a category label")
        return _format_code(float(value))
    text = str(value)
    if text == "":
        return None
    return _format_code(float(text)) if NUMERIC_CODE.match(text) else text


def canonical_categories(column: pd.Series) -> pd.Series:
    """`canonical_category` over a column, computed once per distinct value (object dtype out)."""
    present = column.dropna()
    mapping = {value: canonical_category(value) for value in present.unique()}
    return column.astype(object).map(mapping).where(column.notna(), None)


def _format_code(number: float) -> str:
    return str(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)


# How a numeric code may be spelled as a string: plain decimal, no sign on zero, no leading
# zeros, no exponent ("1", "1.0", "-2", "2.50"; not "01", "+1", "1e0", "-0").
CODE_SPELLING = r"(0|-?[1-9][0-9]*)(\.[0-9]+)?|-0\.[0-9]*[1-9][0-9]*"


@dataclass(frozen=True)
class CategoryRule:
    """What one categorical field accepts: its training labels, spellings and the unseen policy."""

    name: str
    labels: tuple[str, ...]
    numeric_coded: bool

    @cached_property
    def label_set(self) -> frozenset[str]:
        return frozenset(self.labels)

    @cached_property
    def text_labels(self) -> tuple[str, ...]:
        """Labels matched as exact strings (not numeric codes)."""
        return tuple(label for label in self.labels if not re.fullmatch(CODE_SPELLING, label))

    @cached_property
    def code_labels(self) -> tuple[str, ...]:
        return tuple(label for label in self.labels if re.fullmatch(CODE_SPELLING, label))

    @cached_property
    def known_code_pattern(self) -> str | None:
        """A regex matching exactly the decimal spellings of the known codes ("1", "1.0", "1.00")."""
        if not self.code_labels:
            return None
        parts = [re.escape(c) + ("0*" if "." in c else r"(\.0+)?") for c in self.code_labels]
        return "(" + "|".join(parts) + ")"

    def is_known(self, value: str | float) -> bool:
        if isinstance(value, str):
            if value in self.text_labels:
                return True
            return self.known_code_pattern is not None and re.fullmatch(self.known_code_pattern, value) is not None
        return canonical_category(value) in self.label_set

    def allowed_text(self) -> str:
        shown = ", ".join(repr(label) for label in self.labels[:20])
        more = f" and {len(self.labels) - 20} more (see the OpenAPI document)" if len(self.labels) > 20 else ""
        return shown + more

    @cached_property
    def accepted_as_is(self) -> frozenset[str]:
        """Labels that `validate` returns unchanged under any policy: known, well spelled, canonical."""
        return frozenset(
            label for label in self.labels
            if (not self.numeric_coded or re.fullmatch(CODE_SPELLING, label)) and canonical_category(label) == label
        )

    def validate(self, value: str | float, info: ValidationInfo, default_policy: UnseenPolicy) -> str:
        """The canonical label; raises for a malformed code and, under `reject`, an unseen value."""
        if type(value) is str and value in self.accepted_as_is:
            return value  # the common case, one set look-up (the checks below cost ~40 us per application)
        if self.numeric_coded and isinstance(value, str) and not re.fullmatch(CODE_SPELLING, value):
            raise PydanticCustomError(
                "category_code_spelling",
                "Input should be a numeric code: a JSON number or a decimal string such as \"1\" or \"1.0\"",
            )
        policy = info.data.get("unseen_categories", default_policy)
        if policy == "reject" and not self.is_known(value):
            raise PydanticCustomError(
                "unseen_category",
                "Input should be a value seen in training: {allowed}. Send \"unseen_categories\": "
                "\"score_as_missing\" to score an unseen value as missing instead",
                {"allowed": self.allowed_text()},
            )
        label = canonical_category(value)
        assert label is not None  # empty strings and NaN are rejected by the field types
        return label


def category_rules(encoder: "FeatureEncoder") -> dict[str, CategoryRule]:
    """One rule per categorical feature of a fitted encoder."""
    return {
        name: CategoryRule(name=name, labels=tuple(labels), numeric_coded=encoder.numeric_coded(name))
        for name, labels in encoder.categorical.items()
    }
