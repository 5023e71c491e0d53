"""ckptkit.tf1.ema against TensorFlow's own ExponentialMovingAverage, bit for bit."""
from __future__ import annotations

import contextlib
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckptkit.errors import InvalidArgumentError
from ckptkit.tf1.ema import ExponentialMovingAverage

EMA_NAME = "ExponentialMovingAverage"


def bits(x) -> bytes:
    """What 'equal' means here: same dtype, shape and bytes (NaN payloads and -0 included)."""
    x = np.asarray(x)
    return x.dtype.str.encode() + repr(x.shape).encode() + x.tobytes()


class TFEma:
    """A TF1 graph with float variables, their EMA apply op, and assign ops to feed values."""

    def __init__(self, tf1, initial: dict[str, np.ndarray], decay: float,
                 with_num_updates: bool, only: list[str] | None = None) -> None:
        self.graph = tf1.Graph()
        with self.graph.as_default():
            self.vars = {n: tf1.Variable(v, name=n) for n, v in initial.items()}
            self.step = tf1.placeholder(tf1.int64, [], name="step") if with_num_updates else None
            self.ema = tf1.train.ExponentialMovingAverage(decay, num_updates=self.step)
            applied = [self.vars[n] for n in (only or initial)]
            self.apply_op = self.ema.apply(applied)
            self.feeds = {n: tf1.placeholder(v.dtype.base_dtype, v.shape) for n, v in self.vars.items()}
            self.assigns = [v.assign(self.feeds[n]) for n, v in self.vars.items()]
            self.averages = {n: self.ema.average(self.vars[n]) for n in (only or initial)}
            init = tf1.global_variables_initializer()
        self.sess = tf1.Session(graph=self.graph)
        self.sess.run(init)

    def assign(self, values: dict[str, np.ndarray]) -> None:
        self.sess.run(self.assigns, {self.feeds[n]: v for n, v in values.items()})

    def apply(self, step: int | None = None) -> None:
        self.sess.run(self.apply_op, {self.step: step} if self.step is not None else None)

    def shadows(self) -> dict[str, np.ndarray]:
        return self.sess.run(self.averages)


# ---- the seed document's example -------------------------------------------------------

def test_seed_example_matches_tf_bitwise(tf1):
    tfe = TFEma(tf1, {"v": np.float32(0.0)}, 0.99, with_num_updates=False)
    tfe.assign({"v": np.float32(10.0)})
    tfe.apply()
    tf_value = tfe.shadows()["v"]

    ema = ExponentialMovingAverage(0.99)
    ema.apply({"v": np.float32(0.0)})   # the shadow starts at v's initial value
    ema.apply({"v": np.float32(10.0)})  # v := 10, then the update op
    ours = ema.average("v")
    assert bits(ours) == bits(tf_value) == bits(np.float32(0.099999905))
    assert ema.average_name("v") == tfe.ema.average_name(tfe.vars["v"]) == "v/ExponentialMovingAverage"
    assert ema.variables_to_restore() == {"v/ExponentialMovingAverage": "v"}


def test_seed_example_by_hand():
    # 1 - 0.99f = 0.00999999046...f exactly; * 10 rounds to 0.099999905f. Python floats
    # become float32, as tf.Variable(0.) does.
    ema = ExponentialMovingAverage(0.99)
    ema.apply({"v:0": 0.0})
    ema.apply({"v": 10.0})
    assert bits(ema.average("v")) == bits(np.float32(0.099999905))
    assert ema.shadow_variables().keys() == {"v/ExponentialMovingAverage"}


# ---- long random sequences ------------------------------------------------------------

SHAPES = {"w32": ((3, 4), np.float32), "b32": ((5,), np.float32), "s32": ((), np.float32),
          "w64": ((2, 3, 2), np.float64), "s64": ((), np.float64),
          "layer/h16": ((7,), np.float16), "layer/bf16": ((6,), ml_dtypes.bfloat16)}


def _random_values(rng, scale: float) -> dict[str, np.ndarray]:
    out = {}
    for name, (shape, dtype) in SHAPES.items():
        v = rng.standard_normal(shape) * scale * 10.0 ** rng.integers(-3, 4)
        out[name] = np.asarray(v).astype(dtype)
    return out


@pytest.mark.parametrize("with_num_updates,decay", [(True, 0.999), (False, 0.9), (True, 0.7)])
def test_random_sequence_matches_tf_every_step(tf1, with_num_updates, decay):
    rng = np.random.default_rng(1234 + int(with_num_updates))
    initial = _random_values(rng, 1.0)
    tfe = TFEma(tf1, initial, decay, with_num_updates)
    ema = ExponentialMovingAverage(decay, num_updates=0 if with_num_updates else None)
    ema.apply(initial, num_updates=0 if with_num_updates else None)
    tfe.apply(0 if with_num_updates else None)
    for step in range(1, 200):
        values = _random_values(rng, 1.0 + step / 10)
        tfe.assign(values)
        tfe.apply(step if with_num_updates else None)
        ema.apply(values, num_updates=step if with_num_updates else None)
        theirs = tfe.shadows()
        for name in SHAPES:
            assert bits(ema.average(name)) == bits(theirs[name]), (step, name)


def test_denormals_are_flushed_like_tf(tf1):
    # TF's CPU threads run with FTZ/DAZ: float32/float64 subnormals become zero in
    # arithmetic; float16 subnormals survive since its kernels compute in float32.
    initial = {"a": np.float32(1e-40), "b": np.float64(1e-310),
               "c": np.array([1e-7, -3e-8, 5e-5], np.float16),
               "d": np.array([1e-39, -2e-38], ml_dtypes.bfloat16)}
    later = {"a": np.float32(3e-38), "b": np.float64(3e-308),
             "c": np.array([3e-5, 1e-7, -6e-8], np.float16),
             "d": np.array([2e-38, 1.5e-38], ml_dtypes.bfloat16)}
    tfe = TFEma(tf1, initial, 0.5, with_num_updates=False)
    ema = ExponentialMovingAverage(0.5)
    for values in (initial, later, later):
        tfe.assign(values)
        tfe.apply()
        ema.apply(values)
        theirs = tfe.shadows()
        for name in initial:
            assert bits(ema.average(name)) == bits(theirs[name]), name


def test_large_num_updates_cast_like_tf(tf1):
    # Steps past 2**24 round when cast to float32; decay then saturates at `decay`.
    steps = [2**24 + 1, 2**31 - 1, 2**40 + 3, 5, 0]
    tfe = TFEma(tf1, {"v": np.float32(1.0)}, 0.99999999, with_num_updates=True)
    ema = ExponentialMovingAverage(0.99999999)
    ema.apply({"v": np.float32(1.0)}, num_updates=0)
    tfe.apply(0)
    for i, step in enumerate(steps):
        value = np.float32(3.0 * (i + 1))
        tfe.assign({"v": value})
        tfe.apply(step)
        ema.apply({"v": value}, num_updates=step)
        assert bits(ema.average("v")) == bits(tfe.shadows()["v"]), step


@settings(max_examples=60, deadline=None)
@given(decay=st.floats(0.0, 1.0, width=32),
       values=st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False),
                       min_size=2, max_size=6),
       num_updates=st.one_of(st.none(), st.integers(0, 10**6)))
def test_hypothesis_float32_matches_tf(tf1, decay, values, num_updates):
    values = [np.float32(v) for v in values]
    tfe = _hypothesis_graph(tf1, decay, num_updates is not None)
    ema = ExponentialMovingAverage(decay)
    tfe.assign({"v": values[0]})
    tfe.sess.run(tfe.reset)
    ema.apply({"v": values[0]}, num_updates=num_updates)
    tfe.apply(num_updates)
    for v in values[1:]:
        tfe.assign({"v": v})
        tfe.apply(num_updates)
        ema.apply({"v": v}, num_updates=num_updates)
        assert bits(ema.average("v")) == bits(tfe.shadows()["v"])


_HYPOTHESIS_GRAPHS: dict = {}


def _hypothesis_graph(tf1, decay: float, with_num_updates: bool) -> TFEma:
    """One graph per (decay feedable) kind: the decay is fed, the shadow reset each example."""
    key = with_num_updates
    if key not in _HYPOTHESIS_GRAPHS:
        tfe = TFEma.__new__(TFEma)
        tfe.graph = tf1.Graph()
        with tfe.graph.as_default():
            v = tf1.Variable(np.float32(0), name="v")
            tfe.vars = {"v": v}
            tfe.decay = tf1.placeholder(tf1.float32, [], name="decay")
            tfe.step = tf1.placeholder(tf1.int64, [], name="step") if with_num_updates else None
            tfe.ema = tf1.train.ExponentialMovingAverage(tfe.decay, num_updates=tfe.step)
            tfe.apply_op = tfe.ema.apply([v])
            tfe.feeds = {"v": tf1.placeholder(tf1.float32, [])}
            tfe.assigns = [v.assign(tfe.feeds["v"])]
            tfe.averages = {"v": tfe.ema.average(v)}
            tfe.reset = tfe.ema.average(v).assign(v)
            init = tf1.global_variables_initializer()
        tfe.sess = tf1.Session(graph=tfe.graph)
        tfe.sess.run(init)
        _HYPOTHESIS_GRAPHS[key] = tfe
    tfe = _HYPOTHESIS_GRAPHS[key]
    tfe.current_decay = np.float32(decay)
    return _FedDecay(tfe)


class _FedDecay:
    """Wraps a cached graph so apply() also feeds the example's decay."""

    def __init__(self, tfe: TFEma) -> None:
        self._tfe = tfe
        self.sess, self.reset = tfe.sess, tfe.reset

    def assign(self, values):
        self._tfe.assign(values)

    def apply(self, step):
        feed = {self._tfe.decay: self._tfe.current_decay}
        if self._tfe.step is not None:
            feed[self._tfe.step] = step
        self.sess.run(self._tfe.apply_op, feed)

    def shadows(self):
        return self._tfe.shadows()


# ---- names ----------------------------------------------------------------------------

def test_variables_to_restore_matches_tf(tf1):
    g = tf1.Graph()
    with g.as_default():
        a = tf1.Variable(1.0, name="a")
        c = tf1.Variable([1.0, 2.0], name="b/c")
        odd = tf1.Variable(1.0, name="x/ExponentialMovingAverage")  # an EMA-like name
        tf1.Variable(0, name="global_step", trainable=False)
        d = tf1.Variable(3.0, name="d", trainable=False)
        t = tf1.Variable(4.0, name="t")  # trainable, never averaged
        ema_tf = tf1.train.ExponentialMovingAverage(0.9)
        ema_tf.apply([a, c, odd, d])
        global_names = [v.op.name for v in tf1.global_variables()]
        trainable = [v.op.name for v in tf1.trainable_variables()]
        averaged = [v.op.name for v in tf1.moving_average_variables()]

        def tf_map(var_list=None):
            return {k: v.op.name for k, v in ema_tf.variables_to_restore(var_list).items()}

        ema = ExponentialMovingAverage(0.9)
        ema.apply({n: np.float32(1.0) for n in ["a", "b/c", "x/ExponentialMovingAverage", "d"]})
        assert ema.variables_to_restore(trainable + averaged, global_names=global_names) == tf_map()
        assert ema.variables_to_restore(["a", "t"], global_names=global_names) == tf_map([a, t])
        shadow_a = ema_tf.average(a)
        assert ema.variables_to_restore(["a", "a/ExponentialMovingAverage"],
                                        global_names=global_names) == tf_map([a, shadow_a])
        # Defaults: the applied variables and their shadows only.
        assert ema.variables_to_restore() == {
            "a/ExponentialMovingAverage": "a", "b/c/ExponentialMovingAverage": "b/c",
            "x/ExponentialMovingAverage/ExponentialMovingAverage": "x/ExponentialMovingAverage",
            "d/ExponentialMovingAverage": "d"}
        for v in (a, c, odd, d):
            assert ema.average_name(v.name) == ema_tf.average_name(v)
        assert set(ema.shadow_variables()) == {
            v.op.name for v in tf1.global_variables() if v.op.name.endswith("/" + EMA_NAME)
        } - {"x/ExponentialMovingAverage"}


def test_custom_name():
    ema = ExponentialMovingAverage(0.5, name="Avg")
    ema.apply({"v": np.float64([1.0, 2.0])})
    assert ema.average_name("v:0") == "v/Avg"
    assert list(ema.shadow_variables()) == ["v/Avg"]
    assert ema.variables_to_restore() == {"v/Avg": "v"}
    assert ema.average("w") is None


# ---- errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.int32(1), np.array([1, 2]), np.array([True]),
                                 np.complex64(1), 3, "abc", np.array(["x"])])
def test_non_float_values_rejected(bad):
    ema = ExponentialMovingAverage(0.9)
    with pytest.raises(InvalidArgumentError):
        ema.apply({"v": bad})


def test_mismatch_rejected_and_nothing_changes():
    ema = ExponentialMovingAverage(0.9)
    ema.apply({"v": np.zeros(3, np.float32), "w": np.float32(1)})
    before = ema.shadow_variables()
    for bad in ({"w": np.float32(5), "v": np.zeros(4, np.float32)},
                {"w": np.float32(5), "v": np.zeros(3, np.float64)}):
        with pytest.raises(InvalidArgumentError):
            ema.apply(bad)
    assert {k: bits(v) for k, v in ema.shadow_variables().items()} == \
        {k: bits(v) for k, v in before.items()}
    ema.apply({"v": [1.0, 2.0, 3.0]})  # plain lists take the variable's dtype
    assert ema.average("v").dtype == np.float32


def test_average_is_read_only():
    ema = ExponentialMovingAverage(0.9)
    value = np.ones(2, np.float32)
    ema.apply({"v": value})
    value[0] = 7  # the caller's array is not the shadow
    assert ema.average("v")[0] == 1
    with pytest.raises(ValueError):
        ema.average("v")[0] = 3


@pytest.mark.parametrize("kwargs", [{"decay": "0.9"}, {"decay": float("nan")},
                                    {"decay": 0.9, "num_updates": float("inf")},
                                    {"decay": 0.9, "num_updates": True},
                                    {"decay": 0.9, "name": ""}])
def test_bad_constructor_arguments(kwargs):
    with pytest.raises(InvalidArgumentError):
        ExponentialMovingAverage(**kwargs)


def test_bad_call_arguments():
    ema = ExponentialMovingAverage(0.9)
    with pytest.raises(InvalidArgumentError):
        ema.apply([np.float32(1)])
    with pytest.raises(InvalidArgumentError):
        ema.apply({"v": np.float32(1)}, num_updates="3")
    with pytest.raises(InvalidArgumentError):
        ema.apply({"": np.float32(1)})
    with pytest.raises(InvalidArgumentError):
        ema.variables_to_restore("v")
    with pytest.raises(InvalidArgumentError):
        ema.average_name(3)


def test_zero_debias_is_ignored_for_variables(tf1):
    """As TF: zero_debias=True changes nothing for variables (see the tensor tests below)."""
    rng = np.random.default_rng(7)
    plain, debias = ExponentialMovingAverage(0.99), ExponentialMovingAverage(0.99, zero_debias=True)
    for _ in range(5):
        value = rng.normal(size=3).astype(np.float32)
        plain.apply({"v": value})
        debias.apply({"v": value})
    assert bits(plain.average("v")) == bits(debias.average("v"))
    assert list(debias.shadow_variables()) == ["v/ExponentialMovingAverage"]


def test_module_does_not_import_tensorflow():
    code = "import ckptkit.tf1.ema, sys; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- plain tensors, zero_debias, scopes (issue 12) ------------------------------------------

class TFTensorEma:
    """A TF1 graph averaging variables and plain tensors (identity of placeholders) with
    one EMA, applied inside `variable_scope(scope)` when scope is given."""

    def __init__(self, tf1, variables: dict, tensors: dict, decay: float, zero_debias: bool,
                 with_num_updates: bool = False, scope: str | None = None, name: str = EMA_NAME) -> None:
        self.graph = tf1.Graph()
        with self.graph.as_default():
            self.vars = {n: tf1.Variable(v, name=n) for n, v in variables.items()}
            self.feeds = {n: tf1.placeholder(np.asarray(v).dtype, np.shape(v)) for n, v in tensors.items()}
            self.tensors = {n: tf1.identity(self.feeds[n], name=n) for n in tensors}
            self.step = tf1.placeholder(tf1.int64, [], name="step") if with_num_updates else None
            self.ema = tf1.train.ExponentialMovingAverage(decay, num_updates=self.step,
                                                          zero_debias=zero_debias, name=name)
            outer = tf1.variable_scope(scope) if scope else contextlib.nullcontext()
            with outer:
                self.apply_op = self.ema.apply([*self.vars.values(), *self.tensors.values()])
            self.var_feeds = {n: tf1.placeholder(v.dtype.base_dtype, v.shape) for n, v in self.vars.items()}
            self.assigns = [v.assign(self.var_feeds[n]) for n, v in self.vars.items()]
            self.globals = {v.op.name: v for v in tf1.global_variables()}
            self.average_names = {n: self.ema.average_name(t) for n, t in {**self.vars, **self.tensors}.items()}
            init = tf1.global_variables_initializer()
        self.sess = tf1.Session(graph=self.graph)
        self.sess.run(init)

    def apply(self, variables: dict, tensors: dict, step: int | None = None) -> None:
        if variables:
            self.sess.run(self.assigns, {self.var_feeds[n]: v for n, v in variables.items()})
        feed = {self.feeds[n]: v for n, v in tensors.items()}
        if self.step is not None:
            feed[self.step] = step
        self.sess.run(self.apply_op, feed)

    def state(self) -> dict:
        """Every variable the graph holds except the averaged variables themselves."""
        return self.sess.run({k: v for k, v in self.globals.items() if k not in self.vars})


TENSOR_DTYPES = [np.float32, np.float64, np.float16, ml_dtypes.bfloat16]


@pytest.mark.parametrize("zero_debias", [False, True], ids=["plain", "zero_debias"])
@pytest.mark.parametrize("dtype", TENSOR_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("with_num_updates", [False, True], ids=["decay", "num_updates"])
def test_tensors_and_zero_debias_match_tf_bitwise(tf1, zero_debias, dtype, with_num_updates):
    """Variables ignore zero_debias; tensors start at zero and, debiased, keep biased and
    local_step: every variable TF made equals ckptkit's, bit for bit, after every step."""
    rng = np.random.default_rng(12 + zero_debias + 2 * with_num_updates)
    shape = (5,)
    first = {"v": rng.normal(size=shape).astype(dtype)}
    tensors = {"x": rng.normal(size=shape).astype(dtype), "s/y": np.asarray(rng.normal(), dtype)}
    theirs = TFTensorEma(tf1, first, tensors, 0.9, zero_debias, with_num_updates)
    ours = ExponentialMovingAverage(0.9, zero_debias=zero_debias)
    variables = dict(first)
    for step in range(12):
        if step:
            variables = {"v": rng.normal(size=shape).astype(dtype)}
            tensors = {"x": (rng.normal(size=shape) * 10.0 ** rng.integers(-3, 3)).astype(dtype),
                       "s/y": np.asarray(rng.normal() + 3, dtype)}
        theirs.apply(variables if step else {}, tensors, step * 7 if with_num_updates else None)
        ours.apply({**variables, **tensors}, step * 7 if with_num_updates else None, tensors=("x", "s/y"))
        want = theirs.state()
        got = ours.shadow_variables()
        assert sorted(got) == sorted(want)
        for key in want:
            assert bits(got[key]) == bits(want[key]), (step, key, got[key], want[key])
    if zero_debias:
        assert "x/ExponentialMovingAverage/biased" in want and "s/y/ExponentialMovingAverage/local_step" in want


def test_debiased_average_of_a_constant_is_close_to_it(tf1):
    """What zero_debias is for: the average of a constant tensor is about the constant from
    the first step, where the plain (zero-started) average is far below it."""
    plain, debiased = ExponentialMovingAverage(0.9), ExponentialMovingAverage(0.9, zero_debias=True)
    for _ in range(3):
        plain.apply({"x": np.float32(6)}, tensors=["x"])
        debiased.apply({"x": np.float32(6)}, tensors=["x"])
    assert abs(float(debiased.average("x")) - 6) < 1e-5
    assert float(plain.average("x")) < 2.0
    assert ExponentialMovingAverage(0.9, zero_debias=True).zero_debias


@pytest.mark.parametrize("scope,name", [(None, EMA_NAME), ("outer", EMA_NAME), ("outer/inner", "Avg"),
                                        (None, "Avg")])
def test_shadow_names_under_scopes_like_tf(tf1, scope, name):
    """Names as TF gives them: `scope/v` -> `scope/v/<name>`; applied inside a variable
    scope, `outer/scope/v/<name>`, and the debias variables `outer/outer/x/<name>/biased`."""
    variables = {"scope/v": np.float32(1)}
    tensors = {"x": np.float32(2), "s/y": np.float32(3)}
    theirs = TFTensorEma(tf1, variables, tensors, 0.5, True, scope=scope, name=name)
    theirs.apply({}, tensors)
    ours = ExponentialMovingAverage(0.5, zero_debias=True, name=name)
    ours.apply({**variables, **tensors}, tensors=["x", "s/y"], scope=scope)
    assert sorted(ours.shadow_variables()) == sorted(theirs.state())
    for n, key in theirs.average_names.items():
        assert ours.average_name(n) == key
    got, want = ours.shadow_variables(), theirs.state()
    assert all(bits(got[k]) == bits(want[k]) for k in want)
    # tensors have no variable to restore into; their shadows restore as themselves
    restore = ours.variables_to_restore()
    assert restore[ours.average_name("scope/v")] == "scope/v"
    assert "x" not in restore.values() and restore[ours.average_name("x")] == ours.average_name("x")


def test_tensor_arguments_checked():
    ema = ExponentialMovingAverage(0.9)
    with pytest.raises(InvalidArgumentError, match="not among the values"):
        ema.apply({"v": np.float32(1)}, tensors=["w"])
    with pytest.raises(InvalidArgumentError):
        ema.apply({"v": np.float32(1)}, tensors="v")  # a lone string: one name per letter
    ema.apply({"v": np.float32(1)})
    with pytest.raises(InvalidArgumentError, match="first applied as a variable"):
        ema.apply({"v": np.float32(1)}, tensors=["v"])
    ema.apply({"t:0": np.float32(4)}, tensors=["t:0"])
    assert ema.average("t") == np.float32(4) * (np.float32(1) - np.float32(0.9))  # starts at 0
    with pytest.raises(InvalidArgumentError, match="first applied as a tensor"):
        ema.apply({"t": np.float32(1)})
    for bad in ("", 3):
        with pytest.raises(InvalidArgumentError):
            ema.apply({"u": np.float32(1)}, scope=bad)
    with pytest.raises(InvalidArgumentError):
        ExponentialMovingAverage(0.9, zero_debias="yes")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("decay", [0.5, 0.93, 0.9997])
def test_long_debiased_run_matches_tf_bitwise(tf1, dtype, decay):
    """Hundreds of steps: local_step climbs, (1 - d) ** local_step goes through TF's Pow
    kernel (C's powf/pow on one element, which numpy's power is not) and underflows."""
    rng = np.random.default_rng(int(decay * 1e4))
    theirs = TFTensorEma(tf1, {}, {"x": np.zeros(3, dtype)}, decay, True)
    ours = ExponentialMovingAverage(decay, zero_debias=True)
    for step in range(300):
        x = (rng.normal(size=3) * 10.0 ** rng.integers(-2, 3)).astype(dtype)
        theirs.apply({}, {"x": x})
        ours.apply({"x": x}, tensors=["x"])
        if step % 10 == 9 or step < 10:
            want, got = theirs.state(), ours.shadow_variables()
            for key in want:
                assert bits(got[key]) == bits(want[key]), (step, key, got[key], want[key])
