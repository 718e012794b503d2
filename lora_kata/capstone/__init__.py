"""The capstone's command line, `python -m solutions.finetune` / `python -m exercises.finetune`.

Not an exercise: this package wires the learner's (or the reference's) pieces together in the
tutorial's order (load, prepare, inject, train, generate), adding what the tutorial did not do
(held-out loss and samples, saving the adapter, a loss plot), one concern per module:

    settings      the tutorial's LoRA and training settings, the small OPT's shape
    arguments     the command-line flags
    pieces        which implementation runs, and what its modules offer (--quant, --packing)
    models        model choice (--model, a cached opt-125m, the built-in small OPT) and loading
    distributed   data parallel under torchrun / accelerate launch
    evaluate      the held-out quotes: loss, and what the model expects of them, before and after
    probe         greedy and sampled continuations, and whether each stopped at EOS
    outputs       the loss plot and metrics.json, written atomically by rank 0
    run           main(): the whole job

It may import the rooms below it (catalog, messages, models), never the runner, the testing
helpers or the experiments: a learner's `python -m exercises.finetune` needs none of them.
"""
