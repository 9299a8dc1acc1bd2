from __future__ import annotations

from gateway.core.cli import main

raise SystemExit(main())
