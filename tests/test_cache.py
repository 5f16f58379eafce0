"""eval.cache: entries round-trip bit for bit; damaged, emptied or swapped entries are never scored."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from eval.cache import BatchCache, entry_checksum, settings_key

ROOT = Path(__file__).resolve().parents[1]


def make_entry(seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((3, 7, 5)).astype(np.float32)
    features[0, 2, 1] = np.float32(1e-42)  # a subnormal, kept exactly
    frames = np.array([7, 5, 6], dtype=np.int64)
    return features, frames, {"settings": {"seed": seed}, "costs": {"seconds": 1.5}}


def cache_with_log(root: Path) -> tuple[BatchCache, list[str]]:
    lines: list[str] = []
    return BatchCache(root, warn=lines.append), lines


def saved(tmp_path: Path, seed: int = 0) -> tuple[BatchCache, list[str], str, Path]:
    cache, lines = cache_with_log(tmp_path)
    key = settings_key({"seed": seed})
    path = cache.save(key, *make_entry(seed), group=key[:2])
    return cache, lines, key, path


def test_good_entry_round_trips_bit_for_bit(tmp_path):
    cache, lines, key, path = saved(tmp_path)
    features, frames, meta = make_entry()
    entry = BatchCache(tmp_path, warn=lines.append).load(key, key[:2])
    assert entry["features"].dtype == np.float32 and entry["features"].tobytes() == features.tobytes()
    assert entry["frames"].dtype == np.int64 and entry["frames"].tolist() == frames.tolist()
    assert entry["meta"] == meta and cache.has(key, key[:2]) and lines == []
    with np.load(path, allow_pickle=False) as z:
        assert str(z["key"]) == key and str(z["checksum"]) == entry_checksum(key, z)
    assert cache.entries(verify=True) == [path] and not list(path.parent.glob(".*"))


def _truncate(path: Path, other: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path, other: Path) -> None:
    path.write_bytes(b"")


def _random_bytes(path: Path, other: Path) -> None:
    path.write_bytes(np.random.default_rng(3).bytes(4096))


def _copied_over(path: Path, other: Path) -> None:
    path.write_bytes(other.read_bytes())  # same shapes, another key's content


def _edited_array(path: Path, other: Path) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["features"] = arrays["features"] + np.float32(1e-3)  # valid zip, stale checksum
    np.savez_compressed(path, **arrays)


def _flipped_byte(path: Path, other: Path) -> None:
    import zipfile
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("features.npy")
    data = bytearray(path.read_bytes())
    head = info.header_offset
    name_len, extra_len = (int.from_bytes(data[head + i: head + i + 2], "little") for i in (26, 28))
    data[head + 30 + name_len + extra_len + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))  # inside the compressed features: zlib or CRC error


def _no_checksum(path: Path, other: Path) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "checksum"}
    np.savez_compressed(path, **arrays)


def _meta_not_json(path: Path, other: Path) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["meta"] = np.array("{not json")
    arrays["checksum"] = np.array(entry_checksum(str(arrays["key"]), arrays))
    np.savez_compressed(path, **arrays)


def _pickled(path: Path, other: Path) -> None:
    marker = path.parent / "PWNED"
    payload = (b"\x80\x04\x95" + b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    path.write_bytes(payload)


DAMAGE = {"truncated": _truncate, "emptied": _empty, "random bytes": _random_bytes,
          "copied over another key": _copied_over, "edited array": _edited_array,
          "flipped byte": _flipped_byte, "checksum removed": _no_checksum, "meta not JSON": _meta_not_json,
          "pickle payload": _pickled}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_entry_is_missing_with_one_warning_then_regenerated(tmp_path, damage):
    cache, lines, key, path = saved(tmp_path)
    other = cache.save(settings_key({"seed": 1}), *make_entry(1))
    DAMAGE[damage](path, other)
    fresh, lines = cache_with_log(tmp_path)
    assert fresh.has(key, key[:2]) is False and fresh.load(key, key[:2]) is None
    assert len(lines) == 1 and "\n" not in lines[0] and str(path) in lines[0] and "generated again" in lines[0]
    assert fresh.entries(verify=True) == [other]
    assert not (tmp_path / key[:2] / "PWNED").exists()
    fresh.save(key, *make_entry(0), group=key[:2])  # what the benchmark does for a missing entry
    assert fresh.load(key, key[:2])["features"].tobytes() == make_entry(0)[0].tobytes()


def test_default_warning_is_one_stderr_line(tmp_path, capsys):
    _, _, key, path = saved(tmp_path)
    path.write_bytes(b"")
    cache = BatchCache(tmp_path)
    assert cache.load(key, key[:2]) is None and not cache.has(key, key[:2])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: cache entry ") and "EOFError" in err


def test_entry_of_the_old_format_is_kept_only_if_its_settings_give_its_key(tmp_path):
    features, frames, meta = make_entry()
    key = settings_key(meta["settings"])
    cache, lines = cache_with_log(tmp_path)
    old = dict(features=features, frames=frames, meta=np.array(json.dumps(meta, sort_keys=True)))
    tmp_path.mkdir(exist_ok=True)
    np.savez_compressed(cache.path(key), **old)
    assert cache.load(key)["features"].tobytes() == features.tobytes() and lines == []
    wrong = settings_key({"seed": 99})
    np.savez_compressed(cache.path(wrong), **old)
    assert cache.load(wrong) is None and len(lines) == 1


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_are_removed_live_ones_kept(tmp_path):
    import eval.cache as C
    group = tmp_path / "ab"
    group.mkdir()
    dead, live, host = _dead_pid(), os.getppid(), C._host()
    names = {"dead": f".k1.{host}.{dead}.tmp.npz", "old_format_dead": f".k2.{dead}.tmp.npz",
             "live": f".k3.{host}.{live}.tmp.npz", "foreign_young": f".k4.otherhost.{dead}.tmp.npz",
             "foreign_old": f".k5.otherhost.{live}.tmp.npz"}
    for name in names.values():
        (group / name).write_bytes(b"partial")
    day_ago = time.time() - 2 * C.FOREIGN_TMP_SECONDS
    os.utime(group / names["foreign_old"], (day_ago, day_ago))
    removed = BatchCache(tmp_path).remove_stale_temporaries()
    assert sorted(p.name for p in removed) == sorted(names[k] for k in ("dead", "old_format_dead", "foreign_old"))
    assert sorted(p.name for p in group.iterdir()) == sorted(names[k] for k in ("live", "foreign_young"))


def test_kill_during_write_leaves_a_temporary_that_the_next_run_removes(tmp_path):
    key = settings_key({"seed": 0})
    code = ("import os, signal, numpy as np\nfrom eval.cache import BatchCache\n"
            "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
            f"BatchCache({str(tmp_path)!r}).save({key!r}, np.ones((2, 3, 4)), [3, 2], {{}}, {key[:2]!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    assert proc.returncode == -9
    assert len(list((tmp_path / key[:2]).glob(".*.tmp.npz"))) == 1
    cache, lines = cache_with_log(tmp_path)
    assert cache.has(key, key[:2]) is False and cache.entries() == [] and lines == []
    assert list((tmp_path / key[:2]).iterdir()) == []
    cache.save(key, np.ones((2, 3, 4)), [3, 2], {}, key[:2])
    assert cache.load(key, key[:2])["frames"].tolist() == [3, 2]
