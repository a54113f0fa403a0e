"""`python -m hf_ddpm` runs the `hf-ddpm` command line."""

from hf_ddpm.cli import main

raise SystemExit(main())
