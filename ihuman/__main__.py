from ihuman.cli import main

raise SystemExit(main())
