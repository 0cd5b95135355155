from seghz.cli import main

raise SystemExit(main())
