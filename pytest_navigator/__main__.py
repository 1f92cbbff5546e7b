"""`python -m pytest_navigator`: the navigator CLI (pytest_navigator.cli), as the `navigator` script runs it."""

from pytest_navigator.cli import main

raise SystemExit(main())
