from evalpipe.cli import main

raise SystemExit(main())
