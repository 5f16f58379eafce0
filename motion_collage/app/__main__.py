"""``python -m motion_collage.app``."""
from .server import main

if __name__ == "__main__":
    raise SystemExit(main())
