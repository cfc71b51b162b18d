"""skinflow.util: argument checks, bounded descriptions, atomic writes, resources, progress."""

import math
import os
import stat

import numpy as np
import pytest

from skinflow.util import (
    ArgumentTypeError,
    atomic_write,
    check_fraction,
    check_int,
    check_number,
    describe,
    progress,
    read_resource_csv,
    read_resource_records,
    resource_bytes,
)


def test_atomic_write_keeps_the_old_file_on_failure_and_uses_normal_permissions(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("old")

    def fail(file):
        file.write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file.txt"]
    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write(target, lambda file: file.write("new\n"))
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    atomic_write(target, lambda file: file.write(b"\x00\x01"), binary=True)
    assert target.read_bytes() == b"\x00\x01"


def test_check_int_and_check_fraction():
    assert check_int("n", np.int64(3), minimum=0) == 3 and type(check_int("n", np.int64(3))) is int
    for bad in (True, 2.0, "3", None, np.float64(1.0)):
        with pytest.raises(ValueError, match="^n must be an int"):
            check_int("n", bad)
    with pytest.raises(ValueError, match="^k must be an int >= 1, got 0"):
        check_int("k", 0, minimum=1)
    assert check_fraction("p", np.float32(0.5)) == 0.5 and check_fraction("p", 1) == 1.0
    for bad in (math.nan, math.inf, -math.inf, -0.1, 1.5, True, "0.5", None):
        with pytest.raises(ValueError, match="^p must be a"):
            check_fraction("p", bad)
    with pytest.raises(ValueError, match=r"^p must be a finite number in \[0, 1\)"):
        check_fraction("p", 1.0, below_one=True)


def test_describe_is_bounded_and_never_raises():
    class Broken:
        def __repr__(self):
            raise RuntimeError("no repr")

    deep: list = []
    for _ in range(10_000):
        deep = [deep]
    assert describe(Broken()).startswith("<Broken")
    assert len(describe("x" * 1_000_000)) <= 160 and len(describe(deep)) <= 160
    assert describe(10**5000) == "<int>"


def test_check_number_refuses_bools_and_non_finite_values():
    assert check_number("lr", np.float32(0.5), minimum=0.0) == 0.5
    for bad in (True, "1", None):
        with pytest.raises(ArgumentTypeError, match="^lr must be a number"):
            check_number("lr", bad)
    for bad in (math.nan, math.inf, -1.0):
        with pytest.raises(ValueError, match="^lr must be"):
            check_number("lr", bad, minimum=0.0)
    with pytest.raises(ValueError, match=r"^lr must be in \[0, 1\], got 2"):
        check_number("lr", 2, minimum=0, maximum=1)


def test_bools_are_refused_as_ints_everywhere_with_the_same_error():
    for value in (True, False, np.bool_(True)):
        with pytest.raises(ArgumentTypeError, match="^n must be an int"):
            check_int("n", value)


def test_one_resource_folder_and_one_reader():
    header, rows = read_resource_csv("skincon_fitzpatrick17k.csv.gz")  # gzip handled by the reader
    assert header[0] == "ImageID" and len(rows) == 3690
    taxonomy = read_resource_records("fitzpatrick17k_taxonomy.csv")
    assert len(taxonomy) == 114 and {"label", "nine_partition_label", "three_partition_label"} <= set(taxonomy[0])
    assert b"CC BY-NC-SA 3.0" in resource_bytes("NOTICE.md")


def test_progress_passes_items_through_with_or_without_a_bar(capsys):
    assert list(progress(range(5), "counting", enabled=False)) == [0, 1, 2, 3, 4]
    assert list(progress(iter(range(3)), "counting", total=3)) == [0, 1, 2]
    assert capsys.readouterr().out == ""  # bars go to stderr, never stdout
