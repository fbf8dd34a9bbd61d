"""Code several built-in plugins share.

- :mod:`.qa`: TruthfulQA's "Q: ...\\nA:" prompt and (question, answer) texts labelled truthful or not;
- :mod:`.head_activations`: any site's activations (every head's output) at the last token of those texts;
- :mod:`.binary_prompts`: the Truth Neurons paper's A/B prompt and the probabilities of its labels;
- :mod:`.memo`: values computed from a model, kept in memory as long as the model lives;
- :mod:`.paired`: arms compared example by example (a paired t-test per metric).
"""
