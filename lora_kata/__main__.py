from lora_kata.cli import main

raise SystemExit(main())
