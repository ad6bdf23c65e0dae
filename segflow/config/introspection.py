"""Reading a config's code without running it: sources, lambdas, arities, names it mentions.

The fingerprints that tell a push what changed are made of these sources.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from collections.abc import Callable
from functools import lru_cache
from typing import Any


def positional_arity(fn: Callable) -> int | None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in signature.parameters.values() if p.kind in kinds)


# A template's functions are called for every email, and reading a signature costs more than
# most of them take to run. (Bounded: each push brings new functions.)
_cached_arity = lru_cache(maxsize=1024)(positional_arity)


def call_with_arity(fn: Callable, *args: Any) -> Any:
    """Call `fn` with as many of `args` as it takes: `lambda user:` and `lambda user, event:`."""
    try:
        arity = _cached_arity(fn)
    except TypeError:  # (a callable that cannot be a dict key)
        arity = positional_arity(fn)
    return fn(*args[: arity if arity is not None else len(args)])


def mentions_name(fn: Callable, name: str) -> bool:
    """True if the function's code (or code nested in it) refers to `name`, e.g. timezone.now."""
    stack = [getattr(fn, "__code__", None)]
    while stack:
        code = stack.pop()
        if code is None:
            continue
        if name in code.co_names or name in code.co_varnames:
            return True
        stack.extend(c for c in code.co_consts if inspect.iscode(c))
    return False


def literal_send_email_templates(source: str) -> list[str]:
    """Template ids a flow passes to rt.send_email as string literals, found without running it."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "send_email"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append(node.args[0].value)
    return found


def source_of(fn: Callable) -> str:
    """The source code of a function, as narrow as can be found: a lambda's own text only."""
    try:
        lines, _ = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        return repr(fn)
    source = textwrap.dedent("".join(lines))
    if getattr(fn, "__name__", "") != "<lambda>":
        return source.strip()
    lambdas = _lambda_segments(source)
    if len(lambdas) == 1:
        return lambdas[0]
    # Several lambdas on the same lines: pick the one whose parameters match.
    arg_names = fn.__code__.co_varnames[: fn.__code__.co_argcount]
    matching = [
        text for text, args in _lambda_segments(source, with_args=True) if args == arg_names
    ]
    return matching[0] if len(matching) == 1 else source.strip()


def _lambda_segments(source: str, with_args: bool = False) -> list:
    text = source.strip().rstrip(",")
    for candidate in (text, f"({text})", f"{{{text}}}", f"f({text})"):
        try:
            tree = ast.parse(candidate)
        except SyntaxError:
            continue
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Lambda):
                segment = ast.get_source_segment(candidate, node) or ""
                if with_args:
                    found.append((segment, tuple(a.arg for a in node.args.args)))
                else:
                    found.append(segment)
        return found
    return []


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
