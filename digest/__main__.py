from __future__ import annotations

from digest.cli import main

main()
