"""KEMDy19/20, text + speech: valence and arousal (1-5); text and speech joined by any fusion of the
registry (--fusion, default concat)."""

from common.cli import main

if __name__ == "__main__":
    main(modality="multimodal", task="regression")
