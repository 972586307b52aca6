"""KEMDy19/20, text + speech: valence and arousal (1-5); text and speech vectors concatenated."""

from common.cli import main

if __name__ == "__main__":
    main(modality="multimodal", task="regression", fusion="concat")
