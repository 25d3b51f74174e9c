"""The evaluation budget of the check sandbox: operations, size and time, so no checks file can hang a run.

Jinja2's sandbox stops a checks file from reaching Python internals, not from spending: ``x ** 100000000``,
``'x' * 10 ** 9``, nested loops or a string doubled in a loop each pass ``checks validate`` and then hang or allocate
gigabytes. Every evaluation of one expression or template (checks.Compiled) runs under a fresh Budget:

- operations: every attribute or item read, call, filter, test, operator and loop iteration counts one;
- size: no string, list or mapping the expression makes may hold more than MAX_LENGTH characters or items, no
  integer more than MAX_INT_BITS bits, and a template's output no more than MAX_LENGTH characters. Operators, filters
  and string methods that multiply a size (``*``, ``**``, ``%``, ``replace``, ``center``, ``join``...) are checked
  *before* they run, so the allocation never happens;
- time: MAX_SECONDS of wall clock, checked as operations are counted.

Over budget is BudgetExceeded, which the engine turns into ERROR with the reason. The shipped catalogue uses a small
fraction of each limit (benchmarks/check_budget.py measures it on a 200-server, 50,000-user organisation).
"""

from __future__ import annotations

import functools
import inspect
import operator
import re
import time
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, Callable, Iterable, Iterator

from jinja2 import nodes
from jinja2.visitor import NodeTransformer


from hma_check.errors import HmaCheckError

# The largest shipped check uses about 400,000 operations and 2 s on a loaded machine for 50,000 users; the limits
# leave a 50-fold margin and still stop a hostile expression within half a minute.
MAX_OPERATIONS = 20_000_000
MAX_LENGTH = 10_000_000        # characters of one string, items of one list or mapping, characters of output
MAX_INT_BITS = 4096
MAX_SECONDS = 30.0             # one evaluation
MAX_CHECK_SECONDS = 120.0      # every evaluation of one check together (a for_each over 200 servers, say)
_TIME_EVERY = 256              # operations between two looks at the clock

# Filters the sandbox's compiled code calls (the AST is rewritten to call them; see meter_tree).
ITERATE, CONCAT, OUTPUT = "__hma_iterate", "__hma_concat", "__hma_output"


class BudgetExceeded(HmaCheckError):
    """An expression or template went over its budget; the message says which limit and where."""


class Budget:
    """What one evaluation has spent. A plain class: one is made for every evaluation (about 25,000 for 200
    servers), and a dataclass's keyword __init__ cost a third more."""

    __slots__ = ("deadline", "operations", "output", "largest", "started", "next_look")

    def __init__(self, deadline: float, started: float | None = None) -> None:
        self.deadline = deadline
        self.operations = 0
        self.output = 0
        self.largest = 0          # the longest string or list made, for measurement
        self.started = time.monotonic() if started is None else started
        self.next_look = _TIME_EVERY

    def tick(self, count: int = 1) -> None:
        self.operations += count
        if self.operations >= self.next_look:
            self.look()

    def look(self) -> None:
        """The checks a tick makes only every _TIME_EVERY operations (a tick is on every read: it must be cheap)."""
        self.next_look = self.operations + _TIME_EVERY
        if self.operations > MAX_OPERATIONS:
            raise BudgetExceeded(f"more than {MAX_OPERATIONS:,} operations")
        if time.monotonic() > self.deadline:
            raise BudgetExceeded(f"still running after {time.monotonic() - self.started:.0f} s (the limit is "
                                 f"{MAX_SECONDS:g} s for one evaluation, {MAX_CHECK_SECONDS:g} s for a check)")

    def size(self, length: int, what: str) -> None:
        if length > MAX_LENGTH:
            raise BudgetExceeded(f"{what} would hold {length:,} characters or items (the limit is {MAX_LENGTH:,})")
        if length > self.largest:
            self.largest = length


_CURRENT: ContextVar[Budget | None] = ContextVar("hma_check_budget", default=None)
_CHECK_DEADLINE: ContextVar[float | None] = ContextVar("hma_check_check_deadline", default=None)
# Called with (budget, source text) after each metered evaluation: how the shipped checks are measured.
_OBSERVERS: list[Callable[[Budget, str], None]] = []


class metered:   # noqa: N801 - used as a function: ``with budget.metered(source) as budget:``
    """Run the block under a fresh budget (nested blocks get their own), inside the check's deadline if one runs.

    A class rather than a @contextmanager generator: a generator-based manager costs several times as much to enter
    and leave. checks.Compiled, which evaluates every expression and template (about 25,000 for 200 servers), calls
    begin() and end() itself: one Python call fewer each way."""

    __slots__ = ("source", "budget", "token")

    def __init__(self, source: str = "") -> None:
        self.source = source

    def __enter__(self) -> Budget:
        self.budget, self.token = begin()
        return self.budget

    def __exit__(self, *exc: object) -> None:
        end(self.budget, self.token, self.source)


def begin() -> tuple[Budget, Token[Budget | None]]:
    """A fresh budget made the current one; hand both to end() when the evaluation is over, however it ends."""
    now = time.monotonic()
    deadline = now + MAX_SECONDS
    check_deadline = _CHECK_DEADLINE.get()
    if check_deadline is not None:
        if now > check_deadline:
            raise BudgetExceeded(f"the check's evaluations together ran longer than {MAX_CHECK_SECONDS:g} s")
        if check_deadline < deadline:
            deadline = check_deadline
    budget = Budget(deadline, now)
    return budget, _CURRENT.set(budget)


def end(budget: Budget, token: Token[Budget | None], source: str) -> None:
    _CURRENT.reset(token)
    for observer in _OBSERVERS:
        observer(budget, source)


@contextmanager
def check_deadline() -> Iterator[None]:
    """Every evaluation of one check (all its items) inside MAX_CHECK_SECONDS together."""
    token = _CHECK_DEADLINE.set(time.monotonic() + MAX_CHECK_SECONDS)
    try:
        yield
    finally:
        _CHECK_DEADLINE.reset(token)


@contextmanager
def observe(callback: Callable[[Budget, str], None]) -> Iterator[None]:
    _OBSERVERS.append(callback)
    try:
        yield
    finally:
        _OBSERVERS.remove(callback)


def current() -> Budget | None:
    return _CURRENT.get()


def tick(count: int = 1) -> None:
    budget = _CURRENT.get()
    if budget is not None:
        budget.operations += count
        if budget.operations >= budget.next_look:
            budget.look()


# --------------------------------------------------------------------------------------------------- sizes

def check_value(value: Any, what: str = "a value") -> Any:
    """``value`` when it is within the size budget; BudgetExceeded otherwise."""
    budget = _CURRENT.get()
    if budget is None or value is None or value is True or value is False:
        return value
    if type(value) is int:
        if value.bit_length() > MAX_INT_BITS:
            raise BudgetExceeded(f"{what} is an integer of {value.bit_length():,} bits (the limit is {MAX_INT_BITS})")
    elif isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
        budget.size(len(value), what)
    return value


def _length(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


def _text_length(value: Any) -> int:
    """The length str(value) will have, without building it for containers."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return 2 + 4 * len(value)   # at least this; items may add more, and every result is checked after
    return len(str(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else 8


def before_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an operator whose result would be over budget, before it is computed."""
    budget = _CURRENT.get()
    if budget is None:
        return
    budget.tick()
    ints = isinstance(left, int) and isinstance(right, int) and not isinstance(left, bool) \
        and not isinstance(right, bool)
    if operator == "**" and ints and right > 0 and abs(left) > 1:
        bits = right * abs(left).bit_length()
        if bits > MAX_INT_BITS:
            raise BudgetExceeded(f"{left} ** {right} would be an integer of about {bits:,} bits "
                                 f"(the limit is {MAX_INT_BITS})")
    elif operator == "*" and ints:
        if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            raise BudgetExceeded(f"a product of about {left.bit_length() + right.bit_length():,} bits "
                                 f"(the limit is {MAX_INT_BITS})")
    elif operator == "*":
        for sequence, count in ((left, right), (right, left)):
            length = _length(sequence)
            if length is not None and isinstance(count, int) and not isinstance(count, bool):
                budget.size(length * max(count, 0), "a repeated string or list")
    elif operator == "+":
        a, b = _length(left), _length(right)
        if a is not None and b is not None:
            budget.size(a + b, "a concatenation")
    elif operator == "%" and isinstance(left, str):
        _check_format(left, right if isinstance(right, tuple) else (right,))


_PRINTF_WIDTH = re.compile(r"%[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_NUMBER = re.compile(r"\d+")


def _check_format(template: str, arguments: Iterable[Any]) -> None:
    """'%999999999d' % 1 and '{:999999999}'.format(1) allocate the width: refuse widths over the budget."""
    widths = [int(n) for match in _PRINTF_WIDTH.finditer(template) for n in match.groups() if n and n != "*"]
    if "*" in template:
        widths += [a for a in arguments if isinstance(a, int) and not isinstance(a, bool)]
    if "{" in template:
        widths += [int(n) for n in _FORMAT_NUMBER.findall(template) if len(n) < 12]
        widths += [MAX_LENGTH + 1 for n in _FORMAT_NUMBER.findall(template) if len(n) >= 12]
    budget = _CURRENT.get()
    if budget is not None:
        for width in widths:
            budget.size(width, "a formatted field")


# String methods whose result can be far longer than their inputs, and how long it would be.
def _grown_length(method: str, text: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    values = [*args, *kwargs.values()]
    if method in ("center", "ljust", "rjust", "zfill") and values and isinstance(values[0], int):
        return max(len(text), values[0])
    if method == "expandtabs":
        size = values[0] if values and isinstance(values[0], int) else 8
        return len(text) + text.count("\t") * max(size, 0)
    if method == "replace" and len(values) >= 2 and isinstance(values[0], str) and isinstance(values[1], str):
        count = text.count(values[0]) if values[0] else len(text) + 1
        if len(values) > 2 and isinstance(values[2], int) and values[2] >= 0:
            count = min(count, values[2])
        return len(text) + count * max(0, len(values[1]) - len(values[0]))
    return None


def before_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Count a call and refuse one whose result would be over budget; ``join`` gets its items as a list."""
    budget = _CURRENT.get()
    if budget is None:
        return args, kwargs
    budget.tick()
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_LENGTH:
            raise BudgetExceeded(f"a call given {value:,} (sizes and counts stop at {MAX_LENGTH:,})")
    owner = getattr(obj, "__self__", None)
    method = getattr(obj, "__name__", "")
    if isinstance(owner, str):
        if method in ("format", "format_map"):
            _check_format(owner, args)
        elif method == "join" and args:
            items = _bounded_list(args[0], "the items joined")
            budget.size(sum(_text_length(item) for item in items) + len(owner) * max(len(items) - 1, 0),
                        "a joined string")
            args = (items, *args[1:])
        else:
            grown = _grown_length(method, owner, args, kwargs)
            if grown is not None:
                budget.size(grown, f"the result of {method}()")
    return args, kwargs


def _bounded_list(items: Any, what: str) -> list[Any]:
    if isinstance(items, (list, tuple)):
        check_value(items, what)
        return list(items)
    out: list[Any] = []
    for item in items:
        out.append(item)
        if len(out) > MAX_LENGTH:
            check_value(out, what)
    tick(len(out))
    return out


# ------------------------------------------------------------------------------------------- filters and tests

# Filters whose result can outgrow their input (or whose regular expressions are slow on hostile text).
_GROWING_FILTERS = frozenset({"center", "indent", "replace", "format", "join", "striptags", "urlize", "wordwrap"})

def _filter_args(name: str, values: list[Any]) -> None:
    """What a filter's arguments would make it build, checked before it runs."""
    budget = _CURRENT.get()
    if budget is None:
        return
    for value in values[1:]:
        if type(value) is int and value > MAX_LENGTH:
            raise BudgetExceeded(f"filter {name} given {value:,} (the limit is {MAX_LENGTH:,})")
    if name not in _GROWING_FILTERS:
        return
    subject = values[0] if values else None
    if name == "center" and len(values) > 1 and isinstance(values[1], int):
        budget.size(values[1], "the centred text")
    elif name == "indent" and isinstance(subject, str) and len(values) > 1:
        width = values[1] if isinstance(values[1], int) else len(str(values[1]))
        budget.size(len(subject) + (subject.count("\n") + 1) * max(width, 0), "the indented text")
    elif name == "replace" and isinstance(subject, str) and len(values) > 2:
        grown = _grown_length("replace", subject, tuple(str(v) for v in values[1:3]), {})
        budget.size(grown or 0, "the result of replace")
    elif name == "format" and isinstance(subject, str):
        _check_format(subject, values[1:])
    elif name == "join" and isinstance(subject, (list, tuple)):
        separator = values[1] if len(values) > 1 and isinstance(values[1], str) else ""
        budget.size(len(separator) * len(subject) + sum(_text_length(item) for item in subject), "a joined string")
    elif name in ("striptags", "urlize", "wordwrap") and isinstance(subject, str):
        # Their regular expressions can take quadratic time on hostile text: keep the text short.
        budget.size(len(subject) * 100, f"the text given to {name}")


_LIST_ITERATOR: type = type(iter([]))
_PLAIN = (str, bytes, list, tuple, dict, set, frozenset, int, float, bool, type(None))


def metered_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that counts as one operation, refuses arguments over budget and checks its result; a filter that
    returns an iterator (map, select, reject...) counts one operation per item it yields.

    Tests need no wrapper: they return true or false, and each call is already counted by the loop or the filter
    (select, reject...) that makes it.
    """
    skip = 1 if hasattr(function, "jinja_pass_arg") else 0   # the context or environment Jinja passes first
    what = f"the result of {name}"
    growing = name in _GROWING_FILTERS

    @functools.wraps(function)
    def metered_function(*args: Any, **kwargs: Any) -> Any:
        budget = _CURRENT.get()
        if budget is None:
            return function(*args, **kwargs)
        budget.operations += 1      # budget.tick(), inlined: every filter call of every evaluation comes here
        if budget.operations >= budget.next_look:
            budget.look()
        if growing or kwargs or len(args) > skip + 1:     # arguments besides the value filtered: check them
            _filter_args(name, [*args[skip:], *kwargs.values()])
        if name == "join" and len(args) > skip and not isinstance(args[skip], (str, list, tuple)):
            args = (*args[:skip], _bounded_list(args[skip], "the items joined"), *args[skip + 1:])
            _filter_args(name, [*args[skip:], *kwargs.values()])
        result = function(*args, **kwargs)
        if type(result) is str:
            budget.size(len(result), what)
            return result
        if type(result) is _LIST_ITERATOR:
            # A list already built (expr.COLLECTION_FILTERS): its items are counted at once, not one generator step
            # each as they are consumed (a map over 50,000 mailboxes).
            budget.tick(operator.length_hint(result))
            return result
        if not isinstance(result, _PLAIN) and (inspect.isgenerator(result) or hasattr(result, "__next__")):
            return iterate(result)
        return check_value(result, what)

    return metered_function


_CHUNK = 1024      # items a text filter maps between two looks at the budget (map_filter's ``text_only``)


def map_filter(name: str, function: Callable[..., Any], items: Iterable[Any], rest: tuple[Any, ...],
               *, text_only: bool = False) -> list[Any]:
    """``[metered_filter(name, function)(item, *rest) for item in items]`` without a wrapper call per item (a map
    over 50,000 mailboxes): the same operation per item, the same checks of the arguments and of every result.

    ``text_only``: the filter makes a short text of each item (expr.TEXT_FILTERS: smtp_domain, url_host...), so the
    items are counted a chunk at a time and the texts measured in one pass of C: the same operations and sizes.
    """
    budget = _CURRENT.get()
    if budget is None:
        return [function(item, *rest) for item in items]
    if name in _GROWING_FILTERS or hasattr(function, "jinja_pass_arg"):
        metered = metered_filter(name, function)
        return [metered(item, *rest) for item in items]
    what = f"the result of {name}"
    if text_only and isinstance(items, list):
        if items:
            _filter_args(name, [items[0], *rest])
        texts: list[Any] = []
        for start in range(0, len(items), _CHUNK):
            chunk = items[start:start + _CHUNK]
            budget.tick(len(chunk))
            texts += [function(item, *rest) for item in chunk] if rest else map(function, chunk)
        if set(map(type, texts)) <= {str}:
            budget.size(max(map(len, texts), default=0), what)
            return texts
        return [check_value(text, what) for text in texts]
    out: list[Any] = []
    for item in items:
        budget.operations += 1
        if budget.operations >= budget.next_look:
            budget.look()
        if not out:
            _filter_args(name, [item, *rest])     # only the arguments after the item are checked: the same each time
        result = function(item, *rest)
        if type(result) is str:
            budget.size(len(result), what)
        elif not isinstance(result, _PLAIN) and (inspect.isgenerator(result) or hasattr(result, "__next__")):
            result = iterate(result)
        else:
            check_value(result, what)
        out.append(result)
    return out


def iterate(items: Any) -> Iterator[Any]:
    """Loop iterations (and the items a lazy filter yields), one operation each (inlined: this runs per item)."""
    budget = _CURRENT.get()
    if budget is None:
        yield from items
        return
    for item in items:
        budget.operations += 1
        if budget.operations >= budget.next_look:
            budget.look()
        yield item


def concat(*parts: Any) -> str:
    """The ``~`` operator, checked before the string is built."""
    budget = _CURRENT.get()
    texts = [part if isinstance(part, str) else str(part) for part in parts]
    if budget is not None:
        budget.tick()
        budget.size(sum(map(len, texts)), "a concatenation")
    return "".join(texts)


def output(value: Any) -> Any:
    """One piece of a template's output; the whole output is bounded by MAX_LENGTH."""
    budget = _CURRENT.get()
    if budget is not None:
        budget.operations += 1      # budget.tick(), inlined: every '{{ }}' printed comes here
        if budget.operations >= budget.next_look:
            budget.look()
        budget.output += len(value) if type(value) is str else _text_length(value)
        if budget.output > MAX_LENGTH:
            raise BudgetExceeded(f"the template's output passed {MAX_LENGTH:,} characters")
    return value


# Filters, not globals: Jinja's compiled code calls a filter directly, a global function through Context.call and
# the sandbox's call checks (four Python calls more for every '{{ }}' printed: 36,000 for 200 servers).
FILTERS: dict[str, Callable[..., Any]] = {ITERATE: iterate, CONCAT: concat, OUTPUT: output}


class _Meter(NodeTransformer):
    """Rewrite a parsed template so every loop, '~' and output goes through the budget (FILTERS)."""

    @staticmethod
    def _filter(name: str, value: Any, args: list[Any], lineno: int) -> nodes.Filter:
        return nodes.Filter(value, name, args, [], None, None, lineno=lineno)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = self._filter(ITERATE, node.iter, [], node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        first, *rest = node.nodes
        return self._filter(CONCAT, first, rest, node.lineno)

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [self._filter(OUTPUT, nodes.Const(child.data, lineno=child.lineno)
                                   if isinstance(child, nodes.TemplateData) else child, [], child.lineno)
                      for child in node.nodes]
        return node


def meter_tree(tree: nodes.Template) -> nodes.Template:
    """The template with its loops, concatenations and output metered (see _Meter), and nothing of it evaluated
    while it is compiled.

    Jinja's code generator evaluates what it finds constant even with its optimizer off: an output's filters on
    literals (``{{ 'x' | center(200000000) }}``) and an ``{% autoescape %}`` argument are run while compiling,
    where no budget applies, so a checks file could allocate gigabytes while being loaded. A volatile evaluation
    context, set first, makes every such node wait for run time and its budget (jinja2.nodes.Impossible)."""
    result = _Meter().visit(tree)
    assert isinstance(result, nodes.Template)
    lineno = result.body[0].lineno if result.body else 1
    result.body.insert(0, nodes.EvalContextModifier([nodes.Keyword("volatile", nodes.Const(True, lineno=lineno),
                                                                   lineno=lineno)], lineno=lineno))
    return result


# ------------------------------------------------------------------------------------------ static warnings

def unbounded(tree: nodes.Node) -> list[str]:
    """What a checks file writes that can only be over budget, found before any evidence is seen: a power whose
    exponent is not a small literal, a literal size or count beyond the limits, a regular expression that can take
    exponential time."""
    problems = []
    for power in tree.find_all(nodes.Pow):
        exponent: Any = power.right
        if not (isinstance(exponent, nodes.Const) and isinstance(exponent.value, (int, float))
                and exponent.value <= 64):
            problems.append("a power (**) whose exponent is not a literal of at most 64")
    for const in tree.find_all(nodes.Const):
        if isinstance(const.value, int) and not isinstance(const.value, bool) and const.value > MAX_LENGTH:
            problems.append(f"the number {const.value} (sizes and counts stop at {MAX_LENGTH:,})")
    for pattern in _matching_patterns(tree):
        problem = regex_problem(pattern)
        if problem:
            problems.append(problem)
    return problems


def _matching_patterns(tree: nodes.Node) -> list[str]:
    """The literal patterns given to the 'matching' test, directly or through select/selectattr/reject(attr)."""
    patterns = []
    for test in tree.find_all(nodes.Test):
        if test.name == "matching" and test.args and isinstance(test.args[0], nodes.Const):
            patterns.append(test.args[0].value)
    for node in tree.find_all((nodes.Filter, nodes.Call)):
        args: list[Any] = node.args  # type: ignore[attr-defined]
        for index, arg in enumerate(args[:-1]):
            if isinstance(arg, nodes.Const) and arg.value == "matching" and isinstance(args[index + 1], nodes.Const):
                patterns.append(args[index + 1].value)
    return [p for p in patterns if isinstance(p, str)]


@functools.lru_cache(maxsize=256)
def regex_problem(pattern: str) -> str | None:
    """Why a regular expression may backtrack exponentially (a repeated group that itself repeats or alternates,
    like (a+)+ or (a|a)*), or None. Python's re has no timeout, so such a pattern is refused, not run."""
    import re._parser as sre_parse   # the standard library's own pattern parser (Python 3.11+)

    try:
        parsed = sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"the pattern {pattern[:60]!r} is not a regular expression ({exc})"
    repeats = {sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT}
    stack: list[tuple[Any, bool]] = [(parsed, False)]
    while stack:
        items, inside = stack.pop()
        for op, value in items:
            if op in repeats:
                low, high, sub = value
                unbounded_repeat = high == sre_parse.MAXREPEAT or high > 100
                if inside and unbounded_repeat:
                    return (f"the pattern {pattern[:60]!r} repeats a repetition (like (a+)+), which can take "
                            "exponential time")
                stack.append((sub, inside or unbounded_repeat))
            elif op == sre_parse.SUBPATTERN:
                stack.append((value[-1], inside))
            elif op == sre_parse.BRANCH:
                if inside:
                    return (f"the pattern {pattern[:60]!r} repeats an alternation (like (a|ab)*), which can take "
                            "exponential time")
                for branch in value[1]:
                    stack.append((branch, inside))
            elif op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT):
                stack.append((value[1], inside))
    return None
