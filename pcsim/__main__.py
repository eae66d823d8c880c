"""`python -m pcsim` is the `pcsim` command."""

from pcsim.cli import main

raise SystemExit(main())
