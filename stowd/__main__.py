"""`python -m stowd`: the command line (cli.py)."""

from stowd.cli import main

raise SystemExit(main())
