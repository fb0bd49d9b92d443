"""Data package: the shipped word-level tokenizer (``tokenizer.json``) of the instruction observation."""
