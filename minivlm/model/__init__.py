"""The notebook's model: ViT + projector, the language model, checkpoint loading and the shapes they have."""
