"""enable.ps1 and rollback.ps1: the runbooks as reviewable PowerShell, values already quoted by the checks.

Before a runbook template is used, every value it prints is proved to go through ps_comment (a one-line comment) or a
PowerShell quoting filter; only the runbook text itself (entry.enable, entry.rollback), which the checks loader proved
quoted, is printed as it is. A value from the evidence (an imported finishedAt with a newline, say) can therefore never
start a command line.
"""

from __future__ import annotations

from functools import lru_cache

from jinja2 import nodes

from hma_check.errors import OutputError
from hma_check.evaluate.expr import PS_SAFE_FILTERS
from hma_check.render.model import Report
from hma_check.render.templating import environment, render_template

RUNBOOK_TEMPLATES = ("enable.ps1.j2", "rollback.ps1.j2")
SAFE_FILTERS = PS_SAFE_FILTERS | {"ps_comment"}
RUNBOOK_TEXT = {"entry.enable", "entry.rollback"}   # PowerShell built from the checks' proved templates


def render_enable(report: Report) -> str:
    _prove_quoted("enable.ps1.j2")
    return render_template("enable.ps1.j2", report=report)


def render_rollback(report: Report) -> str:
    _prove_quoted("rollback.ps1.j2")
    return render_template("rollback.ps1.j2", report=report)


@lru_cache(maxsize=None)
def _prove_quoted(name: str) -> None:
    problems = unquoted_outputs(name)
    if problems:
        raise OutputError(f"template {name} prints {problems[0]} without ps_comment or a PowerShell quoting filter")


def unquoted_outputs(name: str) -> list[str]:
    """Every printed value of a runbook template (and what it includes) that is not proved one comment or literal."""
    env = environment()
    source, _, _ = env.loader.get_source(env, name)   # type: ignore[union-attr]
    return unquoted_outputs_in(source)


def unquoted_outputs_in(source: str) -> list[str]:
    tree = environment().parse(source)
    problems: list[str] = []
    for block in tree.find_all((nodes.FilterBlock, nodes.Macro, nodes.CallBlock)):
        problems.append(f"a {type(block).__name__} block")
    for output in tree.find_all(nodes.Output):
        for child in output.nodes:
            if isinstance(child, nodes.TemplateData):
                continue
            if isinstance(child, nodes.Filter) and child.name in SAFE_FILTERS:
                continue
            if _dotted(child) in RUNBOOK_TEXT:
                continue
            if isinstance(child, nodes.CondExpr) and all(isinstance(n, nodes.Const) and isinstance(n.value, str)
                                                          and "\n" not in n.value for n in (child.expr1, child.expr2)):
                continue   # a choice between two constant one-line texts of the template itself
            problems.append(_dotted(child) or type(child).__name__)
    for include in tree.find_all(nodes.Include):
        if isinstance(include.template, nodes.Const):
            problems.extend(unquoted_outputs(include.template.value))
        else:
            problems.append("an include of a computed template name")
    return problems


def _dotted(node: nodes.Node) -> str:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        inner = _dotted(node.node)
        return f"{inner}.{node.attr}" if inner else ""
    return ""
