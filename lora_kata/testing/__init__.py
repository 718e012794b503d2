"""The testing room: what the exercise tests (exercises/tests/) import, besides the learner's code.

    properties          Hypothesis strategies with distinct sizes (in ≠ out ≠ r), seeded inputs
    raising             must_raise: pytest.raises with a message in the learner's language
    hypothesis_profiles the dev / ci / thorough profiles, chosen by HYPOTHESIS_PROFILE
    lora_models         peft twins of the kata's models, opt-6.7b on the meta device, token batches
    int8, quant4        tiny OPTs saved in fp16 and loaded in 8-bit / NF4 through bitsandbytes
    training            a tiny OPT with LoRA for the training-step tests
    capstone            exercise 10's job run on a tiny model (and on a GPU)

It may import catalog/ (the implementation switch), messages/, models/ and capstone/, never the
runner: the tests must mean the same whoever runs them.
"""
