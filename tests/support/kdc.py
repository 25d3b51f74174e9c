"""A real MIT Kerberos realm for the tests: one per test process (session-scoped), stopped at the end.

What a test needs and is missing (krb5kdc and kadmin.local, kinit, libfaketime, python-gssapi) fails the test where
CI sets HMA_CHECK_REQUIRE_KDC=1 and skips it elsewhere, saying what to install.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from hma_check.collect.kerberos import missing_support
from hma_lab.kdc import Realm, kdc_available

REALM = "CONTOSO.LOCAL"        # the lab scenarios' ad_domain, in capitals as Active Directory names its realm
INSTALL = "Debian: apt-get install krb5-kdc krb5-admin-server krb5-user libkrb5-dev faketime; pip install -e '.[test]'"


def require(*needs: str) -> None:
    """Skip (or, with HMA_CHECK_REQUIRE_KDC=1, fail) unless everything named is here: kdc, kinit, faketime."""
    missing = []
    if "kdc" in needs and not kdc_available():
        missing.append("the MIT KDC (krb5kdc, kdb5_util, kadmin.local)")
    if missing_support():
        missing.append(f"the kerberos extra ({missing_support()})")
    if "kinit" in needs and shutil.which("kinit") is None:
        missing.append("kinit")
    if "faketime" in needs and libfaketime() is None:
        missing.append("libfaketime")
    if missing:
        message = f"needs {', '.join(missing)} ({INSTALL})"
        if os.environ.get("HMA_CHECK_REQUIRE_KDC") == "1":
            pytest.fail(message + "; HMA_CHECK_REQUIRE_KDC=1 requires them")
        pytest.skip(message)


def libfaketime() -> str | None:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/lib/faketime/libfaketime.so.1"))
    return found[0] if found else None


@pytest.fixture(scope="session")
def realm() -> Iterator[Realm]:
    require("kdc")
    started = Realm(REALM, domains=("contoso.local",)).start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture()
def kerberos_env(realm: Realm, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Realm:
    """This test's process uses the realm: its krb5.conf, and a credential cache of the test's own (empty)."""
    for key, value in realm.environ().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path / 'krb5cc'}")
    return realm


def kdc_log(realm: Realm) -> str:
    assert realm.folder is not None
    return (realm.folder / "kdc.log").read_text(encoding="utf-8", errors="replace")


def krb5kdc_children() -> list[int]:
    """krb5kdc processes whose parent is this process (none may outlive a test that started its own realm)."""
    mine = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        if name == "krb5kdc" and int(fields[1]) == os.getpid() and fields[0] != "Z":
            mine.append(int(stat.split("/")[2]))
    return mine
