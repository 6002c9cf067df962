"""`python -m mmbench.cli`, the same as the `mmbench` console script."""

from mmbench.cli import main

main()
