from tinyexit.cli import main

raise SystemExit(main())
