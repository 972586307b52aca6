"""KEMDy19/20, text + speech: valence and arousal (1-5); speech projected to text width and added."""

from common.cli import main

if __name__ == "__main__":
    main(modality="multimodal", task="regression", fusion="element_wise_add")
