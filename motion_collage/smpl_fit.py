"""Fit SMPL to 22-joint motion, export meshes, render a mesh video.

    python -m motion_collage.smpl_fit RESULTS.npy --smpl_dir DIR [--sample I --rep J]
                                      [--out_dir D] [--iters N] [--no_obj] [--no_video]

writes ``sampleII_repJJ_smpl.npz`` (our fit, no pickle), ``sampleII_repJJ_smpl_params.npy`` (MDM's
layout for the SMPL Blender add-on, :func:`mdm_smpl_params`), an ``.obj`` per frame and a video.

In the spirit of SMPLify (Bogo et al. 2016): per-frame pose, per-frame translation and one
shared shape are found by minimising the squared distance between SMPL's first 22 joints and
the targets, plus priors. The official SMPLify GMM pose prior file is not available here;
instead an L2 prior on the body pose, SMPLify's exponential knee/elbow angle prior, an L2
shape prior and a small temporal smoothness term regularise the parts that joint positions
leave free (twists about bones, hands). Every frame starts from an analytic estimate (each
joint rotated so its rest bones point at the target bones: a per-frame warm start that does
not drift), then all frames are refined together with L-BFGS (joints only, no skinning, so it
is cheap). Needs the user's SMPL neutral model (see :func:`motion_collage.smpl.find_model_file`).
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from motion_collage.smpl import (
    SmplModel, axis_angle_to_matrix, chain_transforms, joint_shape_basis, load_smpl, matrix_to_axis_angle, rest_joints,
    smpl_forward,
)
from motion_core.atomic import check_output_file, staged_file
from motion_core.cli import OneLineParser, UsageError, run_cli
from motion_core.spec import HUMANML3D

PathLike = Union[str, Path]


@dataclass(frozen=True)
class FitConfig:
    """Weights and budget of the fit (losses are per frame; distances in metres)."""

    iters: int = 150  # L-BFGS iterations (the MDM release uses 150 for SMPLify)
    pose_prior: float = 1e-4  # L2 on body pose (axis-angle, radians^2)
    angle_prior: float = 1e-5  # SMPLify's exp prior against hyper-extended knees and elbows
    shape_prior: float = 1e-4  # L2 on betas
    smooth: float = 1e-3  # squared pose change between consecutive frames
    fit_shape: bool = True


@dataclass(frozen=True)
class SmplFit:
    """Fitted parameters and meshes (numpy, float32)."""

    pose: np.ndarray  # [T, 24, 3] axis-angle, joint 0 = global orientation
    betas: np.ndarray  # [B]
    transl: np.ndarray  # [T, 3]
    joints: np.ndarray  # [T, 24, 3] SMPL joints of the fit
    vertices: np.ndarray  # [T, V, 3]
    faces: np.ndarray  # [F, 3] int32
    targets: np.ndarray  # [T, 22, 3]

    @property
    def joint_error(self) -> np.ndarray:
        """Distance between fitted and target joints ``[T, 22]`` (metres)."""
        return np.linalg.norm(self.joints[:, : self.targets.shape[1]] - self.targets, axis=-1)


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotations ``[..., 3, 3]`` taking unit vectors a onto unit vectors b."""
    v = np.cross(a, b)
    c = (a * b).sum(-1)[..., None, None]
    vx = np.zeros(a.shape[:-1] + (3, 3))
    vx[..., 0, 1], vx[..., 0, 2], vx[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    vx = vx - np.swapaxes(vx, -1, -2)
    out = np.eye(3) + vx + vx @ vx / np.maximum(1 + c, 1e-9)
    # (anti-)parallel case: a half turn about any axis perpendicular to a
    opposite = (c[..., 0, 0] < -1 + 1e-9)
    if opposite.any():
        axis = np.cross(a[opposite], [1.0, 0.0, 0.0])
        axis[np.linalg.norm(axis, axis=-1) < 1e-6] = np.cross(a[opposite], [0.0, 1.0, 0.0])[np.linalg.norm(axis, axis=-1) < 1e-6]
        axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
        out[opposite] = 2 * axis[..., :, None] * axis[..., None, :] - np.eye(3)
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def initial_pose(model: SmplModel, targets: np.ndarray, betas: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Analytic start: axis-angle pose ``[T, 24, 3]`` and translation ``[T, 3]`` rotating every
    joint so its rest bones point at the target bones (Kabsch for joints with several
    children, smallest rotation for one child, parent's rotation for none)."""
    num_t, num_targets = targets.shape[:2]
    b = torch.zeros(model.num_betas) if betas is None else torch.as_tensor(betas, dtype=torch.float32)
    rest = rest_joints(model, b).double().numpy()  # [24, 3]
    parents = model.parents.numpy()
    world = np.zeros((num_t, len(parents), 3, 3))
    for j, p in enumerate(parents):
        parent_rot = np.broadcast_to(np.eye(3), (num_t, 3, 3)) if p < 0 else world[:, p]
        kids = [c for c in range(len(parents)) if parents[c] == j and c < num_targets]
        if j >= num_targets or not kids:
            world[:, j] = parent_rot
            continue
        r = _unit(np.stack([rest[c] - rest[j] for c in kids], 0))  # [K, 3], same for every frame
        t = _unit(np.stack([targets[:, c] - targets[:, j] for c in kids], 1))  # [T, K, 3]
        if len(kids) == 1:
            a = (parent_rot @ r[0][:, None])[..., 0]
            world[:, j] = _rotation_between(_unit(a), t[:, 0]) @ parent_rot
        else:
            h = np.einsum("ka,tkb->tab", r, t)
            u, _, vt = np.linalg.svd(h)
            d = np.sign(np.linalg.det(np.swapaxes(vt, -1, -2) @ np.swapaxes(u, -1, -2)))
            fix = np.broadcast_to(np.eye(3), (num_t, 3, 3)).copy()
            fix[:, 2, 2] = d
            world[:, j] = np.swapaxes(vt, -1, -2) @ fix @ np.swapaxes(u, -1, -2)
    local = world.copy()
    for j, p in enumerate(parents):
        if p >= 0:
            local[:, j] = np.swapaxes(world[:, p], -1, -2) @ world[:, j]
    return matrix_to_axis_angle(local), targets[:, 0] - rest[0]


def _angle_prior(pose: torch.Tensor) -> torch.Tensor:
    """SMPLify's prior: exp(s * angle)^2 on left elbow (y, s=+1), right elbow (y, -1), left
    knee (x, -1) and right knee (x, -1), which grows for hyper-extension. ``pose [T, 24, 3]``."""
    vals = torch.stack([pose[:, 18, 1], -pose[:, 19, 1], -pose[:, 4, 0], -pose[:, 5, 0]], -1)
    return torch.exp(vals).pow(2).sum(-1)


@contextmanager
def _one_thread():
    """Run torch on one thread: the fit is thousands of tiny ops, for which extra threads only
    add synchronisation (20x slower on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_smpl(targets: np.ndarray, model: SmplModel, *, config: FitConfig = FitConfig(),
             progress: bool = False) -> SmplFit:
    """Fit SMPL to joint positions ``targets [T, 22, 3]`` (metres, Y up, facing +Z at rest).
    ``progress`` prints nothing yet: L-BFGS runs as one batched solve."""
    with _one_thread():
        return _fit(targets, model, config)


def _fit(targets: np.ndarray, model: SmplModel, config: FitConfig) -> SmplFit:
    targets = np.ascontiguousarray(targets, dtype=np.float64)
    num_targets = HUMANML3D.num_joints
    if targets.ndim != 3 or targets.shape[1:] != (num_targets, 3) or targets.shape[0] < 1:
        raise ValueError(f"targets have shape {targets.shape}; expected [T, {num_targets}, 3]")
    if not np.isfinite(targets).all():
        raise ValueError("targets contain NaN or inf values")
    pose0, transl0 = initial_pose(model, targets)
    dm = _double(model)
    basis = joint_shape_basis(dm)
    tgt = torch.as_tensor(targets)
    pose = torch.tensor(np.ascontiguousarray(pose0), requires_grad=True)
    transl = torch.tensor(np.ascontiguousarray(transl0), requires_grad=True)
    betas = torch.zeros(model.num_betas, dtype=torch.float64, requires_grad=config.fit_shape)
    params = [pose, transl] + ([betas] if config.fit_shape else [])
    optim = torch.optim.LBFGS(params, lr=1.0, max_iter=config.iters, line_search_fn="strong_wolfe",
                              tolerance_grad=1e-10, tolerance_change=1e-14, history_size=50)

    def closure():
        optim.zero_grad()
        rot = axis_angle_to_matrix(pose)
        _, joints = chain_transforms(rot, rest_joints(dm, betas, basis).expand(len(pose), -1, -1), dm.parents)
        joints = joints + transl[:, None]
        loss = ((joints[:, :num_targets] - tgt) ** 2).sum(-1).sum(-1).mean()
        loss = loss + config.pose_prior * (pose[:, 1:] ** 2).sum((-1, -2)).mean()
        loss = loss + config.angle_prior * _angle_prior(pose).mean()
        loss = loss + config.shape_prior * (betas**2).sum()
        if len(pose) > 1:
            loss = loss + config.smooth * ((pose[1:] - pose[:-1]) ** 2).sum((-1, -2)).mean()
        loss.backward()
        return loss

    optim.step(closure)
    with torch.no_grad():
        out_pose, out_betas, out_transl = pose.detach().float(), betas.detach().float(), transl.detach().float()
        verts, joints = [], []
        for start in range(0, len(out_pose), 32):
            res = smpl_forward(model, out_pose[start:start + 32], out_betas, out_transl[start:start + 32])
            verts.append(res.vertices)
            joints.append(res.joints)
    return SmplFit(
        pose=out_pose.numpy(), betas=out_betas.numpy(), transl=out_transl.numpy(),
        joints=torch.cat(joints).numpy(), vertices=torch.cat(verts).numpy(),
        faces=model.faces.numpy().astype(np.int32), targets=targets.astype(np.float32),
    )


def _double(model: SmplModel) -> SmplModel:
    return SmplModel(**{k: (v.double() if v.is_floating_point() else v)
                        for k, v in ((k, getattr(model, k)) for k in model.__dataclass_fields__)})


def save_fit(fit: SmplFit, path: PathLike) -> Path:
    """Write parameters, joints and vertices to one ``.npz`` (no pickle), atomically."""
    path = check_output_file(path, (".npz",))
    with staged_file(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, pose=fit.pose, betas=fit.betas, transl=fit.transl, joints=fit.joints,
                            vertices=fit.vertices.astype(np.float32), faces=fit.faces, targets=fit.targets,
                            joint_error=fit.joint_error.astype(np.float32))
    return path


def rotation_6d(pose: np.ndarray) -> np.ndarray:
    """Zhou et al.'s 6-D rotation ``[..., 6]`` of axis-angle ``pose [..., 3]``: the first two rows
    of the rotation matrix, row after row (the convention of MDM and PyTorch3D)."""
    mat = axis_angle_to_matrix(torch.as_tensor(pose, dtype=torch.float64))
    return mat[..., :2, :].reshape(mat.shape[:-2] + (6,)).numpy()


def mdm_smpl_params(fit: SmplFit, model: SmplModel, text: Optional[str]) -> dict:
    """MDM's ``sampleII_repJJ_smpl_params.npy`` dict (what MDM's ``render_mesh`` writes for the
    SMPL Blender add-on), T = the motion's frames, float32:

    ``motion [25, 6, T]``: rows 0-23 the 6-D local rotation of SMPL's joints (0 = global
    orientation), row 24 the root translation followed by three zeros; ``thetas [24, 6, T]``
    (= motion[:24]); ``root_translation [3, T]``: the target pelvis position (metres, Y up);
    ``faces [F, 3]``; ``vertices [V, 3, T]``: the neutral body with betas = 0 (MDM's add-on
    convention) in the fitted pose, moved by the root translation relative to the first frame as
    MDM does; ``text`` (str) and ``length`` (int, = T)."""
    thetas = np.transpose(rotation_6d(fit.pose), (1, 2, 0)).astype(np.float32)  # [24, 6, T]
    root = fit.targets[:, 0].astype(np.float64)  # [T, 3]
    with torch.no_grad():
        verts = torch.cat([smpl_forward(model, torch.as_tensor(fit.pose[s:s + 32])).vertices
                           for s in range(0, len(fit.pose), 32)]).double().numpy()
    verts = verts + (root - root[:1])[:, None]
    root_row = np.concatenate([root.T, np.zeros_like(root.T)])[None].astype(np.float32)  # [1, 6, T]
    return {
        "motion": np.concatenate([thetas, root_row]), "thetas": thetas,
        "root_translation": root.T.astype(np.float32), "faces": np.asarray(fit.faces),
        "vertices": np.transpose(verts, (1, 2, 0)).astype(np.float32), "text": text or "",
        "length": int(len(fit.pose)),
    }


def save_mdm_params(params: dict, path: PathLike) -> Path:
    """Write :func:`mdm_smpl_params` as MDM does (``np.save`` of a dict; load it with
    ``np.load(path, allow_pickle=True).item()``), atomically."""
    path = check_output_file(path, (".npy",))
    with staged_file(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, params, allow_pickle=True)
    return path


def export_obj(vertices: np.ndarray, faces: np.ndarray, out_dir: PathLike, prefix: str = "frame") -> list[Path]:
    """One Wavefront ``.obj`` per frame of ``vertices [T, V, 3]`` with ``faces [F, 3]`` (0-based),
    each written atomically (a stale temporary of a killed run is removed first)."""
    out_dir = Path(out_dir)
    check_output_file(out_dir / f"{prefix}000.obj")
    face_lines = "".join(f"f {a} {b} {c}\n" for a, b, c in (np.asarray(faces) + 1))
    paths = []
    for t, verts in enumerate(np.asarray(vertices)):
        path = out_dir / f"{prefix}{t:03d}.obj"
        vert_lines = "".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in verts)
        with staged_file(path) as tmp:
            tmp.write_text(vert_lines + face_lines)
        paths.append(path)
    return paths


def render_mesh(vertices: np.ndarray, faces: np.ndarray, out_path: PathLike, *, fps: float = HUMANML3D.fps,
                title: Optional[str] = None, max_faces: int = 2500, progress: bool = False) -> Path:
    """Render a mesh sequence ``vertices [T, V, 3]`` to ``.mp4`` (headless matplotlib, a
    decimated face set shaded by a fixed light, camera following the mesh). The file appears
    only when complete (see :func:`motion_collage.render.video_writer`)."""
    from tqdm import tqdm

    from motion_collage.render import _VIEW_RADIUS, _floor_grid, _to_plot, video_writer

    out_path = check_output_file(out_path, (".mp4",))
    verts = _to_plot(np.asarray(vertices, dtype=np.float64))
    faces = np.asarray(faces)[:: max(1, int(np.ceil(len(faces) / max_faces)))]
    light = _unit(np.array([0.3, -0.6, 0.75]))
    base = np.array([0.55, 0.68, 0.85])
    with video_writer(out_path, fps) as writer:
        canvas, ax, floor, mesh = _mesh_figure(verts[0], faces, title)
        for t in tqdm(range(len(verts)), desc="rendering mesh", unit="frame", disable=not progress):
            tri = verts[t][faces]  # [F, 3, 3]
            normal = _unit(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]))
            shade = 0.35 + 0.65 * np.abs(normal @ light)
            mesh.set_verts(tri)
            mesh.set_facecolor(np.clip(base[None] * shade[:, None], 0, 1))
            cx, cy = verts[t, :, 0].mean(), verts[t, :, 1].mean()
            ax.set_xlim(cx - _VIEW_RADIUS, cx + _VIEW_RADIUS)
            ax.set_ylim(cy - _VIEW_RADIUS, cy + _VIEW_RADIUS)
            floor.set_segments(_floor_grid(cx, cy))
            canvas.draw()
            writer.write(np.asarray(canvas.buffer_rgba())[..., :3].tobytes())
    return out_path


def _mesh_figure(verts0: np.ndarray, faces: np.ndarray, title: Optional[str]):
    """Canvas, 3-D axes, floor grid and mesh artists of the mesh video (plot coordinates)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d.art3d import Line3DCollection, Poly3DCollection

    from motion_collage.render import _SIZE, _VIEW_RADIUS, _floor_grid

    fig = Figure(figsize=(_SIZE[0] / 100, _SIZE[1] / 100), dpi=100, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.02, 1.0, 0.9), projection="3d")
    ax.set_axis_off()
    ax.view_init(elev=18, azim=-65)
    ax.set_box_aspect((1, 1, 0.8), zoom=1.35)
    ax.set_zlim(0, 2 * _VIEW_RADIUS * 0.8)
    floor = Line3DCollection(_floor_grid(*verts0.mean(0)[:2]), colors="#c8c8c8", linewidths=0.7)
    ax.add_collection3d(floor, autolim=False)
    mesh = Poly3DCollection(verts0[faces], edgecolor="none")
    ax.add_collection3d(mesh, autolim=False)
    if title:
        fig.text(0.5, 0.95, title, ha="center", va="center", fontsize=12)
    return canvas, ax, floor, mesh


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def build_parser() -> OneLineParser:
    """The ``python -m motion_collage.smpl_fit`` command line."""
    parser = OneLineParser(prog="python -m motion_collage.smpl_fit",
                           description="Fit SMPL to one motion of a results.npy; export meshes.")
    parser.add_argument("results", help="results.npy (or results.npz) written by sampling")
    parser.add_argument("--smpl_dir", required=True,
                        help="folder with body_models/smpl/SMPL_NEUTRAL.pkl (or smpl/..., or the file itself)")
    parser.add_argument("--sample", type=int, default=0)
    parser.add_argument("--rep", type=int, default=0)
    parser.add_argument("--out_dir", default=None, help="default: the folder of RESULTS")
    parser.add_argument("--iters", type=int, default=FitConfig.iters, help="L-BFGS iterations")
    parser.add_argument("--no_obj", action="store_true", help="skip the per-frame .obj files")
    parser.add_argument("--no_video", action="store_true", help="skip the mesh video")
    return parser


def _output_paths(args) -> dict[str, Path]:
    """Where the fit, the .obj folder and the video go; each checked before the (slow) fit."""

    out_dir = Path(args.out_dir) if args.out_dir else Path(args.results).parent
    stem = f"sample{args.sample:02d}_rep{args.rep:02d}"
    paths = {"fit": check_output_file(out_dir / f"{stem}_smpl.npz", (".npz",)),
             "mdm": check_output_file(out_dir / f"{stem}_smpl_params.npy", (".npy",))}
    if not args.no_obj:
        paths["obj"] = out_dir / f"{stem}_obj"
        check_output_file(paths["obj"] / "frame000.obj")
    if not args.no_video:
        paths["video"] = check_output_file(out_dir / f"{stem}_mesh.mp4", (".mp4",))
    return paths


def run(args) -> str:
    """Load, check the outputs, fit, save; returns the lines to print."""
    from motion_collage.render import load_results, results_row

    if args.iters < 1:
        raise UsageError(f"--iters must be >= 1, got {args.iters}")
    model = load_smpl(args.smpl_dir)
    joints, _, caption, _ = results_row(load_results(args.results), args.sample, args.rep)
    paths = _output_paths(args)
    fit = fit_smpl(joints, model, config=FitConfig(iters=args.iters), progress=True)
    lines = [f"wrote {save_fit(fit, paths['fit'])} (mean joint error {fit.joint_error.mean() * 100:.2f} cm)",
             f"wrote {save_mdm_params(mdm_smpl_params(fit, model, caption), paths['mdm'])} (MDM's SMPL layout)"]
    if "obj" in paths:
        lines.append(f"wrote {len(export_obj(fit.vertices, fit.faces, paths['obj']))} .obj files to {paths['obj']}")
    if "video" in paths:
        lines.append(f"wrote {render_mesh(fit.vertices, fit.faces, paths['video'], title=caption, progress=True)}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point. User errors: one line on stderr, exit 2."""
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    sys.exit(main())
