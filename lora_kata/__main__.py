from lora_kata.cli.main import main

raise SystemExit(main())
