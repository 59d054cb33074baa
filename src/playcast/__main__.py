from playcast.cli import main

raise SystemExit(main())
