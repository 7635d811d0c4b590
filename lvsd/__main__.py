from lvsd.cli import main

raise SystemExit(main())
