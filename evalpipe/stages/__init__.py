"""The five stages, one module each (prepare, finetune, generate, judge, aggregate), each
keeping the stage contract (contract.py), and the stage cache that decides what runs
(pipeline.py). Stages never import each other: what two stages share lives a layer down."""
