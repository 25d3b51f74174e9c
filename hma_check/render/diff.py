"""The diff between two runs as terminal lines and as a standalone HTML page (the same section the validated
report embeds)."""

from __future__ import annotations

from hma_check import __version__
from hma_check.errors import one_line
from hma_check.runs.diff import RunDiff

TERMINAL_FACT_LIMIT = 20
HTML_FACT_LIMIT = 300


def lines(diff: RunDiff, fact_limit: int = TERMINAL_FACT_LIMIT) -> list[str]:
    """Every line is one_line()d (subjects and facts come from the customer's environment); a leading tab marks
    a detail line, indented after cleaning."""
    tally = diff.counts()
    out = [f"from {diff.old.label} ({diff.old.verdict}, collected {diff.old.metadata.get('collected_at')})",
           f"to   {diff.new.label} ({diff.new.verdict}, collected {diff.new.metadata.get('collected_at')})",
           f"verdict: {diff.old.verdict} -> {diff.new.verdict} ({diff.verdict_direction})",
           f"findings: {tally['worse']} worse, {tally['better']} better, {tally['new']} new, {tally['gone']} gone, "
           f"{tally['changed']} otherwise changed"]
    for change in diff.statuses:
        before = change.old or "(none)"
        after = change.new or "(none)"
        found = f": {change.new_actual}" if change.new and change.new_actual else ""
        out.append(f"\t{change.direction.upper():<7} {change.check_id} [{change.subject}] {before} -> {after}{found}")
    if diff.facts_note:
        out.append(diff.facts_note)
    else:
        out.append(f"facts: {len(diff.facts)} change(s)" + ("" if diff.facts else " (the collected facts are the same)"))
        for group in diff.fact_groups(fact_limit):
            for change in group["changes"]:
                out.append(f"\t{group['source']}: {change.text()}")
            if group["more"]:
                out.append(f"\t{group['source']}: ... and {group['more']} more")
    out.extend(f"note: {note}" for note in diff.notes)
    out.append("something got worse" if diff.worse else "nothing got worse")
    return [("  " if line.startswith("\t") else "") + one_line(line, 400) for line in out]


def html(diff: RunDiff) -> str:
    from hma_check.render.templating import render_template

    return render_template("diff.html.j2", changes=diff, fact_limit=HTML_FACT_LIMIT, version=__version__)
