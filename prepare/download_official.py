"""Get the official MDM assets into the layout the toolkit (and the MDM release) expects.

Two ways, both ending in the same verified layout under ``--root`` (default: the working dir):

* ``--from DIR_OR_ZIP``: install from files you already have (the Google-Drive zips, unpacked
  folders, or a mix). Files are found by name anywhere under the source (zips inside it are
  opened too), placed at their targets, and checked against a sha256 where one is known.
* ``--download NAME ...``: fetch what has a direct URL (CLIP weights and tokeniser, the MDM
  repository's evaluator statistics) and verify it. Google-Drive assets cannot be fetched
  reliably by a script (quota pages, confirmation tokens): for those the command prints the
  link; download them in a browser (or with ``gdown --fuzzy URL``) and run ``--from``.

Checksums: only stated where we could compute them from the published file itself (the sha256
that OpenAI embeds in its CLIP URL; files in the openai/CLIP and MDM GitHub repositories). The
Google-Drive zips have no published checksum, so theirs are ``None`` and only presence and
loadability (see ``mdm_adapter.load``) are checked.

    python -m prepare.download_official --list
    python -m prepare.download_official --from ~/Downloads
    python -m prepare.download_official --download clip
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

from motion_core.cli import OneLineParser, UsageError, one_line, run_cli
from motion_core.atomic import staged_file, terminate_as_exit


@dataclass(frozen=True)
class TargetFile:
    """One file of an asset: ``pattern`` is its name (a glob for step-numbered checkpoints),
    ``target`` its path under the root (for a glob: the folder, the name is kept)."""

    pattern: str
    target: str
    sha256: Optional[str] = None
    required: bool = True
    same_folder_as: Optional[str] = None  # pattern of an earlier sibling: take this file from its folder
    generic: bool = False  # a name many assets share: its folder name must match the target's

    @property
    def is_glob(self) -> bool:
        return any(c in self.pattern for c in "*?[")


@dataclass(frozen=True)
class Asset:
    name: str
    description: str
    url: str
    files: tuple[TargetFile, ...]
    direct: bool = False  # True: the URL serves the file itself (no Drive page, no archive)


def _model(name: str, description: str, url: str) -> Asset:
    folder = f"save/{name}"
    return Asset(name, description, url, (
        TargetFile("model*.pt", folder, generic=True),
        TargetFile("args.json", f"{folder}/args.json", same_folder_as="model*.pt"),
    ))


DRIVE = "https://drive.google.com/file/d/{}/view"
MDM_RAW = "https://raw.githubusercontent.com/GuyTevet/motion-diffusion-model/main/"
MANIFEST: tuple[Asset, ...] = (
    _model("humanml_trans_enc_512", "MDM paper model (trans_enc, CLIP, 1000 steps; model000475000.pt)",
           DRIVE.format("1PE0PK8e5a5j-7-Xhs5YET5U5pGh0c821")),
    _model("humanml_enc_512_50steps", "MDM encoder, 50 diffusion steps (model000750000.pt)",
           DRIVE.format("1cfadR1eZ116TIdXK7qDX1RugAerEiJXr")),
    _model("humanml_trans_dec_512", "MDM decoder (trans_dec, CLIP)", DRIVE.format("1q3soLadvVh7kJuJPd2cegMNY2xVuVudj")),
    _model("humanml_trans_dec_emb_512", "MDM decoder with embedding token",
           DRIVE.format("1GnsW0K3UjuOkNkAWmjrGIUmeDDZrmPE5")),
    _model("humanml_trans_dec_512_bert", "MDM decoder, DistilBERT, 50 steps (model000600000.pt)",
           DRIVE.format("1z5IW5Qa9u9UdkckKylkcSXCwIYgLPhIC")),
    _model("kit_trans_enc_512", "MDM encoder trained on KIT-ML (model000400000.pt)",
           DRIVE.format("1SHCRcE0es31vkJMLGf9dyLe7YsWj7pNL")),
    Asset("clip", "CLIP ViT-B/32 weights (OpenAI; sha256 from its URL)",
          "https://openaipublic.azureedge.net/clip/models/"
          "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
          (TargetFile("ViT-B-32.pt", "save/clip/ViT-B-32.pt",
                      "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"),), direct=True),
    Asset("clip_bpe", "CLIP BPE vocabulary (openai/CLIP repository, clip/ folder)",
          "https://github.com/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz",
          (TargetFile("bpe_simple_vocab_16e6.txt.gz", "save/clip/bpe_simple_vocab_16e6.txt.gz",
                      "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"),), direct=True),
    Asset("humanml_stats", "HumanML3D model statistics Mean.npy / Std.npy (part of the HumanML3D data)",
          "https://drive.google.com/drive/folders/1OZrTlAGRvLjXhXwnRiOC-oxYry1vf-Uu",
          (TargetFile("Std.npy", "dataset/HumanML3D/Std.npy"),
           TargetFile("Mean.npy", "dataset/HumanML3D/Mean.npy", same_folder_as="Std.npy"))),
    Asset("t2m_mean", "evaluator statistics t2m_mean.npy (MDM repository, dataset/)", MDM_RAW + "dataset/t2m_mean.npy",
          (TargetFile("t2m_mean.npy", "dataset/t2m_mean.npy",
                      "0bdb5ba69a3a9e34d71990db15bc535ebc024c8d95ddb5574196f96058faa7d3"),), direct=True),
    Asset("t2m_std", "evaluator statistics t2m_std.npy (MDM repository, dataset/)", MDM_RAW + "dataset/t2m_std.npy",
          (TargetFile("t2m_std.npy", "dataset/t2m_std.npy",
                      "6a5f7d60301c9465972fc225f8ad0ee8f957e7720431189123eb6d15873a9557"),), direct=True),
    Asset("t2m_evaluator", "HumanML3D text-motion evaluator (Guo et al.; t2m.zip of the MDM repo's script)",
          DRIVE.format("1O_GUHgjDbl2tgbyfSwZOUYXDACnk25Kb"),
          (TargetFile("finest.tar", "t2m/text_mot_match/model/finest.tar"),)),
    Asset("glove", "word vectors of the evaluator (glove.zip)", DRIVE.format("1cmXKUT31pqd7_XpJAiWEo1K81TMYHA5n"),
          (TargetFile("our_vab_data.npy", "glove/our_vab_data.npy"),
           TargetFile("our_vab_words.pkl", "glove/our_vab_words.pkl"),
           TargetFile("our_vab_idx.pkl", "glove/our_vab_idx.pkl"))),
    Asset("smpl", "SMPL body model files (smpl.zip; licence of the SMPL authors applies)",
          "https://drive.google.com/uc?id=1INYlGA76ak_cKGzvpOV2Pe6RkYTlXTW2",
          (TargetFile("SMPL_NEUTRAL.pkl", "body_models/smpl/SMPL_NEUTRAL.pkl"),
           TargetFile("J_regressor_extra.npy", "body_models/smpl/J_regressor_extra.npy", required=False),
           TargetFile("kintree_table.pkl", "body_models/smpl/kintree_table.pkl", required=False),
           TargetFile("smplfaces.npy", "body_models/smpl/smplfaces.npy", required=False))),
)
ASSETS = {a.name: a for a in MANIFEST}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Outcome:
    asset: str
    target: str
    status: str  # placed | present | missing | ambiguous | bad-checksum | exists-differs | failed
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("placed", "present")

    def line(self) -> str:
        return f"[{self.status:>14}] {self.asset}: {self.target}" + (f" ({self.detail})" if self.detail else "")


def _suffix_score(candidate: PurePosixPath, target: PurePosixPath, glob: bool) -> int:
    """How many trailing folder names the candidate shares with the target (file name aside)."""
    cand = candidate.parent.parts
    want = target.parts if glob else target.parent.parts
    score = 0
    while score < min(len(cand), len(want)) and cand[-1 - score] == want[-1 - score]:
        score += 1
    return score


def _wanted(name: str) -> bool:
    """Whether a file called ``name`` can be part of some asset (only those are unpacked)."""
    return any(fnmatch.fnmatch(name, spec.pattern) for asset in MANIFEST for spec in asset.files)


def _unpack(archive: Path, out: Path) -> list[Path]:
    """The wanted members of a zip, unpacked under ``out`` (names made safe by zipfile)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir() and _wanted(PurePosixPath(m.filename).name)]
            need, free = sum(m.file_size for m in members), shutil.disk_usage(out.parent).free
            if need > free:
                raise ValueError(f"unpacking {archive} needs {need / 2**20:.1f} MiB but {out.parent} has "
                                 f"{free / 2**20:.1f} MiB free; free some space or set TMPDIR to a larger disk")
            paths = [Path(zf.extract(m, out)) for m in members]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
        raise ValueError(f"{archive} is not a readable zip archive ({one_line(exc)}); download it again") from None
    return sorted(paths)


def _index(root: Path, scratch: Path) -> list[Path]:
    """Every file under ``root`` (a folder or a zip) that may be part of an asset; zips are
    unpacked into ``scratch`` (only the members with an asset's file name)."""
    if root.is_file():
        if zipfile.is_zipfile(root) or root.suffix.lower() == ".zip":
            return _unpack(root, scratch / root.stem)
        return [root]
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".zip" and zipfile.is_zipfile(path):
            files.extend(_unpack(path, scratch / f"{path.stem}-{len(files)}"))
        else:
            files.append(path)
    return files


def _choose(spec: TargetFile, files: list[Path], folder: Optional[Path], explicit: bool) -> tuple[list[Path], str]:
    """Candidates for one target: ([chosen files], "") or ([], reason).

    The candidate whose folders best match the target's trailing folders wins. A generic name
    (``model*.pt``) needs its folder named like the target's, unless the asset was asked for
    explicitly (then a single folder of any name is accepted: a renamed download).
    """
    cands = [f for f in files if fnmatch.fnmatch(f.name, spec.pattern)]
    if folder is not None:
        cands = [f for f in cands if f.parent == folder] or cands
    if not cands:
        return [], "not found in the source"
    target = PurePosixPath(spec.target)
    scores = {f: _suffix_score(PurePosixPath(f.as_posix()), target, spec.is_glob) for f in cands}
    best = max(scores.values())
    if spec.generic and best == 0 and not explicit:
        return [], "not found in the source"
    top = [f for f in cands if scores[f] == best]
    if spec.is_glob:
        folders = {f.parent for f in top}
        if len(folders) > 1:
            return [], "several folders match: " + ", ".join(sorted(str(d) for d in folders))
        return top, ""
    if len({sha256(f) for f in top}) > 1:
        return [], "several different files match: " + ", ".join(str(f) for f in top)
    return top[:1], ""


def _place(asset: Asset, spec: TargetFile, source: Path, root: Path, force: bool) -> Outcome:
    rel = f"{spec.target}/{source.name}" if spec.is_glob else spec.target
    dest = root / rel
    digest = sha256(source)
    if spec.sha256 is not None and digest != spec.sha256:
        return Outcome(asset.name, rel, "bad-checksum", f"{source}: sha256 {digest[:12]}…, expected {spec.sha256[:12]}…")
    if dest.exists():
        if dest.is_file() and sha256(dest) == digest:
            return Outcome(asset.name, rel, "present")
        if not force or not dest.is_file():
            why = "a folder is in the way" if not dest.is_file() else "a different file is already there; use --force to replace"
            return Outcome(asset.name, rel, "exists-differs", why)
    try:
        with staged_file(dest) as tmp:  # a failed or killed copy leaves no half file at dest
            shutil.copyfile(source, tmp)
    except OSError as exc:
        return Outcome(asset.name, rel, "failed", f"copy from {source} failed: {one_line(exc)}")
    return Outcome(asset.name, rel, "placed", f"from {source}")


def install_from(source: str | Path, root: str | Path = ".", names: Optional[Sequence[str]] = None,
                 force: bool = False) -> list[Outcome]:
    """Find each asset's files under ``source`` (folder or zip), verify, and copy them under ``root``.

    Without ``names``, assets none of whose files are in the source are left out of the report.
    Raises FileNotFoundError (no source), NotADirectoryError (root is a file) or ValueError
    (unknown asset name, unreadable zip) before anything is placed.
    """
    source, root = Path(source).expanduser(), Path(root)
    if not source.exists():
        raise FileNotFoundError(f"--from {source} does not exist; give a folder or a .zip holding the files")
    _check_root(root)
    assets = _assets(names) if names else list(MANIFEST)
    outcomes = []
    with tempfile.TemporaryDirectory() as scratch:
        files = _index(source, Path(scratch))
        for asset in assets:
            mine = _install_asset(asset, files, root, explicit=bool(names), force=force)
            if names or any(o.status != "missing" for o in mine):
                outcomes.extend(mine)
    return outcomes


def _install_asset(asset: Asset, files: list[Path], root: Path, explicit: bool, force: bool) -> list[Outcome]:
    """Choose and place the files of one asset; one outcome per target."""
    mine: list[Outcome] = []
    chosen_dirs: dict[str, Path] = {}
    for spec in asset.files:
        if spec.same_folder_as and spec.same_folder_as not in chosen_dirs:
            continue  # its sibling was not found: already reported
        folder = chosen_dirs.get(spec.same_folder_as) if spec.same_folder_as else None
        picked, why = _choose(spec, files, folder, explicit=explicit)
        if not picked:
            if spec.required or why != "not found in the source":
                status = "missing" if why == "not found in the source" else "ambiguous"
                mine.append(Outcome(asset.name, spec.target, status, why))
            continue
        chosen_dirs[spec.pattern] = picked[0].parent
        mine.extend(_place(asset, spec, f, root, force) for f in picked)
    return mine


def _check_root(root: Path) -> None:
    for p in [root, *root.parents]:
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(f"--root {root}: {p} is a file, not a folder; give the project folder")


def _assets(names: Sequence[str]) -> list[Asset]:
    unknown = [n for n in names if n not in ASSETS]
    if unknown:
        raise ValueError(f"unknown asset {unknown[0]!r}; choose from {', '.join(ASSETS)}")
    return [ASSETS[n] for n in names]


def check_installed(root: str | Path = ".", names: Optional[Sequence[str]] = None) -> list[Outcome]:
    """Which targets are present under ``root`` (with checksum where known)."""
    root = Path(root)
    out = []
    for asset in (_assets(names) if names else MANIFEST):
        for spec in asset.files:
            found = sorted((root / spec.target).glob(spec.pattern)) if spec.is_glob else [root / spec.target]
            found = [f for f in found if f.is_file()]
            if not found:
                if spec.required:
                    out.append(Outcome(asset.name, spec.target, "missing", asset.url))
                continue
            for f in found:
                bad = spec.sha256 is not None and sha256(f) != spec.sha256
                out.append(Outcome(asset.name, str(f.relative_to(root)), "bad-checksum" if bad else "present"))
    return out


def download(names: Sequence[str], root: str | Path = ".", force: bool = False) -> list[Outcome]:
    """Fetch the direct-URL assets among ``names`` (verified); list the links of the others.
    A failed download is an outcome ("failed"), not an exception."""
    import urllib.request
    _check_root(Path(root))
    out = []
    for asset in _assets(names):
        spec = asset.files[0]
        if not asset.direct:
            out.append(Outcome(asset.name, spec.target, "missing",
                               f"manual download: {asset.url} then --from the downloaded file"))
            continue
        with tempfile.TemporaryDirectory() as scratch:
            tmp = Path(scratch) / spec.pattern
            try:
                urllib.request.urlretrieve(asset.url, tmp)  # noqa: S310 (fixed https URLs of the manifest)
            except (OSError, ValueError) as exc:
                out.append(Outcome(asset.name, spec.target, "failed",
                                   f"download failed ({one_line(exc)}); fetch {asset.url} by hand and use --from"))
                continue
            out.append(_place(asset, spec, tmp, Path(root), force))
    return out


# --------------------------------------------------------------------------- CLI: parse -> act -> report
def build_parser() -> OneLineParser:
    """The command line of ``python -m prepare.download_official``."""
    p = OneLineParser(prog="python -m prepare.download_official", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--list", action="store_true", help="show the manifest")
    mode.add_argument("--from", dest="source", help="install from a folder or zip you already have")
    mode.add_argument("--download", nargs="+", metavar="NAME", help="fetch direct-URL assets (others: links)")
    mode.add_argument("--check", action="store_true", help="verify what is installed under --root")
    p.add_argument("--root", default=".", help="project root to install into (default: .)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="restrict --from / --check to these assets")
    p.add_argument("--force", action="store_true", help="replace existing files that differ")
    return p


def manifest_lines() -> list[str]:
    """The manifest as printed by ``--list``."""
    lines = []
    for a in MANIFEST:
        lines.append(f"{a.name:28s} {a.description}\n{'':28s} {a.url}")
        for f in a.files:
            lines.append(f"{'':30s}-> {f.target}{'/' + f.pattern if f.is_glob else ''}  sha256={f.sha256 or 'unpublished'}")
    return lines


def _outcomes(args: argparse.Namespace) -> list[Outcome]:
    """Do what the mode asks; a ``--from`` that matches nothing is a user mistake."""
    _assets((args.only or []) + (args.download or []))  # unknown names fail before any work
    if args.source:
        with terminate_as_exit():
            outcomes = install_from(args.source, args.root, args.only, args.force)
        if not outcomes:
            raise UsageError(f"no file of the manifest found under {args.source} (see --list for the names looked for)")
        return outcomes
    if args.download:
        with terminate_as_exit():
            return download(args.download, args.root, args.force)
    return check_installed(args.root, args.only)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: 0 when every target is in place, 1 when one is not, 2 for a user mistake."""
    status = {"code": 0}

    def run(args: argparse.Namespace) -> None:
        if args.list:
            print("\n".join(manifest_lines()))
            return
        outcomes = _outcomes(args)
        for o in outcomes:
            print(o.line())
        status["code"] = 0 if all(o.ok for o in outcomes) else 1

    code = run_cli(build_parser(), argv, run)
    return code or status["code"]


if __name__ == "__main__":
    raise SystemExit(main())
