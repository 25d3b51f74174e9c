"""What makes enable.ps1 and rollback.ps1 safe to paste, proved on the PowerShell syntax tree (tree-sitter-powershell).

For a pair of runbooks:
- the shell guard (refuse anything but an on-premises Exchange Management Shell) is the first executable statement;
- no live command sits in a phase before its prerequisites: client-affecting changes never in phase 1, the switch only
  when the verdict is READY and never its second half without the first, OWA/ECP and legacy-authentication changes
  only after validation, Microsoft Graph changes only after connecting to the scanned tenant and checking it;
- every live Set-/New-/Update-/Remove-/Add-/Enable-/Disable- command in enable has its inverse in rollback, restoring
  every property it changes (and the properties Exchange changes with them, e.g. -FormsAuthentication);
- no whole-list overwrite of servicePrincipalNames or replyUrls: the list written is always the one read at run time;
- rollback undoes the last phase first, and its header says the order it has.

Phases are read from the runbooks' own headers; the numbers are those of hma_check.checks.PHASES.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

PREPARE, PREPARE_CLIENTS, SWITCH, VALIDATE, OWA_ECP, HARDEN = 1, 2, 3, 4, 5, 6

CHANGING = re.compile(r"^(Set|New|Update|Remove|Add|Enable|Disable|Restart|Install|Import|Clear)-", re.I)
INVERSE_VERB = {"new": "remove", "remove": "new", "add": "remove", "enable": "disable", "disable": "enable"}
# Set-*VirtualDirectory -FormsAuthentication $true also sets Basic on and Digest and Windows off (Microsoft's
# Set-OwaVirtualDirectory and Set-EcpVirtualDirectory pages): a rollback that sets it must restore those after it.
SIDE_EFFECTS = {("set-owavirtualdirectory", "formsauthentication"): ("basicauthentication", "digestauthentication",
                                                                    "windowsauthentication"),
                ("set-ecpvirtualdirectory", "formsauthentication"): ("basicauthentication", "digestauthentication",
                                                                    "windowsauthentication")}
GRAPH_LISTS = ("serviceprincipalnames", "replyurls")
PHASE_HEADER = re.compile(r"^# (?:Undo phase|Phase) (\d+): ")
ENTRY_HEADER = re.compile(r"^# \[(?P<origin>[A-Z][A-Z0-9-]+)\] ")
STATE_LINE = re.compile(r"^# (DONE|SUGGESTION|BLOCKED|NOT PREPARED)\b")


@dataclass
class Command:
    name: str                      # the cmdlet as written
    params: dict[str, object]      # lower-case parameter name -> argument node (None for a switch)
    line: int                      # 0-based line of the file
    text: str

    @property
    def key(self) -> str:
        return self.name.lower()

    def arg(self, name: str, source: bytes) -> str | None:
        node = self.params.get(name)
        return None if node is None else source[node.start_byte:node.end_byte].decode()  # type: ignore[attr-defined]


@dataclass
class Entry:
    phase: int
    origin: str
    first: int
    last: int = 0
    state: str = "live"
    commands: list[Command] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class Runbook:
    name: str
    source: bytes
    lines: list[str]
    tree: object
    entries: list[Entry]
    phases: list[int]              # in the order the file has them
    verdict: str | None

    def live(self) -> list[tuple[Entry, Command]]:
        return [(e, c) for e in self.entries for c in e.commands]


def _powershell_tree(source: bytes):
    import tree_sitter_powershell
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_powershell.language())).parse(source)


def _walk(node):
    yield node
    for child in node.children:
        yield from _walk(child)


def _command(node, source: bytes) -> Command:
    name_node = next(c for c in node.children if c.type == "command_name")
    params: dict[str, object] = {}
    elements = next((c for c in node.children if c.type == "command_elements"), None)
    pending: str | None = None
    for child in (elements.children if elements is not None else []):
        if child.type == "command_argument_sep":
            continue
        text = source[child.start_byte:child.end_byte].decode()
        if child.type == "command_parameter":
            if pending is not None:
                params[pending] = None
            pending = text.lstrip("-").rstrip(":").lower()
            continue
        if pending is not None:
            params[pending] = child
            pending = None
        elif text.startswith("@") and not text.startswith(("@(", "@{")):
            params["@" + text[1:].lower()] = child      # a splatted hashtable: resolved by _splat
    if pending is not None:
        params[pending] = None
    return Command(name=source[name_node.start_byte:name_node.end_byte].decode(), params=params,
                   line=node.start_point[0], text=source[node.start_byte:node.end_byte].decode())


def parse_runbook(path: Path) -> Runbook:
    source = path.read_bytes()
    tree = _powershell_tree(source)
    nodes = list(_walk(tree.root_node))
    errors = [source[n.start_byte:n.end_byte][:80] for n in nodes if n.type == "ERROR" or n.is_missing]
    assert not errors and not tree.root_node.has_error, (path.name, errors)
    lines = source.decode("utf-8").split("\n")
    entries: list[Entry] = []
    phases: list[int] = []
    phase = 0
    verdict = None
    current: Entry | None = None          # the entry whose lines are being read
    for number, line in enumerate(lines):
        if line.startswith("# Verdict: "):
            verdict = line[len("# Verdict: "):].split(":", 1)[0].strip()
        header, heading = PHASE_HEADER.match(line), ENTRY_HEADER.match(line)
        if current is not None and (header or heading or line.startswith("# =====")):
            current.last, current = number - 1, None
        if header:
            phase = int(header.group(1))
            phases.append(phase)
        elif heading:
            current = Entry(phase=phase, origin=heading.group("origin"), first=number)
            entries.append(current)
        elif current is not None:
            current.lines.append(line)
            state = STATE_LINE.match(line)
            if state and len(current.lines) == 1:     # the state line comes right under the heading
                current.state = state.group(1)
    if current is not None:
        current.last = len(lines) - 1
    for node in nodes:
        if node.type == "command":
            command = _command(node, source)
            owner = next((e for e in entries if e.first <= command.line <= e.last), None)
            assert owner is not None or command.line < (entries[0].first if entries else len(lines)), command.text
            if owner is not None:
                owner.commands.append(command)
    return Runbook(path.name, source, lines, tree, entries, phases, verdict)


def _splat(entry: Entry, command: Command) -> dict[str, str]:
    """The parameters of `Cmdlet @name`: the keys of `$name = @{ Key = value }` in the same entry."""
    out: dict[str, str] = {}
    for key in [k for k in command.params if k.startswith("@")]:
        match = re.search(r"\$" + re.escape(key[1:]) + r"\s*=\s*@\{(?P<body>[^}]*)\}", entry.text, re.I)
        assert match, f"{entry.origin}: splatted {key} is not a hashtable assigned in the same step"
        for name, value in re.findall(r"(\w+)\s*=\s*([^;]+)", match.group("body")):
            out[name.lower()] = value.strip()
    return out


def parameters(entry: Entry, command: Command) -> set[str]:
    return {k for k in command.params if not k.startswith("@")} | set(_splat(entry, command))


# ----------------------------------------------------------------------------------------------- the four proofs

def assert_shell_guard_first(book: Runbook) -> None:
    """The first executable statement refuses to go on outside an on-premises Exchange Management Shell."""
    statements = next(c for c in book.tree.root_node.children if c.type == "statement_list").children
    first = statements[0]
    text = book.source[first.start_byte:first.end_byte].decode()
    assert first.type == "if_statement", f"{book.name}: the first executable line is not the shell guard: {text[:80]}"
    assert "Get-ExchangeServer" in text and "throw" in text, f"{book.name}: the guard does not test for Exchange: {text}"
    first_line = first.start_point[0]
    assert all(line.startswith("#") or not line.strip() for line in book.lines[:first_line]), book.name


def _graph_connected_before(book: Runbook, entry: Entry, command: Command) -> None:
    """A Graph read or change runs only after Connect-MgGraph to a tenant and a check that the session is in it."""
    before = [c for c in entry.commands if c.line < command.line]
    connects = [c for c in before if c.key == "connect-mggraph"]
    assert connects, f"{book.name} {entry.origin}: {command.name} before any Connect-MgGraph in its step"
    tenant = connects[-1].arg("tenantid", book.source)
    assert tenant and tenant.startswith("'"), f"{book.name} {entry.origin}: Connect-MgGraph names no tenant"
    checks = [line for line in book.lines[connects[-1].line:command.line]
              if "(Get-MgContext).TenantId" in line and tenant in line and "-ne" in line and "throw" in line]
    assert checks, f"{book.name} {entry.origin}: {command.name} without checking that Graph is connected to {tenant}"


def assert_phases_hold(enable: Runbook, rollback: Runbook) -> None:
    assert enable.phases == sorted(enable.phases), f"enable.ps1 phases out of order: {enable.phases}"
    assert rollback.phases == sorted(rollback.phases, reverse=True), f"rollback.ps1 does not start with the last " \
                                                                     f"phase: {rollback.phases}"
    switched = {e.origin: e for e in enable.entries if e.origin in ("HMA-STEP-001", "HMA-STEP-002")}
    for entry, command in enable.live():
        params = parameters(entry, command)
        where = f"enable.ps1 {entry.origin} (phase {entry.phase}): {command.text[:100]}"
        if CHANGING.match(command.name) and entry.phase >= SWITCH:
            assert enable.verdict == "READY", f"{where}: live although the verdict is {enable.verdict}"
        if command.key == "set-organizationconfig" and "oauth2clientprofileenabled" in params:
            assert entry.phase == SWITCH, where
            first = switched.get("HMA-STEP-001")
            assert first is not None and (first.commands or first.state == "DONE"), \
                f"{where}: OAuth2ClientProfileEnabled live while EvoSts is not made the default (half-enabled)"
        if command.key == "set-authserver" and "isdefaultauthorizationendpoint" in params:
            value = (command.arg("isdefaultauthorizationendpoint", enable.source) or "").lower()
            assert entry.phase == (SWITCH if value == "$true" else PREPARE_CLIENTS), where
        if (command.key in ("set-organizationconfig", "set-casmailbox") and "mapihttpenabled" in params) \
                or command.key == "set-outlookanywhere":
            assert entry.phase == PREPARE_CLIENTS, f"{where}: clients notice this change; phase 1 has no impact"
        if command.key in ("set-owavirtualdirectory", "set-ecpvirtualdirectory"):
            assert entry.phase >= OWA_ECP, f"{where}: OWA/ECP sign-in changes only after HMA is validated"
        if command.key in ("new-authenticationpolicy",) or "authenticationpolicy" in params \
                or "defaultauthenticationpolicy" in params:
            assert entry.phase >= HARDEN, f"{where}: blocking legacy authentication only after HMA is validated"
    for book in (enable, rollback):
        for entry, command in book.live():
            if command.key.endswith("-mgserviceprincipal") or (command.key.startswith(("update-", "new-", "remove-"))
                                                                 and "-mg" in command.key):
                _graph_connected_before(book, entry, command)


def _identity(command: Command, source: bytes) -> str | None:
    for name in ("identity", "serviceprincipalid", "name"):
        value = command.arg(name, source)
        if value is not None:
            return value if value.startswith("'") or value.startswith("(") else "<runtime>"
    return None


def assert_every_change_is_undone(enable: Runbook, rollback: Runbook) -> None:
    undo = rollback.live()
    for entry, command in enable.live():
        if not CHANGING.match(command.name):
            continue
        verb, noun = command.key.split("-", 1)
        identity = _identity(command, enable.source)
        where = f"enable.ps1 {entry.origin}: {command.text[:120]}"
        if verb in INVERSE_VERB:
            inverse = f"{INVERSE_VERB[verb]}-{noun}"
            assert any(c.key == inverse and _identity(c, rollback.source) == identity for _, c in undo), \
                f"{where}: no {inverse} of {identity} in rollback.ps1"
            continue
        same = [(e, c) for e, c in undo if c.key == command.key and _identity(c, rollback.source) == identity]
        assert same, f"{where}: rollback.ps1 never sets {command.name} {identity or ''} back"
        restored = set().union(*(parameters(e, c) for e, c in same)) - {"identity", "serviceprincipalid", "confirm"}
        needed = parameters(entry, command) - {"identity", "serviceprincipalid", "confirm"}
        for e, c in same:
            for parameter in parameters(e, c):
                effects = SIDE_EFFECTS.get((command.key, parameter), ())
                later = set().union(set(), *(parameters(e2, c2) for e2, c2 in same if c2.line > c.line))
                missing_after = set(effects) - later
                assert not missing_after, (f"rollback.ps1 {e.origin}: {c.name} -{parameter} also changes "
                                           f"{sorted(missing_after)}, which no later command restores")
        assert needed <= restored, f"{where}: rollback.ps1 does not restore {sorted(needed - restored)}"


def assert_no_whole_list_overwrite(book: Runbook) -> None:
    """servicePrincipalNames and replyUrls are written only as the list read at run time plus or minus the step's
    own values: never a list literal captured at scan time, never an empty list."""
    for entry, command in book.live():
        for name in GRAPH_LISTS:
            node = command.params.get(name)
            if name not in command.params:
                continue
            where = f"{book.name} {entry.origin}: {command.text[:120]}"
            assert node is not None, where
            literals = [n for n in _walk(node) if n.type in ("verbatim_string_characters", "expandable_string_literal",
                                                             "string_literal")]
            assert not literals, f"{where}: writes a literal list over {name}"
            argument = book.source[node.start_byte:node.end_byte].decode()
            variable = re.fullmatch(r"\$(\w+)", argument)
            assert variable, f"{where}: the new {name} must be a list computed in the step"
            assigned = re.search(r"\$" + variable.group(1) + r"\s*=\s*(?P<value>.+)", entry.text)
            assert assigned and re.search(r"\$\w+\." + name, assigned.group("value"), re.I), \
                f"{where}: {argument} is not computed from the {name} read at run time"
            reads = [c for c in entry.commands if c.key == "get-mgserviceprincipal" and c.line < command.line]
            assert reads, f"{where}: the current {name} is not read at run time before it is written"


def assert_rollback_header_matches(rollback: Runbook) -> None:
    header = "\n".join(line for line in rollback.lines[:rollback.entries[0].first if rollback.entries else None]
                       if line.startswith("#"))
    if rollback.phases:
        order = re.search(r"Order: (?P<order>[^.]*)\.", header)
        assert order, "rollback.ps1 does not say in which order it undoes the phases"
        assert [int(n) for n in re.findall(r"\d+", order.group("order"))] == rollback.phases, \
            (order.group("order"), rollback.phases)


def check_runbooks(folder: Path) -> tuple[Runbook, Runbook]:
    """Every proof for the enable.ps1 and rollback.ps1 of one report folder."""
    enable, rollback = parse_runbook(folder / "enable.ps1"), parse_runbook(folder / "rollback.ps1")
    for book in (enable, rollback):
        assert_shell_guard_first(book)
        assert_no_whole_list_overwrite(book)
    assert_phases_hold(enable, rollback)
    assert_every_change_is_undone(enable, rollback)
    assert_rollback_header_matches(rollback)
    return enable, rollback
