"""Optimal localized edits (Wang & Veitch, "Does Editing Provide Evidence for Localization?").

- :mod:`.edit`: the reparameterised rank-1 LoRA as an activation edit, o <- o + <a, o> b, b masked to chosen
  components (Eq. 4.1-4.3);
- :mod:`.pairs`: (question, truthful, untruthful) preference pairs;
- :mod:`.training`: the IPO objective and its training loop (AdamW, cosine schedule);
- :mod:`.full_model`: the unrestricted baseline, peft's rank-1 LoRA on whole projections, and its conversion to
  an edit;
- :mod:`.store`: trained edits as safetensors plus a JSON spec.
"""
