"""Training of the toy models farm ships (farm/toy/weights/), kept out of the farm package:
``clip`` (the toy CLIP, contrastive), ``generator`` (the toy generator, regression onto the exact
drawings of its codes), ``schedule`` (their learning-rate schedule). scripts/train_toy.py runs
them; farm itself only loads and evaluates what they wrote (farm/toy/).

Importable with scripts/ on ``sys.path`` (as it is for scripts/train_toy.py).
"""
