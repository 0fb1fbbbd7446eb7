from chaosguard.cli.main import main

raise SystemExit(main())
