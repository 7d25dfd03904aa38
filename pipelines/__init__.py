"""Entry points: thin command-line wrappers that build and run the Beam pipelines.

``pipelines``, ``transforms`` and ``schemas`` are generic names installed at the top level
(Beam workers import them by these names). Another installed package, or a folder on
``sys.path`` ahead of this install (a ``schemas/`` in the working directory under ``python
-m``), could answer to one of them; importing this package checks that all three come from
one place and refuses with a clear message otherwise (see ARCHITECTURE.md).
"""

from importlib.util import find_spec
from pathlib import Path


def _check_installed_together(names: tuple[str, ...] = ("transforms", "schemas")) -> None:
    root = Path(__file__).resolve().parent.parent
    for name in names:
        spec = find_spec(name)
        origin = spec.origin if spec is not None else None
        if origin is None or Path(origin).resolve().parent.parent != root:
            raise ImportError(
                f"newsbeam's package {name!r} should be in {root}, but Python finds "
                f"{origin or 'no such package'}: another package or folder of that name is "
                "shadowing it. Install newsbeam in its own virtual environment, or run it "
                "from a folder that holds no package of that name.")


_check_installed_together()
