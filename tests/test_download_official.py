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
