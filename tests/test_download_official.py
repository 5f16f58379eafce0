"""prepare/download_official.py: placement from local files (no network)."""
import hashlib
import zipfile

import pytest

from prepare import download_official as dl


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def downloads(tmp_path):
    """A user's download folder: Drive zips, an unpacked model, look-alike files."""
    src = tmp_path / "Downloads"
    with zipfile.ZipFile(write(src / "humanml_trans_enc_512.zip", b""), "w") as z:
        z.writestr("humanml_trans_enc_512/model000475000.pt", b"enc-weights")
        z.writestr("humanml_trans_enc_512/args.json", b'{"arch": "trans_enc"}')
    write(src / "kit_trans_enc_512" / "model000400000.pt", b"kit-weights")
    write(src / "kit_trans_enc_512" / "args.json", b'{"dataset": "kit"}')
    with zipfile.ZipFile(write(src / "t2m.zip", b""), "w") as z:
        z.writestr("t2m/text_mot_match/model/finest.tar", b"evaluator")
        z.writestr("t2m/Comp_v6_KLD01/model/finest.tar", b"another model")  # same name, other folder
    with zipfile.ZipFile(write(src / "glove.zip", b""), "w") as z:
        for name in ("our_vab_data.npy", "our_vab_words.pkl", "our_vab_idx.pkl"):
            z.writestr(f"glove/{name}", name.encode())
    write(src / "ViT-B-32.pt", b"not really clip")  # wrong checksum
    return src


def by_target(outcomes):
    return {o.target: o for o in outcomes}


def test_install_places_official_layout(tmp_path, downloads):
    root = tmp_path / "project"
    out = by_target(dl.install_from(downloads, root))
    assert (root / "save/humanml_trans_enc_512/model000475000.pt").read_bytes() == b"enc-weights"
    assert (root / "save/humanml_trans_enc_512/args.json").read_bytes() == b'{"arch": "trans_enc"}'
    assert (root / "save/kit_trans_enc_512/args.json").read_bytes() == b'{"dataset": "kit"}'  # paired by folder
    assert (root / "t2m/text_mot_match/model/finest.tar").read_bytes() == b"evaluator"  # folder decides
    assert (root / "glove/our_vab_idx.pkl").is_file()
    assert out["save/clip/ViT-B-32.pt"].status == "bad-checksum"
    assert not (root / "save/clip/ViT-B-32.pt").exists()
    assert "save/humanml_trans_dec_512" not in out  # absent assets are not reported
    assert out["save/humanml_trans_enc_512/model000475000.pt"].status == "placed"


def test_rerun_is_idempotent_and_force_replaces(tmp_path, downloads):
    root = tmp_path / "project"
    dl.install_from(downloads, root, names=["kit_trans_enc_512"])
    again = dl.install_from(downloads, root, names=["kit_trans_enc_512"])
    assert {o.status for o in again} == {"present"}
    write(root / "save/kit_trans_enc_512/args.json", b"edited")
    out = by_target(dl.install_from(downloads, root, names=["kit_trans_enc_512"]))
    assert out["save/kit_trans_enc_512/args.json"].status == "exists-differs"
    forced = by_target(dl.install_from(downloads, root, names=["kit_trans_enc_512"], force=True))
    assert forced["save/kit_trans_enc_512/args.json"].status == "placed"


def test_from_a_single_zip(tmp_path, downloads):
    root = tmp_path / "project"
    out = dl.install_from(downloads / "glove.zip", root)
    assert {o.status for o in out} == {"placed"} and len(out) == 3


def test_ambiguous_and_missing_are_reported(tmp_path):
    src = tmp_path / "src"
    write(src / "a" / "model000100000.pt", b"1")
    write(src / "b" / "model000200000.pt", b"2")
    out = dl.install_from(src, tmp_path / "root", names=["humanml_trans_enc_512"])
    assert out[0].status == "ambiguous" and "several folders" in out[0].detail
    out = dl.install_from(src, tmp_path / "root", names=["glove"])
    assert {o.status for o in out} == {"missing"}


def test_known_checksum_accepted(tmp_path):
    data = b"payload"
    spec = dl.TargetFile("x.bin", "dest/x.bin", hashlib.sha256(data).hexdigest())
    asset = dl.Asset("x", "test", "https://example.invalid/x.bin", (spec,), direct=True)
    src = write(tmp_path / "x.bin", data)
    assert dl._place(asset, spec, src, tmp_path / "root", force=False).status == "placed"
    assert (tmp_path / "root/dest/x.bin").read_bytes() == data


def test_check_and_cli(tmp_path, downloads, capsys):
    root = tmp_path / "project"
    assert dl.main(["--list"]) == 0
    assert "humanml_trans_enc_512" in capsys.readouterr().out
    assert dl.main(["--from", str(downloads), "--root", str(root)]) == 1  # the fake CLIP file fails
    assert dl.main(["--from", str(downloads), "--root", str(root), "--only", "glove"]) == 0
    status = by_target(dl.check_installed(root, ["glove", "humanml_trans_dec_512"]))
    assert status["glove/our_vab_data.npy"].status == "present"
    assert status["save/humanml_trans_dec_512"].status == "missing"
    capsys.readouterr()
    assert dl.main(["--check", "--only", "no_such_asset"]) == 2  # one line, no traceback
    assert capsys.readouterr().err.strip().startswith("error: unknown asset 'no_such_asset'")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dl.install_from(tmp_path / "nowhere", root)


def test_manifest_is_consistent():
    for asset in dl.MANIFEST:
        assert asset.url.startswith("https://")
        for f in asset.files:
            assert f.sha256 is None or len(f.sha256) == 64
            if f.same_folder_as:
                earlier = asset.files[: asset.files.index(f)]
                assert any(g.pattern == f.same_folder_as for g in earlier)
        if asset.direct:
            assert len(asset.files) == 1


# --------------------------------------------------------------------------- hostile and broken input
def leftovers(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def test_zip_members_cannot_escape_the_scratch_folder(tmp_path):
    escaped = tmp_path / "evil" / "our_vab_data.npy"  # where an unsafe unpacker would write
    payload = write(tmp_path / "glove.zip", b"")
    with zipfile.ZipFile(payload, "w") as z:
        z.writestr("../" * 30 + str(escaped).lstrip("/"), b"relative escape")
        z.writestr(str(tmp_path / "abs" / "our_vab_words.pkl"), b"absolute escape")
        z.writestr("glove/our_vab_idx.pkl", b"idx")
    dl.install_from(payload, tmp_path / "root", names=["glove"])
    assert not escaped.exists() and not (tmp_path / "abs").exists()
    assert (tmp_path / "root/glove/our_vab_idx.pkl").read_bytes() == b"idx"


def test_only_asset_files_are_unpacked_and_space_is_checked_first(tmp_path, monkeypatch):
    payload = write(tmp_path / "big.zip", b"")
    with zipfile.ZipFile(payload, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("junk/video.mp4", b"\0" * 2_000_000)  # not an asset's file: never unpacked
        z.writestr("glove/our_vab_data.npy", b"x" * 1000)
    real = dl.shutil.disk_usage
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: real(p)._replace(free=100_000))
    out = dl.install_from(payload, tmp_path / "root")
    assert [o.status for o in out] == ["placed", "missing", "missing"]
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: real(p)._replace(free=10))
    with pytest.raises(ValueError, match=r"needs 0\.0 MiB but .* has 0\.0 MiB free; free some space or set TMPDIR"):
        dl.install_from(payload, tmp_path / "root2")
    assert not (tmp_path / "root2").exists()


def test_a_failed_copy_leaves_nothing_at_the_target(tmp_path, downloads, monkeypatch):
    def half_copy(source, dest):
        with open(dest, "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dl.shutil, "copyfile", half_copy)
    out = dl.install_from(downloads / "glove.zip", tmp_path / "root")
    assert {o.status for o in out} == {"failed"} and "No space left on device" in out[0].detail
    assert not (tmp_path / "root/glove/our_vab_data.npy").exists() and leftovers(tmp_path / "root") == []


def test_a_killed_copys_temporary_is_removed_by_the_next_run(tmp_path, downloads):
    stale = write(tmp_path / "root/glove/.our_vab_data.npy.k1ll3d.tmp.npy", b"half")
    out = dl.install_from(downloads / "glove.zip", tmp_path / "root")
    assert {o.status for o in out} == {"placed"} and not stale.exists()
    assert (tmp_path / "root/glove/our_vab_data.npy").read_bytes() == b"our_vab_data.npy"


def test_a_failed_download_is_an_outcome_not_a_traceback(tmp_path, monkeypatch, capsys):
    import urllib.error
    import urllib.request

    def offline(url, filename):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    assert dl.main(["--download", "clip_bpe", "--root", str(tmp_path / "root")]) == 1
    line = capsys.readouterr().out.strip()
    assert line.startswith("[        failed] clip_bpe: save/clip/bpe_simple_vocab_16e6.txt.gz (download failed")
    assert "use --from" in line and not (tmp_path / "root/save").exists()


def test_placing_replaces_a_symlinked_target_instead_of_writing_through_it(tmp_path, downloads):
    outside = write(tmp_path / "elsewhere" / "precious.txt", b"do not overwrite")
    dest = tmp_path / "root/glove/our_vab_data.npy"
    dest.parent.mkdir(parents=True)
    dest.symlink_to(outside)
    out = by_target(dl.install_from(downloads / "glove.zip", tmp_path / "root", force=True))
    assert out["glove/our_vab_data.npy"].status == "placed"
    assert outside.read_bytes() == b"do not overwrite"
    assert not dest.is_symlink() and dest.read_bytes() == b"our_vab_data.npy"
