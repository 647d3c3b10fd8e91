"""The LogStorage contract, checked on every backend (sigstack.log.storage, fs, memory)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sigstack.core.errors import Conflict, InvalidRequest, StateError, StorageError
from sigstack.log.fs import FilesystemStorage
from sigstack.log.memory import Fault, FaultPlan, MemoryStorage
from sigstack.log.storage import LogStorage, validate_key

# --- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["tile/0/000", "tile/0/x001/234.p/17", "tile/entries/x001/002.p/5", "a_b-c.d/e"],
)
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/tile/0/000",
        "..",
        "tile/../x",
        "tile/./x",
        "tile//x",
        "tile/",
        ".hidden",
        "tile/0/.000.tmp",
        "Tile/0/000",
        "tile/0/000 ",
        "tile\\0\\000",
        "tile/0/\u00e9",
        "checkpoint",
        "a" * 256,
    ],
)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(InvalidRequest):
        validate_key(key)


# --- the contract, on every backend -----------------------------------------------------------


@pytest.fixture
def make_storage(reopen: Callable[[], LogStorage]) -> Callable[[], LogStorage]:
    """Every backend (``reopen`` in conftest.py): a factory for the same storage."""
    return reopen


def test_get_missing_is_none(make_storage: Callable[[], LogStorage]) -> None:
    storage = make_storage()
    assert storage.get("tile/0/000") is None
    assert storage.read_checkpoint() is None


def test_put_many_then_get(make_storage: Callable[[], LogStorage]) -> None:
    storage = make_storage()
    storage.put_many({"tile/0/000": b"a" * 64, "tile/0/000.p/1": b"b" * 32})
    storage.put_many({"tile/0/000": b"c" * 64})  # replace
    again = make_storage()
    assert again.get("tile/0/000") == b"c" * 64
    assert again.get("tile/0/000.p/1") == b"b" * 32


def test_put_many_validates_every_key_before_writing(
    make_storage: Callable[[], LogStorage],
) -> None:
    storage = make_storage()
    with pytest.raises(InvalidRequest):
        storage.put_many({"tile/0/000": b"x", "../escape": b"y"})
    assert storage.get("tile/0/000") is None
    with pytest.raises(InvalidRequest):
        storage.put_many({"checkpoint": b"x"})


def test_get_rejects_bad_key(make_storage: Callable[[], LogStorage]) -> None:
    with pytest.raises(InvalidRequest):
        make_storage().get("../../etc/passwd")


def test_get_many_answers_in_the_order_asked(make_storage: Callable[[], LogStorage]) -> None:
    storage = make_storage()
    storage.put_many({"tile/0/000": b"a" * 32, "inner/0/000": b"b" * 32})
    again = make_storage()
    assert again.get_many(["inner/0/000", "tile/0/001", "tile/0/000"]) == [
        b"b" * 32,
        None,
        b"a" * 32,
    ]
    assert again.get_many(["tile/0/000"]) == [b"a" * 32]
    assert again.get_many([]) == []
    with pytest.raises(InvalidRequest):
        again.get_many(["tile/0/000", "../../etc/passwd"])


def test_swap_checkpoint_is_compare_and_swap(make_storage: Callable[[], LogStorage]) -> None:
    storage = make_storage()
    storage.swap_checkpoint(None, b"one")
    with pytest.raises(Conflict):
        storage.swap_checkpoint(None, b"two")
    storage.swap_checkpoint(b"one", b"two")
    with pytest.raises(Conflict):
        storage.swap_checkpoint(b"one", b"three")
    assert make_storage().read_checkpoint() == b"two"


def test_writer_lease_is_exclusive(make_storage: Callable[[], LogStorage]) -> None:
    first, second = make_storage(), make_storage()
    first.acquire_writer()
    first.check_writer()
    with pytest.raises(Conflict):
        second.acquire_writer()
    first.release_writer()
    first.release_writer()  # idempotent
    second.acquire_writer()
    second.check_writer()
    second.release_writer()


def test_index_add_lookup_truncate(make_storage: Callable[[], LogStorage]) -> None:
    storage = make_storage()
    storage.acquire_writer()
    a, b = b"\x01" * 32, b"\x02" * 32
    storage.index_add([("leaf", a, 0), ("leaf", b, 1), ("digest", a, 2)])
    storage.index_add([("leaf", a, 5)])
    storage.index_add([("leaf", a, 0)])  # idempotent
    assert storage.index_lookup("leaf", [a, b, b"\x03" * 32], 10) == {a: [0, 5], b: [1]}
    assert storage.index_lookup("leaf", [a], 5) == {a: [0]}
    assert storage.index_lookup("digest", [a], 10) == {a: [2]}
    storage.index_truncate(2)
    assert storage.index_lookup("leaf", [a, b], 10) == {a: [0], b: [1]}
    with pytest.raises(InvalidRequest):
        storage.index_add([("Bad NS", a, 0)])
    complete = storage.index_complete_to()
    assert complete is None or complete == 2
    storage.release_writer()  # every row added is durable now, whatever the backend
    other = make_storage()
    assert other.index_lookup("leaf", [a, b], 10) == {a: [0], b: [1]}
    assert other.index_lookup("digest", [a], 10) == {}
    assert other.index_complete_to() in (None, 2)


# --- filesystem specifics -----------------------------------------------------------------------


def test_fs_layout_and_modes(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "log"
    storage = FilesystemStorage(root)
    storage.put_many({"tile/0/x001/234": b"full", "tile/0/x001/234.p/17": b"partial"})
    storage.swap_checkpoint(None, b"cp")
    assert (root / "tile/0/x001/234").read_bytes() == b"full"
    assert (root / "tile/0/x001/234.p/17").read_bytes() == b"partial"
    assert (root / "checkpoint").read_bytes() == b"cp"
    mode = stat.S_IMODE((root / "tile/0/x001/234").stat().st_mode)
    assert mode & 0o400 and not mode & 0o133  # 0644 at most: readable, never writable by others
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_fs_describe_names_the_file(tmp_path: Path) -> None:
    assert FilesystemStorage(tmp_path).describe("tile/0/000") == str(tmp_path / "tile/0/000")


def test_fs_file_in_place_of_directory_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "tile").write_bytes(b"not a directory")
    storage = FilesystemStorage(tmp_path)
    with pytest.raises(StateError) as info:
        storage.put_many({"tile/0/000": b"x"})
    assert str(tmp_path / "tile") in str(info.value)
    assert storage.get("tile/0/000") is None
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_fs_directory_in_place_of_object_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "tile/0/000").mkdir(parents=True)
    storage = FilesystemStorage(tmp_path)
    with pytest.raises(StateError, match="is a directory"):
        storage.get("tile/0/000")
    with pytest.raises(StorageError) as info:
        storage.put_many({"tile/0/000": b"x"})
    assert "tile/0/000" in str(info.value)
    assert not [p for p in (tmp_path / "tile/0").iterdir() if p.name.endswith(".tmp")]


def test_fs_writer_lock_released_on_release(tmp_path: Path) -> None:
    a, b = FilesystemStorage(tmp_path), FilesystemStorage(tmp_path)
    a.acquire_writer()
    with pytest.raises(Conflict, match="another process or log instance"):
        b.acquire_writer()
    a.release_writer()
    b.acquire_writer()
    b.release_writer()
    assert os.path.exists(tmp_path / ".writer.lock")


def test_fs_second_checkpoint_swap_waits_for_the_lock_then_compares(tmp_path: Path) -> None:
    a, b = FilesystemStorage(tmp_path), FilesystemStorage(tmp_path)
    a.swap_checkpoint(None, b"one")
    with pytest.raises(Conflict, match="another writer changed the log"):
        b.swap_checkpoint(None, b"two")
    b.swap_checkpoint(b"one", b"two")
    assert a.read_checkpoint() == b"two"
    assert os.path.exists(tmp_path / ".checkpoint.lock")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_importing_the_engine_loads_no_storage_driver() -> None:
    """Architecture rule 1: the package exports are lazy."""
    code = (
        "import sys, sigstack.log.engine, sigstack.log\n"
        "drivers = ('sigstack.log.fs', 'sigstack.log.memory')\n"
        "loaded = [m for m in drivers if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "from sigstack.log import MemoryStorage\n"
        "assert 'sigstack.log.fs' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- memory fault injection ---------------------------------------------------------------------


def test_memory_lease_check() -> None:
    storage = MemoryStorage()
    with pytest.raises(Conflict, match="not held"):
        storage.check_writer()
    storage.acquire_writer()
    storage.check_writer()
    storage.fault = FaultPlan(Fault.FAIL, operation="check_writer")
    with pytest.raises(StorageError):
        storage.check_writer()


def test_memory_fault_not_persisted() -> None:
    storage = MemoryStorage(fault=FaultPlan(Fault.FAIL, operation="put"))
    with pytest.raises(StorageError, match="not persisted"):
        storage.put_many({"tile/0/000": b"x"})
    assert storage.get("tile/0/000") is None
    storage.put_many({"tile/0/000": b"y"})  # the plan fired once
    assert storage.get("tile/0/000") == b"y"


def test_memory_fault_persisted() -> None:
    storage = MemoryStorage(fault=FaultPlan(Fault.FAIL_PERSISTED, operation="swap_checkpoint"))
    with pytest.raises(StorageError, match="but was persisted"):
        storage.swap_checkpoint(None, b"cp")
    assert storage.read_checkpoint() == b"cp"


def test_memory_fault_mid_batch_leaves_a_prefix() -> None:
    plan = FaultPlan(Fault.FAIL, operation="put", after=1)
    storage = MemoryStorage(fault=plan)
    with pytest.raises(StorageError):
        storage.put_many({"a/1": b"1", "a/2": b"2", "a/3": b"3"})
    assert storage.keys() == ["a/1"]
    assert plan.fired == 1


def test_memory_fault_on_reads() -> None:
    storage = MemoryStorage(fault=FaultPlan(Fault.FAIL_PERSISTED, operation="get", times=None))
    with pytest.raises(StorageError):
        storage.get("tile/0/000")
    storage.fault = FaultPlan(Fault.FAIL, operation="read_checkpoint")
    with pytest.raises(StorageError):
        storage.read_checkpoint()
    assert storage.read_checkpoint() is None


def test_fault_plan_matches_key_prefix() -> None:
    plan = FaultPlan(Fault.FAIL, key_prefix="tile/entries/", times=2)
    storage = MemoryStorage(fault=plan)
    storage.put_many({"tile/0/000": b"x"})
    for _ in range(2):
        with pytest.raises(StorageError):
            storage.put_many({"tile/entries/000": b"x"})
    storage.put_many({"tile/entries/000": b"x"})
    assert plan.fired == 2
