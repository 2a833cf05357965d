from neuralrender.cli import main

raise SystemExit(main())
