from stowd.cli import main

raise SystemExit(main())
