"""Reading pickles from data files without running code from them.

A pickle names globals (``module.name``) that the loader imports and may call; a hostile file
names ``os.system`` or a ``numpy.testing`` helper that runs a string. :class:`AllowListUnpickler`
looks every global up in an explicit table and refuses anything else *before* it is called,
with a one-line :class:`RefusedGlobal` (a ``ValueError``) naming it.

Tables here cover numpy arrays, dtypes and scalars (:data:`NUMPY_GLOBALS`, under both the
numpy 1 and numpy 2 module names) and harmless builtin containers (:data:`BUILTIN_GLOBALS`).
Loaders for one file kind add their own entries (the SMPL loader maps chumpy and scipy.sparse
classes to inert stand-ins). :func:`load_npy_object` reads an ``np.save(..., allow_pickle=True)``
file (MDM's ``results.npy``) through such a table.
"""
from __future__ import annotations

import builtins
import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Union

import numpy as np
from numpy.lib import format as npy_format

PathLike = Union[str, Path]
Globals = Mapping[tuple[str, str], Any]


class RefusedGlobal(ValueError):
    """A pickle named a global outside the allow-list (it was neither imported nor called)."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    from numpy._core import multiarray, numeric

    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for prefix in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2 write different names
        table[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{prefix}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    return table


#: numpy array reconstruction, dtypes and scalars.
NUMPY_GLOBALS: dict[tuple[str, str], Any] = _numpy_globals()

def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it to store bytes (latin-1 only)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedGlobal(f"refused _codecs.encode with encoding {encoding!r}: only latin1 byte strings are allowed")
    return text.encode("latin1")


#: Builtin containers and numbers (``__builtin__`` is the Python 2 name), and the latin-1
#: ``_codecs.encode`` by which protocol-2 pickles store bytes.
BUILTIN_GLOBALS: dict[tuple[str, str], Any] = {
    **{(module, name): getattr(builtins, name)
       for module in ("builtins", "__builtin__")
       for name in ("list", "dict", "tuple", "set", "frozenset", "complex")},
    ("_codecs", "encode"): _latin1_encode,
}


class AllowListUnpickler(pickle.Unpickler):
    """Unpickler whose globals come only from ``allowed`` (``{(module, name): object}``)."""

    def __init__(self, file: BinaryIO, allowed: Globals, *, encoding: str = "ASCII") -> None:
        super().__init__(file, encoding=encoding)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"refused the global {module}.{name}: this file may only hold "
                                f"data (numpy arrays, numbers, strings, lists, dicts)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedGlobal("refused a persistent id: this file may only hold data")


def load_pickle(source: Union[BinaryIO, bytes], allowed: Globals, *, encoding: str = "ASCII") -> Any:
    """Unpickle ``source`` (a binary file or bytes) with the allow-list ``allowed``.

    Raises :class:`RefusedGlobal` for a global outside it and ``ValueError`` (one line) for a
    stream that is not a valid pickle of allowed objects."""
    fh = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        return AllowListUnpickler(fh, allowed, encoding=encoding).load()
    except RefusedGlobal:
        raise
    except MemoryError:
        raise ValueError("the pickle asks for more memory than is available; the file is damaged") from None
    except Exception as exc:  # a malformed stream raises almost anything (IndexError, TypeError, ...)
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"not a readable pickle ({detail})") from None


def load_npy_object(path: PathLike, allowed: Globals = {**NUMPY_GLOBALS, **BUILTIN_GLOBALS}) -> Any:
    """The object stored by ``np.save(path, obj, allow_pickle=True)``, unpickled with an allow-list.

    The ``.npy`` header is read with numpy's format module (no pickle); the file must hold a
    0-d object array (what ``np.save`` makes of a dict) and its single item is returned.
    Raises ValueError (one line, starting with the path) for anything else."""
    path = Path(path)
    with open(path, "rb") as fh:
        try:
            version = npy_format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = npy_format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except (ValueError, SyntaxError, EOFError) as exc:
            raise ValueError(f"{path} is not a .npy file ({' '.join(str(exc).split())})") from None
        if dtype != np.dtype(object) or shape != ():
            raise ValueError(f"{path} holds a {dtype} array of shape {shape}, not a pickled dict "
                             f"(np.save of a dict with allow_pickle=True)")
        try:
            array = load_pickle(fh, allowed, encoding="latin1")
        except ValueError as exc:
            raise type(exc)(f"{path}: {exc}") from None
    if not isinstance(array, np.ndarray) or array.shape != () or array.dtype != np.dtype(object):
        raise ValueError(f"{path}: the pickle holds {type(array).__name__}, not the 0-d object array "
                         f"that np.save writes")
    return array.item()
