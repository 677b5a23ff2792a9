"""`python -m atende ...` is the `atende` command."""
from atende.jobs.cli import main

raise SystemExit(main())
