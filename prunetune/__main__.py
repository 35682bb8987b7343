"""`python -m prunetune` runs the command-line interface."""

from prunetune.cli import main

raise SystemExit(main())
