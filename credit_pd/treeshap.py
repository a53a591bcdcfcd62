"""Exact path-dependent TreeSHAP from precomputed tables: explanations at about a prediction's cost.

Why tables. In path-dependent TreeSHAP (the algorithm behind LightGBM's `pred_contrib=True`),
the game value of a feature subset S follows the input's branch at the nodes whose feature is in
S and takes the cover-weighted average of both children elsewhere. An input therefore enters one
tree's SHAP vector only through the decisions at that tree's internal nodes, and that vector can
be computed once, at training time, for every decision pattern:

- "tree tables" (small trees, at most `MAX_TREE_TABLE_NODES` internal nodes): one row per pattern
  of all the tree's node decisions, one column per feature the tree uses;
- "leaf tables" (deeper trees, FastTreeSHAP v2's per-leaf "combination sum", Yang 2021): leaf L's
  share of the SHAP vector depends only on which of its k path features the input agrees with
  (goes toward L at every node of that feature), so one row per pattern of k bits.

Explaining a batch is then: every internal node's decision for every row and tree at once (one
gathered comparison for the numeric nodes, one bitset look-up for the categorical ones), the
decision patterns packed into integers, one gather from the flat table and one segmented sum per
feature. No loop over rows or trees runs in Python.

Node decisions copy LightGBM's `Tree::NumericalDecision` / `CategoricalDecision` (tree.h, 4.x),
applied to the row as LightGBM's dense-matrix predictor hands it over (values with
|x| <= kZeroThreshold are dropped from the sparse row, so they arrive as 0.0):

- numeric, missing type None: NaN is 0.0, then `x <= threshold` (both doubles);
- numeric, missing type Zero: NaN is 0.0; 0.0 takes the default direction;
- numeric, missing type NaN: NaN takes the default direction;
- categorical: `int(x)` (truncation) in the node's category bitset goes left; NaN, x <= -1 and
  codes beyond the bitset go right.

LightGBM stays the reference: `verify_tables` compares against `booster.predict(pred_contrib=True)`
(contributions, base value, and base + sum = raw score), and models whose tables would be too
large raise `TablesTooLarge` so the caller keeps using `pred_contrib`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from math import factorial
from typing import Any, cast

import lightgbm as lgb
import numpy as np

from credit_pd.errors import CreditPDError

# LightGBM's kZeroThreshold is declared `const double kZeroThreshold = 1e-35f`: the float
# literal widened to double, which is not the double 1e-35.
K_ZERO_THRESHOLD = float(np.float32(1e-35))
# A tree with at most this many internal nodes gets a table over all its decision patterns
# (2^8 = 256 rows); depth-3 trees have 7. Larger trees use per-leaf tables.
MAX_TREE_TABLE_NODES = 8
# A leaf whose path has more distinct features than this makes the model fall back to pred_contrib
# (2^16 rows per leaf); bounded-depth shapes stay far below it.
MAX_LEAF_PATH_FEATURES = 16
# Upper bound on all table values together (8 bytes each): 2^23 values = 64 MB in the model entry.
MAX_TABLE_VALUES = 2**23
# Rows explained per chunk: the gathered matrices of a chunk stay in cache (10,000 rows at once
# are memory-bound). Measured with benchmarks/treeshap_benchmark.py.
DEFAULT_CHUNK_ROWS = 128

_MISSING_NONE, _MISSING_ZERO, _MISSING_NAN = 0, 1, 2
_MISSING_TYPES = {"None": _MISSING_NONE, "Zero": _MISSING_ZERO, "NaN": _MISSING_NAN}
_FORMAT_VERSION = 1


class TreeShapError(CreditPDError):
    """Base of the table TreeSHAP errors."""


class TablesTooLarge(TreeShapError):
    """The model's trees are too deep or too many for tables; explain it with pred_contrib."""


class UnsupportedModel(TreeShapError):
    """The booster is of a kind the tables do not cover (multiclass, linear trees, averaged output)."""


class TableMismatchError(TreeShapError):
    """Table explanations differ from LightGBM's pred_contrib by more than the tolerance."""


# ---------------------------------------------------------------------------------------------
# Parsing LightGBM's tree dump into plain records
# ---------------------------------------------------------------------------------------------


@dataclass
class _Node:
    """One internal node of one tree, as LightGBM decides it."""

    feature: int
    categorical: bool
    threshold: float  # numeric nodes
    categories: tuple[int, ...]  # categorical nodes: the categories that go left
    missing_type: int
    default_left: bool
    count: float
    column: int = -1  # values column its decision reads (set by _build)


@dataclass
class _Leaf:
    value: float
    count: float
    path: list[tuple[int, bool]]  # (local node index, went left) from the root


@dataclass
class _Tree:
    nodes: list[_Node] = field(default_factory=list)
    leaves: list[_Leaf] = field(default_factory=list)
    left: list[tuple[bool, int]] = field(default_factory=list)  # (is leaf, index) per node
    right: list[tuple[bool, int]] = field(default_factory=list)


def _parse_node(raw: Mapping[str, Any], tree: _Tree, path: list[tuple[int, bool]]) -> tuple[bool, int]:
    """Append `raw` (a dump_model node) and its subtree to `tree`; returns (is leaf, index)."""
    if "leaf_index" in raw or "split_index" not in raw:
        leaf = _Leaf(value=float(raw["leaf_value"]), count=float(raw.get("leaf_count", 0)), path=list(path))
        tree.leaves.append(leaf)
        return True, len(tree.leaves) - 1
    categorical = raw["decision_type"] == "=="
    if not categorical and raw["decision_type"] != "<=":
        raise UnsupportedModel(f"unknown decision_type {raw['decision_type']!r} in the booster's tree dump")
    threshold = float("nan") if categorical else float(raw["threshold"])
    if not categorical and not np.isfinite(threshold):
        raise UnsupportedModel(f"non-finite numeric threshold {threshold} in the booster's tree dump")
    categories = tuple(int(c) for c in str(raw["threshold"]).split("||")) if categorical else ()
    node = _Node(
        feature=int(raw["split_feature"]),
        categorical=categorical,
        threshold=threshold,
        categories=categories,
        missing_type=_MISSING_TYPES[raw["missing_type"]],
        default_left=bool(raw["default_left"]),
        count=float(raw["internal_count"]),
    )
    index = len(tree.nodes)
    tree.nodes.append(node)
    tree.left.append((True, -1))
    tree.right.append((True, -1))
    tree.left[index] = _parse_node(raw["left_child"], tree, path + [(index, True)])
    tree.right[index] = _parse_node(raw["right_child"], tree, path + [(index, False)])
    return False, index


def _child_count(tree: _Tree, child: tuple[bool, int]) -> float:
    is_leaf, index = child
    return tree.leaves[index].count if is_leaf else tree.nodes[index].count


def _parse_booster(booster: lgb.Booster, num_iteration: int | None) -> tuple[list[_Tree], int]:
    """The booster's trees (first `num_iteration` iterations) and its feature count."""
    dump = booster.dump_model(num_iteration=num_iteration)
    if dump.get("num_tree_per_iteration", 1) != 1:
        raise UnsupportedModel(
            f"table TreeSHAP covers one tree per iteration; this booster has "
            f"{dump['num_tree_per_iteration']} (multiclass)"
        )
    if dump.get("average_output"):
        raise UnsupportedModel("table TreeSHAP does not cover averaged output (random-forest mode)")
    trees = []
    for info in dump["tree_info"]:
        if "leaf_coeff" in info["tree_structure"] or info.get("is_linear"):
            raise UnsupportedModel("table TreeSHAP does not cover linear trees")
        tree = _Tree()
        _parse_node(info["tree_structure"], tree, [])
        trees.append(tree)
    return trees, int(dump["max_feature_idx"]) + 1


# ---------------------------------------------------------------------------------------------
# Table construction (training time)
# ---------------------------------------------------------------------------------------------


def _shapley_weights(k: int) -> np.ndarray:
    """w[s] = s! (k-1-s)! / k!: the Shapley weight of a coalition of s others among k players."""
    return np.array([factorial(s) * factorial(k - 1 - s) / factorial(k) for s in range(k)], dtype=np.float64)


def _leaf_tables(zero_fractions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """SHAP shares of leaves with k path features each, for every agreement pattern.

    `zero_fractions` is (L, k): per leaf and path feature, the product of cover ratios
    (child count / parent count) of that feature's nodes on the path; `values` the (L,) leaf
    outputs. Returns (L, 2^k, k): row p holds the leaf's share of each path feature's SHAP value
    when bit j of p says the input agrees with path feature j. The leaf's game is
    v(S) = value * prod_{i in S} o_i * prod_{i not in S} z_i over its k path features, so
    phi_j = value * (o_j - z_j) * sum_{S subset of others} w(|S|) prod_{i in S} o_i prod_{i not in S} z_i;
    the sum is a polynomial in "i joins S" built one feature at a time.
    """
    n_leaves, k = zero_fractions.shape
    patterns = np.arange(2**k)
    ones = ((patterns[:, None] >> np.arange(k)) & 1).astype(np.float64)  # (P, k)
    weights = _shapley_weights(k)
    out = np.empty((n_leaves, 2**k, k), dtype=np.float64)
    for j in range(k):
        coef = np.zeros((n_leaves, 2**k, k), dtype=np.float64)
        coef[:, :, 0] = 1.0
        for i in range(k):
            if i == j:
                continue
            shifted = np.zeros_like(coef)
            shifted[:, :, 1:] = coef[:, :, :-1]
            coef = zero_fractions[:, i, None, None] * coef + ones[None, :, i, None] * shifted
        combination_sum = coef @ weights  # (L, P)
        out[:, :, j] = values[:, None] * (ones[None, :, j] - zero_fractions[:, j, None]) * combination_sum
    return out


@dataclass
class _LeafPaths:
    """Per leaf of one tree: its distinct path features and, for each, the nodes and directions."""

    features: list[list[int]]
    nodes: list[list[list[tuple[int, bool]]]]
    zero_fractions: list[np.ndarray]


def _leaf_paths(tree: _Tree) -> _LeafPaths:
    """Group each leaf's path by feature, in order of first appearance (LightGBM's unique path)."""
    features, nodes, zeros = [], [], []
    for leaf in tree.leaves:
        order: list[int] = []
        groups: dict[int, list[tuple[int, bool]]] = {}
        zero: dict[int, float] = {}
        for node_index, went_left in leaf.path:
            node = tree.nodes[node_index]
            child = tree.left[node_index] if went_left else tree.right[node_index]
            if node.feature not in groups:
                order.append(node.feature)
                groups[node.feature] = []
                zero[node.feature] = 1.0
            groups[node.feature].append((node_index, went_left))
            zero[node.feature] *= _child_count(tree, child) / node.count
        features.append(order)
        nodes.append([groups[f] for f in order])
        zeros.append(np.array([zero[f] for f in order], dtype=np.float64))
    return _LeafPaths(features=features, nodes=nodes, zero_fractions=zeros)


def _expected_value(tree: _Tree) -> float:
    """LightGBM's Tree::ExpectedValue: leaf outputs weighted by leaf count / root count."""
    if not tree.nodes:
        return tree.leaves[0].value
    root = tree.nodes[0].count
    return float(sum((leaf.count / root) * leaf.value for leaf in tree.leaves))


def _tree_table(tree: _Tree, paths: _LeafPaths, leaf_tables: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """(2^m, u) SHAP vectors of a tree with m internal nodes, for every pattern of node decisions.

    Bit q of a pattern is True when local node q sends the row left. Columns are the tree's u
    distinct features (returned in column order).
    """
    m = len(tree.nodes)
    features = sorted({node.feature for node in tree.nodes})
    column = {f: c for c, f in enumerate(features)}
    bits = ((np.arange(2**m)[:, None] >> np.arange(m)) & 1).astype(bool)  # (2^m, m)
    table = np.zeros((2**m, len(features)), dtype=np.float64)
    for leaf, feats in enumerate(paths.features):
        pattern = np.zeros(2**m, dtype=np.int64)
        for j, groups in enumerate(paths.nodes[leaf]):
            agree = np.ones(2**m, dtype=bool)
            for node_index, went_left in groups:
                agree &= bits[:, node_index] == went_left
            pattern |= agree.astype(np.int64) << j
        for j, f in enumerate(feats):
            table[:, column[f]] += leaf_tables[leaf][pattern, j]
    return table, features


# ---------------------------------------------------------------------------------------------
# The tables
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeShapTables:
    """Precomputed exact TreeSHAP of one LightGBM booster (see the module docstring).

    Every field is a number or a numpy array, so `to_arrays` / `from_arrays` store the tables in
    the model entry as plain arrays. Build with `from_booster`.

    Explaining a chunk of rows runs these steps, each one numpy call over the whole chunk:
    1. `values` (n, V + N_cat): per feature and missing-value rule one "variant" column
       (missing values replaced by -inf to go left or +inf to go right), then per categorical
       node 0.0 (goes left) or 1.0 (goes right) from the node's category bitset;
    2. decisions = values[:, gather_column] <= gather_threshold, laid out unit-major so that
       bit j of every unit is one contiguous slice (padding compares with NaN: always False);
    3. tree units: pattern = sum_q decision_q << q; leaf units: bit j is set when the row
       agrees (decision == gather_direction) at every one of the leaf's nodes of path feature j;
    4. contributions: table[pattern[:, column_unit] * stride + base], summed per feature.
    """

    n_features: int
    n_trees: int
    base_value: float
    variant_feature: np.ndarray  # (V,) int64
    variant_missing: np.ndarray  # (V,) int64: 0 None, 1 Zero, 2 NaN
    variant_fill: np.ndarray  # (V,) float64: what a missing value becomes (-inf left, +inf right)
    cat_feature: np.ndarray  # (C,) int64: the categorical features the trees split on
    cat_size: np.ndarray  # (C,) float64: codes >= cat_size (and NaN, <= -1) go right everywhere
    cat_node_column: np.ndarray  # (N_cat,) int64 into cat_feature
    cat_node_offset: np.ndarray  # (N_cat,) int64: where code 0 of the node's block is in cat_right
    # float64: 1.0 where the code goes right. Per node a block [x <= -1 or NaN, code 0, ..., code
    # cat_size - 1, x >= cat_size]; the first and last entries are 1.0.
    cat_right: np.ndarray
    gather_column: np.ndarray  # (tree_bits * n_tree_units + leaf_bits * leaf_nodes * n_leaf_units,) int64
    gather_threshold: np.ndarray  # float64, same length
    gather_direction: np.ndarray  # bool, one per leaf-unit entry: the direction toward the leaf
    tree_bits: int
    n_tree_units: int
    leaf_bits: int
    leaf_nodes: int
    n_leaf_units: int
    unit_stride: np.ndarray  # (U,) int64: a unit's table is (2^bits, stride)
    unit_base: np.ndarray  # (U,) int64: where it starts in `table`
    column_unit: np.ndarray  # (S,) int64: gathered columns, sorted by feature
    column_slot: np.ndarray  # (S,) int64
    feature_start: np.ndarray  # (G,) int64: columns feature_start[g]: sum into feature_used[g]
    feature_used: np.ndarray  # (G,) int64
    table: np.ndarray  # flat float64

    # ----- construction --------------------------------------------------------------------

    @classmethod
    def from_booster(
        cls, booster: lgb.Booster, num_iteration: int | None = None, max_table_values: int = MAX_TABLE_VALUES
    ) -> TreeShapTables:
        """Tables for `booster`'s first `num_iteration` iterations (None: what `predict` uses).

        Raises `TablesTooLarge` when the tables would exceed `max_table_values` (deep trees), and
        `UnsupportedModel` for boosters outside LightGBM's single-output tree models.
        """
        trees, n_features = _parse_booster(booster, _resolved_iteration(booster, num_iteration))
        return _build(trees, n_features, max_table_values)

    # ----- explaining ----------------------------------------------------------------------

    def explain(self, matrix: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> tuple[float, np.ndarray]:
        """(base value, (n_rows, n_features) contributions), equal to LightGBM's pred_contrib.

        The base value is the same for every row (the trees' expected value); LightGBM returns
        it as pred_contrib's last column.
        """
        matrix = self._checked(matrix)
        out = np.zeros((matrix.shape[0], self.n_features), dtype=np.float64)
        if self.column_unit.size:
            for start in range(0, matrix.shape[0], chunk_rows):
                stop = min(start + chunk_rows, matrix.shape[0])
                out[start:stop, self.feature_used] = self._explain_chunk(matrix[start:stop])
        return self.base_value, out

    def raw_score(self, matrix: np.ndarray) -> np.ndarray:
        """The trees' raw score (log-odds without any init score): base + sum of contributions."""
        base, contributions = self.explain(matrix)
        return base + contributions.sum(axis=1)

    def _checked(self, matrix: np.ndarray) -> np.ndarray:
        """The matrix as C-contiguous float64, or a clear error saying what was expected."""
        array = np.asarray(matrix)
        if array.dtype == np.float64 and array.ndim == 2 and array.shape[1] == self.n_features:
            return np.ascontiguousarray(array)  # the encoder's output: no copy, no dtype checks
        if array.ndim != 2 or array.shape[1] != self.n_features:
            raise ValueError(
                f"matrix has shape {array.shape}; expected (n_rows, {self.n_features}): "
                f"the booster's {self.n_features} features in its order"
            )
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise ValueError(f"matrix has dtype {array.dtype}; expected numbers (float64, as the encoder writes)")
        return np.ascontiguousarray(array, dtype=np.float64)

    def _values(self, matrix: np.ndarray) -> np.ndarray:
        """Step 1: the variant columns, then one 0.0/1.0 (left/right) column per categorical node."""
        raw = matrix[:, self.variant_feature]
        # LightGBM's dense-row predictor drops |x| <= kZeroThreshold, so those arrive as 0.0.
        values = np.where(np.abs(raw) <= K_ZERO_THRESHOLD, 0.0, raw)
        # NaN: 0.0 under the None rule, the default direction under the Zero and NaN rules.
        values = np.where(np.isnan(values), self._nan_value, values)
        if self._has_zero_rule:  # Zero rule: 0.0 (a NaN included) takes the default direction.
            values = np.where((values == 0.0) & self._zero_rule, self.variant_fill, values)
        if not self.cat_node_column.size:
            return values
        # C++'s int(x) truncates: x in (-1, 0) is code 0. fmax maps NaN to -1 (goes right), fmin
        # puts codes no bitset holds at cat_size (goes right), before the cast can overflow.
        codes = np.fmin(np.fmax(matrix[:, self.cat_feature], -1.0), self.cat_size).astype(np.int64)
        return np.concatenate([values, self.cat_right[codes[:, self.cat_node_column] + self.cat_node_offset]], axis=1)

    @cached_property
    def _nan_value(self) -> np.ndarray:
        """Per variant, what NaN becomes: 0.0 under the None rule, else the default direction."""
        return np.where(self.variant_missing == _MISSING_NONE, 0.0, self.variant_fill)

    @cached_property
    def _zero_rule(self) -> np.ndarray:
        return self.variant_missing == _MISSING_ZERO

    @cached_property
    def _has_zero_rule(self) -> bool:
        """Boosters trained without zero_as_missing have no Zero-rule node: three calls saved per chunk."""
        return bool(self._zero_rule.any())

    def _patterns(self, matrix: np.ndarray) -> np.ndarray:
        """Steps 2-3: (n, U) int64 decision pattern of every unit (tree units, then leaf units)."""
        decisions = self._values(matrix)[:, self.gather_column] <= self.gather_threshold
        n_tree = self.tree_bits * self.n_tree_units
        patterns = []
        if self.n_tree_units:
            patterns.append(_bits_to_int(decisions[:, :n_tree].reshape(-1, self.tree_bits, self.n_tree_units)))
        if self.n_leaf_units:
            agree = decisions[:, n_tree:] == self.gather_direction
            agree = agree.reshape(-1, self.leaf_bits, self.leaf_nodes, self.n_leaf_units).all(axis=2)
            patterns.append(_bits_to_int(agree))
        return patterns[0] if len(patterns) == 1 else np.concatenate(patterns, axis=1)

    def _explain_chunk(self, matrix: np.ndarray) -> np.ndarray:
        """Step 4: (n, G) contributions of the used features for one chunk of rows."""
        offsets = self._patterns(matrix) * self.unit_stride + self.unit_base  # int64 by promotion
        index = offsets[:, self.column_unit] + self.column_slot
        return np.add.reduceat(self.table[index], self.feature_start, axis=1)

    # ----- storage -------------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every field as a numpy array (plain data for the model store's custom objects)."""
        arrays = {name: np.asarray(getattr(self, name)) for name in self.__dataclass_fields__}
        arrays["format_version"] = np.asarray(_FORMAT_VERSION)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> TreeShapTables:
        """Rebuild from `to_arrays()`; a missing field or another format version is a clear error."""
        version = int(np.asarray(arrays.get("format_version", -1)))
        if version != _FORMAT_VERSION:
            raise TreeShapError(
                f"stored TreeSHAP tables have format version {version}; this code reads "
                f"version {_FORMAT_VERSION}: rebuild them with TreeShapTables.from_booster"
            )
        missing = [name for name in cls.__dataclass_fields__ if name not in arrays]
        if missing:
            raise TreeShapError(f"stored TreeSHAP tables lack fields {missing}; rebuild them with from_booster")
        kwargs: dict[str, Any] = {}
        for name, spec in cls.__dataclass_fields__.items():
            value = np.asarray(arrays[name])
            kind = cast(str, spec.type)  # annotations stay strings under `from __future__ import annotations`
            kwargs[name] = value if kind == "np.ndarray" else {"int": int, "float": float}[kind](value)
        return cls(**kwargs)


def _resolved_iteration(booster: lgb.Booster, num_iteration: int | None) -> int | None:
    """What `Booster.predict(num_iteration=None)` uses: the best iteration when there is one."""
    if num_iteration is None and booster.best_iteration > 0:
        return booster.best_iteration
    return num_iteration


def _bits_to_int(bits: np.ndarray) -> np.ndarray:
    """(n, k, U) bool -> (n, U) integers with bits[:, j] as bit j.

    One einsum over the bytes (uint8 up to 8 bits): ~6x faster than k shifts at 128 rows."""
    weights = _BIT_WEIGHTS_8 if bits.shape[1] <= 8 else _BIT_WEIGHTS_32
    return np.einsum("nku,k->nu", bits.view(np.uint8), weights[: bits.shape[1]], dtype=weights.dtype)


_BIT_WEIGHTS_8 = (1 << np.arange(8)).astype(np.uint8)
_BIT_WEIGHTS_32 = (1 << np.arange(MAX_LEAF_PATH_FEATURES)).astype(np.uint32)


# ---------------------------------------------------------------------------------------------
# Assembly of the flat arrays
# ---------------------------------------------------------------------------------------------

# Gather entries that pad a unit compare column 0 with NaN, which is False for every value.
_PAD = (0, float("nan"))


@dataclass
class _Layout:
    """What `_build` accumulates: gather entries per bit, table chunks, gathered columns."""

    columns: list[tuple[int, int, int]] = field(default_factory=list)  # (feature, unit, slot)
    strides: list[int] = field(default_factory=list)
    bases: list[int] = field(default_factory=list)
    chunks: list[np.ndarray] = field(default_factory=list)
    size: int = 0

    def add_unit(self, table: np.ndarray, features: list[int]) -> int:
        """Append a (2^bits, len(features)) table; returns the unit's index."""
        unit = len(self.strides)
        self.strides.append(table.shape[1])
        self.bases.append(self.size)
        self.columns.extend((f, unit, slot) for slot, f in enumerate(features))
        self.chunks.append(table.ravel())
        self.size += table.size
        return unit


def _number_categorical_nodes(trees: list[_Tree], n_variants: int) -> None:
    """Categorical node i reads values column n_variants + i (after the variant columns)."""
    cat_index = 0
    for tree in trees:
        for node in tree.nodes:
            if node.categorical:
                node.column = n_variants + cat_index
                cat_index += 1


def _numeric_arrays(trees: list[_Tree]) -> dict[str, np.ndarray]:
    """Variant columns: one per (feature, missing rule, default direction) the numeric nodes use."""
    variants: dict[tuple[int, int, float], int] = {}
    for tree in trees:
        for node in tree.nodes:
            if not node.categorical:
                fill = 0.0 if node.missing_type == _MISSING_NONE else (-np.inf if node.default_left else np.inf)
                node.column = variants.setdefault((node.feature, node.missing_type, fill), len(variants))
    if not variants:
        variants[(0, _MISSING_NONE, 0.0)] = 0  # keeps column 0 valid for padding
    keys = sorted(variants, key=variants.__getitem__)
    return {
        "variant_feature": np.array([k[0] for k in keys], dtype=np.int64),
        "variant_missing": np.array([k[1] for k in keys], dtype=np.int64),
        "variant_fill": np.array([k[2] for k in keys], dtype=np.float64),
    }


def _categorical_arrays(trees: list[_Tree]) -> dict[str, np.ndarray]:
    """Per categorical node a block of cat_size + 2 values: 0.0 where category c goes left."""
    categorical = [node for tree in trees for node in tree.nodes if node.categorical]
    features = sorted({node.feature for node in categorical})
    size = {f: 1 + max(max(n.categories) for n in categorical if n.feature == f) for f in features}
    column = {f: c for c, f in enumerate(features)}
    blocks, offsets, offset = [], [], 0
    for node in categorical:
        block = np.ones(size[node.feature] + 2, dtype=np.float64)
        block[[c + 1 for c in node.categories]] = 0.0
        blocks.append(block)
        offsets.append(offset + 1)
        offset += block.size
    return {
        "cat_feature": np.array(features, dtype=np.int64),
        "cat_size": np.array([size[f] for f in features], dtype=np.float64),
        "cat_node_column": np.array([column[n.feature] for n in categorical], dtype=np.int64),
        "cat_node_offset": np.array(offsets, dtype=np.int64),
        "cat_right": np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float64),
    }


def _node_entry(node: _Node) -> tuple[int, float]:
    """(values column, threshold) whose `<=` is the node's "goes left"."""
    return node.column, (0.5 if node.categorical else node.threshold)


def _check_size(trees: list[_Tree], paths: list[_LeafPaths], max_table_values: int) -> None:
    """Raise TablesTooLarge before building anything that would not fit."""
    total = 0
    for tree, tree_paths in zip(trees, paths, strict=True):
        m = len(tree.nodes)
        if m == 0:
            continue
        if m <= MAX_TREE_TABLE_NODES:
            total += 2**m * len({n.feature for n in tree.nodes})
            continue
        for feats in tree_paths.features:
            if len(feats) > MAX_LEAF_PATH_FEATURES:
                raise TablesTooLarge(
                    f"a leaf path has {len(feats)} distinct features (limit "
                    f"{MAX_LEAF_PATH_FEATURES}); explain this model with pred_contrib"
                )
            total += 2 ** len(feats) * len(feats)
    if total > max_table_values:
        raise TablesTooLarge(
            f"TreeSHAP tables would hold {total:,} values (limit {max_table_values:,}); "
            "explain this model with pred_contrib"
        )


def _compute_leaf_tables(trees: list[_Tree], paths: list[_LeafPaths]) -> list[list[np.ndarray]]:
    """Every leaf's (2^k, k) table, leaves of equal k computed together."""
    tables: list[list[np.ndarray]] = [[np.empty((1, 0))] * len(tree.leaves) for tree in trees]
    by_k: dict[int, list[tuple[int, int]]] = {}
    for t, (tree, tree_paths) in enumerate(zip(trees, paths, strict=True)):
        if tree.nodes:
            for leaf, feats in enumerate(tree_paths.features):
                by_k.setdefault(len(feats), []).append((t, leaf))
    for k, members in by_k.items():
        zeros = np.array([paths[t].zero_fractions[leaf] for t, leaf in members]).reshape(len(members), k)
        values = np.array([trees[t].leaves[leaf].value for t, leaf in members])
        for (t, leaf), table in zip(members, _leaf_tables(zeros, values), strict=True):
            tables[t][leaf] = table
    return tables


def _tree_unit_entries(trees: list[_Tree], small: list[int], bits: int) -> list[tuple[int, float]]:
    """Gather entries of the tree units, bit-major: entry [q, unit] is local node q of the unit's tree."""
    entries = [[_PAD] * len(small) for _ in range(bits)]
    for unit, t in enumerate(small):
        for q, node in enumerate(trees[t].nodes):
            entries[q][unit] = _node_entry(node)
    return [entry for row in entries for entry in row]


def _leaf_unit_entries(
    trees: list[_Tree], paths: list[_LeafPaths], leaves: list[tuple[int, int]], bits: int, depth: int
) -> tuple[list[tuple[int, float]], list[bool]]:
    """Gather entries and directions of the leaf units, laid out [j, r, unit].

    Padding: a missing node of a present path feature must agree (a False decision, direction
    False); a missing path feature must not (a False decision, direction True).
    """
    entries = [[[_PAD] * len(leaves) for _ in range(depth)] for _ in range(bits)]
    directions = [[[True] * len(leaves) for _ in range(depth)] for _ in range(bits)]
    for unit, (t, leaf) in enumerate(leaves):
        for j, group in enumerate(paths[t].nodes[leaf]):
            for r in range(depth):
                directions[j][r][unit] = False
            for r, (node_index, went_left) in enumerate(group):
                entries[j][r][unit] = _node_entry(trees[t].nodes[node_index])
                directions[j][r][unit] = went_left
    flat_entries = [e for plane in entries for row in plane for e in row]
    flat_directions = [d for plane in directions for row in plane for d in row]
    return flat_entries, flat_directions


def _build(trees: list[_Tree], n_features: int, max_table_values: int) -> TreeShapTables:
    """Assemble the flat arrays `TreeShapTables` explains with."""
    paths = [_leaf_paths(tree) for tree in trees]
    _check_size(trees, paths, max_table_values)
    leaf_tables = _compute_leaf_tables(trees, paths)
    numeric = _numeric_arrays(trees)
    categorical = _categorical_arrays(trees)
    _number_categorical_nodes(trees, numeric["variant_feature"].size)
    split_trees = [t for t, tree in enumerate(trees) if tree.nodes]
    small = [t for t in split_trees if len(trees[t].nodes) <= MAX_TREE_TABLE_NODES]
    large = [t for t in split_trees if len(trees[t].nodes) > MAX_TREE_TABLE_NODES]
    layout = _Layout()
    for t in small:
        table, features = _tree_table(trees[t], paths[t], leaf_tables[t])
        layout.add_unit(table, features)
    leaves = [(t, leaf) for t in large for leaf in range(len(trees[t].leaves))]
    for t, leaf in leaves:
        layout.add_unit(leaf_tables[t][leaf], paths[t].features[leaf])
    tree_bits = max((len(trees[t].nodes) for t in small), default=0)
    leaf_bits = max((len(paths[t].features[leaf]) for t, leaf in leaves), default=0)
    depth = max((len(g) for t, leaf in leaves for g in paths[t].nodes[leaf]), default=0)
    entries = _tree_unit_entries(trees, small, tree_bits)
    leaf_entries, directions = _leaf_unit_entries(trees, paths, leaves, leaf_bits, depth)
    entries += leaf_entries
    columns = sorted(layout.columns)  # by feature, then unit: the order reduceat sums in
    used, start = np.unique(np.array([c[0] for c in columns], dtype=np.int64), return_index=True)
    return TreeShapTables(
        n_features=n_features,
        n_trees=len(trees),
        base_value=float(sum(_expected_value(tree) for tree in trees)),
        **numeric,
        **categorical,
        gather_column=np.array([e[0] for e in entries], dtype=np.int64),
        gather_threshold=np.array([e[1] for e in entries], dtype=np.float64),
        gather_direction=np.array(directions, dtype=bool),
        tree_bits=tree_bits,
        n_tree_units=len(small),
        leaf_bits=leaf_bits,
        leaf_nodes=depth,
        n_leaf_units=len(leaves),
        unit_stride=np.array(layout.strides, dtype=np.int64),
        unit_base=np.array(layout.bases, dtype=np.int64),
        column_unit=np.array([c[1] for c in columns], dtype=np.int64),
        column_slot=np.array([c[2] for c in columns], dtype=np.int64),
        feature_start=start.astype(np.int64),
        feature_used=used,
        table=np.concatenate(layout.chunks) if layout.chunks else np.zeros(0, dtype=np.float64),
    )


# ---------------------------------------------------------------------------------------------
# Verification against LightGBM
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableCheck:
    """Largest absolute differences of a verification, all within its tolerance."""

    rows: int
    contributions: float
    base_value: float
    raw_score: float


def verify_tables(
    tables: TreeShapTables,
    booster: lgb.Booster,
    matrix: np.ndarray,
    tol: float = 1e-9,
    num_iteration: int | None = None,
    num_threads: int = 1,
) -> TableCheck:
    """Compare table explanations with LightGBM's pred_contrib and raw score on `matrix`.

    Checks every contribution, the base value, and base + sum = LightGBM's raw score (trees
    only; a model's init score is not part of the booster). Raises `TableMismatchError` naming
    the largest differences when any exceeds `tol`; returns them otherwise. `num_threads` is
    LightGBM's, for the reference.
    """
    num_iteration = _resolved_iteration(booster, num_iteration)
    base, contributions = tables.explain(matrix)
    # A dense matrix gets dense answers (LightGBM's annotation also allows sparse ones and lists).
    reference = np.asarray(
        booster.predict(matrix, pred_contrib=True, num_iteration=num_iteration, num_threads=num_threads)
    )
    raw = np.asarray(booster.predict(matrix, raw_score=True, num_iteration=num_iteration, num_threads=num_threads))
    if reference.shape != (contributions.shape[0], contributions.shape[1] + 1):
        raise TableMismatchError(
            f"pred_contrib has shape {reference.shape}; the tables explain "
            f"{contributions.shape[1]} features of {contributions.shape[0]} rows"
        )
    check = TableCheck(
        rows=int(contributions.shape[0]),
        contributions=_max_abs(contributions - reference[:, :-1]),
        base_value=_max_abs(base - reference[:, -1]),
        raw_score=_max_abs(base + contributions.sum(axis=1) - raw),
    )
    worst = max(check.contributions, check.base_value, check.raw_score)
    if not worst <= tol:  # also catches NaN
        raise TableMismatchError(
            f"table TreeSHAP differs from LightGBM's pred_contrib on {check.rows} rows beyond {tol:g}: "
            f"contributions {check.contributions:.3g}, base value {check.base_value:.3g}, "
            f"base + sum vs raw score {check.raw_score:.3g}"
        )
    return check


def _max_abs(diff: np.ndarray) -> float:
    """Largest absolute value (0.0 for an empty array; NaN propagates)."""
    diff = np.asarray(diff, dtype=np.float64)
    return float(np.max(np.abs(diff))) if diff.size else 0.0
