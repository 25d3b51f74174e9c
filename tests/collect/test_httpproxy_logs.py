"""The HttpProxy log reader on real published lines (tests/data/httpproxy/published/NOTES.md) and on hostile input."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zipfile
from pathlib import Path

import pytest

from hma_check.collect.logs import httpproxy
from hma_check.collect.logs.httpproxy import FIELDS, ClientLogs, looks_like_httpproxy, summarise_files
from hma_check.collect.offline.importer import import_path
from hma_check.commands.pipeline import run_report

PUBLISHED = Path(__file__).resolve().parent.parent / "data" / "httpproxy" / "published"
HEADER = ",".join(FIELDS)


def published(protocol: str) -> Path:
    return next((PUBLISHED / protocol).glob("HttpProxy_*.LOG"))


def group(data, protocol, authentication):
    found = [c for c in data["clients"] if c["Protocol"] == protocol and c["AuthenticationType"] == authentication]
    assert len(found) == 1, (protocol, authentication, data["clients"])
    return found[0]


def test_the_published_field_list_is_the_one_the_reader_and_the_lab_know():
    from hma_lab.httpproxy_log import FIELDS as LAB_FIELDS

    for file in PUBLISHED.glob("*/*.LOG"):
        fields = next(line for line in file.read_text(encoding="utf-8").splitlines() if line.startswith("#Fields: "))
        assert tuple(fields[len("#Fields: "):].split(",")) == FIELDS, file
    assert tuple(LAB_FIELDS) == FIELDS and len(FIELDS) == 74


@pytest.mark.parametrize("protocol,authentication,authenticated,family,user,requests", [
    # Autodiscover: the iOS/macOS accounts service, NTLM, signed in.
    ("Autodiscover", "NTLM", True, "Apple Mail and accounts (EWS)", "DOMAIN\\username", 1),
    # ActiveSync: Outlook for iOS and Android with Basic (HTTP 403 from the back end, still a signed-in request).
    ("Eas", "Basic", True, "Outlook for iOS and Android", "DOMAIN\\username", 1),
    # ECP: a scanner hitting the EAC, forms authentication, not signed in: no user.
    ("Ecp", "FBA", False, "Other", None, 1),
    # EWS: managed availability's probe, a HealthMailbox: Exchange's own account, never a user.
    ("Ews", "Negotiate", True, "Exchange monitoring", None, 1),
    # MAPI: three probe requests of one HealthMailbox.
    ("Mapi", "Negotiate", True, "Exchange monitoring", None, 3),
    # OWA: a browser whose UserAgent's comma Exchange logged as a space.
    ("Owa", "FBA", False, "Web browser", None, 1),
    # RPC over HTTP: an NTLM challenge (401), not signed in although the scheme is logged.
    ("RpcHttp", "NTLM", False, "Web browser", None, 1),
])
def test_each_published_line_is_read_as_exchange_wrote_it(protocol, authentication, authenticated, family, user,
                                                            requests):
    data = summarise_files([str(published(protocol))])
    assert data["malformed"]["lines"] == 0 and data["requests"] == requests
    found = group(data, protocol, authentication)
    assert (found["authenticated"], found["family"], found["requests"]) == (authenticated, family, requests)
    names = [row["user"] for row in found["people"] + found["applications"]]
    assert names == ([user] if user else [])
    assert found["first_seen"].startswith("20") and found["first_seen"] <= found["last_seen"]


def test_the_published_lines_together_exchange_accounts_counted_apart_and_no_ip_kept():
    data = summarise_files([str(p) for p in sorted(PUBLISHED.glob("*/*.LOG"))])
    assert data["requests"] == 11 and data["files"] == 8 and data["malformed"]["lines"] == 0
    assert data["window"] == {"first": "2023-01-06T01:00:04.124Z", "last": "2023-01-11T16:06:06.997Z"}
    assert sum(c["exchange_accounts"] for c in data["clients"]) == 3       # HealthMailboxXXX on EWS, MAPI, PowerShell
    text = json.dumps(data)
    for address in ("95.1.2.3", "95.5.6.7", "127.0.0.1", "fe80::1234", "10.128.53.11"):   # ClientIpAddress values
        assert address not in text, address
    assert "Sid~S-1-5-21" not in text and "mailboxId=" not in text                      # AnchorMailbox, UrlQuery
    eas = group(data, "Eas", "Basic")
    assert eas["modern"] == "profile" and "added again" in eas["modern_note"]


def _file(tmp_path: Path, name: str, lines: list[str], *, plain_header: bool = True, gz: bool = False) -> Path:
    head = ([HEADER] if plain_header else []) + ["#Software: Microsoft Exchange Server", "#Version: 15.02.2562.017",
                                                  "#Log-type: HttpProxy Logs", "#Date: 2026-11-19T08:00:00.000Z",
                                                  f"#Fields: {HEADER}"]
    payload = ("\r\n".join(head + lines) + "\r\n").encode("utf-8")
    path = tmp_path / (name + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def line(moment="2026-11-19T09:00:00.123Z", protocol="Mapi", authentication="NTLM", authenticated="true",
         user="CONTOSO\\alice", agent="Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)",
         **extra: str) -> str:
    values = {name: "" for name in FIELDS}
    values.update(DateTime=moment, Protocol=protocol, AuthenticationType=authentication,
                  IsAuthenticated=authenticated, AuthenticatedUser=user, UserAgent=agent, ServerHostName="EX01",
                  ClientIpAddress="10.1.2.3", **extra)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([values[name] for name in FIELDS])
    return buffer.getvalue()


def test_with_or_without_the_plain_header_line_and_gzip(tmp_path):
    plain = _file(tmp_path, "a.LOG", [line(), line(user="CONTOSO\\bob")])
    bare = _file(tmp_path, "b.LOG", [line(user="CONTOSO\\carol")], plain_header=False)
    packed = _file(tmp_path, "c.LOG", [line(user="CONTOSO\\dave")], gz=True)
    for path in (plain, bare, packed):
        assert looks_like_httpproxy(path.read_bytes()[:65536]), path
    data = summarise_files([str(plain), str(bare), str(packed)])
    mapi = group(data, "Mapi", "NTLM")
    assert data["malformed"]["lines"] == 0 and mapi["requests"] == 4 and mapi["users"] == 4


def test_a_quoted_value_with_commas_and_a_reordered_header(tmp_path):
    fields = list(FIELDS)
    fields.remove("UserAgent")
    fields.append("UserAgent")                 # a later build that moves a column: found by name, not position
    header = ",".join(fields)
    row = {name: "" for name in fields}
    row.update(DateTime="2026-11-19T09:00:00Z", Protocol="Ews", AuthenticationType="Basic", IsAuthenticated="True",
               AuthenticatedUser="CONTOSO\\svc-scan", ServerHostName="EX02", UserAgent='Scan, "Pro" 2.0')
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([row[name] for name in fields])
    path = tmp_path / "HttpProxy_2026111909-1.LOG"
    path.write_text("\r\n".join([header, "#Log-type: HttpProxy Logs", f"#Fields: {header}", buffer.getvalue()]) + "\r\n")
    data = summarise_files([str(path)])
    ews = group(data, "Ews", "Basic")
    assert data["user_agents"][0]["UserAgent"] == 'Scan, "Pro" 2.0'
    assert [r["user"] for r in ews["applications"]] == ["CONTOSO\\svc-scan"] and ews["people"] == []


def test_malformed_lines_are_counted_named_and_never_stop_the_file(tmp_path):
    lines = [line(), "too,few,fields", line(moment="yesterday"), '"' + "x" * 200_000, line(user="CONTOSO\\bob")]
    path = _file(tmp_path, "HttpProxy_2026111909-1.LOG", lines)
    data = summarise_files([str(path)])
    bad = data["malformed"]
    assert bad["lines"] >= 3
    reasons = " | ".join(e["reason"] for e in bad["examples"])
    assert "fields where the header has 74" in reasons and "'yesterday' is not an ISO 8601 time" in reasons
    assert all(e["file"] == str(path) and e["line"] > 6 for e in bad["examples"])
    assert group(data, "Mapi", "NTLM")["requests"] >= 1


def test_lines_before_any_header_and_a_header_without_the_fields_it_needs(tmp_path):
    early = tmp_path / "early.LOG"
    early.write_text("#Log-type: HttpProxy Logs\r\n" + line() + "\r\n")
    data = summarise_files([str(early)])
    assert data["requests"] == 0 and data["malformed"]["examples"][0]["reason"] == "a data line before any #Fields header"
    broken = tmp_path / "broken.LOG"
    broken.write_text("#Log-type: HttpProxy Logs\r\n#Fields: DateTime,Protocol\r\n")
    with pytest.raises(httpproxy.LogFormatError, match="no AuthenticationType"):
        summarise_files([str(broken)])


def test_a_gzip_bomb_stops_at_the_ratio(tmp_path, monkeypatch):
    monkeypatch.setattr(httpproxy, "MAX_RATIO", 2)
    path = _file(tmp_path, "HttpProxy_2026111909-1.LOG", [line()] * 8000, gz=True)   # 2.6 MB, 1:200+ in gzip
    logs = ClientLogs()
    with open(path, "rb") as handle:
        logs.add_file(str(path), handle, compressed_size=1000)
    assert "inflates past" in logs.malformed.examples[-1]["reason"]
    assert logs.requests < 8000


def test_memory_bounds_count_what_they_do_not_itemise(tmp_path, monkeypatch):
    monkeypatch.setattr(httpproxy, "MAX_PAIRS", 5)
    monkeypatch.setattr(httpproxy, "MAX_AGENTS", 3)
    lines = [line(user=f"CONTOSO\\u{i}", agent=f"Agent/{i}") for i in range(20)]
    data = summarise_files([str(_file(tmp_path, "x.LOG", lines))])
    assert data["requests"] == 20
    assert data["untracked"]["user_pairs"] == 15 and data["untracked"]["user_agents"] == 17
    assert sum(c["users"] for c in data["clients"]) == 5


def test_pseudonymised_names_are_keyed_per_run_and_never_the_name(tmp_path):
    path = _file(tmp_path, "x.LOG", [line(user="CONTOSO\\alice"), line(user="CONTOSO\\svc-backup")])
    runs = []
    for _ in range(2):
        logs = ClientLogs()
        with open(path, "rb") as handle:
            logs.add_file(str(path), handle)
        runs.append(logs.result(pseudonymise=True))
    first, second = (group(r, "Mapi", "NTLM") for r in runs)
    assert "alice" not in json.dumps(runs) and "svc-backup" not in json.dumps(runs)
    assert [r["user"][:5] for r in first["people"]] == ["user-"] and len(first["applications"]) == 1
    assert first["people"][0]["user"] != second["people"][0]["user"]     # a new key every run
    assert runs[0]["pseudonymised"] is True


def test_import_streams_logs_from_a_zip_next_to_clixml_and_reports_them(tmp_path):
    archive = tmp_path / "HmaReadiness.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in PUBLISHED.glob("*/*.LOG"):
            zf.write(file, f"logs/EX01/HttpProxy/{file.parent.name}/{file.name}")
        zf.writestr("logs/EX01/HttpProxy/Ews/HttpProxy_2026111909-1.LOG.gz",
                    gzip.compress(("\r\n".join([HEADER, "#Log-type: HttpProxy Logs", f"#Fields: {HEADER}", line(
                        protocol="Ews"), "junk"]) + "\r\n").encode()))
        zf.writestr("logs/EX01/Ews/Ews_2026111909-1.LOG", "#Software: Microsoft Exchange Server\r\n#Log-type: EWS Logs\r\n")
    outcome = import_path(archive, pseudonymise_users=True)
    logs = outcome.snapshot.sources["logs.httpproxy"]
    assert logs.ok and logs.data["files"] == 9 and logs.data["requests"] == 12 and logs.data["malformed"]["lines"] == 1
    assert logs.data["pseudonymised"] and "DOMAIN\\\\username" not in json.dumps(logs.data)
    assert {"file": "logs/EX01/Ews/Ews_2026111909-1.LOG",
            "reason": "an Exchange log hma-check does not read (EWS Logs)"} in outcome.unrecognised


def test_without_logs_the_client_checks_are_not_applicable_and_unreadable_logs_are_an_error(tmp_path):
    from tests.support.baseline import build

    snapshot = build()
    del snapshot.sources["logs.httpproxy"]
    from hma_check.contract.snapshot import SourceResult

    snapshot.add(SourceResult.skipped_result("logs.httpproxy", "no file in the import supplied it"))
    snapshot.save(tmp_path / "skipped.json")
    outcome = run_report(tmp_path / "skipped.json", tmp_path / "out-skipped")
    client = [f for f in outcome.report.findings if f.check_id.startswith("HMA-CLIENT")]
    assert client and {f.status for f in client} == {"NOT_APPLICABLE"}
    assert all("no file in the import supplied it" in (f.reason or "") for f in client)
    assert outcome.report.clients is None and 'id="clients"' not in (tmp_path / "out-skipped" / "report.html").read_text()

    broken = tmp_path / "logs"
    broken.mkdir()
    (broken / "HttpProxy_2026111909-1.LOG").write_text("#Log-type: HttpProxy Logs\r\n#Fields: DateTime,Protocol\r\n")
    imported = import_path(broken).snapshot
    assert imported.sources["logs.httpproxy"].status == "error"
    assert "no AuthenticationType" in imported.sources["logs.httpproxy"].error


def test_the_collection_scripts_logs_and_its_per_server_record_are_the_coverage(tmp_path):
    """Collect-HmaReadiness.ps1's layout: logs/<Name>/HttpProxy/<Protocol>/*.LOG.gz and one manifest entry per server
    (its note when the cap left files out, its error when the logs could not be copied)."""
    from tests.collect.test_offline_import import script_folder
    from hma_check.evaluate.engine import evaluate

    folder = script_folder(tmp_path / "in")
    target = folder / "logs" / "SOLO-E19A" / "HttpProxy" / "Mapi"
    target.mkdir(parents=True)
    # The published MAPI lines, as that server would have logged them (its name in ServerHostName).
    lines = published("Mapi").read_bytes().replace(b",SERVER_HOSTNAME,200,", b",SOLO-E19A,200,")
    (target / "HttpProxy_2026030209-1.LOG.gz").write_bytes(gzip.compress(lines))
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8-sig"))
    manifest["entries"] += [
        {"file": None, "source": "logs.httpproxy", "server": "SOLO-E19A", "command": "HttpProxy logs ...",
         "status": "ok", "error": None, "count": 1, "bytes": 4096,
         "note": "size cap 256 MB per protocol reached: 12 older file(s) in the window not copied"},
        {"file": None, "source": "logs.httpproxy", "server": "SOLO-E19B", "command": "HttpProxy logs ...",
         "status": "error", "error": "Access to the path '\\\\solo-e19b.solo.com\\C$\\Program Files' is denied.",
         "count": 0, "bytes": 0, "note": None}]
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8-sig")
    outcome = import_path(folder)
    logs = outcome.snapshot.sources["logs.httpproxy"]
    assert logs.ok and logs.data["requests"] == 3
    rows = {row["server"]: row for row in logs.data["servers"]}
    assert rows["SOLO-E19B"]["status"] == "error" and "is denied" in rows["SOLO-E19B"]["error"]
    assert "12 older file(s)" in rows["SOLO-E19A"]["note"]
    assert not [e for e in outcome.malformed if "logs" in e["file"]]
    from hma_check.commands.pipeline import load_all_checks

    findings = [f for f in evaluate(load_all_checks(), outcome.snapshot).findings if f.check_id == "HMA-CLIENT-001"]
    assert {f.subject: f.status for f in findings} == {"SOLO-E19A": "PASS"}     # the capture's one server
