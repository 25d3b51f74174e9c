"""The compiled catalogue kept between runs (hma_check.evaluate.compiled_store, hma_check.util.code_cache): a run
that reads it decides exactly what a run that compiles decides, refuses what compiling refuses, and a cache that is
off, damaged or not private to the user is no cache, never a failed run."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from hma_check.errors import ChecksError
from hma_check.evaluate import checks as checks_module
from hma_check.evaluate import compiled_store, expr
from hma_check.evaluate.checks import load_checks
from hma_check.evaluate.engine import evaluate
from hma_check.util import code_cache
from hma_check.util.resources import checks_file


@pytest.fixture()
def fresh_process(monkeypatch, tmp_path):
    """A cache folder of its own, and this process's compiled expressions forgotten (as in a new run)."""
    monkeypatch.setenv(code_cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(compiled_store, "_STORE", None)
    monkeypatch.setattr(checks_module, "_COMPILED", {})

    def again():
        monkeypatch.setattr(compiled_store, "_STORE", None)
        monkeypatch.setattr(checks_module, "_COMPILED", {})

    return again


def findings_of(catalogue, snapshot):
    return json.dumps([f.to_json() for f in evaluate(catalogue, snapshot).findings], default=str, sort_keys=True)


def test_a_run_from_the_store_compiles_nothing_and_decides_the_same(fresh_process, snapshot, monkeypatch):
    cold = load_checks([checks_file()])
    expected = findings_of(cold, snapshot)
    compiled_store.save()
    store_file = next((code_cache.cache_root() or pytest.fail("no cache root")).glob("catalogue-*/compiled.marshal"))
    assert store_file.stat().st_size > 0

    fresh_process()

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled although the store holds it")

    monkeypatch.setattr(expr, "compile_code", no_compiling)
    monkeypatch.setattr(expr, "parse", no_compiling)
    warm = load_checks([checks_file()])
    assert [c.id for c in warm.checks] == [c.id for c in cold.checks]
    assert warm.files == cold.files
    assert findings_of(warm, snapshot) == expected


def test_what_compiling_refuses_is_refused_with_the_store_warm(fresh_process, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nchecks:\n  - id: TST-BAD-001\n    title: t\n    area: a\n    severity: blocker\n"
                   "    requires: [exchange.servers]\n    assert: \"exchange.servers | nosuchfilter\"\n"
                   "    expect: x\n    actual: x\n    why: w\n    references: [https://learn.microsoft.com/x]\n",
                   encoding="utf-8")
    load_checks([checks_file()])
    compiled_store.save()
    for _ in range(2):
        fresh_process()
        with pytest.raises(ChecksError, match="nosuchfilter"):
            load_checks([checks_file(), bad])
        compiled_store.save()


def test_a_damaged_store_is_no_store(fresh_process, snapshot):
    expected = findings_of(load_checks([checks_file()]), snapshot)
    compiled_store.save()
    root = code_cache.cache_root()
    assert root is not None
    store_file = next(root.glob("catalogue-*/compiled.marshal"))
    for damage in (b"\x00garbage", store_file.read_bytes()[:1000]):
        store_file.write_bytes(damage)
        fresh_process()
        assert findings_of(load_checks([checks_file()]), snapshot) == expected
        compiled_store.save()      # written again, whole
        assert len(store_file.read_bytes()) > 1000


def test_off_or_shared_folders_are_not_used(fresh_process, tmp_path, monkeypatch):
    module = Path(code_cache.__file__)
    monkeypatch.setenv(code_cache.CACHE_ENV, "off")
    assert code_cache.cache_root() is None and code_cache.cache_folder("catalogue", module) is None
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv(code_cache.CACHE_ENV, str(shared))
    assert code_cache.cache_folder("catalogue", module) is None
    monkeypatch.setenv(code_cache.CACHE_ENV, str(tmp_path / "private"))
    assert code_cache.cache_folder("catalogue", module) is not None
    assert code_cache.cache_folder("catalogue") is None       # nothing to key on: no cache rather than a stale one
    fresh_process()
    monkeypatch.setenv(code_cache.CACHE_ENV, str(shared))
    load_checks([checks_file()])
    compiled_store.save()
    assert not list(shared.iterdir())


def test_a_new_folder_is_private_and_named_by_what_generates_the_code(fresh_process, tmp_path):
    module = tmp_path / "generator.py"
    module.write_text("A = 1\n", encoding="utf-8")
    first = code_cache.cache_folder("kind", module)
    assert first is not None
    assert stat.S_IMODE(first.stat().st_mode) == 0o700
    module.write_text("A = 2\n", encoding="utf-8")
    second = code_cache.cache_folder("kind", module)
    assert second is not None and second != first


def test_old_folders_of_a_kind_are_pruned(fresh_process, tmp_path):
    module = tmp_path / "generator.py"
    made = []
    for version in range(code_cache.KEEP + 3):
        module.write_text(f"A = {version}\n", encoding="utf-8")
        folder = code_cache.cache_folder("kind", module)
        assert folder is not None
        os.utime(folder, (1_000_000 + version, 1_000_000 + version))
        made.append(folder)
    kept = sorted(p for p in (code_cache.cache_root() or tmp_path).glob("kind-*"))
    assert len(kept) == code_cache.KEEP and made[-1] in kept


def test_a_refused_input_leaves_no_store_behind(fresh_process, snapshot, tmp_path):
    """Bad input touches nothing outside --out: the store is written only once a report is complete."""
    from hma_check.commands.pipeline import run_report
    from hma_check.errors import InputError

    snapshot.save(tmp_path / "evidence.json")
    exemptions = tmp_path / "exemptions.yaml"
    exemptions.write_text("exemptions: [{check: HMA-NOPE-001}]\n", encoding="utf-8")
    with pytest.raises(InputError):
        run_report(tmp_path / "evidence.json", tmp_path / "out", exemptions_file=exemptions)
    root = code_cache.cache_root()
    assert root is not None and (not root.exists() or not any(root.iterdir()))
    run_report(tmp_path / "evidence.json", tmp_path / "out")
    assert list(root.rglob("compiled.marshal"))


def test_a_template_cache_that_cannot_be_read_or_written_is_no_cache(tmp_path):
    """The report templates' bytecode cache: a damaged file is compiled again, an unwritable folder skipped."""
    from jinja2 import DictLoader, Environment

    from hma_check.render.templating import QuietBytecodeCache

    folder = tmp_path / "templates"
    folder.mkdir()
    env = Environment(loader=DictLoader({"t": "{{ 1 + 1 }}"}), bytecode_cache=QuietBytecodeCache(str(folder)))
    assert env.get_template("t").render() == "2"
    from jinja2.bccache import bc_magic

    for cached in folder.iterdir():
        cached.write_bytes(bc_magic + b"garbage")     # past Jinja's own magic check: unpickling it raises
    env = Environment(loader=DictLoader({"t": "{{ 1 + 1 }}"}), bytecode_cache=QuietBytecodeCache(str(folder)))
    assert env.get_template("t").render() == "2"
    env = Environment(loader=DictLoader({"t": "{{ 2 + 2 }}"}),
                      bytecode_cache=QuietBytecodeCache(str(tmp_path / "missing" / "folder")))
    assert env.get_template("t").render() == "4"


def test_a_store_file_others_can_write_or_a_link_is_not_read(fresh_process, snapshot):
    """The store is code this process runs: it is read only from a regular file of this user's that nobody else can
    write, checked on the open file (a link to another file is not followed)."""
    expected = findings_of(load_checks([checks_file()]), snapshot)
    compiled_store.save()
    root = code_cache.cache_root()
    assert root is not None
    store_file = next(root.glob("catalogue-*/compiled.marshal"))
    assert code_cache.open_private_file(store_file, compiled_store.MAX_BYTES) is not None
    store_file.chmod(0o666)
    assert code_cache.open_private_file(store_file, compiled_store.MAX_BYTES) is None
    fresh_process()
    assert compiled_store.store().entries == {}
    assert findings_of(load_checks([checks_file()]), snapshot) == expected     # compiled again, the same findings
    store_file.chmod(0o600)
    elsewhere = store_file.with_name("elsewhere.marshal")
    store_file.rename(elsewhere)
    store_file.symlink_to(elsewhere)
    assert code_cache.open_private_file(store_file, compiled_store.MAX_BYTES) is None
    assert code_cache.open_private_file(elsewhere, 10) is None                  # over the limit: not read


def test_without_posix_owners_only_a_folder_in_the_profile_is_private(tmp_path, monkeypatch):
    """Windows has no st_uid to check: a cache folder set outside the user's profile (a share) is not used."""
    monkeypatch.delattr(os, "getuid", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "cache").mkdir(parents=True)
    (tmp_path / "share").mkdir()
    assert code_cache._private(tmp_path / "home" / "cache")
    assert not code_cache._private(tmp_path / "share")
