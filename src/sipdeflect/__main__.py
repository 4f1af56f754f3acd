from __future__ import annotations

from sipdeflect.cli import main

main()
