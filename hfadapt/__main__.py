from hfadapt.cli import main

raise SystemExit(main())
