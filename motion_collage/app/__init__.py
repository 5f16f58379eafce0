"""A local web app on the ``sample`` path: compose a timeline, watch it, download it.

``python -m motion_collage.app [--host 127.0.0.1] [--port 7860] [--model_path ...]`` serves one
page (standard library only, nothing fetched from elsewhere). See :mod:`.server` and :mod:`.jobs`.
"""
from .server import build_parser, main, make_server

__all__ = ["build_parser", "main", "make_server"]
