from chaosguard.cli import main

raise SystemExit(main())
