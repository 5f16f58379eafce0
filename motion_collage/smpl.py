"""The SMPL body model (Loper et al. 2015): loader and forward pass as pure torch functions.

Our own implementation of the published model, so the toolkit needs neither ``smplx`` nor
``chumpy``. Model file keys and shapes (formats.md section 6): ``v_template [V, 3]``,
``shapedirs [V, 3, B]``, ``posedirs [V, 3, 207]``, ``J_regressor [24, V]`` (dense or
scipy.sparse), ``weights [V, 24]``, ``kintree_table [2, 24]``, ``f [F, 3]``; V = 6890,
F = 13776 for the official files. Official ``.pkl`` files hold some arrays as chumpy objects;
the loader reads those without chumpy (it takes the stored value ``x`` of each object).

Conventions: metres, Y up, the body faces +Z in the rest pose (the HumanML3D frame). Pose is
axis-angle ``[..., 24, 3]`` (joint 0 = global orientation), local to each joint's parent.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from motion_collage.safe_pickle import BUILTIN_GLOBALS, NUMPY_GLOBALS, RefusedGlobal, load_pickle

PathLike = Union[str, Path]

NUM_JOINTS = 24
SMPL_URL = "https://smpl.is.tue.mpg.de"
MODEL_CANDIDATES = ("body_models/smpl/SMPL_NEUTRAL.pkl", "smpl/SMPL_NEUTRAL.pkl", "SMPL_NEUTRAL.pkl",
                    "body_models/smpl/SMPL_NEUTRAL.npz", "smpl/SMPL_NEUTRAL.npz", "SMPL_NEUTRAL.npz")


@dataclass(frozen=True)
class SmplModel:
    """Constants of one SMPL body model (torch tensors, float32 unless stated)."""

    v_template: Tensor  # [V, 3]
    shapedirs: Tensor  # [V, 3, B]
    posedirs: Tensor  # [V, 3, 207]
    J_regressor: Tensor  # [24, V]
    weights: Tensor  # [V, 24]
    parents: Tensor  # [24] int64, -1 for the root
    faces: Tensor  # [F, 3] int64

    @property
    def num_betas(self) -> int:
        return int(self.shapedirs.shape[-1])

    def to(self, device: Union[str, torch.device]) -> "SmplModel":
        """A copy with every tensor on ``device``."""
        return SmplModel(**{k: getattr(self, k).to(device) for k in self.__dataclass_fields__})


@dataclass(frozen=True)
class SmplOutput:
    """Result of :func:`smpl_forward`."""

    vertices: Optional[Tensor]  # [..., V, 3] (None when only joints were asked for)
    joints: Tensor  # [..., 24, 3]


class _StandIn:
    """Inert stand-in for a pickled class we do not import: keeps the pickled state, runs nothing."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        self.__dict__["_state"] = state

    @property
    def state(self):
        return self.__dict__.get("_state")


class _ChumpyObject(_StandIn):
    """A chumpy ``Ch`` (or expression); its stored value is ``state["x"]``."""


class _CscMatrix(_StandIn):
    """A scipy.sparse CSC matrix (``data``, ``indices``, ``indptr``, ``_shape``)."""

    major_axis = 1


class _CsrMatrix(_StandIn):
    """A scipy.sparse CSR matrix."""

    major_axis = 0


def _reconstructor(cls, base, state):
    """``copy_reg._reconstructor`` limited to our stand-ins (Python 2 pickles of new-style objects)."""
    if not (isinstance(cls, type) and issubclass(cls, _StandIn)) or base is not object or state is not None:
        raise RefusedGlobal(f"refused copy_reg._reconstructor({_name(cls)}, {_name(base)}): only chumpy "
                            f"and scipy.sparse objects may be rebuilt from an SMPL file")
    return cls.__new__(cls)


def _name(obj) -> str:
    return getattr(obj, "__qualname__", type(obj).__name__)


def _smpl_globals() -> dict:
    table = {**NUMPY_GLOBALS, **BUILTIN_GLOBALS}
    for module in ("copy_reg", "copyreg"):
        table[(module, "_reconstructor")] = _reconstructor
    table[("builtins", "object")] = table[("__builtin__", "object")] = object
    for kind, cls in (("csc", _CscMatrix), ("csr", _CsrMatrix)):
        for module in (f"scipy.sparse.{kind}", f"scipy.sparse._{kind}"):
            table[(module, f"{kind}_matrix")] = table[(module, f"{kind}_array")] = cls
    return _SmplGlobals(table)


class _SmplGlobals(dict):
    """The SMPL allow-list; any class of a ``chumpy`` module maps to the inert chumpy stand-in."""

    def __missing__(self, key: tuple[str, str]):
        module, name = key
        if (module == "chumpy" or module.startswith("chumpy.")) and name.isidentifier():
            return _ChumpyObject
        raise KeyError(key)


_SMPL_GLOBALS = _smpl_globals()


_MAX_DENSE = 50_000_000  # entries of a densified sparse matrix (SMPL's J_regressor has 165,360)


def _sparse_to_dense(value: _StandIn, key: str, path: Path) -> np.ndarray:
    """Dense float64 array of a CSC/CSR stand-in, every index checked against the shape."""
    state = value.state if isinstance(value.state, dict) else {}
    try:
        shape = tuple(int(n) for n in state.get("_shape", state.get("shape")))
        data, indices, indptr = (np.asarray(state[k]) for k in ("data", "indices", "indptr"))
        major, minor = shape[value.major_axis], shape[1 - value.major_axis]
        counts = np.diff(indptr.astype(np.int64))
        ok = (len(shape) == 2 and min(shape) >= 0 and shape[0] * shape[1] <= _MAX_DENSE
              and indptr.shape == (major + 1,) and indptr[0] == 0 and (counts >= 0).all()
              and indices.ndim == 1 and data.shape == indices.shape == (int(indptr[-1]),)
              and indices.dtype.kind in "iu" and data.dtype.kind in "biuf"
              and (indices.size == 0 or (indices.min() >= 0 and indices.max() < minor)))
    except (KeyError, TypeError, ValueError, IndexError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{path}: '{key}' is a sparse matrix with inconsistent shape or indices; the file is damaged")
    dense = np.zeros(shape)
    majors = np.repeat(np.arange(major), counts)
    index = (majors, indices) if value.major_axis == 0 else (indices, majors)
    np.add.at(dense, index, data)
    return dense


def _to_numpy(value, key: str, path: Path) -> np.ndarray:
    if isinstance(value, _ChumpyObject):
        state = value.state
        if isinstance(state, dict) and "x" in state:
            return _to_numpy(state["x"], key, path)
        raise ValueError(f"{path}: '{key}' is a chumpy expression without a stored value; "
                         f"convert the file to plain numpy arrays (e.g. an .npz with the same keys)")
    if isinstance(value, (_CscMatrix, _CsrMatrix)):
        return _sparse_to_dense(value, key, path)
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        arr = np.asarray(None)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{path}: '{key}' holds {type(value).__name__} values, not numbers; the file is damaged")
    return arr


def _search_dirs(root: Path) -> list[Path]:
    """Folders searched under ``root``: ``root/body_models/smpl`` (skipped when ``root`` is itself a
    ``body_models`` folder), ``root/smpl`` and ``root``."""
    dirs = [] if root.name == "body_models" else [root / "body_models" / "smpl"]
    return dirs + [root / "smpl", root]


def find_model_file(smpl_dir: PathLike) -> Path:
    """The SMPL neutral model (``SMPL_NEUTRAL.pkl`` or ``.npz``) under ``smpl_dir``: in
    ``body_models/smpl/``, ``smpl/`` or the folder itself; ``smpl_dir`` may also be the file.
    Raises FileNotFoundError naming the paths looked at and where to get the model."""
    root = Path(smpl_dir)
    if root.is_file():
        return root
    if root.suffix.lower() in (".pkl", ".npz"):
        raise FileNotFoundError(f"SMPL body model {root} does not exist; register at {SMPL_URL}, download "
                                f"'SMPL for Python' and save its neutral model there")
    dirs = _search_dirs(root)
    for folder in dirs:
        for name in ("SMPL_NEUTRAL.pkl", "SMPL_NEUTRAL.npz"):
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(
        f"SMPL body model not found: expected {dirs[0] / 'SMPL_NEUTRAL.pkl'} (also looked in "
        f"{', '.join(str(d) for d in dirs[1:])}); register at {SMPL_URL}, download 'SMPL for Python' and save "
        f"its neutral model (basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl) there as SMPL_NEUTRAL.pkl"
    )


def _read_model_file(path: Path) -> dict:
    """The raw key -> value dict of a ``.npz`` or (allow-listed) ``.pkl`` model file."""
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{path} is not a readable SMPL .npz ({' '.join(str(exc).split())})") from None
    with open(path, "rb") as fh:
        try:
            raw = load_pickle(fh, _SMPL_GLOBALS, encoding="latin1")
        except ValueError as exc:
            raise type(exc)(f"{path} is not a readable SMPL model file: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds {type(raw).__name__}, not a dict of SMPL arrays")
    return raw


def _check_arrays(arr: dict[str, np.ndarray], path: Path) -> np.ndarray:
    """Check the SMPL arrays' shapes and indices; returns the parents ``[24]`` (-1 for the root)."""
    if arr["v_template"].ndim != 2 or arr["v_template"].shape[1] != 3:
        raise ValueError(f"{path}: 'v_template' has shape {arr['v_template'].shape}, expected (V, 3)")
    num_verts = arr["v_template"].shape[0]
    expected = {"posedirs": (num_verts, 3, 207), "J_regressor": (NUM_JOINTS, num_verts),
                "weights": (num_verts, NUM_JOINTS), "kintree_table": (2, NUM_JOINTS)}
    for key, shape in expected.items():
        if arr[key].shape != shape:
            raise ValueError(f"{path}: '{key}' has shape {arr[key].shape}, expected {shape}")
    if arr["shapedirs"].ndim != 3 or arr["shapedirs"].shape[:2] != (num_verts, 3):
        raise ValueError(f"{path}: 'shapedirs' has shape {arr['shapedirs'].shape}, expected ({num_verts}, 3, B)")
    faces = arr["f"]
    if (faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu"
            or (faces.size and (faces.min() < 0 or faces.max() >= num_verts))):
        raise ValueError(f"{path}: 'f' must be whole-number vertex indices [F, 3] in 0..{num_verts - 1}")
    parents = arr["kintree_table"][0].astype(np.int64)
    parents[parents >= NUM_JOINTS] = -1  # the root's parent is stored as 2**32 - 1
    parents[0] = -1
    if any(not 0 <= p < j for j, p in enumerate(parents[1:], start=1)):
        raise ValueError(f"{path}: 'kintree_table' does not list every joint after its parent; the file is damaged")
    return parents


def load_smpl(path_or_dir: PathLike, device: Union[str, torch.device] = "cpu") -> SmplModel:
    """Load an SMPL model from a ``.pkl`` (official; chumpy and scipy.sparse objects are read
    without importing either, and no code in the file is run) or ``.npz`` file, or from a folder
    searched by :func:`find_model_file`. Raises FileNotFoundError or ValueError (one line)."""
    path = find_model_file(path_or_dir)
    raw = _read_model_file(path)
    needed = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
    missing = [k for k in needed if k not in raw]
    if missing:
        raise ValueError(f"{path} lacks SMPL keys {missing}; expected {list(needed)}")
    arr = {k: _to_numpy(raw[k], k, path) for k in needed}
    parents = _check_arrays(arr, path)
    f32 = lambda a: torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32), device=device)  # noqa: E731
    return SmplModel(
        v_template=f32(arr["v_template"]), shapedirs=f32(arr["shapedirs"]), posedirs=f32(arr["posedirs"]),
        J_regressor=f32(arr["J_regressor"]), weights=f32(arr["weights"]),
        parents=torch.as_tensor(parents, device=device),
        faces=torch.as_tensor(arr["f"].astype(np.int64), device=device),
    )


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """Rodrigues: axis-angle ``[..., 3]`` to rotation matrices ``[..., 3, 3]`` (smooth at 0)."""
    angle2 = (aa * aa).sum(-1, keepdim=True)[..., None]  # [..., 1, 1]
    angle = torch.sqrt(angle2 + 1e-12)
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(aa.shape[:-1] + (3, 3))
    # sin(a)/a and (1-cos(a))/a^2 with Taylor expansions near 0
    small = angle2 < 1e-8
    a_safe = torch.where(small, torch.ones_like(angle), angle)
    s = torch.where(small, 1 - angle2 / 6, torch.sin(a_safe) / a_safe)
    c = torch.where(small, 0.5 - angle2 / 24, (1 - torch.cos(a_safe)) / (a_safe * a_safe))
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(skew)
    return eye + s * skew + c * (skew @ skew)


def matrix_to_axis_angle(mat: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` to axis-angle ``[..., 3]`` (numpy, via scipy)."""
    from scipy.spatial.transform import Rotation

    flat = mat.reshape(-1, 3, 3)
    return Rotation.from_matrix(flat).as_rotvec().reshape(mat.shape[:-2] + (3,))


def joint_shape_basis(model: SmplModel) -> tuple[Tensor, Tensor]:
    """Rest joints as a linear function of betas: template joints ``[24, 3]`` and their shape
    directions ``[24, 3, B]`` (the joint regressor applied to the vertex bases)."""
    j_template = model.J_regressor @ model.v_template
    j_dirs = (model.J_regressor @ model.shapedirs.reshape(model.shapedirs.shape[0], -1)).reshape(
        -1, 3, model.num_betas)
    return j_template, j_dirs


def rest_joints(model: SmplModel, betas: Tensor, basis: Optional[tuple[Tensor, Tensor]] = None) -> Tensor:
    """Rest-pose joint positions ``[..., 24, 3]`` for shape coefficients ``betas [..., B]``
    (pass ``basis`` from :func:`joint_shape_basis` to avoid recomputing it)."""
    j_template, j_dirs = basis if basis is not None else joint_shape_basis(model)
    return j_template + (j_dirs @ betas[..., None, :, None])[..., 0]


def chain_transforms(rot: Tensor, joints_rest: Tensor, parents: Tensor) -> tuple[Tensor, Tensor]:
    """World rotations ``[..., 24, 3, 3]`` and posed joint positions ``[..., 24, 3]`` from local
    rotations ``rot [..., 24, 3, 3]`` and rest joints ``[..., 24, 3]`` (root at its rest place)."""
    glob_r, glob_t = [], []
    for j in range(rot.shape[-3]):
        p = int(parents[j])
        if p < 0:
            glob_r.append(rot[..., j, :, :])
            glob_t.append(joints_rest[..., j, :])
        else:
            bone = joints_rest[..., j, :] - joints_rest[..., p, :]
            glob_t.append(glob_t[p] + (glob_r[p] @ bone[..., None])[..., 0])
            glob_r.append(glob_r[p] @ rot[..., j, :, :])
    return torch.stack(glob_r, -3), torch.stack(glob_t, -2)


def smpl_forward(
    model: SmplModel,
    pose: Tensor,
    betas: Optional[Tensor] = None,
    transl: Optional[Tensor] = None,
    *,
    with_vertices: bool = True,
) -> SmplOutput:
    """SMPL for a batch: ``pose [..., 24, 3]`` axis-angle, ``betas [..., B]`` (zeros when None),
    ``transl [..., 3]``. Returns vertices ``[..., V, 3]`` (linear blend skinning of the shaped,
    pose-corrected template) and joints ``[..., 24, 3]``."""
    batch = pose.shape[:-2]
    if betas is None:
        betas = pose.new_zeros(batch + (model.num_betas,))
    betas = betas.expand(batch + betas.shape[-1:])
    rot = axis_angle_to_matrix(pose)  # [..., 24, 3, 3]
    joints_rest = rest_joints(model, betas)
    glob_r, joints = chain_transforms(rot, joints_rest, model.parents)
    offset = transl[..., None, :] if transl is not None else 0.0
    if not with_vertices:
        return SmplOutput(None, joints + offset)

    v_shaped = model.v_template + torch.einsum("vcb,...b->...vc", model.shapedirs, betas)
    eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
    pose_feature = (rot[..., 1:, :, :] - eye).flatten(-3)  # [..., 207]
    v_posed = v_shaped + torch.einsum("vcp,...p->...vc", model.posedirs, pose_feature)
    # per-joint transform taking rest-pose points to posed points: x -> R x + (t - R j_rest)
    shift = joints - (glob_r @ joints_rest[..., None])[..., 0]  # [..., 24, 3]
    vert_r = torch.einsum("vj,...jab->...vab", model.weights, glob_r)
    vert_t = torch.einsum("vj,...ja->...va", model.weights, shift)
    vertices = (vert_r @ v_posed[..., None])[..., 0] + vert_t
    return SmplOutput(vertices + offset, joints + offset)
