"""An embedded demo model that really answers: synthetic scenes, a small VLM trained on them, its evaluation."""
