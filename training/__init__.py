"""Training library: the VocalNet-M2 model (`training.model`), batch collation
(`training.data`) and streaming generation (`training.inference`). No Ray here."""
