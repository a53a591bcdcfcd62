"""Canonical spellings: one rule for the loader, training, the batch job and the service.

Categories have one canonical spelling, chosen here and used by the loader, training, the service
and batch scoring: a numeric code is written as an exact decimal without trailing zeros (`1`,
`1.0`, `"1"` and `"1.0"` all become `"1"`; `"2.50"` becomes `"2.5"`), any other label stays as it
is, and the empty string is missing. Codes are compared as exact decimals, never through a float:
`"1.00000000000000000001"` is not code 1. In a numeric-coded field (every label is a number) a
string must be a plain decimal (`CODE_SPELLING`): `"01"`, `"+1"` and `"1e0"` are errors in the
training file, rejects in a batch and a 400 from the service (`CategoryRule.check`).
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
from decimal import Decimal
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

    Numbers become the exact decimal of their shortest round-trip form (1.0 -> "1", 1e-07 ->
    "0.0000001"); strings spelled as a plain decimal (`CODE_SPELLING`) lose trailing zeros by
    text, so no float rounding ever merges two codes; any other string ("01", "1e0", "A") is kept
    as written. Booleans are rejected because `True == 1` would silently turn a flag into status
    code 1.
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
    return _strip_zeros(text) if CODE_PATTERN.fullmatch(text) else text


def canonical_categories(column: pd.Series) -> pd.Series:
    """`canonical_category` over a column, computed once per distinct value (object dtype out)."""
    present = column.dropna()
    mapping = {value: canonical_category(value) for value in present.unique()}
    return column.astype(object).map(mapping).where(column.notna(), None)


def _format_code(number: float) -> str:
    """A float's shortest round-trip form as a plain decimal ("1", "2.5", "0.0000001", "1" + 20 zeros)."""
    return _strip_zeros(format(Decimal(repr(number)), "f"))


def _strip_zeros(text: str) -> str:
    """ "2.50" -> "2.5", "1.000" -> "1", "-0.0" -> "0": the decimal's value, by text."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


# How a numeric code may be spelled as a string: plain decimal, no sign on zero, no leading
# zeros, no exponent ("1", "1.0", "-2", "2.50"; not "01", "+1", "1e0", "-0").
CODE_SPELLING = r"(0|-?[1-9][0-9]*)(\.[0-9]+)?|-0\.[0-9]*[1-9][0-9]*"
CODE_PATTERN = re.compile(CODE_SPELLING)
# What a client or a file is told when a numeric code is spelled another way.
CODE_SPELLING_MESSAGE = (
    'expected a numeric code: a number or a plain decimal such as "1" or "1.0" (not "01", "+1" or "1e0")'
)


class CategoryValueError(ValueError):
    """A category value `CategoryRule.check` refuses; `kind` is the service's error type."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


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
            label
            for label in self.labels
            if (not self.numeric_coded or re.fullmatch(CODE_SPELLING, label)) and canonical_category(label) == label
        )

    def is_well_spelled(self, value: Any) -> bool:
        """False only for a string in a numeric-coded field that is not a plain decimal ("01", "1e0")."""
        return not (self.numeric_coded and isinstance(value, str) and CODE_PATTERN.fullmatch(value) is None)

    def check(self, value: Any, policy: UnseenPolicy) -> str:
        """The canonical label of a present value: the one rule the loader, the batch job and the service apply.

        Raises `CategoryValueError` (kind "category_code_spelling") for a badly spelled code and,
        under `reject`, (kind "unseen_category") for a value never seen in training.
        """
        if not self.is_well_spelled(value):
            raise CategoryValueError("category_code_spelling", CODE_SPELLING_MESSAGE)
        if policy == "reject" and not self.is_known(value):
            raise CategoryValueError("unseen_category", f"expected a value seen in training ({self.allowed_text()})")
        label = canonical_category(value)
        assert label is not None  # callers hand over present values only
        return label

    def validate(self, value: str | float, info: ValidationInfo, default_policy: UnseenPolicy) -> str:
        """The service's field validator: `check`, with errors worded for a JSON client."""
        if type(value) is str and value in self.accepted_as_is:
            return value  # the common case, one set look-up (the checks below cost ~40 us per application)
        policy = info.data.get("unseen_categories", default_policy)
        try:
            return self.check(value, policy)
        except CategoryValueError as exc:
            if exc.kind == "category_code_spelling":
                raise PydanticCustomError(
                    exc.kind,
                    'Input should be a numeric code: a JSON number or a decimal string such as "1" or "1.0"',
                ) from None
            raise PydanticCustomError(
                exc.kind,
                'Input should be a value seen in training: {allowed}. Send "unseen_categories": '
                '"score_as_missing" to score an unseen value as missing instead',
                {"allowed": self.allowed_text()},
            ) from None


def file_category_rule(name: str, column: pd.Series) -> CategoryRule:
    """The rule for a training file's column: numeric-coded when every present value looks like a number.

    The test is the encoder's (`FeatureEncoder.numeric_coded`: every label a number), made on the
    values as written, so a column of codes with one "01" is a coded column with a misspelt code
    rather than a text column; a column that also holds "A" stays text and "01" is a label there.
    """
    return CategoryRule(name=name, labels=(), numeric_coded=looks_numeric_coded(column.dropna().unique()))


def looks_numeric_coded(labels: Any) -> bool:
    """Every label is a number as written ("1", "1.0", "01"): the field is a numeric code."""
    return len(labels) > 0 and all(NUMERIC_CODE.match(str(label)) for label in labels)


def labels_rule(name: str, labels: Any) -> CategoryRule:
    """The rule of a field from its training labels (the stored vocabulary), as the service builds it."""
    return CategoryRule(name=name, labels=tuple(labels), numeric_coded=looks_numeric_coded(labels))


def category_rules(encoder: FeatureEncoder) -> dict[str, CategoryRule]:
    """One rule per categorical feature of a fitted encoder."""
    return {
        name: CategoryRule(name=name, labels=tuple(labels), numeric_coded=encoder.numeric_coded(name))
        for name, labels in encoder.categorical.items()
    }
