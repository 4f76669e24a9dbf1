"""``python -m proxyd`` runs the proxy, like the ``proxyd`` command."""

from proxyd.cli.proxyd import main

raise SystemExit(main())
