"""Collect-HmaReadiness.ps1: valid PowerShell, provably read-only, covering every source, writing what import reads."""

from __future__ import annotations

import re

import pytest
import tree_sitter_powershell
from click.testing import CliRunner
from tree_sitter import Language, Parser

from hma_check import __version__
from hma_check.cli import cli
from hma_check.collect.exchange.objects import SOURCE_BY_TYPE
from hma_check.collect.offline.script import collector_script
from hma_check.contract.sources import SOURCES

FORBIDDEN = re.compile(r"\b(Set|New|Remove|Enable|Disable|Add|Clear|Update|Start|Stop|Restart|Install|Uninstall|"
                       r"Import|Mount|Register|Unregister|Grant|Revoke|Reset|Rename|Move|Copy)-[A-Za-z]|"
                       r"Invoke-Expression|\biex\b|Invoke-WebRequest|Invoke-RestMethod|Invoke-MgGraphRequest",
                       re.IGNORECASE)
# Every command the script may run. Exchange and Graph reads are Get-; the rest read, format or write local files.
ALLOWED_COMMANDS = {"Get-", "Test-", "Select-Object", "Where-Object", "Sort-Object", "Export-Clixml", "ConvertTo-Json",
                    "Out-File", "Join-Path", "Split-Path", "Write-Host", "Write-Warning", "Compress-Archive",
                    "Invoke-Command", "Connect-MgGraph", "Save-HmaClixml", "Save-HmaGraph", "Save-HmaHttpProxyLogs"}
PARSER = Parser(Language(tree_sitter_powershell.language()))


@pytest.fixture(scope="module", params=[False, True], ids=["exchange", "graph"])
def script(request):
    return request.param, collector_script(graph=request.param)


def nodes(tree, source: bytes, kind: str) -> list[str]:
    found, stack = [], [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == kind:
            found.append(source[node.start_byte:node.end_byte].decode())
        stack.extend(node.children)
    return found


def test_parses_without_errors(script):
    _, text = script
    source = text.encode("ascii")  # Windows PowerShell 5.1 reads BOM-less scripts in the ANSI code page
    tree = PARSER.parse(source)
    problems, stack = [], [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            problems.append((node.start_point, source[node.start_byte:node.end_byte][:80]))
        stack.extend(node.children)
    assert not tree.root_node.has_error and problems == []
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")


def test_read_only_commands_only(script):
    _, text = script
    source = text.encode("ascii")
    tree = PARSER.parse(source)
    commands = set(nodes(tree, source, "command_name"))
    assert {"Get-ExchangeServer", "Export-Clixml", "Invoke-Command"} <= commands
    for command in commands:
        assert command.startswith(("Get-", "Test-")) or command in ALLOWED_COMMANDS, command
    assert not FORBIDDEN.search(text), FORBIDDEN.search(text)
    # Cmdlets named in strings (the tables run with '& $cmdlet') are Get- cmdlets too.
    for verb_noun in re.findall(r"'((?:[A-Z][a-z]+)-[A-Za-z]+)'", text):
        assert verb_noun.startswith(("Get-", "Test-")), verb_noun
    for function in nodes(tree, source, "function_name"):
        assert function.startswith(("Get-", "Save-")), function


def test_covers_every_source(script):
    graph, text = script
    for spec in SOURCES:
        if spec.collector in ("exchange", "os") or (graph and spec.collector == "graph"):
            assert f"'{spec.name}'" in text, spec.name
        elif spec.collector == "graph":
            assert f"'{spec.name}'" not in text
    assert ("Get-MgServicePrincipal" in text) == graph and ("Connect-MgGraph" in text) == graph
    for cmdlet in ("Get-MapiVirtualDirectory", "Get-ExchangeCertificate", "Get-OutlookAnywhere"):
        assert re.search(rf"'{cmdlet}'", text)
    assert "-Server $name" in text and "-Depth 6" in text
    assert f"$ScriptVersion = '{__version__}'" in text


def test_nothing_is_read_on_an_edge_server(script):
    # As the live collectors: the per-server loop leaves an Edge Transport server before any query or Invoke-Command.
    _, text = script
    loop = text[text.index("foreach ($server in $servers)"):]
    edge = re.search(r"if \(\$server\.IsEdgeServer -eq \$true\) \{[^{}]*?continue\s*\}", loop)
    assert edge and edge.end() < loop.index("Save-HmaClixml") < loop.index("Get-HmaServerFacts")


def test_writes_what_import_reads(script):
    _, text = script
    # The record types the script builds are the ones import recognises.
    for type_name in re.findall(r"PSTypeName\s*=\s*'([^']+)'", text):
        assert type_name in SOURCE_BY_TYPE, type_name
    # The manifest and entry keys offline import reads (test_offline_import builds its folder with these).
    for key in ("hmaCheckManifest", "scriptVersion", "startedAt", "finishedAt", "computerName", "userName", "entries",
                "file", "source", "server", "command", "durationMs", "status", "error", "count"):
        assert re.search(rf"^\s+{key}\s+=", text, re.M), key
    assert "servers\\$name\\$cmdlet.xml" in text and "Compress-Archive" in text


def test_command_prints_the_script():
    runner = CliRunner()
    result = runner.invoke(cli, ["collector-script", "--graph"])
    assert result.exit_code == 0 and result.stdout_bytes == collector_script(graph=True).encode("ascii")
    assert runner.invoke(cli, ["collector-script"]).stdout_bytes == collector_script(graph=False).encode("ascii")


def test_every_exchange_and_graph_call_stops_on_error(script):
    """EMS cmdlets are implicit-remoting module functions that ignore the script's $ErrorActionPreference: without
    an explicit -ErrorAction Stop a failed query would be saved as an empty result (missing data posing as 'none')."""
    _, text = script
    source = text.encode("ascii")
    tree = PARSER.parse(source)
    stack, checked = [tree.root_node], []
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.type != "command":
            continue
        command = source[node.start_byte:node.end_byte].decode()
        name = command.split()[0]
        if name == "&" and ("$cmdlet" in command or "$casCmdlet" in command):
            assert "-ErrorAction Stop" in command, command
            checked.append(command)
        elif re.fullmatch(r"Get-(Mg(?!Context)\w+|Mailbox|CASMailbox|RoleGroupMember|User|AuthConfig|ExchangeServer|"
                          r"OrganizationConfig|AuthenticationPolicy)|Connect-MgGraph", name):
            assert re.search(r"-ErrorAction (Stop|SilentlyContinue)", command), command
            checked.append(command)
    assert len(checked) == (23 if script[0] else 12)  # the three cmdlet tables, 9 direct calls, 11 Graph calls
