"""`python -m harness`, from a clone of the repository: the navigator CLI under its old name.

The CLI moved into the package (pytest_navigator.cli) so that the wheel installs only the
pytest_navigator namespace; run `navigator` or `python -m pytest_navigator`.
"""

import warnings

from pytest_navigator.cli import main

warnings.warn(
    "`python -m harness` is the navigator CLI's old name: run `navigator` or `python -m pytest_navigator`",
    DeprecationWarning,
    stacklevel=1,
)
raise SystemExit(main())
