"""`python -m harness`: the navigator CLI (harness.cli)."""

from harness.cli import main

raise SystemExit(main())
