"""credit_pd.categories: the one spelling rule for categories."""

from __future__ import annotations

import re

from credit_pd.categories import CODE_SPELLING, CategoryRule, canonical_category


def test_known_code_pattern_matches_exactly_the_spellings_of_known_codes():
    rule = CategoryRule(name="s", labels=("0", "1", "2.5", "-3"), numeric_coded=True)
    candidates = {f"{sign}{int_part}{frac}" for sign in ("", "-", "+") for int_part in ("0", "1", "2", "3", "10", "01", "")
                  for frac in ("", ".", ".0", ".00", ".5", ".50", ".05", "e0")}
    for text in sorted(candidates):
        if not re.fullmatch(CODE_SPELLING, text):
            continue
        assert rule.is_known(text) == (canonical_category(text) in rule.label_set), text
    assert rule.is_known(2.5) and rule.is_known(-3) and rule.is_known(1.0) and not rule.is_known(4)
