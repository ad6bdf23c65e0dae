"""Checks of a campaign's flow, made by reading its source with `ast`, never by running it.

A push refuses a flow that
- calls a step (`rt.send_email(...)`, `rt.wait(...)`, any method of `Runtime`) without yielding
  it, or calls a generator helper of its own module without `yield from`;
- passes a step arguments its `Runtime` method does not take (`rt.wait(day=1)`), or calls a step
  `Runtime` does not have;
- yields something that is plainly not a step (`yield 5`, `yield "x"`, `yield ctx.user`);
and warns about a flow that reads the clock or `random` itself: replay runs the flow's code
again later, and such a value comes out different then.

The steps are read from `Runtime` when the check runs, so a kind of step added there is checked
with no change here. Helper functions of the flow's own module that it calls are followed, with
`rt` and `ctx` passed on to them by position or keyword.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import logging
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segflow.config import Config
from segflow.config.findings import Finding, shown_path, unique

from .steps import Runtime, Step

logger = logging.getLogger(__name__)

RT, CTX = "rt", "ctx"

_CLOCKS = {
    "datetime.datetime.now",
    "datetime.datetime.utcnow",
    "datetime.datetime.today",
    "datetime.date.today",
    "django.utils.timezone.now",
    "django.utils.timezone.localtime",
    "django.utils.timezone.localdate",
    "time.time",
    "time.time_ns",
}
_CHANCE_MODULES = ("random", "secrets")
_CHANCE = {"uuid.uuid1", "uuid.uuid4"}

# Expressions whose value can never be a step, whatever the names in them hold.
_NOT_STEPS = (
    ast.Constant,
    ast.JoinedStr,
    ast.List,
    ast.Tuple,
    ast.Dict,
    ast.Set,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
    ast.Lambda,
    ast.Compare,
    ast.BinOp,
    ast.UnaryOp,
)

_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def step_signatures(runtime: type = Runtime) -> dict[str, inspect.Signature]:
    """The steps a flow can yield: `Runtime`'s public methods (those whose return annotation
    names something else than a step are left out), each with its signature without `self`."""
    steps = {}
    for name, method in inspect.getmembers(runtime, inspect.isfunction):
        if name.startswith("_"):
            continue
        try:
            returns = typing.get_type_hints(method).get("return")
        except Exception:  # an annotation that does not resolve: take it for a step
            returns = None
        if returns is not None and not (isinstance(returns, type) and issubclass(returns, Step)):
            continue
        signature = inspect.signature(method)
        parameters = list(signature.parameters.values())[1:]
        steps[name] = signature.replace(parameters=parameters)
    return steps


def check_flows(config: Config, runtime: type = Runtime) -> list[Finding]:
    """What is wrong (errors) and risky (warnings) in the flows of the config's campaigns."""
    checker = _Checker(step_signatures(runtime), config.base_dir)
    for campaign in config.campaigns.values():
        checker.check_flow(campaign.flow)
    return unique(checker.findings)


# ---------------------------------------------------------------------------------------------
# Reading modules.


@dataclass
class _Module:
    shown: str
    source: str
    tree: ast.Module
    aliases: dict[str, str]  # a name imported in the module -> what it names: "datetime.datetime"
    functions: dict[str, _FunctionNode]  # the module's top-level functions

    def text(self, node: ast.AST) -> str:
        return " ".join((ast.get_source_segment(self.source, node) or "...").split())


def _aliases(tree: ast.Module) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    top = alias.name.partition(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


@dataclass
class _Checker:
    steps: dict[str, inspect.Signature]
    base_dir: Path
    findings: list[Finding] = field(default_factory=list)
    _modules: dict[str, _Module | None] = field(default_factory=dict)
    _done: set = field(default_factory=set)

    def module(self, filename: str) -> _Module | None:
        if filename not in self._modules:
            self._modules[filename] = self._read(filename)
        return self._modules[filename]

    def _read(self, filename: str) -> _Module | None:
        try:
            source = Path(filename).read_text(encoding="utf-8")
            tree = ast.parse(source, filename)
        except (OSError, SyntaxError, ValueError) as exc:
            # The module was imported, so this is a flow built where its file cannot be read.
            logger.info("not checking the flows of %s: %s", filename, exc)
            return None
        functions = {node.name: node for node in tree.body if isinstance(node, _FunctionNode)}
        return _Module(shown_path(filename, self.base_dir), source, tree, _aliases(tree), functions)

    def check_flow(self, flow: Any) -> None:
        code = getattr(flow, "__code__", None)
        if code is None:
            return
        module = self.module(code.co_filename)
        if module is None:
            return
        node = _function_at(module.tree, code.co_name, code.co_firstlineno)
        if node is None:
            return
        positional = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
        roles = dict(zip(positional[:2], (CTX, RT), strict=False))
        self.check_function(module, node, roles, dict(module.functions))

    # -----------------------------------------------------------------------------------------
    # One function: a flow, or a helper it calls.

    def check_function(
        self,
        module: _Module,
        function: _FunctionNode,
        roles: dict[str, str],
        scope: dict[str, _FunctionNode],
    ) -> None:
        key = (id(function), tuple(sorted(roles.items())))
        if key in self._done:
            return
        self._done.add(key)
        parents = _parents(function)
        local_scope = dict(scope)
        local_scope.update(
            {n.name: n for n in _own_nodes(function) if isinstance(n, _FunctionNode)}
        )
        assigned_steps: list[tuple[str, ast.Call]] = []
        for node in _own_nodes(function):
            if isinstance(node, ast.Call):
                self._call(module, node, parents, roles, local_scope, assigned_steps)
            elif isinstance(node, ast.Yield):
                self._yield(module, node, roles, local_scope)
        self._unused_steps(module, function, assigned_steps)

    def _call(self, module, call, parents, roles, scope, assigned_steps) -> None:
        parent = parents.get(call)
        func = call.func
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and roles.get(func.value.id) == RT
        ):
            if self._step_arguments(module, call, func.attr):
                self._step_yielded(module, call, parent, assigned_steps)
            return
        qualified = _qualified(func, module.aliases)
        if qualified is not None:
            self._replay_safety(module, call, qualified)
        if isinstance(func, ast.Name) and func.id in scope:
            helper = scope[func.id]
            if _is_generator(helper) and isinstance(parent, ast.Expr):
                text = module.text(call)
                self.error(
                    module,
                    call,
                    f"{text} makes a generator that never runs, so none of its steps happen; "
                    f"write yield from {text}",
                )
            self._follow(module, call, helper, roles, scope)

    def _step_arguments(self, module: _Module, call: ast.Call, name: str) -> bool:
        """Check a step's name and arguments; False if it names no step at all."""
        text = module.text(call)
        signature = self.steps.get(name)
        rt = call.func.value.id  # type: ignore[attr-defined]
        if signature is None:
            close = difflib.get_close_matches(name, list(self.steps), n=1)
            hint = f"did you mean {rt}.{close[0]}? " if close else ""
            self.error(
                module,
                call,
                f"{text}: {rt} has no step {name!r}; {hint}the steps are "
                + ", ".join(f"{rt}.{step}(...)" for step in sorted(self.steps)),
            )
            return False
        takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        named = {
            n
            for n, p in signature.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        for keyword in call.keywords:
            if keyword.arg is not None and keyword.arg not in named and not takes_any:
                close = difflib.get_close_matches(keyword.arg, sorted(named), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                takes = ", ".join(signature.parameters) or "no arguments"
                self.error(
                    module,
                    call,
                    f"{text}: {rt}.{name} has no argument {keyword.arg!r}{hint}; it takes {takes}",
                )
                return True
        if any(isinstance(a, ast.Starred) for a in call.args) or any(
            k.arg is None for k in call.keywords
        ):
            return True  # *args or **kwargs: what they hold is known only when the flow runs
        try:
            signature.bind(*call.args, **{k.arg: k.value for k in call.keywords})
        except TypeError as exc:
            self.error(module, call, f"{text}: {rt}.{name}() {exc}")
        return True

    def _step_yielded(self, module, call, parent, assigned_steps) -> None:
        text = module.text(call)
        if isinstance(parent, ast.Expr):
            self.error(module, call, f"{text} is not yielded; write yield {text}")
        elif isinstance(parent, ast.Attribute) and parent.value is call:
            self.error(
                module,
                call,
                f"{text} is not yielded, so .{parent.attr} is read from the step instead of its "
                f"result; write (yield {text}).{parent.attr}",
            )
        elif (
            isinstance(parent, ast.Assign | ast.AnnAssign)
            and parent.value is call
            and isinstance(_single_target(parent), ast.Name)
        ):
            assigned_steps.append((_single_target(parent).id, call))

    def _unused_steps(self, module, function, assigned_steps) -> None:
        """`sent = rt.send_email(...)` then `sent.success`: the step was never yielded."""
        parents = _parents(function)
        for name, call in assigned_steps:
            uses = [
                node
                for node in _own_nodes(function)
                if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Load)
            ]
            if all(isinstance(parents.get(use), ast.Attribute) for use in uses):
                text = module.text(call)
                self.error(
                    module,
                    call,
                    f"{text} is not yielded, so {name} is the step, not its result; "
                    f"write {name} = yield {text}",
                )

    def _yield(self, module, node: ast.Yield, roles, scope) -> None:
        value = node.value
        kinds = ", ".join(f"rt.{step}(...)" for step in sorted(self.steps))
        if value is None:
            self.error(
                module, node, f"a bare yield gives None, which is not a step; yield a step: {kinds}"
            )
            return
        text = module.text(value)
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
            helper = scope.get(value.func.id)
            if helper is not None and _is_generator(helper):
                self.error(
                    module,
                    node,
                    f"yield {text} yields a generator, not a step; write yield from {text}",
                )
            return
        root = _root_name(value)
        about = roles.get(root) if root is not None else None
        rt_call = (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Attribute)
            and isinstance(value.func.value, ast.Name)
            and roles.get(value.func.value.id) == RT
        )
        if isinstance(value, _NOT_STEPS) or (about is not None and not rt_call):
            self.error(module, node, f"yield {text}: {text} is not a step; yield a step: {kinds}")

    def _follow(self, module, call: ast.Call, helper: _FunctionNode, roles, scope) -> None:
        """Check a helper the flow calls, with the roles of the arguments it is given."""
        positional = [a.arg for a in (*helper.args.posonlyargs, *helper.args.args)]
        inner: dict[str, str] = {}
        if _is_nested(helper, module):
            # A function defined in the flow sees its rt and ctx, unless it names its own.
            own = {a.arg for a in ast.walk(helper.args) if isinstance(a, ast.arg)}
            inner = {name: role for name, role in roles.items() if name not in own}
        for position, arg in enumerate(call.args):
            if isinstance(arg, ast.Starred):
                break
            if position < len(positional) and isinstance(arg, ast.Name) and arg.id in roles:
                inner[positional[position]] = roles[arg.id]
        for keyword in call.keywords:
            if isinstance(keyword.value, ast.Name) and keyword.value.id in roles and keyword.arg:
                inner[keyword.arg] = roles[keyword.value.id]
        self.check_function(module, helper, inner, scope)

    def _replay_safety(self, module: _Module, call: ast.Call, qualified: str) -> None:
        text = module.text(call)
        if qualified in _CLOCKS:
            self.warn(
                module,
                call,
                f"{text} reads the clock, and a replay runs the flow again later, when it "
                "answers differently, so the flow can take another branch and diverge; use "
                "ctx.now, the recorded time of the current step",
            )
        elif qualified.partition(".")[0] in _CHANCE_MODULES or qualified in _CHANCE:
            split = (
                "; to send users down different branches use rt.split(...), which is recorded"
                if "split" in self.steps
                else ""
            )
            self.warn(
                module,
                call,
                f"{text} answers differently each time a replay runs the flow again, so the "
                f"flow can take another branch and diverge{split}",
            )

    def error(self, module: _Module, node: ast.AST, message: str) -> None:
        self.findings.append(Finding(module.shown, node.lineno, message))

    def warn(self, module: _Module, node: ast.AST, message: str) -> None:
        self.findings.append(Finding(module.shown, node.lineno, message, warning=True))


# ---------------------------------------------------------------------------------------------
# Reading trees.


def _function_at(tree: ast.Module, name: str, first_line: int) -> _FunctionNode | None:
    """The def of the code object named `name` starting at `first_line` (its first decorator's
    line, when it has decorators)."""
    for node in ast.walk(tree):
        if isinstance(node, _FunctionNode) and node.name == name:
            starts = [node.lineno] + [d.lineno for d in node.decorator_list[:1]]
            if first_line in starts:
                return node
    return None


def _own_nodes(function: _FunctionNode):
    """The nodes of a function's body, without those of the functions and classes defined in
    it (those are other scopes, checked when they are called)."""
    stack = list(reversed(function.body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, _FunctionNode | ast.ClassDef):
            continue
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def _parents(function: _FunctionNode) -> dict[ast.AST, ast.AST]:
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(function):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    return parents


def _is_generator(function: _FunctionNode) -> bool:
    return any(isinstance(n, ast.Yield | ast.YieldFrom) for n in _own_nodes(function))


def _is_nested(function: _FunctionNode, module: _Module) -> bool:
    return module.functions.get(function.name) is not function


def _single_target(assign: ast.Assign | ast.AnnAssign) -> ast.AST | None:
    if isinstance(assign, ast.AnnAssign):
        return assign.target
    return assign.targets[0] if len(assign.targets) == 1 else None


def _root_name(node: ast.AST) -> str | None:
    """`ctx` for ctx.user.plan, ctx.user["plan"] or ctx.user.get("plan")."""
    while True:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute | ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        else:
            return None


def _qualified(func: ast.AST, aliases: dict[str, str]) -> str | None:
    """The dotted name a call calls, through the module's imports: datetime.now() after
    `from datetime import datetime` is datetime.datetime.now."""
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    parts.append(aliases.get(func.id, func.id))
    return ".".join(reversed(parts))
