"""The models room: models and tokenizers built on this machine or shipped in data/, never
downloaded.

    tiny        small OPT models from a config (seeded), opt-6.7b's shape on the meta device, and a
                tokenizer trained on data/quotes.jsonl
    demo_base   the capstone's offline base: a small OPT pretrained on Python's documentation,
                shipped in data/demo-base/ (and how to pretrain it again)
    quiet       bitsandbytes' two harmless CPU notices kept off the learner's screen

It imports no other room: the tests, the capstone and the experiments all build on it.
"""
