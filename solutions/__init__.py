"""The LoRA kata's reference solutions: the same modules and signatures as `exercises/`."""
