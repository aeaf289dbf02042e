"""The Python expressions of Sinergym's configs, read as data: an allowlist over the syntax tree,
never ``eval``.

Sinergym's training script evaluates some config values as Python (``action_noise:
NormalActionNoise(mean=np.array([0]), sigma=np.array([0.1]))``; a wrapper argument
``gym.spaces.Box(low=19.0, high=21.0, shape=(5,), dtype=np.float32)``), and users write
``policy_kwargs`` the way SB3's documentation does (``dict(net_arch=[64, 64],
activation_fn=torch.nn.ReLU)``). This module parses such a string with ``ast`` and walks the tree:
numbers, strings, lists, tuples and mappings of them, and calls of a few named constructors, which
become plain data (the noise as a mapping the contract validates, ``np.zeros(3)`` as ``[0.0, 0.0,
0.0]``, a space as ``{"gym.spaces.Box": {...}}``). Any other name, call, operator or construct is
refused with the token named: nothing in a config is imported or run. The trainer builds the real
objects on the VM from the data.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from typing import Any

from sinergym_cloud import catalog

MAX_LENGTH = 2000  # characters of one expression
MAX_ELEMENTS = 1000  # values in one array

NOISE_MODULES = ("", "noise.", "stable_baselines3.common.noise.")
NUMPY_MODULES = ("np.", "numpy.")
SPACE_MODULES = ("gym.spaces.", "gymnasium.spaces.", "spaces.")
ACTIVATION_MODULES = ("torch.nn.", "th.nn.", "nn.")
DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool_")
SPACE_PREFIXES = ("gym.spaces.", "gymnasium.spaces.")  # a wrapper argument string that is a space


class ExpressionError(ValueError):
    """An expression that is not data this project reads; the message names the token."""


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of names, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ExpressionError(f"{what}: expected a finite number, not {value!r}"[:200])
    return float(value)


def _vector(value: Any, what: str) -> float | list[float]:
    """A number, or a flat list of numbers (an array)."""
    if isinstance(value, (list, tuple)):
        if not value or len(value) > MAX_ELEMENTS:
            raise ExpressionError(f"{what}: expected 1 to {MAX_ELEMENTS} values, not {len(value)}")
        return [_number(v, what) for v in value]
    return _number(value, what)


def _size(value: Any, what: str) -> int:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ELEMENTS:
        raise ExpressionError(f"{what}: expected a size from 1 to {MAX_ELEMENTS}, not {value!r}"[:200])
    return value


def _bind(name: str, args: list[Any], kwargs: dict[str, Any], order: tuple[str, ...], required: int) -> dict[str, Any]:
    """Positional and keyword arguments of ``name`` as one mapping, by its signature ``order``."""
    if len(args) > len(order):
        raise ExpressionError(f"{name}: takes at most {len(order)} positional arguments, not {len(args)}")
    bound = dict(zip(order, args, strict=False))
    for key, value in kwargs.items():
        if key not in order:
            raise ExpressionError(f"{name}: unexpected argument `{key}` (it takes {', '.join(order)})")
        if key in bound:
            raise ExpressionError(f"{name}: argument `{key}` given twice")
        bound[key] = value
    missing = [k for k in order[:required] if k not in bound]
    if missing:
        raise ExpressionError(f"{name}: missing {', '.join(missing)}")
    return bound


def _array(args: list[Any], kwargs: dict[str, Any]) -> list[float]:
    bound = _bind("np.array", args, kwargs, ("object", "dtype"), 1)
    value = bound["object"]
    vector = _vector(value if isinstance(value, (list, tuple)) else [value], "np.array")
    assert isinstance(vector, list)
    return vector


def _filled(fill: float, label: str) -> Callable[[list[Any], dict[str, Any]], list[float]]:
    def make(args: list[Any], kwargs: dict[str, Any]) -> list[float]:
        bound = _bind(label, args, kwargs, ("shape", "dtype"), 1)
        return [fill] * _size(bound["shape"], label)

    return make


def _normal(args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = _bind("NormalActionNoise", args, kwargs, ("mean", "sigma", "dtype"), 2)
    return {
        "kind": "normal",
        "mean": _vector(bound["mean"], "NormalActionNoise.mean"),
        "sigma": _vector(bound["sigma"], "NormalActionNoise.sigma"),
    }


def _ornstein_uhlenbeck(args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    name = "OrnsteinUhlenbeckActionNoise"
    bound = _bind(name, args, kwargs, ("mean", "sigma", "theta", "dt", "initial_noise", "dtype"), 2)
    noise: dict[str, Any] = {
        "kind": "ornstein_uhlenbeck",
        "mean": _vector(bound["mean"], f"{name}.mean"),
        "sigma": _vector(bound["sigma"], f"{name}.sigma"),
    }
    for key in ("theta", "dt"):
        if bound.get(key) is not None:
            noise[key] = _number(bound[key], f"{name}.{key}")
    if bound.get("initial_noise") is not None:
        noise["initial_noise"] = _vector(bound["initial_noise"], f"{name}.initial_noise")
    return noise


def _box(args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = _bind("gym.spaces.Box", args, kwargs, ("low", "high", "shape", "dtype"), 2)
    box: dict[str, Any] = {
        "low": _vector(bound["low"], "Box.low"),
        "high": _vector(bound["high"], "Box.high"),
        "dtype": bound.get("dtype") or "float32",
    }
    if bound.get("shape") is not None:
        shape = bound["shape"]
        shape = list(shape) if isinstance(shape, (list, tuple)) else [shape]
        box["shape"] = [_size(n, "Box.shape") for n in shape]
    return {"gym.spaces.Box": box}


def _discrete(args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = _bind("gym.spaces.Discrete", args, kwargs, ("n", "seed", "start"), 1)
    if bound.get("seed") is not None:
        raise ExpressionError("gym.spaces.Discrete: seed is not taken (the experiment's seed is)")
    start = bound.get("start", 0)
    if isinstance(start, bool) or not isinstance(start, int):
        raise ExpressionError(f"gym.spaces.Discrete.start: expected an integer, not {start!r}"[:200])
    return {"gym.spaces.Discrete": {"n": _size(bound["n"], "Discrete.n"), "start": start}}


def _dict(args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    if args:
        raise ExpressionError("dict: give keyword arguments only, dict(net_arch=[64, 64], ...)")
    return dict(kwargs)


def _table() -> tuple[dict[str, Callable[[list[Any], dict[str, Any]], Any]], dict[str, Any]]:
    calls: dict[str, Callable[[list[Any], dict[str, Any]], Any]] = {"dict": _dict}
    names: dict[str, Any] = {}
    for prefix in NOISE_MODULES:
        calls[f"{prefix}NormalActionNoise"] = _normal
        calls[f"{prefix}OrnsteinUhlenbeckActionNoise"] = _ornstein_uhlenbeck
    for prefix in NUMPY_MODULES:
        calls[f"{prefix}array"] = _array
        calls[f"{prefix}zeros"] = _filled(0.0, f"{prefix}zeros")
        calls[f"{prefix}ones"] = _filled(1.0, f"{prefix}ones")
        names.update({f"{prefix}{dtype}": dtype.rstrip("_") for dtype in DTYPES})
    for prefix in SPACE_MODULES:
        calls[f"{prefix}Box"] = _box
        calls[f"{prefix}Discrete"] = _discrete
    for prefix in ACTIVATION_MODULES:
        names.update({f"{prefix}{name}": f"torch.nn.{name}" for name in catalog.ACTIVATIONS})
    return calls, names


CALLS, NAMES = _table()
ALLOWED = (
    "numbers, strings, True/False/None, lists, tuples, {...} and dict(...); NormalActionNoise, "
    "OrnsteinUhlenbeckActionNoise, np.array/np.zeros/np.ones, gym.spaces.Box/Discrete, np.<dtype>, "
    "torch.nn.<activation>"
)


class _Reader:
    """Walks one expression's tree; every node it does not know is refused with its source text."""

    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where

    def refuse(self, node: ast.AST, what: str = "") -> ExpressionError:
        token = what or ast.get_source_segment(self.text, node) or type(node).__name__
        token = token if len(token) <= 60 else token[:57] + "..."
        return ExpressionError(f"{self.where}: `{token}` is not allowed in an expression (allowed: {ALLOWED})")

    def read(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            if node.value is None or isinstance(node.value, (bool, int, float, str)):
                return node.value
            raise self.refuse(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = self.read(node.operand)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.refuse(node)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, (ast.List, ast.Tuple)):
            if len(node.elts) > MAX_ELEMENTS:
                raise ExpressionError(f"{self.where}: more than {MAX_ELEMENTS} values in one list")
            items = [self.read(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Dict):
            return self._mapping(node)
        if isinstance(node, (ast.Name, ast.Attribute)):
            name = _dotted(node)
            if name is None or name not in NAMES:
                raise self.refuse_name(node)
            return NAMES[name]
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.BinOp):
            raise self.refuse(node, f"{self._operator(node)}` in `{ast.get_source_segment(self.text, node)}")
        raise self.refuse(node)

    def refuse_name(self, node: ast.expr) -> ExpressionError:
        """The refusal of a name or callee, naming the innermost part that is not allowed:
        ``__import__`` in ``__import__('os').system``."""
        name = _dotted(node)
        if name is not None:
            return self.refuse(node, name)
        root = node
        while isinstance(root, ast.Attribute):
            root = root.value
        if isinstance(root, ast.Call) and _dotted(root.func) not in CALLS:
            return self.refuse_name(root.func)
        return self.refuse(node)

    def _operator(self, node: ast.BinOp) -> str:
        left = ast.get_source_segment(self.text, node.left) or ""
        whole = ast.get_source_segment(self.text, node) or ""
        right = ast.get_source_segment(self.text, node.right) or ""
        middle = whole[len(left) : len(whole) - len(right)].strip().strip("()").strip()
        return middle or type(node.op).__name__

    def _mapping(self, node: ast.Dict) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:  # {**other}
                raise self.refuse(value, f"**{ast.get_source_segment(self.text, value)}")
            name = self.read(key)
            if not isinstance(name, str):
                raise self.refuse(key)
            out[name] = self.read(value)
        return out

    def _call(self, node: ast.Call) -> Any:
        name = _dotted(node.func)
        if name is None or name not in CALLS:
            raise self.refuse_name(node.func)
        args = []
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.refuse(arg)
            args.append(self.read(arg))
        kwargs: dict[str, Any] = {}
        for keyword in node.keywords:
            if keyword.arg is None:  # **kwargs
                raise self.refuse(keyword, f"**{ast.get_source_segment(self.text, keyword.value)}")
            kwargs[keyword.arg] = self.read(keyword.value)
        try:
            return CALLS[name](args, kwargs)
        except ExpressionError as exc:
            raise ExpressionError(f"{self.where}: {exc}") from None


def evaluate(text: str, where: str) -> Any:
    """The data an expression stands for, or ExpressionError naming what is not allowed."""
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"{where}: an expression of {len(text)} characters (at most {MAX_LENGTH})")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"{where}: not a Python expression ({exc.msg})") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError(f"{where}: not an expression this project reads (nested too deeply)") from None
    try:
        return _Reader(text.strip(), where).read(tree.body)
    except RecursionError:
        raise ExpressionError(f"{where}: nested too deeply") from None


def action_noise(value: Any, where: str) -> dict[str, Any] | None:
    """``action_noise`` as the contract takes it: None, or a mapping with ``kind`` (from an expression
    string, or given as data already)."""
    if value is None or isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise ExpressionError(f"{where}: expected NormalActionNoise(...) or OrnsteinUhlenbeckActionNoise(...)")
    noise = evaluate(value, where)
    if not isinstance(noise, dict) or "kind" not in noise:
        raise ExpressionError(
            f"{where}: expected NormalActionNoise(...) or OrnsteinUhlenbeckActionNoise(...), not {value[:60]!r}"
        )
    return noise


def mapping(value: Any, where: str) -> Any:
    """A mapping given as an expression string (``dict(net_arch=[64, 64])``), or as it is."""
    if not isinstance(value, str):
        return value
    data = evaluate(value, where)
    if not isinstance(data, dict):
        raise ExpressionError(f"{where}: expected a mapping, dict(...) or {{...}}, not {value[:60]!r}")
    return data


def sequence(value: Any, where: str) -> Any:
    """A list given as an expression string (``(1, 'episode')``), as a list; anything else as it is."""
    if not isinstance(value, str) or not value.lstrip().startswith(("(", "[")):
        return value
    data = evaluate(value, where)
    if not isinstance(data, (list, tuple)):
        raise ExpressionError(f"{where}: expected a list or tuple, not {value[:60]!r}")
    return list(data)


def is_space(value: Any) -> bool:
    """A wrapper argument string that names a gymnasium space (Sinergym evaluates these)."""
    return isinstance(value, str) and value.lstrip().startswith(SPACE_PREFIXES)


def space(value: str, where: str) -> dict[str, Any]:
    """``gym.spaces.Box(...)`` / ``Discrete(...)`` as ``{"gym.spaces.Box": {...}}``."""
    data = evaluate(value, where)
    if not isinstance(data, dict) or len(data) != 1 or not next(iter(data)).startswith("gym.spaces."):
        raise ExpressionError(f"{where}: expected gym.spaces.Box(...) or gym.spaces.Discrete(...)")
    return data
